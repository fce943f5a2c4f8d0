"""Inference and post-processing variants of a trained checkpoint, scored on its validation split.

Everything a user might try after training, measured in one run on the checkpoint's own split (the one
``kmunet evaluate`` rebuilds from the config stored in it):

* sliding-window blending: the training config's (constant, its ``sw_overlap``) vs overlap 0.5 with
  Gaussian weights (nnU-Net's choice);
* mirroring test-time augmentation along the training flips, off / on;
* multi-class tasks: MONAI ``KeepLargestConnectedComponent`` per class and on the foreground union,
  and a weight on the background probability before the argmax (weights above 1 trade false-positive
  for false-negative foreground voxels), over a grid and the one chosen on the *training* split;
* 2-class tasks (DRIVE): the decision threshold on the foreground probability, over a grid, and the one
  chosen on the *training* split (so the validation score of that choice is not tuned on validation).

Run (``--checkpoint`` may repeat; data from each checkpoint's config)::

    OMP_NUM_THREADS=1 python benchmarks/postprocess.py --checkpoint checkpoints/hippocampus_kmunet.pt \\
        --checkpoint checkpoints/drive_kmunet.pt
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kmunet.config import ExperimentConfig
from kmunet.data.loaders import build_val_loader
from kmunet.inference.tta import sliding_window_probabilities
from kmunet.training.checkpoint import load_checkpoint, model_from_checkpoint
from kmunet.training.trainer import metrics_from_sums, segmentation_sums

THRESHOLDS = tuple(np.round(np.arange(0.30, 0.701, 0.05), 3).tolist())
#: Factors on the background probability before the argmax (multi-class tasks); 1 is the plain argmax.
BACKGROUND_WEIGHTS = (0.75, 1.0, 1.25, 1.5, 2.0, 3.0)
#: (name, overlap or None for the training config's, blend mode)
WINDOWS = (("config", None, "constant"), ("gaussian 0.5", 0.5, "gaussian"))


@torch.no_grad()
def probabilities(model: torch.nn.Module, config: ExperimentConfig, batches: list[dict[str, Any]],
                  overlap: float | None, mode: str, tta: bool) -> list[dict[str, torch.Tensor]]:
    """``(1, K, *spatial)`` softmax probabilities, label and FOV of every batch (one case each)."""
    mirror_axes = tuple(config.data.flip_axes) if tta else ()
    out = []
    for batch in batches:
        probs = sliding_window_probabilities(
            batch["image"], tuple(config.data.patch_size), config.train.sw_batch_size, model,
            overlap=config.train.sw_overlap if overlap is None else overlap, mirror_axes=mirror_axes, mode=mode,
        )
        out.append({"probs": probs, "label": batch["label"].long(), "fov": batch.get("fov")})
    return out


def score(cases: list[dict[str, Any]], config: ExperimentConfig, predict) -> dict[str, Any]:
    """Metrics of ``predict(probs) -> (1, 1, *spatial)`` labels over ``cases``."""
    k = config.network.out_channels
    sums = sum(segmentation_sums(predict(c["probs"]), c["label"], k, c["fov"]) for c in cases)
    return metrics_from_sums(sums, list(config.data.class_names))


def threshold(t: float):
    """``probs -> labels``: foreground where its probability exceeds ``t`` (2-class tasks)."""
    return lambda p: (p[:, 1:] > t).long()


def background_weighted(w: float):
    """``probs -> labels``: argmax after multiplying the background probability (class 0) by ``w``."""
    def predict(p: torch.Tensor) -> torch.Tensor:
        weighted = p.clone()
        weighted[:, 0] *= w
        return weighted.argmax(1, keepdim=True)
    return predict


def choose_on_training(cases: list[dict[str, Any]], train: list[dict[str, Any]], config: ExperimentConfig,
                       grid: tuple[float, ...], make, key: str, neutral: float) -> tuple[float, float, dict[str, Any]]:
    """Pick the ``grid`` value whose ``make(value)`` scores best on ``train`` (ties: nearest ``neutral``).

    Returns ``(value, its training score, its validation metrics)``.
    """
    on_train = {v: score(train, config, make(v))[key] for v in grid}
    best = max(grid, key=lambda v: (on_train[v], -abs(v - neutral)))
    return best, on_train[best], score(cases, config, make(best))


def error_counts(cases: list[dict[str, Any]], names: list[str], predict) -> str:
    """Voxel TP / FP / FN of each foreground class over ``cases`` (FP and FN split by the other label)."""
    k = len(names)
    conf = torch.zeros(k, k, dtype=torch.int64)  # rows: reference label, columns: prediction
    for c in cases:
        pair = c["label"].flatten() * k + predict(c["probs"]).flatten()
        conf += torch.bincount(pair, minlength=k * k).view(k, k)
    parts = []
    for i in range(1, k):
        fp_bg, fn_bg = conf[0, i].item(), conf[i, 0].item()
        fp_fg, fn_fg = conf[1:, i].sum().item() - conf[i, i].item(), conf[i, 1:].sum().item() - conf[i, i].item()
        parts.append(f"{names[i]} TP {conf[i, i].item()}, FP {fp_bg} + {fp_fg} (from background + other classes), "
                     f"FN {fn_bg} + {fn_fg} (to background + other classes)")
    return "; ".join(parts)


def _line(name: str, m: dict[str, Any]) -> str:
    dice = " | ".join(f"{v:.4f}" for v in m["dice"].values())
    f1 = f" | {m['f1_fov']:.4f}" if "f1_fov" in m else ""
    return f"| {name} | {dice} | {m['mean_dice']:.4f}{f1} |"


def run_checkpoint(path: Path) -> None:
    """Print the table of one checkpoint."""
    start = time.perf_counter()
    ckpt = load_checkpoint(path, map_location="cpu")
    model, config = model_from_checkpoint(ckpt, device=torch.device("cpu"))
    model.eval()
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, cache="none"))
    names = list(config.data.class_names)
    two_class = config.network.out_channels == 2
    argmax = lambda p: p.argmax(1, keepdim=True)  # noqa: E731
    print(f"\n#### {path} (epoch {int(ckpt.get('epoch', -1)) + 1}, data {config.data.root})\n")
    header = " | ".join(f"Dice {n}" for n in names[1:])
    print(f"| variant | {header} | mean Dice{' | F1 in FOV' if two_class else ''} |")
    print("| --- |" + " ---: |" * (len(names) + int(two_class)))
    # Each split is loaded and preprocessed once; every variant reuses the batches.
    val_batches = list(build_val_loader(config, split="val")[0])
    train_batches = list(build_val_loader(config, split="train")[0])
    counts = ""  # voxel error counts of the plain argmax (multi-class tasks)
    for tta in (False, True):
        for wname, overlap, mode in WINDOWS:
            tag = f"{wname} window, {'TTA' if tta else 'no TTA'}"
            cases = probabilities(model, config, val_batches, overlap, mode, tta)
            print(_line(f"{tag}, argmax", score(cases, config, argmax)), flush=True)
            if two_class:
                for t in THRESHOLDS:
                    print(_line(f"{tag}, threshold {t:.2f}", score(cases, config, threshold(t))))
                if wname == "config":
                    train = probabilities(model, config, train_batches, overlap, mode, tta)
                    best, there, m = choose_on_training(cases, train, config, THRESHOLDS, threshold, "f1_fov", 0.5)
                    print(_line(f"{tag}, threshold {best:.2f} chosen on the training split (F1 {there:.4f} there)", m))
            else:
                from monai.transforms import KeepLargestConnectedComponent

                for independent in (True, False):
                    keep = KeepLargestConnectedComponent(applied_labels=list(range(1, len(names))), independent=independent)
                    what = "per class" if independent else "of the foreground union"
                    post = lambda p: torch.stack([torch.as_tensor(keep(x)) for x in argmax(p)])  # noqa: E731
                    print(_line(f"{tag}, largest component {what}", score(cases, config, post)), flush=True)
                if wname == "config" and not tta:
                    counts = f"{tag}, argmax: " + error_counts(cases, names, argmax)
                    for w in BACKGROUND_WEIGHTS:
                        print(_line(f"{tag}, background weight {w:.2f}", score(cases, config, background_weighted(w))))
                    train = probabilities(model, config, train_batches, overlap, mode, tta)
                    best, there, m = choose_on_training(cases, train, config, BACKGROUND_WEIGHTS, background_weighted,
                                                        "mean_dice", 1.0)
                    print(_line(f"{tag}, background weight {best:.2f} chosen on the training split "
                                f"(mean Dice {there:.4f} there)", m), flush=True)
    if counts:
        print(f"\nVoxel counts over the validation cases, {counts}")
    print(f"\n{time.perf_counter() - start:.0f} s")


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", action="append", required=True, help="kmunet checkpoint (repeatable)")
    args = parser.parse_args(argv)
    print(f"# kmunet inference / post-processing variants ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}), "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for path in args.checkpoint:
        run_checkpoint(Path(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
