"""DataLoaders: batch shapes, seeding, caching modes and distributed sharding."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from kmunet.data import build_dataloaders
from kmunet.data.loaders import cache_dir_for
from tests.data.conftest import make_config


def test_3d_loaders_shapes_and_info(synth3d: Path) -> None:
    cfg = make_config(synth3d, samples_per_image=2, val_fraction=0.34)
    train, val, info = build_dataloaders(cfg)
    assert info["n_train"] == 4 and info["n_val"] == 2
    assert not set(info["train_names"]) & set(info["val_names"])
    assert info["preprocessing"]["spatial_dims"] == 3 and info["train_sampler"] is None
    batch = next(iter(train))
    assert batch["image"].shape == (4, 1, 16, 16, 16) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (4, 1, 16, 16, 16) and batch["label"].dtype == torch.int64
    items = list(val)
    assert len(items) == 2
    assert items[0]["image"].shape == (1, 1, 20, 24, 28) and items[0]["label"].shape == (1, 1, 20, 24, 28)
    assert items[0]["label"].dtype == torch.int64 and items[0]["name"] == [info["val_names"][0]]
    assert hasattr(items[0]["image"], "affine")  # MetaTensor kept for inversion / saving


def test_training_batches_are_seeded(synth3d: Path) -> None:
    cfg = make_config(synth3d, noise_prob=1.0)
    first = [next(iter(build_dataloaders(cfg)[0])) for _ in range(2)]
    assert torch.equal(first[0]["image"], first[1]["image"])
    other = next(iter(build_dataloaders(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=9)))[0]))
    assert not torch.equal(first[0]["image"], other["image"])


@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_cache_modes_give_the_same_validation_items(synth3d: Path, tmp_path: Path, cache: str) -> None:
    cfg = make_config(synth3d, cache=cache, cache_dir=str(tmp_path / "cache"))
    ref = next(iter(build_dataloaders(make_config(synth3d))[1]))
    _, val, _ = build_dataloaders(cfg)
    got = next(iter(val))
    assert torch.equal(got["image"].as_tensor(), ref["image"].as_tensor())
    if cache == "disk":
        folder = cache_dir_for(cfg)
        assert folder.parent == tmp_path / "cache" and any((folder / "val").iterdir())


def test_disk_cache_keeps_training_and_validation_items_apart(synth3d: Path, tmp_path: Path) -> None:
    # a case that trains in fold 0 and validates in fold 1 must not get fold 0's padded training item
    cfg = make_config(synth3d, cache="disk", cache_dir=str(tmp_path / "cache"), num_folds=3, fold=0,
                      patch_size=[32, 32, 32])
    train0, _, info0 = build_dataloaders(cfg)
    for _ in train0:  # fills the training cache (the deterministic prefix: preprocessing + padding)
        pass
    _, val1, info1 = build_dataloaders(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, fold=1)))
    assert set(info1["val_names"]) & set(info0["train_names"])
    for item in val1:
        assert item["image"].shape == (1, 1, 20, 24, 28) and hasattr(item["image"], "affine")
        assert item["label"].dtype == torch.int64
    with pytest.raises(ValueError, match="role"):
        from kmunet.data.loaders import make_dataset

        make_dataset([], None, cfg, role="test")


def test_distributed_sampling_partitions_cases(synth3d: Path) -> None:
    cfg = make_config(synth3d, val_fraction=0.34)
    loaders = [build_dataloaders(cfg, rank=r, world_size=2) for r in range(2)]
    train_idx = [list(iter(l[2]["train_sampler"])) for l in loaders]
    assert sorted(train_idx[0] + train_idx[1]) == [0, 1, 2, 3]
    val_names = [n for l in loaders for item in l[1] for n in item["name"]]
    assert sorted(val_names) == sorted(loaders[0][2]["val_names"])
    assert loaders[0][2]["val_sharded"]
    with pytest.raises(ValueError, match="rank"):
        build_dataloaders(cfg, rank=2, world_size=2)


def test_2d_drive_like_loaders_have_fov(drive_like: Path) -> None:
    cfg = make_config(
        drive_like, spatial_dims=2, layout="drive", class_names="[background,vessel]", image_key_channels=3,
        patch_size=[32, 32], samples_per_image=2, val_fraction=0.34,
    )
    cfg = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, in_channels=3, out_channels=2))
    train, val, info = build_dataloaders(cfg)
    batch = next(iter(train))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["label"].shape == (4, 1, 32, 32)
    assert set(torch.unique(batch["label"]).tolist()) <= {0, 1}
    item = next(iter(val))
    assert item["image"].shape == (1, 3, 60, 52) and item["fov"].shape == (1, 1, 60, 52)


def test_explicit_cases_and_unlabelled_are_skipped(synth3d: Path) -> None:
    from kmunet.data import discover_cases

    cfg = make_config(synth3d)
    cases = discover_cases(cfg.data)
    cases[0] = {k: v for k, v in cases[0].items() if k != "label"}
    _, _, info = build_dataloaders(cfg, cases=cases)
    assert info["n_unlabelled"] == 1 and info["n_train"] + info["n_val"] == 5
    with pytest.raises(ValueError, match="cache"):
        build_dataloaders(make_config(synth3d, cache="redis"))


REPO_ROOT = Path(__file__).resolve().parents[2]


def test_real_hippocampus_config_loaders(shared_data: Path) -> None:
    from kmunet.config import load_config
    from kmunet.data import discover_cases

    cfg = load_config(REPO_ROOT / "configs" / "hippocampus_3d.yaml", ["data.cache=none"])
    cases = discover_cases(cfg.data, shared_data / "hippocampus")[:5]
    train, val, info = build_dataloaders(cfg, cases=cases)
    batch = next(iter(train))
    n = cfg.train.batch_size * cfg.data.samples_per_image  # patches per batch
    patch = tuple(cfg.data.patch_size)
    assert batch["image"].shape == (n, 1, *patch) and batch["label"].shape == (n, 1, *patch)
    assert set(torch.unique(batch["label"]).tolist()) <= {0, 1, 2}
    item = next(iter(val))
    assert item["image"].ndim == 5 and item["image"].shape[1] == 1


def test_real_drive_config_loaders(shared_data: Path) -> None:
    from kmunet.config import load_config
    from kmunet.data import discover_cases

    cfg = load_config(REPO_ROOT / "configs" / "drive_2d.yaml", ["data.cache=none"])
    cases = discover_cases(cfg.data, shared_data / "drive" / "training")[:3]
    train, val, info = build_dataloaders(cfg, cases=cases)
    batch = next(iter(train))
    n = cfg.train.batch_size * cfg.data.samples_per_image  # patches per batch
    assert batch["image"].shape == (n, 3, *cfg.data.patch_size) and set(torch.unique(batch["label"]).tolist()) <= {0, 1}
    item = next(iter(val))
    assert item["image"].shape == (1, 3, 584, 565) and item["fov"].shape == (1, 1, 584, 565)
    assert set(torch.unique(item["label"]).tolist()) == {0, 1}


def test_worker_processes_are_seeded(synth3d: Path) -> None:
    cfg = make_config(synth3d, num_workers=1, noise_prob=1.0)
    batches = [next(iter(build_dataloaders(cfg)[0])) for _ in range(2)]
    assert torch.equal(batches[0]["image"], batches[1]["image"])
    assert batches[0]["image"].shape == (4, 1, 16, 16, 16)


def test_2d_nifti_loaders_and_kfold(synth2d: Path) -> None:
    cfg = make_config(synth2d, spatial_dims=2, num_folds=5, fold=2)
    train, val, info = build_dataloaders(cfg)
    assert info["n_train"] == 4 and info["n_val"] == 1
    batch = next(iter(train))
    assert batch["image"].shape == (4, 1, 16, 16) and batch["label"].dtype == torch.int64
    assert next(iter(val))["image"].shape == (1, 1, 40, 36)


def test_val_loader_can_give_the_training_split(synth3d: Path) -> None:
    from kmunet.data.loaders import build_val_loader

    cfg = make_config(synth3d, val_fraction=0.34)
    _, _, info = build_dataloaders(cfg)
    _, val_names = build_val_loader(cfg)
    loader, train_names = build_val_loader(cfg, split="train")
    assert val_names == info["val_names"] and sorted(train_names) == sorted(info["train_names"])
    item = next(iter(loader))
    assert item["image"].shape == (1, 1, 20, 24, 28)  # full images, no crops
    with pytest.raises(ValueError, match="'test'.*valid"):
        build_val_loader(cfg, split="test")
