"""Datasets (plain, CacheDataset, PersistentDataset) and DataLoaders with distributed samplers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import torch
from monai.data import CacheDataset, DataLoader, Dataset, DistributedSampler, PersistentDataset
from monai.transforms import Compose

from kmunet.config import ExperimentConfig
from kmunet.data.discovery import discover_cases, split_cases
from kmunet.data.transforms import build_train_transforms, build_val_transforms, preprocessing_params

#: Valid values of ``DataConfig.cache``.
CACHE_MODES: tuple[str, ...] = ("memory", "disk", "none")


def cache_dir_for(config: ExperimentConfig) -> Path:
    """Disk-cache folder: ``data.cache_dir`` (default ``<train.output_dir>/cache``) / preprocessing hash.

    The sub-folder is named after a hash of :func:`preprocessing_params`, so changing the
    preprocessing never reuses stale cached items.
    """
    base = Path(config.data.cache_dir) if config.data.cache_dir else Path(config.train.output_dir) / "cache"
    digest = hashlib.sha1(json.dumps(preprocessing_params(config), sort_keys=True).encode()).hexdigest()[:12]
    return base / digest


def make_dataset(items: Sequence[dict[str, Any]], transform: Compose, config: ExperimentConfig,
                 role: str = "train") -> Dataset:
    """Wrap ``items`` in the dataset class selected by ``data.cache``.

    ``"memory"`` = ``CacheDataset`` (deterministic prefix cached in RAM), ``"disk"`` =
    ``PersistentDataset`` under :func:`cache_dir_for` ``/ role``, ``"none"`` = plain ``Dataset``.
    ``role`` (``"train"`` or ``"val"``) keeps one cache per pipeline: MONAI names a cached item by the
    item alone, so a case that is a training case in one fold and a validation case in another must
    not find the other pipeline's output.

    Raises:
        ValueError: unknown cache mode (lists the valid ones).
    """
    mode = config.data.cache
    if mode == "memory":
        return CacheDataset(list(items), transform, num_workers=max(config.data.num_workers, 1), progress=False)
    if mode == "disk":
        if role not in ("train", "val"):
            raise ValueError(f"unknown dataset role {role!r}; valid: ['train', 'val']")
        folder = cache_dir_for(config) / role
        folder.mkdir(parents=True, exist_ok=True)
        return PersistentDataset(list(items), transform, cache_dir=folder)
    if mode == "none":
        return Dataset(list(items), transform)
    raise ValueError(f"unknown data.cache {mode!r}; valid: {list(CACHE_MODES)}")


def _item(case: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {"name": case["name"], **{k: case[k] for k in keys if k in case}}


def _val_dataset(val_cases: list[dict[str, Any]], config: ExperimentConfig, params: dict[str, Any]) -> Dataset:
    """Validation dataset of full images (with the FOV masks of DRIVE-like layouts)."""
    with_fov = bool(val_cases) and all("fov" in c for c in val_cases) and params["layout"] == "drive"
    val_keys = ("image", "label", "fov") if with_fov else ("image", "label")
    val_tf = build_val_transforms(config, with_fov=with_fov)
    return make_dataset([_item(c, val_keys) for c in val_cases], val_tf, config, role="val")


#: Valid ``split`` values of :func:`build_val_loader`.
EVAL_SPLITS: tuple[str, ...] = ("val", "train")


def check_split(split: str) -> None:
    """``ValueError`` listing :data:`EVAL_SPLITS` unless ``split`` is one of them."""
    if split not in EVAL_SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {list(EVAL_SPLITS)}")


def build_val_loader(
    config: ExperimentConfig, cases: list[dict[str, Any]] | None = None, split: str = "val"
) -> tuple[DataLoader, list[str]]:
    """The validation split of :func:`build_dataloaders` alone (nothing of the training split is loaded).

    Same seeded split (``data.seed``, ``data.val_fraction`` or ``data.fold``) and the same batches as
    the validation loader of :func:`build_dataloaders`. ``split="train"`` gives the training cases of
    that split through the same validation transforms (full images, no augmentation), e.g. to choose a
    post-processing setting without looking at the validation cases.

    Returns:
        ``(loader, names)``: batch size 1 loader and the case names.

    Raises:
        ValueError: unknown ``split`` (lists the valid ones) or no labelled case in it.
    """
    check_split(split)
    params = preprocessing_params(config)
    if cases is None:
        cases = discover_cases(config.data)
    train_cases, val_cases = split_cases([c for c in cases if c.get("label")], config.data)
    chosen = val_cases if split == "val" else train_cases
    if not chosen:
        raise ValueError(f"no labelled {split} case among {len(cases)} cases (data.val_fraction / data.fold)")
    loader = DataLoader(_val_dataset(chosen, config, params), batch_size=1, shuffle=False,
                        num_workers=config.data.num_workers)
    return loader, [c["name"] for c in chosen]


def build_dataloaders(
    config: ExperimentConfig,
    rank: int = 0,
    world_size: int = 1,
    cases: list[dict[str, Any]] | None = None,
) -> tuple[DataLoader, DataLoader, dict[str, Any]]:
    """Training and validation DataLoaders.

    Training: labelled training cases of :func:`~kmunet.data.discovery.split_cases`, transforms of
    :func:`~kmunet.data.transforms.build_train_transforms` seeded with ``train.seed + rank``,
    ``train.batch_size`` images per batch, each giving ``samples_per_image`` patches, so a batch has
    ``image`` float32 ``(B * samples_per_image, C, *patch_size)`` and ``label`` int64
    ``(B * samples_per_image, 1, *patch_size)``. Shuffled with a seeded generator; with
    ``world_size > 1`` a ``DistributedSampler`` (seed ``train.seed``) shards it; call
    ``train_loader.sampler.set_epoch(epoch)`` each epoch (``info["train_sampler"]``).

    Validation: batch size 1, full images: ``image`` float32 ``(1, C, *spatial)``, ``label`` int64
    ``(1, 1, *spatial)``, for DRIVE ``fov`` uint8 ``(1, 1, H, W)``, plus ``name``. With
    ``world_size > 1`` it is sharded without padding (each case on exactly one rank,
    ``info["val_sharded"]``): gather the metrics across ranks.

    Args:
        config: the experiment config.
        rank: this process' rank.
        world_size: number of processes.
        cases: cases to split (default: :func:`~kmunet.data.discovery.discover_cases`).

    Returns:
        ``(train_loader, val_loader, info)``; ``info`` has ``n_train``, ``n_val``, ``train_names``,
        ``val_names``, ``preprocessing`` (:func:`preprocessing_params`), ``train_sampler`` (or
        ``None``), ``val_sharded``.

    Raises:
        ValueError: bad ``rank``/``world_size``, unknown cache mode, or no labelled training case.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if config.data.cache not in CACHE_MODES:
        raise ValueError(f"unknown data.cache {config.data.cache!r}; valid: {list(CACHE_MODES)}")
    if config.train.batch_size < 1:
        raise ValueError(f"train.batch_size must be >= 1, got {config.train.batch_size}")
    if config.data.num_workers < 0:
        raise ValueError(f"data.num_workers must be >= 0, got {config.data.num_workers}")
    params = preprocessing_params(config)
    if cases is None:
        cases = discover_cases(config.data)
    labelled = [c for c in cases if c.get("label")]
    train_cases, val_cases = split_cases(labelled, config.data)
    if not train_cases:
        raise ValueError(f"no labelled training case among {len(cases)} cases")
    train_tf = build_train_transforms(config)
    train_tf.set_random_state(seed=config.train.seed + rank)
    train_ds = make_dataset([_item(c, ("image", "label")) for c in train_cases], train_tf, config, role="train")
    val_ds = _val_dataset(val_cases, config, params)

    workers = config.data.num_workers
    generator = torch.Generator().manual_seed(config.train.seed + rank)
    sampler = None
    if world_size > 1:
        sampler = DistributedSampler(
            train_ds, num_replicas=world_size, rank=rank, shuffle=True, seed=config.train.seed, even_divisible=True
        )
    train_loader = DataLoader(
        train_ds,
        batch_size=config.train.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=workers,
        generator=generator,
        drop_last=False,
        persistent_workers=workers > 0,
    )
    val_sampler = None
    if world_size > 1:
        val_sampler = DistributedSampler(val_ds, num_replicas=world_size, rank=rank, shuffle=False, even_divisible=False)
    val_loader = DataLoader(val_ds, batch_size=1, shuffle=False, sampler=val_sampler, num_workers=workers)
    info = {
        "n_train": len(train_cases),
        "n_val": len(val_cases),
        "train_names": [c["name"] for c in train_cases],
        "val_names": [c["name"] for c in val_cases],
        "n_unlabelled": len(cases) - len(labelled),
        "preprocessing": params,
        "train_sampler": sampler,
        "val_sharded": world_size > 1,
    }
    return train_loader, val_loader, info
