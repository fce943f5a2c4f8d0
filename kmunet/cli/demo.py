"""``kmunet demo``: kmunet's main job end to end on a built-in synthetic default (no data needed)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train KM-UNet on built-in synthetic data and predict a folder (no download needed)",
        description=(
            "Generate a small synthetic 3D dataset, train KM-UNet on it for about a minute on CPU, "
            "report the validation Dice, predict a folder of unseen scans to NIfTI masks, and plot "
            "the learned KAN filters."
        ),
    )
    parser.add_argument("--output", default="runs/demo", help="output folder (default: runs/demo)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--epochs", type=int, default=None, help="override the demo's number of epochs")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. --set train.lr=0.001 (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (for log files)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kmunet.demo import run_demo

    run_demo(args.output, device=args.device, epochs=args.epochs, overrides=args.overrides, progress=not args.no_progress)
    return 0
