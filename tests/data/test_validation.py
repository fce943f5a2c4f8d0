"""validate_dataset and the ``kmunet validate-data`` command."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from kmunet.cli.main import main
from kmunet.config import load_config
from kmunet.data.validation import Problem, validate_dataset
from tests.data.conftest import make_config, save_nifti

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_clean_dataset_passes(folders3d: Path) -> None:
    report = validate_dataset(folders3d, make_config(folders3d))
    assert report.ok and report.problems == []
    assert report.n_cases == 6 and report.layout == "folders"
    s = report.summary
    assert s["n_labelled"] == 6 and s["channels"] == {1: 6}
    assert s["orientations"] == {"LAS": 6} and s["spacings"] == {"(1.2, 0.9, 1.5)": 6}
    assert set(s["label_values"]) == {0, 1, 2} and s["empty_labels"] == []
    assert s["shape_min"] == [20, 24, 28] == s["shape_max"]
    text = report.format()
    assert "0 fatal problem(s), 0 warning(s)" in text and "LAS" in text


def _plant_problems(root: Path) -> dict[str, str]:
    """Break four cases in four ways (+ one unlabelled image, one empty label); returns name -> expected fatal message part."""
    labels, images = root / "labels", root / "images"
    (labels / "synth_000.nii.gz").unlink()
    lab1 = nib.load(labels / "synth_001.nii.gz")
    save_nifti(labels / "synth_001.nii.gz", np.zeros((20, 24, 27), np.uint8) + 1, lab1.affine)
    img2 = nib.load(images / "synth_002.nii.gz")
    data2 = img2.get_fdata().astype(np.float32)
    data2[3, 4, 5] = np.nan
    save_nifti(images / "synth_002.nii.gz", data2, img2.affine)
    lab3 = nib.load(labels / "synth_003.nii.gz")
    data3 = np.asarray(lab3.dataobj).copy()
    data3[0, 0, 0] = 5
    save_nifti(labels / "synth_003.nii.gz", data3, lab3.affine)
    lab4 = nib.load(labels / "synth_004.nii.gz")
    shifted = lab4.affine.copy()
    shifted[0, 3] += 0.5
    save_nifti(labels / "synth_004.nii.gz", np.asarray(lab4.dataobj), shifted)
    lab5 = nib.load(labels / "synth_005.nii.gz")
    save_nifti(labels / "synth_005.nii.gz", np.zeros(lab5.shape, np.uint8), lab5.affine)
    return {
        "synth_001": "label shape",
        "synth_002": "NaN",
        "synth_003": "label values [5]",
        "synth_004": "affine",
    }


def test_each_planted_problem_is_caught(folders3d: Path) -> None:
    expected = _plant_problems(folders3d)
    report = validate_dataset(folders3d, make_config(folders3d))
    assert not report.ok
    assert len(report.fatal) == len(expected)
    for name, message in expected.items():
        hits = [p for p in report.fatal if name in p.file and message in p.message]
        assert len(hits) == 1, (name, [str(p) for p in report.problems])
    assert [(Path(p.file).parent.name, Path(p.file).name) for p in report.warnings] == [
        ("images", "synth_000.nii.gz"), ("labels", "synth_005.nii.gz")]
    assert "no label found" in report.warnings[0].message  # an unlabelled image is left out, not fatal
    assert report.summary["empty_labels"] == ["synth_005"]


def test_a_label_without_its_image_is_a_warning(folders3d: Path) -> None:
    (folders3d / "images" / "synth_002.nii.gz").unlink()
    report = validate_dataset(folders3d, make_config(folders3d))
    assert report.ok and report.n_cases == 5
    assert [(Path(p.file).name, p.message) for p in report.warnings] == [
        ("synth_002.nii.gz", "label without an image (no case uses it)")]
    assert Path(report.warnings[0].file).parent.name == "labels"


def test_affine_tolerance_is_configurable(folders3d: Path) -> None:
    lab = nib.load(folders3d / "labels" / "synth_000.nii.gz")
    aff = lab.affine.copy()
    aff[1, 3] += 0.01
    save_nifti(folders3d / "labels" / "synth_000.nii.gz", np.asarray(lab.dataobj), aff)
    assert not validate_dataset(folders3d, make_config(folders3d)).ok
    assert validate_dataset(folders3d, make_config(folders3d, label_tolerance=0.05)).ok


def test_channel_and_dimension_mismatch_and_missing_root(folders3d: Path, tmp_path: Path) -> None:
    report = validate_dataset(folders3d, make_config(folders3d, spatial_dims=2, patch_size=[16, 16]))
    assert len(report.fatal) == 6 and "spatial dims" in report.fatal[0].message
    report = validate_dataset(tmp_path / "nowhere", make_config(tmp_path))
    assert not report.ok and "not found" in report.fatal[0].message
    with pytest.raises(ValueError, match="severity"):
        Problem("error", "x", "y")


def test_drive_like_masks_must_be_0_255(drive_like: Path) -> None:
    cfg = load_config(None, [f"data.root={drive_like}", "network.spatial_dims=2", "network.in_channels=3",
                             "data.image_key_channels=3", "data.patch_size=[16,16]", "data.class_names=[bg,vessel]"])
    assert validate_dataset(drive_like, cfg).ok
    from PIL import Image

    bad = (np.asarray(Image.open(drive_like / "mask" / "22_training_mask.gif")) > 0).astype(np.uint8)
    Image.fromarray(bad * 7).save(drive_like / "1st_manual" / "22_manual1.gif")
    (drive_like / "mask" / "23_training_mask.gif").unlink()
    report = validate_dataset(drive_like, cfg)
    assert [Path(p.file).name for p in report.fatal] == ["22_manual1.gif"]
    assert "field-of-view" in report.warnings[0].message


def test_real_hippocampus_subset_passes(shared_data: Path) -> None:
    cfg = load_config(REPO_ROOT / "configs" / "hippocampus_3d.yaml")
    report = validate_dataset(shared_data / "hippocampus", cfg, max_cases=25)
    assert report.ok, report.format()
    assert report.n_cases == 25 and report.summary["orientations"] == {"RAS": 25}
    assert set(report.summary["label_values"]) == {0, 1, 2}


def test_real_drive_subset_passes(shared_data: Path) -> None:
    cfg = load_config(REPO_ROOT / "configs" / "drive_2d.yaml")
    report = validate_dataset(shared_data / "drive" / "training", cfg, max_cases=3)
    assert report.ok, report.format()
    assert set(report.summary["label_values"]) == {0, 255}


def test_cli_exit_codes(folders3d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    overrides = ["--set", "network.spatial_dims=3"]
    assert main(["validate-data", str(folders3d), *overrides]) == 0
    assert "0 fatal problem(s)" in capsys.readouterr().out
    _plant_problems(folders3d)
    assert main(["validate-data", str(folders3d), *overrides]) == 1
    out = capsys.readouterr().out
    assert out.count("FATAL") == 4 and out.count("WARNING") == 2 and "label_values" in out
    # three classes configured away -> label value 2 becomes invalid everywhere
    assert main(["validate-data", str(folders3d), "--set", "data.class_names=[bg,fg]"]) == 1
    assert main(["validate-data", str(folders3d), "--set", "data.nonsense=1"]) == 1
    assert "unknown key" in capsys.readouterr().err


def test_cli_with_config_file(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = REPO_ROOT / "configs" / "hippocampus_3d.yaml"
    code = main(["validate-data", str(shared_data / "hippocampus"), "--config", str(config), "--max-cases", "5"])
    assert code == 0
    assert "RAS: 5" in capsys.readouterr().out


def test_cli_hints_at_a_config_of_the_right_dimensionality(folders3d: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate-data", str(folders3d), "--set", "network.spatial_dims=2", "--set", "data.patch_size=[16,16]"]) == 1
    assert "hint: these images are 3D but the config is for 2D networks" in capsys.readouterr().out


def test_undetectable_layout_names_the_folder_once(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    report = validate_dataset(tmp_path / "stuff", make_config(tmp_path / "stuff"))
    assert report.fatal[0].message.startswith("cannot detect the dataset layout") and "imagesTr/" in report.fatal[0].message
    assert report.format().splitlines()[0].count("stuff") == 1
