"""Preprocessing and augmentation pipelines in 2D and 3D."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from kmunet.data import (
    build_preprocessing,
    build_train_transforms,
    build_val_transforms,
    discover_cases,
    preprocessing_params,
)
from tests.data.conftest import make_config

NO_AUG = {"affine_prob": 0.0, "intensity_prob": 0.0, "noise_prob": 0.0, "smooth_prob": 0.0, "elastic_prob": 0.0}


def _first(synth: Path, cfg) -> dict:
    case = discover_cases(cfg.data)[0]
    return {"image": case["image"], "label": case["label"]}


def test_params_are_json_and_complete(synth3d: Path) -> None:
    cfg = make_config(synth3d, target_spacing=[1.0, 1.0, 1.0])
    params = preprocessing_params(cfg)
    assert json.loads(json.dumps(params)) == params
    for key in ("spatial_dims", "orientation", "target_spacing", "normalization", "ct_window", "in_channels", "patch_size", "class_names"):
        assert key in params
    assert params["layout"] == "msd" and params["orientation"] == "RAS" and params["num_classes"] == 3


def test_preprocessing_reorients_normalises_and_inverts(synth3d: Path) -> None:
    from monai.transforms import Invertd

    cfg = make_config(synth3d, target_spacing=[1.0, 1.0, 1.0])
    item = _first(synth3d, cfg)
    pre = build_preprocessing(preprocessing_params(cfg), keys=("image", "label"))
    out = pre(dict(item))
    img, lab = out["image"], out["label"]
    assert img.dtype == torch.float32 and img.shape[0] == 1 and lab.shape[0] == 1
    # LAS file (x flipped) -> RAS: positive diagonal; 1.2/0.9/1.5 mm -> 1 mm
    assert np.allclose(np.diag(img.affine.numpy())[:3], 1.0)
    assert tuple(img.shape[1:]) == (24, 22, 42)
    fg = img[img != 0]
    assert abs(float(fg.mean())) < 1e-3 and abs(float(fg.std()) - 1.0) < 1e-2
    assert set(torch.unique(lab).tolist()) <= {0.0, 1.0, 2.0}
    # inference: image-only preprocessing, prediction mapped back to the file grid with Invertd
    pre_img = build_preprocessing(preprocessing_params(cfg), keys=("image",))
    d = pre_img({"image": item["image"]})
    d["pred"] = lab.clone()
    back = Invertd(keys="pred", transform=pre_img, orig_keys="image", nearest_interp=True)(d)["pred"]
    original = nib.load(item["label"]).get_fdata()
    assert tuple(back.shape[1:]) == original.shape
    assert (back[0].numpy() == original).mean() > 0.99


@pytest.mark.parametrize("normalization", ["ct", "minmax", "none"])
def test_other_normalisations(synth3d: Path, normalization: str) -> None:
    cfg = make_config(synth3d, normalization=normalization, ct_window=[0.0, 150.0])
    img = build_preprocessing(preprocessing_params(cfg), keys=("image",))(_first(synth3d, cfg))["image"]
    if normalization == "none":
        assert float(img.max()) > 150.0
    else:
        assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0 + 1e-6
        assert float(img.max()) > 0.99


def test_train_transforms_3d_shapes_and_determinism(synth3d: Path) -> None:
    cfg = make_config(synth3d, patch_size=[16, 12, 8], samples_per_image=3, affine_prob=1.0, noise_prob=1.0)
    item = _first(synth3d, cfg)
    tf = build_train_transforms(cfg)
    tf.set_random_state(seed=5)
    out = tf(dict(item))
    assert isinstance(out, list) and len(out) == 3
    for patch in out:
        assert patch["image"].shape == (1, 16, 12, 8) and patch["image"].dtype == torch.float32
        assert patch["label"].shape == (1, 16, 12, 8) and patch["label"].dtype == torch.int64
        assert set(torch.unique(patch["label"]).tolist()) <= {0, 1, 2}
    tf2 = build_train_transforms(cfg)
    tf2.set_random_state(seed=5)
    again = tf2(dict(item))
    assert all(torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"]) for a, b in zip(out, again))


def test_padding_to_patch_size(synth3d: Path) -> None:
    cfg = make_config(synth3d, patch_size=[32, 32, 32], samples_per_image=1, **NO_AUG)
    out = build_train_transforms(cfg)(_first(synth3d, cfg))
    assert out[0]["image"].shape == (1, 32, 32, 32)


def test_positive_crops_contain_foreground(synth3d: Path) -> None:
    cfg = make_config(synth3d, patch_size=[7, 7, 7], samples_per_image=8, pos_fraction=1.0, flip_prob=0.0, **NO_AUG)
    out = build_train_transforms(cfg)(_first(synth3d, cfg))
    assert all(int(p["label"][0, 3, 3, 3]) > 0 for p in out)  # centre voxel is foreground


def _full_patch_flip(synth: Path, dims: int, flip_axes: list[int], shape: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = make_config(synth, spatial_dims=dims, patch_size=shape, samples_per_image=1, flip_axes=flip_axes, flip_prob=1.0, **NO_AUG)
    item = _first(synth, cfg)
    aug = build_train_transforms(cfg)(dict(item))[0]["image"]
    ref = build_val_transforms(cfg)(dict(item))["image"].as_tensor()
    return aug, ref


@pytest.mark.parametrize("flip_axes", [[0], [1], [1, 2]])
def test_flips_only_on_allowed_axes_3d(synth3d: Path, flip_axes: list[int]) -> None:
    aug, ref = _full_patch_flip(synth3d, 3, flip_axes, [20, 24, 28])
    assert torch.allclose(aug, torch.flip(ref, dims=[a + 1 for a in flip_axes]))
    assert not torch.allclose(aug, ref)


@pytest.mark.parametrize("flip_axes", [[0], [1]])
def test_flips_only_on_allowed_axes_2d_albumentations(synth2d: Path, flip_axes: list[int]) -> None:
    aug, ref = _full_patch_flip(synth2d, 2, flip_axes, [40, 36])
    assert torch.allclose(aug, torch.flip(ref, dims=[a + 1 for a in flip_axes]), atol=1e-6)


def test_train_transforms_2d_with_albumentations(synth2d: Path) -> None:
    cfg = make_config(synth2d, spatial_dims=2, flip_axes=[0, 1], affine_prob=1.0, elastic_prob=1.0, samples_per_image=2)
    tf = build_train_transforms(cfg)
    tf.set_random_state(seed=1)
    out = tf(_first(synth2d, cfg))
    assert len(out) == 2
    assert out[0]["image"].shape == (1, 16, 16) and out[0]["image"].dtype == torch.float32
    assert out[0]["label"].shape == (1, 16, 16) and out[0]["label"].dtype == torch.int64
    assert set(torch.unique(torch.cat([p["label"] for p in out])).tolist()) <= {0, 1, 2}
    tf.set_random_state(seed=1)
    again = tf(_first(synth2d, cfg))
    assert torch.equal(out[0]["image"], again[0]["image"]) and torch.equal(out[1]["label"], again[1]["label"])


def _patches_without_and_with(synth: Path, dims: int, shape: list[int], **extra: float) -> tuple[list[dict], list[dict]]:
    """The same seeded training patches without and with ``extra`` augmentation settings.

    The gamma and low-resolution transforms come last in the pipeline, so every earlier random draw
    (crop centres) is the same in both runs: the patches differ only by those transforms.
    """
    out = []
    for aug in ({}, extra):
        cfg = make_config(synth, spatial_dims=dims, patch_size=shape, samples_per_image=4, flip_prob=0.0, **NO_AUG, **aug)
        tf = build_train_transforms(cfg)
        tf.set_random_state(seed=3)
        out.append(tf(_first(synth, cfg)))
    return out[0], out[1]


@pytest.mark.parametrize(("dims", "shape"), [(2, [32, 28]), (3, [16, 20, 24])])
def test_gamma_keeps_order_mean_and_std(synth2d: Path, synth3d: Path, dims: int, shape: list[int]) -> None:
    plain, gamma = _patches_without_and_with(synth2d if dims == 2 else synth3d, dims, shape, gamma_prob=1.0)
    for a, b in zip(plain, gamma):
        assert torch.equal(a["label"], b["label"])
        x, y = a["image"].double().flatten(), b["image"].double().flatten()
        assert not torch.allclose(x, y, atol=1e-3)
        # a gamma curve is monotonic: sorting by the input sorts the output too
        assert (torch.diff(y[torch.argsort(x)]) >= -1e-4).all()
        assert abs(float(y.mean() - x.mean())) < 1e-4 and abs(float(y.std() - x.std())) < 1e-3


@pytest.mark.parametrize(("dims", "shape"), [(2, [32, 28]), (3, [16, 20, 24])])
def test_lowres_simulation_removes_fine_detail(synth2d: Path, synth3d: Path, dims: int, shape: list[int]) -> None:
    plain, lowres = _patches_without_and_with(synth2d if dims == 2 else synth3d, dims, shape, lowres_prob=1.0)

    def roughness(img: torch.Tensor) -> float:  # (C, *spatial): mean squared finite difference
        return sum(float(torch.diff(img.double(), dim=ax).square().mean()) for ax in range(1, img.ndim))

    changed = 0
    for a, b in zip(plain, lowres):
        assert torch.equal(a["label"], b["label"]) and b["image"].shape == a["image"].shape
        assert roughness(b["image"]) <= roughness(a["image"]) + 1e-6
        changed += not torch.allclose(a["image"], b["image"])
    assert changed >= 3  # a zoom drawn close to 1 may round to the same grid and change nothing


def test_drive_like_rgb_pipeline(drive_like: Path) -> None:
    cfg = make_config(
        drive_like, spatial_dims=2, layout="drive", class_names="[background,vessel]", image_key_channels=3,
        patch_size=[32, 32], samples_per_image=2,
    )
    cfg = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, in_channels=3, out_channels=2))
    case = discover_cases(cfg.data)[0]
    val = build_val_transforms(cfg)(dict(case))
    assert val["image"].shape == (3, 60, 52) and val["image"].dtype == torch.float32
    assert set(torch.unique(val["label"]).tolist()) == {0, 1} and val["label"].dtype == torch.int64
    assert val["fov"].dtype == torch.uint8 and set(torch.unique(val["fov"]).tolist()) == {0, 1}
    fg = val["image"][0][val["image"][0] != 0]
    assert abs(float(fg.mean())) < 1e-3  # per-channel z-score on nonzero pixels
    train = build_train_transforms(cfg)({"image": case["image"], "label": case["label"]})
    assert train[0]["image"].shape == (3, 32, 32) and set(torch.unique(train[0]["label"]).tolist()) <= {0, 1}


def _reference_clahe(clip_limit: float) -> Any:
    """albumentations ``CLAHE`` at exactly ``clip_limit`` (a degenerate range: no sampling)."""
    import albumentations as A

    from kmunet.data.transforms import CLAHE_TILES

    return A.CLAHE(clip_limit=(clip_limit, clip_limit), tile_grid_size=CLAHE_TILES, p=1.0)


def test_clahe_equalises_drive_images_like_albumentations(drive_like: Path) -> None:
    from kmunet.data.transforms import CLAHE_CLIP_LIMIT, Clahed

    cfg = make_config(
        drive_like, spatial_dims=2, layout="drive", class_names="[background,vessel]", image_key_channels=3,
        patch_size=[32, 32], normalization="none",
    )
    cfg = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, in_channels=3, out_channels=2))
    case = dict(discover_cases(cfg.data)[0])
    plain = build_val_transforms(cfg)(dict(case))["image"]
    params = preprocessing_params(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, clahe=True)))
    assert params["clahe"] is True and json.loads(json.dumps(params)) == params
    equalised = build_preprocessing(params, keys=("image",))({"image": case["image"]})["image"]
    assert equalised.shape == plain.shape and equalised.meta["filename_or_obj"] == plain.meta["filename_or_obj"]
    hwc = plain.numpy().transpose(1, 2, 0)
    expected = _reference_clahe(CLAHE_CLIP_LIMIT)(image=hwc)["image"]
    np.testing.assert_allclose(equalised.numpy().transpose(1, 2, 0), expected, atol=1e-6)
    assert float(equalised.std()) > float(plain.std())  # the dim synthetic image gains contrast
    with pytest.raises(ValueError, match="shape"):
        Clahed("image")({"image": torch.zeros(2, 8, 8)})


def test_clahe_is_deterministic_at_its_clip_limit() -> None:
    """albumentations samples a scalar clip_limit from (1, limit) per call; Clahed must not."""
    from kmunet.data.transforms import CLAHE_CLIP_LIMIT, Clahed

    rng = np.random.default_rng(0)
    # 256 x 256 so that a tile holds 1024 pixels: OpenCV's clip limits 1 and 2 then differ (4 vs 8 per bin)
    image = torch.from_numpy(np.clip(0.3 + 0.03 * rng.standard_normal((3, 256, 256)), 0.0, 1.0).astype(np.float32))
    outputs = [Clahed("image")({"image": image})["image"] for _ in range(8)]
    for out in outputs[1:]:
        torch.testing.assert_close(out, outputs[0], rtol=0, atol=0)
    at_limit, at_one = _reference_clahe(CLAHE_CLIP_LIMIT), _reference_clahe(1.0)
    hwc = image.numpy().transpose(1, 2, 0)
    np.testing.assert_allclose(outputs[0].numpy().transpose(1, 2, 0), at_limit(image=hwc)["image"], atol=1e-6)
    assert not np.allclose(at_one(image=hwc)["image"], at_limit(image=hwc)["image"])  # the limit matters here


def test_clahe_needs_raster_images(synth3d: Path) -> None:
    cfg = make_config(synth3d)
    with pytest.raises(ValueError, match="clahe.*layout"):
        preprocessing_params(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, clahe=True)))
    with pytest.raises(TypeError, match="clahe"):
        preprocessing_params(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, clahe="yes")))


def test_wrong_channel_count_is_reported(synth3d: Path) -> None:
    cfg = make_config(synth3d, image_key_channels=3)
    cfg = dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, in_channels=3))
    with pytest.raises(RuntimeError) as info:  # MONAI wraps errors raised inside a Compose
        build_val_transforms(cfg)(_first(synth3d, cfg))
    assert "1 image channel(s), expected 3" in str(info.value.__cause__)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"flip_axes": [3]}, "flip_axes"),
        ({"patch_size": [16, 16]}, "patch_size"),
        ({"normalization": "robust"}, "valid"),
        ({"pos_fraction": 1.5}, "pos_fraction"),
        ({"gamma_prob": 1.5}, "gamma_prob"),
        ({"lowres_prob": -0.1}, "lowres_prob"),
        ({"image_key_channels": 3}, "in_channels"),
        ({"target_spacing": [1.0, 1.0]}, "target_spacing"),
        ({"orientation": "XYZ"}, "orientation"),
        ({"orientation": "RRS"}, "orientation"),
        ({"orientation": "ras"}, "upper-case"),
    ],
)
def test_bad_data_settings_raise(synth3d: Path, override: dict, match: str) -> None:
    cfg = make_config(synth3d)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **{k: tuple(v) if isinstance(v, list) else v for k, v in override.items()}))
    with pytest.raises(ValueError, match=match):
        build_train_transforms(cfg)


def test_preprocessing_rejects_bad_params() -> None:
    with pytest.raises(ValueError, match="miss"):
        build_preprocessing({"spatial_dims": 3})
    with pytest.raises(ValueError, match="image"):
        build_preprocessing(
            {"spatial_dims": 3, "normalization": "zscore", "ct_window": [0, 1], "orientation": "RAS", "target_spacing": None},
            keys=("label",),
        )


REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["hippocampus_3d", "hippocampus_3d_unet", "drive_2d", "drive_2d_unet"])
def test_shipped_configs_load(name: str) -> None:
    from kmunet.config import load_config

    cfg = load_config(REPO_ROOT / "configs" / f"{name}.yaml")
    params = preprocessing_params(cfg)
    assert params["spatial_dims"] == cfg.network.spatial_dims == len(cfg.data.patch_size)
    assert params["num_classes"] == cfg.network.out_channels


def test_hippocampus_config_never_flips_anterior_posterior(shared_data: Path) -> None:
    from kmunet.config import load_config

    cfg = load_config(REPO_ROOT / "configs" / "hippocampus_3d.yaml")
    assert 1 not in cfg.data.flip_axes
    # after RAS preprocessing, axis 1 is the one separating anterior (1) from posterior (2)
    cases = discover_cases(cfg.data, shared_data / "hippocampus")[:5]
    pre = build_preprocessing(preprocessing_params(cfg))
    for case in cases:
        lab = pre({"image": case["image"], "label": case["label"]})["label"][0].numpy()
        anterior, posterior = np.argwhere(lab == 1).mean(0), np.argwhere(lab == 2).mean(0)
        assert anterior[1] - posterior[1] > 5.0
