"""Checkpoints: atomic writes, safe loading (``weights_only=True``) and model reconstruction.

A kmunet checkpoint is a plain dict of tensors and Python primitives, so it loads with
``torch.load(path, weights_only=True)`` and can never run code::

    {"format": "kmunet-checkpoint", "format_version": 1, "kmunet_version": str,
     "state_dict": {...}, "config": to_dict(ExperimentConfig), "class_names": [...],
     "preprocessing": {...}, "epoch": int, "metrics": {...}, "best_metric": float,
     # last.pt only (resume state):
     "optimizer": {...}, "scheduler": {...}, "scaler": {...} | None, "rng": {...},
     # and with train.ema_decay > 0, where "state_dict" holds the weight average:
     "train_state_dict": {...}, "ema_updates": int}
"""

from __future__ import annotations

import os
import random
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from kmunet import __version__
from kmunet.config import ExperimentConfig, NetworkConfig, from_dict, to_dict
from kmunet.runtime import first_line

__all__ = [
    "CHECKPOINT_FORMAT",
    "FORMAT_VERSION",
    "save_checkpoint",
    "load_checkpoint",
    "model_from_checkpoint",
    "models_from_checkpoints",
    "stored_config",
    "checkpoint_paths",
    "checkpoint_preprocessing",
    "checkpoint_class_names",
    "init_weights_from",
    "rng_state",
    "set_rng_state",
]

CHECKPOINT_FORMAT = "kmunet-checkpoint"
#: State-dict prefix of KM-UNet's deep-supervision heads (training-only outputs).
AUX_PREFIX = "aux_heads."
FORMAT_VERSION = 1


def save_checkpoint(payload: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``payload`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(dict(payload), tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_torch_file(path: str | Path, map_location: str | torch.device = "cpu", what: str = "kmunet checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` (no code can run) with one-line errors naming the file.

    Shared by every kmunet checkpoint reader (segmentation models, the learned resampler).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not a PyTorch file, or one ``weights_only`` refuses (``what`` names the expected kind).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is not a checkpoint
        raise ValueError(f"{path}: not a PyTorch checkpoint file (truncated, or another kind of file)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle errors, truncated files, disallowed globals
        raise ValueError(f"{path}: not a loadable {what} ({first_line(err)})") from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a kmunet checkpoint with ``torch.load(weights_only=True)`` (no code can run).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable kmunet checkpoint (the message names the file).
    """
    ckpt = load_torch_file(path, map_location, "kmunet checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        from kmunet.inr.prior import CHECKPOINT_FORMAT as RESAMPLER_FORMAT

        hint = ""
        if isinstance(ckpt, dict) and isinstance(ckpt.get("config"), dict) and ckpt["config"].get("format") == RESAMPLER_FORMAT:
            hint = "; it is a learned resampler: use it with kmunet resample --prior"
        raise ValueError(f"{path}: not a kmunet segmentation checkpoint (missing format={CHECKPOINT_FORMAT!r}){hint}")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {ckpt['format_version']} is newer than this kmunet supports")
    for key in ("state_dict", "config"):
        if key not in ckpt:
            raise ValueError(f"{path}: kmunet checkpoint lacks {key!r}")
    return ckpt


def stored_config(ckpt: Mapping[str, Any], path: str | Path) -> ExperimentConfig:
    """The :class:`ExperimentConfig` a loaded checkpoint stores.

    Raises:
        ValueError: this kmunet cannot read it (an unknown key, e.g. from a newer kmunet, or a bad
            value); the message names ``path`` and this kmunet's version.
    """
    try:
        return from_dict(ExperimentConfig, ckpt["config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: stored config not understood by kmunet {__version__} ({first_line(err)})") from None


def model_from_checkpoint(
    checkpoint: str | Path | Mapping[str, Any], device: str | torch.device = "cpu"
) -> tuple[nn.Module, ExperimentConfig]:
    """Rebuild the network of a checkpoint and load its weights (eval mode).

    Args:
        checkpoint: a path or an already loaded checkpoint dict.
        device: where to put the model.

    Returns:
        ``(model, config)``.

    Raises:
        ValueError: an unreadable checkpoint, or a stored config this kmunet does not understand (the
            message names the file; ``"checkpoint"`` for a dict).
    """
    if isinstance(checkpoint, (str, Path)):
        return _model_and_config(load_checkpoint(checkpoint), checkpoint, device)
    return _model_and_config(checkpoint, "checkpoint", device)


def _model_and_config(
    ckpt: Mapping[str, Any], path: str | Path, device: str | torch.device
) -> tuple[nn.Module, ExperimentConfig]:
    """:func:`model_from_checkpoint` of a loaded checkpoint read from ``path`` (named in errors)."""
    from kmunet.networks import build_network

    config = stored_config(ckpt, path)
    model = build_network(config.network)
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval(), config


def split_settings(data: Any, training_cases: bool = False) -> dict[str, Any]:
    """The ``data`` settings that decide the train/validation split of a dataset folder.

    :func:`kmunet.data.discovery.split_cases` permutes the sorted case names with ``seed`` and takes
    ``val_fraction`` of them, or fold ``fold`` of ``num_folds``; only the settings in use are returned.
    Ensemble members scored together on a validation split must agree on them, otherwise one
    member's training cases are another's validation cases. With ``training_cases`` the
    ``train_fraction`` that picks the training subset is included too (scoring the training cases).
    """
    if data.fold is None:
        settings = {"data.seed": data.seed, "data.fold": None, "data.val_fraction": data.val_fraction}
    else:
        settings = {"data.seed": data.seed, "data.fold": data.fold, "data.num_folds": data.num_folds}
    if training_cases:
        settings["data.train_fraction"] = data.train_fraction
    return settings


def checkpoint_paths(checkpoints: str | Path | Sequence[str | Path]) -> list[str | Path]:
    """``checkpoints`` as a list: one path, or the members of an ensemble."""
    return [checkpoints] if isinstance(checkpoints, (str, Path)) else list(checkpoints)


def checkpoint_preprocessing(ckpt: Mapping[str, Any], config: ExperimentConfig) -> dict[str, Any]:
    """The preprocessing params of a loaded checkpoint (see :func:`kmunet.data.preprocessing_params`).

    The params it stores, over those its config implies: a checkpoint written before a key existed
    (``clahe``, ``mirror_axes``) gets the value its own config stands for.
    """
    from kmunet.data import preprocessing_params

    return {**preprocessing_params(config), **(ckpt.get("preprocessing") or {})}


def checkpoint_class_names(ckpt: Mapping[str, Any], params: Mapping[str, Any]) -> list[str]:
    """A checkpoint's class names: those it stores, else its preprocessing ``params``' ones."""
    return list(ckpt.get("class_names") or params["class_names"])


def models_from_checkpoints(
    checkpoints: str | Path | Sequence[str | Path],
    device: str | torch.device = "cpu",
    *,
    scored_split: str | None = None,
) -> tuple[nn.Module, ExperimentConfig, list[dict[str, Any]]]:
    """One network, or the :class:`~kmunet.networks.ProbabilityEnsemble` of several, from checkpoints.

    Members must preprocess alike and predict the same classes (their :func:`checkpoint_preprocessing`
    and ``class_names`` are equal), so one pipeline feeds them all and their probabilities can be
    averaged. Their training patch sizes may differ: each member then keeps its own sliding window
    (:attr:`~kmunet.networks.ProbabilityEnsemble.windows`).

    Args:
        checkpoints: one path, or several (an ensemble, e.g. the models of several folds or seeds).
        device: where to put the model(s).
        scored_split: the split the ensemble will be scored on (``"val"`` or ``"train"``), or ``None``
            (new scans). Scoring needs equal train/validation splits (:func:`split_settings`), and
            ``"train"`` also the same training subset (``data.train_fraction``).

    Returns:
        ``(model, config, ckpts)``: the network (eval mode), the first member's config, and every
        loaded checkpoint dict in order.

    Raises:
        FileNotFoundError: a checkpoint does not exist.
        ValueError: no checkpoint given, an unknown ``scored_split``, an unreadable checkpoint, or
            members that disagree (the message names the file and the settings that differ).
    """
    from kmunet.data.loaders import check_split
    from kmunet.networks import ProbabilityEnsemble

    if scored_split is not None:
        check_split(scored_split)
    paths = checkpoint_paths(checkpoints)
    if not paths:
        raise ValueError("no checkpoint given")
    ckpts, models, configs, compared, windows = [], [], [], [], []
    for path in paths:
        ckpt = load_checkpoint(path, map_location="cpu")
        try:
            model, config = _model_and_config(ckpt, path, device)  # ValueError: a config this kmunet cannot read
        except (RuntimeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: weights do not match the stored network config ({first_line(err)})") from None
        settings = checkpoint_preprocessing(ckpt, config)
        settings.pop("version", None)
        settings["class_names"] = checkpoint_class_names(ckpt, settings)
        windows.append(settings.pop("patch_size", None) or list(config.data.patch_size))
        if scored_split is not None:
            settings.update(split_settings(config.data, training_cases=scored_split == "train"))
        ckpts.append(ckpt)
        models.append(model)
        configs.append(config)
        compared.append(settings)
    for path, other in zip(paths[1:], compared[1:]):
        differ = sorted(k for k in set(compared[0]) | set(other) if compared[0].get(k) != other.get(k))
        if differ:
            why = ""
            if all(k.startswith("data.") for k in differ):  # the split: why it matters depends on what is scored
                why = ("; scoring the training cases needs members trained on the same cases"
                       if scored_split == "train" else "; scoring needs a validation split that no member trained on")
            raise ValueError(f"{path}: cannot be ensembled with {paths[0]}: they differ in {', '.join(differ)}{why}")
    model = models[0] if len(models) == 1 else ProbabilityEnsemble(models, windows=windows).eval()
    return model, configs[0], ckpts


def init_weights_from(model: nn.Module, checkpoint: str | Path, network: NetworkConfig) -> int:
    """Initialise ``model`` with the weights of a kmunet checkpoint (fine-tuning).

    Args:
        model: the freshly built network of ``network``.
        checkpoint: path of a kmunet checkpoint (``best.pt``, ``last.pt`` or a shipped model).
        network: the :class:`~kmunet.config.NetworkConfig` ``model`` was built from.

    Returns:
        The epoch the checkpoint was saved at (``-1`` when it does not say).

    Raises:
        FileNotFoundError: the checkpoint does not exist.
        ValueError: not a kmunet checkpoint, or its weights do not fit ``model`` (the message names the
            file and the network settings that differ; ``deep_supervision`` alone may differ).
    """
    ckpt = load_checkpoint(checkpoint)
    state = ckpt["state_dict"]
    ours = model.state_dict()
    # deep-supervision heads may differ (fine-tuning a plain model with them, or the other way round):
    # heads the checkpoint lacks keep their fresh initialisation, heads the model lacks are dropped
    state = {k: v for k, v in state.items() if not k.startswith(AUX_PREFIX) or k in ours}
    state.update({k: v for k, v in ours.items() if k.startswith(AUX_PREFIX) and k not in state})
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        saved = ckpt["config"].get("network", {})
        mine = to_dict(network)
        differ = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k) and k != "deep_supervision")
        detail = f"network settings differ: {', '.join(differ)}" if differ else first_line(err)
        raise ValueError(f"{checkpoint}: weights do not fit this network ({detail})") from None
    return int(ckpt.get("epoch", -1))


def rng_state() -> dict[str, Any]:
    """Torch (CPU and CUDA), NumPy and Python RNG states as tensors and plain lists."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def add_data_summary(path: str | Path, data_root: str | Path | None = None) -> dict[str, list[float]]:
    """Store the training data's voxel-size / shape range in a checkpoint made before it was recorded.

    Runs :func:`kmunet.data.validate_dataset` over the checkpoint's own dataset (its config's
    ``data.root``, or ``data_root``) and rewrites the file atomically with ``"data_summary"`` added;
    weights and everything else are unchanged. ``kmunet predict`` uses it to warn about inputs unlike
    the training data (:func:`kmunet.data.domain_warning`).

    Returns:
        The summary written.
    """
    from dataclasses import replace

    from kmunet.data import training_data_summary, validate_dataset

    ckpt = load_checkpoint(path)
    config = stored_config(ckpt, path)
    if data_root is not None:
        config = replace(config, data=replace(config.data, root=str(data_root)))
    report = validate_dataset(None, config)
    if not report.ok:
        raise ValueError(f"{report.root}: dataset has {len(report.fatal)} fatal problem(s); run kmunet validate-data")
    summary = training_data_summary(report.summary)
    save_checkpoint({**ckpt, "data_summary": summary}, path)
    return summary
