"""``kmunet demo``: kmunet's main job end to end on a built-in synthetic default (no data needed)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the main job on built-in synthetic data (no download needed)",
        description="Build a KM-UNet, run it on a synthetic 3D volume, and plot its learned KAN filters.",
    )
    parser.add_argument("--output", default="runs/demo", help="output folder (default: runs/demo)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kmunet.demo import run_demo

    run_demo(args.output, device=args.device)
    return 0
