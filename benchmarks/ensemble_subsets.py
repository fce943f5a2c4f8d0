"""Every sub-ensemble of a set of checkpoints, scored on their common validation split in one run.

Which members are worth keeping in an ensemble? This loads the checkpoints once (they must be an
ensemble ``kmunet evaluate`` accepts: equal preprocessing, classes and train/validation split; their
training patch sizes may differ), computes each member's softmax probabilities on every validation
case once (its own sliding window, with and without mirroring TTA), and then scores the average of
every non-empty subset of members: per-class Dice and, for DRIVE, the vessel F1 inside the field of
view.

The subsets average full-image probabilities, which is exactly what ``kmunet evaluate`` /
``kmunet predict`` do for members trained with different patch sizes. Members that share a window are
averaged inside each window there (:class:`kmunet.networks.ProbabilityEnsemble`), which can differ
from this in the fourth decimal where windows overlap.

Run::

    OMP_NUM_THREADS=2 python benchmarks/ensemble_subsets.py --checkpoint checkpoints/drive_kmunet.pt \\
        checkpoints/drive_kmunet_p256.pt checkpoints/drive_kmunet_p384.pt
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import time
from pathlib import Path

import torch

from kmunet.data.loaders import build_val_loader
from kmunet.inference.tta import sliding_window_probabilities
from kmunet.networks import ProbabilityEnsemble
from kmunet.training.checkpoint import models_from_checkpoints
from kmunet.training.trainer import metrics_from_sums, segmentation_sums


def _fmt(metrics: dict) -> str:
    dice = " | ".join(f"{v:.4f}" for v in metrics["dice"].values())
    return dice + (f" | {metrics['f1_fov']:.4f}" if "f1_fov" in metrics else "")


@torch.no_grad()
def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", nargs="+", action="extend", required=True,
                        help="two or more kmunet checkpoints (an ensemble kmunet evaluate accepts)")
    parser.add_argument("--data", default=None, help="dataset folder (default: the first checkpoint's data.root)")
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.checkpoint]
    if len(paths) < 2:
        parser.error("give at least two checkpoints")
    start = time.perf_counter()
    ensemble, config, ckpts = models_from_checkpoints(paths, scored_split="val")  # ValueError: not one ensemble
    assert isinstance(ensemble, ProbabilityEnsemble)  # two or more checkpoints always give one
    windows = ensemble.windows or [tuple(config.data.patch_size)] * len(paths)
    data = dataclasses.replace(config.data, cache="none", **({"root": args.data} if args.data else {}))
    config = dataclasses.replace(config, data=data)
    batches = list(build_val_loader(config, split="val")[0])
    names = list(config.data.class_names)
    k = config.network.out_channels
    two_class = k == 2 and all("fov" in b for b in batches)

    # probs[tta][member][case]: (1, K, *spatial) softmax, computed once per member, window and case.
    probs = {
        tta: [[sliding_window_probabilities(b["image"], window, config.train.sw_batch_size, member,
                                            overlap=config.train.sw_overlap,
                                            mirror_axes=tuple(config.data.flip_axes) if tta else ())
               for b in batches] for member, window in zip(ensemble.members, windows)]
        for tta in (False, True)
    }

    print(f"# kmunet sub-ensembles ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}), torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, {len(batches)} validation cases of {config.data.root}\n")
    for i, (path, ckpt, window) in enumerate(zip(paths, ckpts, windows)):
        print(f"- member {i}: {path} (epoch {int(ckpt.get('epoch', -1)) + 1}, window {list(window)})")
    cols = [f"Dice {n}" for n in names[1:]] + (["F1 in FOV"] if two_class else [])
    print(f"\n| members | {' | '.join(cols)} | with mirroring TTA: {' | '.join(cols)} |")
    print("| --- |" + " ---: |" * (2 * len(cols)))
    for r in range(1, len(paths) + 1):
        for subset in itertools.combinations(range(len(paths)), r):
            row = []
            for tta in (False, True):
                sums = sum(
                    segmentation_sums(
                        (sum(probs[tta][m][c] for m in subset) / len(subset)).argmax(1, keepdim=True),
                        batch["label"].long(), k, batch.get("fov"),
                    )
                    for c, batch in enumerate(batches)
                )
                row.append(_fmt(metrics_from_sums(sums, names)))
            print(f"| {' + '.join(str(m) for m in subset)} | {' | '.join(row)} |", flush=True)
    print(f"\n{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
