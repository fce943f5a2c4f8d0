"""Evaluate a checkpoint on its validation split, optionally with mirroring test-time augmentation."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence


from kmunet.config import ExperimentConfig
from kmunet.runtime import resolve_device
from kmunet.training.checkpoint import checkpoint_paths, models_from_checkpoints
from kmunet.training.schedule import amp_settings
from kmunet.training.trainer import evaluate

__all__ = ["evaluate_checkpoint"]


def evaluate_checkpoint(
    checkpoint: str | Path | Sequence[str | Path],
    data: str | Path | None = None,
    *,
    tta: bool = False,
    device: str = "auto",
    output: str | Path | None = None,
    split: str = "val",
) -> dict[str, Any]:
    """Per-class Dice (and DRIVE's vessel F1 in the field of view) of a checkpoint on its validation split
    (or, with ``split="train"``, on the training cases of that split).

    The split is the one training used: rebuilt from the configuration stored in the checkpoint
    (``data.seed``, ``data.val_fraction`` or ``data.fold``), so the numbers are comparable with the
    ``val_*`` columns of the run's ``metrics.csv``.

    Args:
        checkpoint: a kmunet checkpoint (``best.pt`` / ``last.pt``), or several trained on the same
            split (e.g. different seeds): their softmax probabilities are averaged
            (:class:`~kmunet.networks.ProbabilityEnsemble`).
        data: dataset folder (default: the checkpoint config's ``data.root``).
        tta: average the softmax over mirror images along the axes training flipped
            (``data.flip_axes``), as nnU-Net does; ``2 ** len(flip_axes)`` times the cost.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        output: also write the result as JSON here (atomically).
        split: ``"val"`` (default) scores the validation cases; ``"train"`` scores the training cases
            of the same split through the same full-image inference (no augmentation): the fit of the
            model to what it saw, e.g. to tell under- from overfitting by the gap to ``"val"``.

    Returns:
        ``{"dice": {class: value}, "mean_dice", ["f1_fov"], "checkpoint", "data", "epoch", "cases",
        "tta", "mirror_axes", "seconds", "checkpoints", "epochs", "per_case"}``: ``"checkpoint"`` /
        ``"epoch"`` are the first member's, ``"checkpoints"`` / ``"epochs"`` list every member (one for
        a single checkpoint); ``"per_case"`` has one ``{"case", "dice", "mean_dice"[, "f1_fov"]}`` per
        scored case, in the order of ``"cases"`` (Dice NaN where the class is absent from the case's
        reference), e.g. to find the cases a model fails on.

    Before any inference the evaluated cases go through the check training runs before its first
    epoch (:func:`~kmunet.data.validation.validate_dataset`, restricted to these cases): fatal
    problems stop it with a message naming the file, warnings are printed to stderr as
    ``warning: FILE: MESSAGE``. Images without a label are left out (a warning says how many).

    Raises:
        FileNotFoundError: missing checkpoint or data folder.
        ValueError: unknown ``split`` (lists the valid ones), unusable checkpoint, members with
            different preprocessing, classes or validation split, no data folder known, no case in the
            split, or fatal problems in the evaluated cases
            (the message names the first; with several, each is printed to stderr first).
    """
    from kmunet.data.discovery import discover_cases
    from kmunet.data.loaders import build_val_loader, check_split
    from kmunet.inference.writers import check_output_file

    start = time.perf_counter()
    check_split(split)  # before loading anything
    if output is not None:
        check_output_file(output)  # before minutes of inference, not after
    paths = checkpoint_paths(checkpoint)
    dev = resolve_device(device)
    model, config, ckpts = models_from_checkpoints(paths, device=dev, scored_split=split)
    root = str(data) if data is not None else config.data.root
    if not root:
        raise ValueError(f"{paths[0]}: its config has no data.root (synthetic demo data); pass data=DIR")
    if not Path(root).is_dir():
        stored = " (the path stored in the checkpoint; pass --data DIR)" if data is None else ""
        raise FileNotFoundError(f"data folder not found: {root}{stored}")
    mismatch = _label_name_mismatch(Path(root), list(config.data.class_names))
    if mismatch:
        print(f"warning: {mismatch}", file=sys.stderr, flush=True)
    # One pass over the evaluated cases: caching them would only cost memory.
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, root=root, cache="none"))
    cases = discover_cases(config.data)
    loader, names = build_val_loader(config, cases=cases, split=split)
    _check_cases(root, config, names)
    unlabelled = [c for c in cases if not c.get("label")]
    if unlabelled:
        print(f"warning: {len(unlabelled)} image(s) without a label left out (first: {unlabelled[0]['image']})",
              file=sys.stderr, flush=True)
    mirror_axes = tuple(config.data.flip_axes) if tta else ()
    metrics = evaluate(model, loader, config, dev, amp_settings(dev, config.train.amp), mirror_axes=mirror_axes,
                       per_case=True)
    per_case = [{"case": name, **m} for name, m in zip(names, metrics.pop("per_case"), strict=True)]
    result = {
        **metrics,
        "checkpoint": str(paths[0]),
        "data": root,
        "epoch": int(ckpts[0].get("epoch", -1)) + 1,
        "checkpoints": [str(p) for p in paths],
        "epochs": [int(c.get("epoch", -1)) + 1 for c in ckpts],
        "split": split,
        "cases": names,
        "tta": bool(tta),
        "mirror_axes": list(mirror_axes),
        "seconds": round(time.perf_counter() - start, 1),
        "per_case": per_case,
    }
    if output is not None:
        from kmunet.inference.writers import write_text_atomic

        write_text_atomic(output, json.dumps(_nan_to_null(result), indent=2, allow_nan=False) + "\n")
    return result


def _nan_to_null(value: Any) -> Any:
    """``value`` with every NaN float replaced by ``None`` (strict JSON has no NaN: ``null`` instead)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_null(v) for v in value]
    return value


def _check_cases(root: str, config: ExperimentConfig, names: Sequence[str]) -> None:
    """Run :func:`~kmunet.data.validation.validate_dataset` on the cases ``names`` of ``root``.

    Warnings are printed to stderr; fatal problems raise (several: each printed first, as
    ``kmunet validate-data`` prints them).

    Raises:
        ValueError: a fatal problem (the message names the first one's file and what is wrong).
    """
    from kmunet.data.validation import validate_dataset

    report = validate_dataset(root, config, names=names)
    for problem in report.warnings:
        print(f"warning: {problem.file}: {problem.message}", file=sys.stderr, flush=True)
    fatal = report.fatal
    if not fatal:
        return
    if len(fatal) > 1:
        for problem in fatal:
            print(problem, file=sys.stderr, flush=True)
    first = fatal[0]
    count = f"{len(fatal)} fatal problems in the {len(names)} evaluated case(s), first: " if len(fatal) > 1 else ""
    raise ValueError(f"{count}{first.file}: {first.message} (no case evaluated)")


def _label_name_mismatch(root: Path, class_names: list[str]) -> str:
    """A message when ``root/dataset.json`` (MSD) names its labels differently from the checkpoint."""
    try:
        labels = json.loads((root / "dataset.json").read_text(encoding="utf-8"))["labels"]
        names = [str(labels[str(i)]) for i in range(len(labels))]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    if [n.lower() for n in names] == [n.lower() for n in class_names]:
        return ""
    return (f"{root / 'dataset.json'} names the labels {names} but the checkpoint was trained for {class_names}: "
            "is this the dataset it was trained on?")
