"""Dataset discovery for every layout, and deterministic splits / k-fold."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from kmunet.config import DataConfig
from kmunet.data import detect_layout, discover_cases, split_cases
from tests.data.conftest import make_drive_like, save_nifti, write_dicom_series


def test_msd_discovery_synthetic(synth3d: Path) -> None:
    cases = discover_cases(DataConfig(root=str(synth3d)))
    assert [c["name"] for c in cases] == [f"synth_{i:03d}" for i in range(6)]
    for c in cases:
        assert Path(c["image"]).is_file() and Path(c["label"]).is_file()
        assert Path(c["image"]).parent.name == "imagesTr" and Path(c["label"]).parent.name == "labelsTr"
    assert detect_layout(synth3d) == "msd"


def test_folders_discovery_pairs_by_stem_and_keeps_unlabelled(folders3d: Path) -> None:
    (folders3d / "labels" / "synth_002.nii.gz").unlink()
    (folders3d / "images" / ".hidden.nii.gz").write_bytes(b"")
    cases = discover_cases(DataConfig(root=str(folders3d)))
    assert detect_layout(folders3d) == "folders"
    assert len(cases) == 6
    by_name = {c["name"]: c for c in cases}
    assert "label" not in by_name["synth_002"]
    assert Path(by_name["synth_001"]["label"]).name == "synth_001.nii.gz"
    assert Path(by_name["synth_001"]["image"]).parent.name == "images"


def test_imagestr_labelstr_without_dataset_json(synth3d: Path, tmp_path: Path) -> None:
    import shutil

    synth3d = Path(shutil.copytree(synth3d, tmp_path / "ds"))  # the fixture is shared: change a copy
    (synth3d / "dataset.json").unlink()  # MSD folders without their JSON, or nnU-Net raw data
    first = sorted((synth3d / "imagesTr").glob("*.nii.gz"))[0]
    first.rename(first.with_name(first.name.replace(".nii.gz", "_0000.nii.gz")))  # nnU-Net channel suffix
    assert detect_layout(synth3d) == "folders"
    cases = discover_cases(DataConfig(root=str(synth3d)))
    assert [c["name"] for c in cases] == [f"synth_{i:03d}" for i in range(6)]
    assert all(Path(c["label"]).parent.name == "labelsTr" for c in cases)
    assert Path(cases[0]["image"]).name == "synth_000_0000.nii.gz" and Path(cases[0]["label"]).name == "synth_000.nii.gz"


def test_folders_discovery_with_dicom_series(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    rng = np.random.default_rng(0)
    image = write_dicom_series(root / "images" / "patient1", rng.integers(0, 200, (12, 10, 4)))
    (root / "labels").mkdir()
    import SimpleITK as sitk

    label = sitk.GetImageFromArray(np.zeros((4, 10, 12), np.uint8))
    label.CopyInformation(image)
    sitk.WriteImage(label, str(root / "labels" / "patient1.nii.gz"))
    cases = discover_cases(DataConfig(root=str(root), layout="folders"))
    assert [c["name"] for c in cases] == ["patient1"]
    assert Path(cases[0]["image"]).is_dir() and cases[0]["label"].endswith("patient1.nii.gz")
    # the DICOM image and its NIfTI label share one RAS geometry
    from kmunet.data import validate_dataset
    from tests.data.conftest import make_config

    report = validate_dataset(root, make_config(root, layout="folders"))
    assert [(p.severity, p.message) for p in report.problems] == [("warning", "label is empty (background only)")]
    assert report.ok and report.summary["spacings"] == {"(0.8, 0.8, 2.0)": 1}


def test_drive_discovery(drive_like: Path) -> None:
    cases = discover_cases(DataConfig(root=str(drive_like)))
    assert detect_layout(drive_like) == "drive"
    assert [c["name"] for c in cases] == ["21_training", "22_training", "23_training"]
    assert Path(cases[0]["label"]).name == "21_manual1.gif"
    assert Path(cases[0]["fov"]).name == "21_training_mask.gif"


def test_discovery_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="valid"):
        discover_cases(DataConfig(root=str(tmp_path), layout="nnunet"))
    with pytest.raises(ValueError, match="cannot detect"):
        discover_cases(DataConfig(root=str(tmp_path)))
    with pytest.raises(FileNotFoundError):
        discover_cases(DataConfig(root=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="data.root"):
        discover_cases(DataConfig(root=""))
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(ValueError, match="training"):
        discover_cases(DataConfig(root=str(tmp_path)))
    (tmp_path / "dataset.json").write_text('{"name": "x",\n')  # cut off mid-file
    with pytest.raises(ValueError, match=r"dataset.json: not valid JSON \(Expecting property name"):
        discover_cases(DataConfig(root=str(tmp_path)))


def test_real_hippocampus_discovery(shared_data: Path) -> None:
    root = shared_data / "hippocampus"
    cases = discover_cases(DataConfig(root=str(root)))
    assert len(cases) == 200
    assert len({c["name"] for c in cases}) == 200
    assert all(Path(c["image"]).is_file() and Path(c["label"]).is_file() for c in cases[:10])


def test_real_drive_discovery(shared_data: Path) -> None:
    cases = discover_cases(DataConfig(root=str(shared_data / "drive" / "training"), layout="drive"))
    assert len(cases) == 20
    assert all({"image", "label", "fov"} <= set(c) for c in cases)
    assert cases[0]["name"] == "21_training"


def _cases(n: int) -> list[dict]:
    return [{"name": f"c{i:02d}", "image": f"c{i:02d}.nii.gz", "label": f"l{i:02d}.nii.gz"} for i in range(n)]


def test_split_is_deterministic_disjoint_and_seeded() -> None:
    cases = _cases(20)
    cfg = DataConfig(val_fraction=0.25, seed=3)
    train, val = split_cases(cases, cfg)
    train2, val2 = split_cases(list(reversed(cases)), cfg)
    assert [c["name"] for c in train] == [c["name"] for c in train2]
    assert [c["name"] for c in val] == [c["name"] for c in val2]
    assert len(val) == 5 and len(train) == 15
    assert not {c["name"] for c in train} & {c["name"] for c in val}
    _, val_other = split_cases(cases, dataclasses.replace(cfg, seed=4))
    assert {c["name"] for c in val_other} != {c["name"] for c in val}
    # at least one validation case when the fraction rounds to zero
    assert len(split_cases(_cases(3), DataConfig(val_fraction=0.1))[1]) == 1


def test_kfold_covers_all_cases_once() -> None:
    cases = _cases(11)
    seen: list[str] = []
    for fold in range(4):
        train, val = split_cases(cases, DataConfig(num_folds=4, fold=fold, seed=7))
        assert len(train) + len(val) == 11
        assert not {c["name"] for c in train} & {c["name"] for c in val}
        assert len(val) in (2, 3)
        seen += [c["name"] for c in val]
    assert sorted(seen) == [c["name"] for c in cases]


@pytest.mark.parametrize("fold", [None, 2])
def test_train_fraction_keeps_nested_seeded_subsets_and_the_validation_cases(fold: int | None) -> None:
    cases = _cases(40)
    full_train, full_val = split_cases(cases, DataConfig(fold=fold, seed=5))
    names = {}
    for frac in (0.25, 0.5, 0.75, 1.0):
        train, val = split_cases(cases, DataConfig(fold=fold, seed=5, train_fraction=frac))
        assert [c["name"] for c in val] == [c["name"] for c in full_val]  # validation unchanged
        assert len(train) == round(len(full_train) * frac)
        assert [c["name"] for c in train] == sorted(c["name"] for c in train)
        names[frac] = {c["name"] for c in train}
    assert names[0.25] < names[0.5] < names[0.75] < names[1.0] == {c["name"] for c in full_train}
    # a seeded subset, not simply the first names in order
    assert names[0.5] != {c["name"] for c in full_train[: len(names[0.5])]}
    # never empty
    assert len(split_cases(_cases(5), DataConfig(val_fraction=0.2, train_fraction=0.01))[0]) == 1


def test_split_rejects_bad_settings() -> None:
    cases = _cases(4)
    with pytest.raises(ValueError, match="fold"):
        split_cases(cases, DataConfig(num_folds=3, fold=3))
    with pytest.raises(ValueError, match="num_folds"):
        split_cases(cases, DataConfig(num_folds=5, fold=0))
    with pytest.raises(ValueError, match="val_fraction"):
        split_cases(cases, DataConfig(val_fraction=1.5))
    for frac in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="train_fraction"):
            split_cases(cases, DataConfig(train_fraction=frac))
    with pytest.raises(ValueError, match="unique"):
        split_cases(cases + cases[:1], DataConfig())


def test_drive_like_helper_writes_expected_values(tmp_path: Path) -> None:
    from PIL import Image

    root = make_drive_like(tmp_path / "d", n=1)
    from kmunet.data.io import load_array

    manual = load_array(root / "1st_manual" / "21_manual1.gif")[0]
    assert set(np.unique(manual)) == {0, 255}
    assert np.asarray(Image.open(root / "images" / "21_training.tif")).shape == (60, 52, 3)
    save_nifti(tmp_path / "x.nii.gz", np.zeros((3, 3), np.float32), np.eye(4))
    assert (tmp_path / "x.nii.gz").is_file()
