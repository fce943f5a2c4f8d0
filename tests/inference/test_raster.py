"""2D models segment raster images (PNG/TIF/...) into PNG masks of the same size; 3D models skip them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kmunet.config import load_config
from kmunet.data import preprocessing_params
from kmunet.inference import predict_folder
from tests.conftest import REPO_ROOT
from tests.inference.conftest import PARAMS, threshold_predictor

DRIVE_PARAMS = {**preprocessing_params(load_config(REPO_ROOT / "configs" / "drive_2d.yaml")), "patch_size": [32, 32]}


def _red_predictor(x: torch.Tensor) -> torch.Tensor:
    """Class 1 where the (normalised) red channel is bright."""
    return torch.cat([torch.zeros_like(x[:, :1]), 10.0 * x[:, :1] - 1.0], dim=1)


def _rgb_image(path: Path, shape: tuple[int, int] = (45, 61)) -> np.ndarray:
    """An RGB PNG with a bright red block in its top-left quarter; returns the expected 0/1 mask."""
    rgb = np.full(shape + (3,), 40, np.uint8)
    truth = np.zeros(shape, bool)
    truth[5:20, 8:30] = True
    rgb[truth, 0] = 250
    Image.fromarray(rgb).save(path)
    return truth


def test_2d_model_writes_png_masks_of_the_input_size(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    truth = _rgb_image(inp / "eye.png")
    (inp / "notes.txt").write_text("not an image")
    report = predict_folder(inp, tmp_path / "out", predictor=_red_predictor, preprocessing=DRIVE_PARAMS,
                            device="cpu", progress=False, save_probabilities=True)
    assert report.exit_code == 0, report.to_dict()
    (case,) = report.cases
    mask = np.asarray(Image.open(tmp_path / "out" / "eye.png"))
    assert case.output.endswith("eye.png") and case.shape == [45, 61]
    assert mask.shape == truth.shape and set(np.unique(mask)) == {0, 255}  # rows x columns, 0 / 255
    np.testing.assert_array_equal(mask > 127, truth)  # no transpose or flip
    assert (tmp_path / "out" / "eye_probabilities.nii.gz").is_file()
    assert [Path(f).name for f, _ in report.skipped] == ["notes.txt"]


def test_3d_model_skips_raster_images_and_wrong_channels_fail(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    _rgb_image(inp / "photo.png")
    report = predict_folder(inp, tmp_path / "out3d", predictor=threshold_predictor, preprocessing=PARAMS,
                            device="cpu", progress=False, log=lambda line: None)
    assert report.cases == [] and "only 2D models" in report.skipped[0][1]
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(inp / "gray.png")  # 1 channel for an RGB model
    report = predict_folder(inp, tmp_path / "out2d", predictor=_red_predictor, preprocessing=DRIVE_PARAMS,
                            device="cpu", progress=False, log=lambda line: None)
    status = {c.case: (c.status, c.error) for c in report.cases}
    assert status["photo"][0] == "ok"
    assert status["gray"][0] == "failed" and "1 channel(s); the model expects 2D x 3" in status["gray"][1]


def test_shipped_drive_model_on_a_real_image(tmp_path: Path, shared_data: Path) -> None:
    image = shared_data / "drive" / "training" / "images" / "21_training.tif"
    if not image.is_file():
        pytest.skip("DRIVE data not found")
    report = predict_folder(image, tmp_path / "out", checkpoint=REPO_ROOT / "checkpoints" / "drive_kmunet.pt",
                            device="cpu", progress=False)
    assert report.exit_code == 0 and report.cases[0].warning == ""
    mask = np.asarray(Image.open(tmp_path / "out" / "21_training.png")) > 127
    manual = np.asarray(Image.open(shared_data / "drive" / "training" / "1st_manual" / "21_manual1.gif")) > 127
    fov = np.asarray(Image.open(shared_data / "drive" / "training" / "mask" / "21_training_mask.gif")) > 0
    tp = (mask & manual & fov).sum()
    f1 = 2 * tp / ((mask & fov).sum() + (manual & fov).sum())
    assert f1 > 0.75  # a training image of the shipped model: a geometry check, not a benchmark


def test_shipped_drive_ensemble_runs_each_member_in_its_own_window(tmp_path: Path, shared_data: Path) -> None:
    from kmunet.inference.predict import load_model

    image = shared_data / "drive" / "training" / "images" / "23_training.tif"  # a validation image
    if not image.is_file():
        pytest.skip("DRIVE data not found")
    members = [REPO_ROOT / "checkpoints" / f"drive_kmunet{s}.pt" for s in ("", "_p256", "_p384")]
    loaded = load_model(members)
    assert loaded.predictor.windows == [(128, 128), (256, 256), (384, 384)]
    report = predict_folder(image, tmp_path / "out", checkpoint=members, device="cpu", progress=False)
    assert report.exit_code == 0 and report.cases[0].warning == ""
    mask = np.asarray(Image.open(tmp_path / "out" / "23_training.png")) > 127
    manual = np.asarray(Image.open(shared_data / "drive" / "training" / "1st_manual" / "23_manual1.gif")) > 127
    fov = np.asarray(Image.open(shared_data / "drive" / "training" / "mask" / "23_training_mask.gif")) > 0
    f1 = 2 * (mask & manual & fov).sum() / ((mask & fov).sum() + (manual & fov).sum())
    assert f1 > 0.7  # an image none of the members trained on


def test_raster_mask_encoding_follows_the_model_not_the_image(tmp_path: Path) -> None:
    from kmunet.inference.cases import LoadedImage
    from kmunet.inference.writers import write_like_input

    ref = LoadedImage(np.zeros((1, 4, 5), np.float32), np.eye(4), (4, 5), raster=True)
    mask = np.zeros((4, 5), np.uint8)
    mask[1, 1] = 1
    write_like_input(tmp_path / "binary.png", mask, ref, num_classes=2)
    write_like_input(tmp_path / "three.png", mask, ref, num_classes=3)  # only classes 0 and 1 present
    assert set(np.unique(np.asarray(Image.open(tmp_path / "binary.png")))) == {0, 255}
    assert set(np.unique(np.asarray(Image.open(tmp_path / "three.png")))) == {0, 1}


def test_2d_domain_warning_uses_two_axes(tmp_path: Path) -> None:
    from kmunet.inference.predict import LoadedModel  # noqa: F401 - the summary travels in checkpoints

    big = tmp_path / "in"
    big.mkdir()
    Image.fromarray(np.zeros((40, 2000, 3), np.uint8)).save(big / "wide.png")
    ckpt = REPO_ROOT / "checkpoints" / "drive_kmunet.pt"
    report = predict_folder(big, tmp_path / "out", checkpoint=ckpt, device="cpu", progress=False,
                            log=lambda line: None, sw_batch_size=8)
    assert report.cases[0].spacing == [1.0, 1.0]
    assert "field of view" in report.cases[0].warning


def test_2d_overlay_png_is_written_beside_the_mask(tmp_path: Path) -> None:
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    _rgb_image(inp / "eye.png")
    report = predict_folder(inp, out, predictor=_red_predictor, preprocessing=DRIVE_PARAMS, device="cpu",
                            progress=False, png=True)
    (case,) = report.cases
    assert case.png == str(out / "eye_overlay.png") and case.output == str(out / "eye.png")
    overlay = np.asarray(Image.open(out / "eye_overlay.png"))
    assert overlay.ndim == 3 and overlay.shape[2] in (3, 4) and overlay.std() > 0  # a drawn picture
    assert np.asarray(Image.open(out / "eye.png")).shape == (45, 61)  # the mask itself is untouched
    again = predict_folder(inp, out, predictor=_red_predictor, preprocessing=DRIVE_PARAMS, device="cpu",
                           progress=False, png=True)
    assert [c.status for c in again.cases] == ["exists"]  # the overlay counts as an output of the case


def test_overlay_png_2d_checks_its_shapes(tmp_path: Path) -> None:
    from kmunet.inference.writers import write_overlay_png

    img = np.random.default_rng(0).random((12, 20))
    mask = np.zeros((12, 20), np.uint8)
    mask[3:6, 4:9] = 1
    for raster in (True, False):
        path = write_overlay_png(tmp_path / f"o{raster}.png", img, mask, title="t", spacing=(1.0, 2.0), raster=raster)
        assert np.asarray(Image.open(path)).std() > 0
    with pytest.raises(ValueError, match=r"overlay image shape \[20, 12\] does not match the mask \[12, 20\]"):
        write_overlay_png(tmp_path / "bad.png", img.T, mask, raster=True)
    assert not (tmp_path / "bad.png").exists()


def test_overlay_name_clash_is_refused(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    _rgb_image(inp / "eye.png")
    _rgb_image(inp / "eye_overlay.png")
    lines: list[str] = []
    report = predict_folder(inp, tmp_path / "out", predictor=_red_predictor, preprocessing=DRIVE_PARAMS,
                            device="cpu", progress=False, png=True, log=lines.append)
    errors = {c.case: c.error for c in report.cases if c.status == "failed"}
    assert errors["eye"].startswith("its --png overlay eye_overlay.png would also be the mask of case eye_overlay")
    assert errors["eye_overlay"].startswith("its mask eye_overlay.png would also be the --png overlay of case eye")
    assert report.exit_code == 1 and len([x for x in lines if x.startswith("error: ")]) == 2  # one line per case
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["predict_report.csv", "predict_report.json"]
