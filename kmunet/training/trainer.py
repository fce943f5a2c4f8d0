"""Training loop: Dice + cross-entropy on a MONAI pipeline, AMP, DDP, resume, checkpoints, logs.

One function, :func:`train`, runs the whole experiment described by an
:class:`~kmunet.config.ExperimentConfig`; under ``torchrun`` it runs data-parallel (DDP: NCCL on GPU,
Gloo on CPU) with distributed samplers and only rank 0 writes. Every epoch re-seeds shuffling and
augmentation from ``(train.seed, epoch, rank)``, so ``resume=True`` continues exactly where an
interrupted run stopped (a run killed mid-epoch loses at most that epoch).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from kmunet import __version__
from kmunet.config import ExperimentConfig, save_config, to_dict
from kmunet.runtime import resolve_device, tune_cpu_allocator
from kmunet.training.checkpoint import (
    CHECKPOINT_FORMAT,
    FORMAT_VERSION,
    init_weights_from,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    stored_config,
)
from kmunet.training.ema import ModelEMA
from kmunet.training.losses import segmentation_loss
from kmunet.training.schedule import AmpSettings, amp_settings, lr_factor

__all__ = ["TrainResult", "train", "evaluate", "segmentation_sums", "metrics_from_sums"]


@dataclass
class TrainResult:
    """What :func:`train` returns (rank 0 has the metrics; other ranks get the same paths)."""

    output_dir: Path
    best_metric: float
    best_epoch: int
    dice_per_class: dict[str, float]
    epochs_run: int
    seconds_per_epoch: float
    best_checkpoint: Path
    last_checkpoint: Path
    parameters: int
    history: list[dict[str, float]] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Distributed helpers
# ----------------------------------------------------------------------------------------------


def distributed_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the torchrun environment (1 process otherwise)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _all_reduce(t: torch.Tensor, world_size: int) -> torch.Tensor:
    if world_size > 1:
        dist.all_reduce(t)
    return t


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------


def _sums_length(num_classes: int) -> int:
    """Length of the :func:`segmentation_sums` vector: Dice sums and counts per class, then TP / FP / FN."""
    return 2 * (num_classes - 1) + 3


def segmentation_sums(pred: torch.Tensor, label: torch.Tensor, num_classes: int,
                      fov: torch.Tensor | None = None) -> torch.Tensor:
    """Scores of a batch of label maps, as sums that add up over batches (see :func:`metrics_from_sums`).

    Args:
        pred: ``(B, 1, *spatial)`` integer predicted labels.
        label: ``(B, 1, *spatial)`` integer reference labels.
        num_classes: ``C``, background included.
        fov: optional ``(B, 1, *spatial)`` field-of-view mask (2-class tasks: DRIVE's vessel F1).

    Returns:
        ``(2 * (C - 1) + 3,)`` float64: per-class sums of per-case Dice, per-class counts of cases where
        Dice is defined, then TP / FP / FN of class 1 inside the FOV (zeros without one).
    """
    from monai.metrics import compute_dice

    sums = torch.zeros(_sums_length(num_classes), dtype=torch.float64)
    pred, label = pred.long(), label.long()
    shape = (pred.shape[0], num_classes, *pred.shape[2:])
    onehot_pred = torch.zeros(shape, device=pred.device).scatter_(1, pred, 1.0)
    onehot_label = torch.zeros(shape, device=pred.device).scatter_(1, label, 1.0)
    dice = compute_dice(onehot_pred, onehot_label, include_background=False)  # (B, C - 1), NaN for empty
    valid = torch.isfinite(dice)
    sums[: num_classes - 1] += torch.where(valid, dice, 0.0).sum(0).double().cpu()
    sums[num_classes - 1 : 2 * (num_classes - 1)] += valid.sum(0).double().cpu()
    if fov is not None and num_classes == 2:
        inside = fov > 0
        p, t = (pred == 1) & inside, (label == 1) & inside
        sums[-3] += (p & t).sum().item()
        sums[-2] += (p & ~t).sum().item()
        sums[-1] += (~p & t).sum().item()
    return sums


@torch.no_grad()
def _case_sums(
    model: nn.Module,
    loader: Iterable[dict],
    config: ExperimentConfig,
    device: torch.device,
    amp: AmpSettings,
    mirror_axes: Sequence[int] = (),
) -> torch.Tensor:
    """:func:`segmentation_sums` of argmax sliding-window predictions, one row per batch (case).

    Returns:
        ``(N, L)`` float64, in loader order (``N = 0`` for an empty loader); ``.sum(0)`` pools the cases.
    """
    from kmunet.inference.tta import sliding_window_probabilities

    num_classes = config.network.out_channels
    rows = [torch.zeros(0, _sums_length(num_classes), dtype=torch.float64)]
    model.eval()
    for batch in loader:
        image = batch["image"].to(device)
        with torch.autocast(device.type, dtype=amp.dtype or torch.float32, enabled=amp.dtype is not None):
            probs = sliding_window_probabilities(
                image, tuple(config.data.patch_size), config.train.sw_batch_size, model,
                overlap=config.train.sw_overlap, mirror_axes=mirror_axes,
            )
        fov = batch["fov"].to(device) if "fov" in batch else None
        rows.append(segmentation_sums(probs.argmax(1, keepdim=True), batch["label"].to(device), num_classes, fov)[None])
    return torch.cat(rows)


def metrics_from_sums(sums: torch.Tensor, class_names: Sequence[str]) -> dict[str, Any]:
    """Turn :func:`segmentation_sums` (added over cases) into ``{"dice", "mean_dice"[, "f1_fov"]}``."""
    n = len(class_names) - 1
    dice = {name: (sums[i] / sums[n + i]).item() if sums[n + i] > 0 else float("nan") for i, name in enumerate(class_names[1:])}
    finite = [v for v in dice.values() if not math.isnan(v)]
    metrics: dict[str, Any] = {"dice": dice, "mean_dice": float(np.mean(finite)) if finite else float("nan")}
    tp, fp, fn = sums[-3].item(), sums[-2].item(), sums[-1].item()
    if tp + fp + fn > 0:
        metrics["f1_fov"] = 2 * tp / (2 * tp + fp + fn)
    return metrics


def evaluate(
    model: nn.Module,
    loader: Iterable[dict],
    config: ExperimentConfig,
    device: torch.device | str = "cpu",
    amp: AmpSettings = AmpSettings(None, False),
    mirror_axes: Sequence[int] = (),
    per_case: bool = False,
) -> dict[str, Any]:
    """Per-class Dice (MONAI ``compute_dice`` on argmax predictions from ``sliding_window_inference``).

    Args:
        model: the network (put in eval mode).
        loader: validation batches (``image``, ``label``, optionally ``fov``) with batch size 1.
        config: the experiment config (patch size, sliding-window settings, class names).
        device: where the network runs.
        amp: mixed-precision settings.
        mirror_axes: spatial axes for mirroring test-time augmentation (``()``: none); see
            :func:`kmunet.inference.tta.sliding_window_probabilities`.
        per_case: also return each case's own scores.

    Returns:
        ``{"dice": {class: mean over cases}, "mean_dice": float}`` and, for 2-class tasks whose loader
        yields a field-of-view mask (DRIVE), ``"f1_fov"``: pixel F1 of the foreground inside the FOV
        (pooled over the cases). With ``per_case``, ``"per_case"``: one such dict per batch (case), in
        loader order, with NaN for a class absent from the case's reference (and left out of its
        ``mean_dice``).
    """
    names = list(config.data.class_names)
    rows = _case_sums(model, loader, config, torch.device(device), amp, mirror_axes)
    metrics = metrics_from_sums(rows.sum(0), names)
    if per_case:
        metrics["per_case"] = [metrics_from_sums(row, names) for row in rows]
    return metrics


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def _seed_epoch(seed: int, epoch: int, rank: int, loader: Any) -> None:
    """Re-seed shuffling and augmentation from ``(seed, epoch, rank)`` (what makes resume exact)."""
    from monai.data.utils import set_rnd

    s = (seed * 100_003 + epoch * 1_009 + rank) % (2**31 - 1)
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)
    set_rnd(loader.dataset, s)
    if getattr(loader, "generator", None) is not None:
        loader.generator.manual_seed(s)
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)


def _make_optimizer(model: nn.Module, config: ExperimentConfig, total_steps: int, warmup_steps: int, step: int):
    tc = config.train
    if tc.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            model.parameters(), lr=tc.lr, momentum=tc.momentum, nesterov=tc.momentum > 0, weight_decay=tc.weight_decay
        )
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    for group in opt.param_groups:
        group["initial_lr"] = tc.lr
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total_steps, warmup_steps, tc.schedule), last_epoch=step - 1
    )
    return opt, sched


#: Settings a resumed run may change: how long it trains and where, how it validates and loads data.
#: Everything else (network, split, augmentation, optimisation) must match the run it continues.
RESUME_MAY_CHANGE: frozenset[str] = frozenset({
    "name", "train.epochs", "train.output_dir", "train.device", "train.amp", "train.val_every",
    "train.sw_batch_size", "train.init_from", "train.deterministic", "data.cache", "data.cache_dir",
    "data.num_workers", "network.kan.grid_size",  # the grid size grows with grid extension
})


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, f"{key}.") if isinstance(v, dict) else {key: v})
    return out


def _check_resume_config(asked: ExperimentConfig, saved: ExperimentConfig, path: Path) -> None:
    """Refuse to resume with settings other than :data:`RESUME_MAY_CHANGE` changed (``ValueError``).

    A changed split would leak training cases into validation, a changed learning rate would be
    overridden by the restored optimizer and scheduler while the saved config claimed it: both are
    refused, naming every changed key.
    """
    a, b = _flat(to_dict(asked)), _flat(to_dict(saved))
    for d in (a, b):  # the same folder typed differently is the same data
        if d.get("data.root"):
            d["data.root"] = str(Path(d["data.root"]).resolve())
    diff = [k for k in sorted(set(a) | set(b)) if k not in RESUME_MAY_CHANGE and a.get(k) != b.get(k)]
    if diff:
        detail = ", ".join(f"{k}: {b.get(k)!r} in the run, {a.get(k)!r} asked" for k in diff)
        raise ValueError(f"{path}: cannot resume with changed settings ({detail}); resume with the run's "
                         f"config ({path.parent / 'config.yaml'}) or start a new --output")


#: Files a run writes into its output folder: a folder holding one of them holds a run.
RUN_FILES: tuple[str, ...] = ("last.pt", "best.pt", "config.yaml", "metrics.csv")


def run_files(folder: Path) -> list[str]:
    """The :data:`RUN_FILES` present in ``folder`` (empty: it holds no run)."""
    return [name for name in RUN_FILES if (folder / name).exists()]


def _check_output(output: Path, resume: bool) -> None:
    """Refuse an output path that is a file, or (without ``resume``) a folder that already holds a run."""
    if output.exists() and not output.is_dir():
        raise ValueError(f"{output}: exists and is not a folder; choose another --output")
    if not resume and output.is_dir():
        found = run_files(output)
        if found:
            raise ValueError(f"{output}: already holds a run ({', '.join(found)}); pass --resume to continue "
                             "it, or choose a new --output (or remove the folder)")


def _prepare_data_root(config: ExperimentConfig, output: Path, rank: int) -> ExperimentConfig:
    """An empty ``data.root`` means: generate the built-in synthetic dataset into ``output/data``."""
    if config.data.root:
        return config
    from kmunet.data import make_synthetic_dataset

    root = output / "data"
    if rank == 0 and not (root / "dataset.json").is_file():
        make_synthetic_dataset(root, n_cases=12, shape=(32, 32, 32), spatial_dims=config.network.spatial_dims, seed=0)
    if dist.is_initialized():
        dist.barrier()
    return dataclasses.replace(config, data=dataclasses.replace(config.data, root=str(root)))


def _write_csv(history: list[dict[str, Any]], path: Path) -> None:
    keys: list[str] = []
    for row in history:
        keys.extend(k for k in row if k not in keys)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, path)


def _plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(epochs, [r["train_loss"] for r in history], label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss")  # Dice + CE, averaged over deep-supervision levels
    ax1.legend()
    val_keys = [k for k in history[-1] if k.startswith("val_")]
    for key in val_keys:
        pts = [(r["epoch"], r[key]) for r in history if key in r and not math.isnan(r[key])]
        if pts:
            ax2.plot(*zip(*pts), marker="o", ms=3, label=key[4:])
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation")
    ax2.set_ylim(0, 1)
    if ax2.lines:  # no validation (data.val_fraction 0): nothing to label
        ax2.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def train(config: ExperimentConfig, resume: bool = False, device: str | None = None, progress: bool = True) -> TrainResult:
    """Train the network of ``config`` with Dice + cross-entropy (plus the optional KAN regulariser).

    Args:
        config: the resolved experiment config (``train.output_dir`` receives everything).
        resume: continue from ``output_dir/last.pt`` (same epoch, optimizer, scheduler, scaler, RNG,
            and with ``train.ema_decay`` the weight average and its update count).
        device: overrides ``train.device`` (``"auto"``, ``"cpu"``, ``"cuda"``).
        progress: show the per-epoch tqdm bar (off: only the one-line epoch summaries, for log files).

    A run that stops before writing its first checkpoint (a bad setting, a missing ``init_from``
    file, Ctrl-C in the first epoch) removes its output folder if this call created it, so a failed
    start leaves nothing half-made behind; an existing folder is never removed.

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: the dataset has fatal problems (``kmunet validate-data`` lists them), a bad config,
            an output path that is a file or (without ``resume``) a folder that already holds a run, or
            a resume with settings other than :data:`RESUME_MAY_CHANGE` changed.
        FileNotFoundError: ``resume`` without ``last.pt``.
    """
    from tqdm import tqdm

    from kmunet.data import build_dataloaders, preprocessing_params, training_data_summary, validate_dataset
    from kmunet.kan import extend_model_grids, kan_layers, kan_regularization, update_model_grids
    from kmunet.networks import build_network, count_parameters

    tc = config.train
    if len(config.data.class_names) != config.network.out_channels:
        raise ValueError(
            f"data.class_names has {len(config.data.class_names)} names but network.out_channels is "
            f"{config.network.out_channels}"
        )
    rank, world_size, local_rank = distributed_env()
    dev = resolve_device(device or tc.device)
    own_group = False
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        own_group = True
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank if world_size > 1 else (dev.index or 0))
        torch.cuda.set_device(dev)
    else:
        tune_cpu_allocator()
    if tc.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    output = Path(tc.output_dir)
    is_main = rank == 0
    _check_output(output, resume)
    if dist.is_initialized():
        dist.barrier()  # every rank checks the folder before rank 0 writes into it
    fresh_output = not output.exists()  # a run that fails before its first checkpoint removes what it made
    try:
        config = _prepare_data_root(config, output, rank)
        report = validate_dataset(None, config)
        if not report.ok:
            first = report.fatal[0]
            raise ValueError(
                f"dataset {report.root} has {len(report.fatal)} fatal problem(s), first: {first.file}: "
                f"{first.message} (run `kmunet validate-data` for the full list)"
            )
        if is_main and report.warnings:  # e.g. images without a label, which training leaves out
            shown = "; ".join(f"{w.file}: {w.message}" for w in report.warnings[:3])
            more = f" (+{len(report.warnings) - 3} more: run `kmunet validate-data`)" if len(report.warnings) > 3 else ""
            print(f"warning: dataset {report.root}: {len(report.warnings)} warning(s): {shown}{more}", file=sys.stderr)
        train_loader, val_loader, info = build_dataloaders(config, rank=rank, world_size=world_size)
        class_names = list(config.data.class_names)
        steps_per_epoch = len(train_loader)
        total_steps = tc.epochs * steps_per_epoch
        warmup_steps = tc.warmup_epochs * steps_per_epoch

        start_epoch, step, best_metric, best_epoch, history = 0, 0, -math.inf, -1, []
        ckpt: dict[str, Any] | None = None
        if resume:
            ckpt = load_checkpoint(output / "last.pt", map_location="cpu")
            if "optimizer" not in ckpt:
                raise ValueError(f"{output / 'last.pt'}: no resume state in this checkpoint")
            saved = stored_config(ckpt, output / "last.pt")
            _check_resume_config(config, saved, output / "last.pt")
            config = dataclasses.replace(config, network=saved.network)  # grid size may have been extended
        torch.manual_seed(tc.seed)
        model = build_network(config.network).to(dev)
        amp = amp_settings(dev, tc.amp)
        scaler = torch.amp.GradScaler("cuda") if amp.use_scaler else None
        ema: ModelEMA | None = None
        if ckpt is not None:
            # with weight averaging, state_dict holds the average and train_state_dict the raw weights
            model.load_state_dict(ckpt.get("train_state_dict", ckpt["state_dict"]))
            if tc.ema_decay > 0:
                ema = ModelEMA(model, tc.ema_decay)
                ema.module.load_state_dict(ckpt["state_dict"])
                ema.updates = int(ckpt.get("ema_updates", ckpt["step"]))
            start_epoch, step = ckpt["epoch"] + 1, ckpt["step"]
            best_metric, best_epoch, history = ckpt["best_metric"], ckpt["best_epoch"], list(ckpt["history"])
            if start_epoch >= tc.epochs and is_main:
                print(f"{output / 'last.pt'}: the run already finished epoch {start_epoch} of {tc.epochs}; "
                      "nothing to resume (raise --epochs to train on)")
        elif tc.init_from:
            init_epoch = init_weights_from(model, tc.init_from, config.network)
            if is_main:
                saved_at = f"epoch {init_epoch + 1}" if init_epoch >= 0 else "epoch not recorded"
                print(f"initialised from {tc.init_from} ({saved_at}); optimizer and schedule start afresh")
        if ema is None and tc.ema_decay > 0:
            ema = ModelEMA(model, tc.ema_decay)
        opt, sched = _make_optimizer(model, config, total_steps, warmup_steps, step)
        if ckpt is not None:
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            if scaler is not None and ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            set_rng_state(ckpt["rng"])
        ddp = world_size > 1
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None) if ddp else model
        # one loss for plain logits and for deep supervision's [logits, aux_1, ...] (weights 2^-l normalised
        # to sum to 1; each auxiliary output is scored against the label sampled on its own grid)
        loss_fn = segmentation_loss(tc, getattr(model, "aux_strides", ()))  # MONAI's UNet has no auxiliary outputs
        has_kan = any(True for _ in kan_layers(model))
        extend_at = dict(tc.grid_extend)

        writer = None
        if is_main:
            output.mkdir(parents=True, exist_ok=True)
            save_config(config, output / "config.yaml")
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(output / "tensorboard"))
            print(
                f"training {config.network.name} ({count_parameters(model):,} parameters) on {dev}"
                f"{f' x{world_size} processes' if ddp else ''}: {info['n_train']} train / {info['n_val']} "
                f"validation cases, {steps_per_epoch} steps per epoch -> {output}"
            )

        preprocessing = preprocessing_params(config)
        data_summary = training_data_summary(report.summary)
        epoch_seconds: list[float] = []
        last_metrics: dict[str, Any] = {}
        for epoch in range(start_epoch, tc.epochs):
            t0 = time.perf_counter()
            _seed_epoch(tc.seed, epoch, rank, train_loader)
            if has_kan and (epoch in tc.grid_update_epochs or epoch in extend_at):
                if epoch in tc.grid_update_epochs:
                    update_model_grids(model, next(iter(train_loader))["image"].to(dev))
                    if ddp:
                        for t in model.state_dict().values():
                            dist.broadcast(t, 0)
                if epoch in extend_at:
                    extend_model_grids(model, extend_at[epoch])
                    kan_cfg = dataclasses.replace(config.network.kan, grid_size=extend_at[epoch])
                    config = dataclasses.replace(config, network=dataclasses.replace(config.network, kan=kan_cfg))
                model.to(dev)
                opt, sched = _make_optimizer(model, config, total_steps, warmup_steps, step)  # new parameter shapes
                if ema is not None:
                    ema.reset(model)  # averaging coefficients of other grids (or shapes) would mean nothing
                net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None) if ddp else model
            net.train()
            running, count = 0.0, 0
            bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{tc.epochs}", disable=not (is_main and progress), leave=False, dynamic_ncols=True)
            for batch in bar:
                image, label = batch["image"].to(dev), batch["label"].to(dev)
                with torch.autocast(dev.type, dtype=amp.dtype or torch.float32, enabled=amp.dtype is not None):
                    loss = loss_fn(net(image), label.float())
                    if has_kan and tc.kan_reg_weight > 0:
                        loss = loss + tc.kan_reg_weight * kan_regularization(model, tc.kan_reg_mu1, tc.kan_reg_mu2)
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)
                else:
                    loss.backward()
                if tc.grad_clip > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                if ema is not None:
                    ema.update(model)
                sched.step()
                step += 1
                running += loss.item()
                count += 1
                bar.set_postfix(loss=f"{running / count:.4f}", lr=f"{sched.get_last_lr()[0]:.2e}")
            train_loss = _all_reduce(torch.tensor([running, count], dtype=torch.float64), world_size)
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "train_loss": (train_loss[0] / max(train_loss[1], 1)).item(),
                "lr": sched.get_last_lr()[0],
            }
            validate = (epoch + 1) % tc.val_every == 0 or epoch + 1 == tc.epochs
            improved = False
            if validate:
                scored = ema.module if ema is not None else model
                sums = _all_reduce(_case_sums(scored, val_loader, config, dev, amp).sum(0), world_size)
                last_metrics = metrics_from_sums(sums, class_names)
                score = last_metrics.get("f1_fov", last_metrics["mean_dice"])
                for name, value in last_metrics["dice"].items():
                    row[f"val_dice_{name}"] = value
                row["val_mean_dice"] = last_metrics["mean_dice"]
                if "f1_fov" in last_metrics:
                    row["val_f1_fov"] = last_metrics["f1_fov"]
                if not math.isnan(score) and score > best_metric:
                    best_metric, best_epoch, improved = score, epoch + 1, True
            row["seconds"] = time.perf_counter() - t0
            epoch_seconds.append(row["seconds"])
            history.append(row)
            if is_main:
                payload = {
                    "format": CHECKPOINT_FORMAT,
                    "format_version": FORMAT_VERSION,
                    "kmunet_version": __version__,
                    "state_dict": (ema.module if ema is not None else model).state_dict(),
                    "config": to_dict(config),
                    "class_names": class_names,
                    "preprocessing": preprocessing,
                    "data_summary": data_summary,
                    "epoch": epoch,
                    "step": step,
                    "metrics": last_metrics,
                    "best_metric": best_metric,
                    "best_epoch": best_epoch,
                    "history": history,
                }
                if improved:
                    save_checkpoint(payload, output / "best.pt")
                resume_state = {
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "rng": rng_state(),
                }
                if ema is not None:
                    resume_state.update(train_state_dict=model.state_dict(), ema_updates=ema.updates)
                save_checkpoint({**payload, **resume_state}, output / "last.pt")
                save_config(config, output / "config.yaml")
                _write_csv(history, output / "metrics.csv")
                for key, value in row.items():
                    if key != "epoch" and isinstance(value, float) and not math.isnan(value):
                        writer.add_scalar(key.replace("val_", "val/").replace("train_", "train/"), value, epoch + 1)
                writer.flush()
                summary = ", ".join(f"{k}={v:.4f}" for k, v in row.items() if k not in ("epoch",) and isinstance(v, float))
                print(f"epoch {epoch + 1}/{tc.epochs}: {summary}{' (best)' if improved else ''}", flush=True)
        if is_main:
            if history:
                _plot_curves(history, output / "curves.png")
            if writer is not None:
                writer.close()
        best_ckpt = output / "best.pt"
        dice = {}
        if is_main and best_ckpt.is_file():
            dice = dict(load_checkpoint(best_ckpt)["metrics"].get("dice", {}))
        if dist.is_initialized():
            dist.barrier()  # leave together: tearing gloo down while a peer still works can abort the process
        return TrainResult(
            output_dir=output,
            best_metric=best_metric,
            best_epoch=best_epoch,
            dice_per_class=dice,
            epochs_run=len(epoch_seconds),
            seconds_per_epoch=float(np.mean(epoch_seconds)) if epoch_seconds else 0.0,
            best_checkpoint=best_ckpt,
            last_checkpoint=output / "last.pt",
            parameters=count_parameters(model),
            history=history,
        )
    except BaseException:
        if is_main and fresh_output and output.is_dir() and not any((output / n).exists() for n in ("last.pt", "best.pt")):
            shutil.rmtree(output, ignore_errors=True)  # e.g. only the generated synthetic data/ folder
        raise
    finally:
        if own_group:
            dist.destroy_process_group()
