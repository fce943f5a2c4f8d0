"""``kmunet evaluate``: Dice (and DRIVE's F1 in the FOV) of a checkpoint on its validation split."""

from __future__ import annotations

import argparse
import math


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` sub-parser."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score a checkpoint on the validation split it was trained with (optionally with mirroring TTA)",
        description=(
            "Rebuild the validation split stored in the checkpoint's config and report per-class Dice "
            "(and the vessel F1 inside the field of view for DRIVE). --tta averages the softmax over mirror "
            "images along the axes training flipped (data.flip_axes), as nnU-Net does. The cases scored are "
            "first checked as training checks its data (kmunet validate-data): a fatal problem stops it, "
            "naming the file."
        ),
    )
    parser.add_argument("--checkpoint", required=True, nargs="+", action="extend",
                        help="kmunet checkpoint (best.pt / last.pt); several trained on the same split: their "
                             "ensemble (softmax averaged)")
    parser.add_argument("--data", default=None,
                        help="dataset folder (default: the checkpoint config's data.root, as typed at training: "
                             "a relative path is relative to the current folder)")
    parser.add_argument("--tta", action="store_true", help="mirroring test-time augmentation")
    parser.add_argument("--split", default="val", metavar="{val,train}",
                        help="which cases of the checkpoint's split to score (default: val; train: the training "
                             "cases, through the same inference, to see how well the model fits what it saw)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run the network")
    parser.add_argument("--per-case", action="store_true",
                        help="also print each case's Dice, worst mean Dice first (the JSON of --output always has them)")
    parser.add_argument("--output", default=None, help="also write the result as JSON to this file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``kmunet evaluate``; prints one line per metric; returns 0 (errors raise, see ``evaluate_checkpoint``)."""
    from kmunet.training.evaluation import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, args.data, tta=args.tta, device=args.device, output=args.output,
                                 split=args.split)
    tta = f"mirroring TTA over axes {result['mirror_axes']}" if result["tta"] else "no TTA"
    members = result["checkpoints"]
    what = (f"ensemble of {len(members)} ({', '.join(members)}; epochs {result['epochs']})"
            if len(members) > 1 else f"{result['checkpoint']} (epoch {result['epoch']})")
    split = {"val": "validation", "train": "training"}[result["split"]]
    print(f"{what}, {len(result['cases'])} {split} cases, {tta}, "
          f"{result['seconds']:.1f} s")
    for name, value in result["dice"].items():
        print(f"  Dice {name:20s} {value:.4f}")
    print(f"  mean Dice {'':15s} {result['mean_dice']:.4f}")
    if "f1_fov" in result:
        print(f"  F1 inside FOV {'':11s} {result['f1_fov']:.4f}")
    if args.per_case:
        _print_per_case(result["per_case"], list(result["dice"]))
    return 0


def _print_per_case(rows: list[dict], classes: list[str]) -> None:
    """One line per case, lowest mean Dice first (cases without any scored class last)."""
    has_f1 = any("f1_fov" in r for r in rows)
    width = max(len("case"), *(len(r["case"]) for r in rows))
    header = "".join(f" {'Dice ' + c:>14s}" for c in classes) + f" {'mean Dice':>10s}" + (f" {'F1 in FOV':>10s}" if has_f1 else "")
    print(f"\nper case, worst first:\n  {'case':{width}s}{header}")
    order = sorted(rows, key=lambda r: (math.isnan(r["mean_dice"]), r["mean_dice"]))
    for r in order:
        cells = "".join(f" {r['dice'][c]:14.4f}" for c in classes) + f" {r['mean_dice']:10.4f}"
        if has_f1:
            cells += f" {r.get('f1_fov', float('nan')):10.4f}"
        print(f"  {r['case']:{width}s}{cells}")
