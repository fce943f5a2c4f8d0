"""Regression tests: corrupt gzip streams, bad dataset.json entries, unlabelled images, nnU-Net channels."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from kmunet.cli.main import main
from kmunet.data.discovery import discover_cases
from kmunet.data.io import load_array
from kmunet.data.loaders import build_dataloaders
from kmunet.data.validation import validate_dataset
from tests.data.conftest import make_config


def _break_crc(path: Path) -> None:
    """Flip the gzip trailer's CRC-32: the deflate data stays intact, so nibabel alone reads it fine."""
    raw = bytearray(path.read_bytes())
    raw[-8] ^= 0xFF
    path.write_bytes(bytes(raw))


def _msd_copy(synth3d: Path, tmp_path: Path) -> Path:
    root = tmp_path / "msd"
    shutil.copytree(synth3d, root)
    return root


@pytest.mark.parametrize("sub", ["images", "labels"])
def test_crc_corrupted_nii_gz_is_fatal(folders3d: Path, sub: str, capsys: pytest.CaptureFixture[str]) -> None:
    broken = folders3d / sub / "synth_002.nii.gz"
    _break_crc(broken)
    report = validate_dataset(folders3d, make_config(folders3d))
    assert [(Path(p.file), p.message) for p in report.fatal] == [
        (broken, f"cannot read {sub[:-1]}: corrupt gzip stream (CRC check failed)")]
    assert main(["validate-data", str(folders3d)]) == 1
    out = capsys.readouterr().out
    assert f"FATAL   {broken}: cannot read {sub[:-1]}: corrupt gzip stream (CRC check failed)" in out


def test_truncated_nii_gz_is_fatal_and_names_the_problem(folders3d: Path) -> None:
    path = folders3d / "images" / "synth_001.nii.gz"
    path.write_bytes(path.read_bytes()[:-20])
    report = validate_dataset(folders3d, make_config(folders3d))
    assert len(report.fatal) == 1 and Path(report.fatal[0].file) == path
    assert report.fatal[0].message.startswith("cannot read image: truncated gzip stream")
    with pytest.raises(ValueError, match=r"synth_001.nii.gz: truncated gzip stream"):
        load_array(path)


@pytest.mark.parametrize("klass", [nib.Nifti1Image, nib.Nifti2Image])
@pytest.mark.parametrize("dtype", ["<f4", ">i2"])
def test_nii_gz_reads_nifti1_nifti2_and_both_byte_orders(tmp_path: Path, klass: type, dtype: str) -> None:
    data = np.arange(4 * 5 * 6).reshape(4, 5, 6).astype(dtype)
    affine = np.diag([0.5, 0.7, 2.0, 1.0])
    img = klass(data, affine)
    img.header.set_data_dtype(np.dtype(dtype))
    raw = img.to_bytes()
    if dtype.startswith(">"):  # nibabel writes native order: build the big-endian header by hand
        img = klass.from_bytes(raw)
        header = img.header.as_byteswapped(">")
        raw = klass(data, affine, header).to_bytes()
        assert raw[:4] in (b"\x00\x00\x01\x5c", b"\x00\x00\x02\x1c")
    path = tmp_path / "x.nii.gz"
    path.write_bytes(gzip.compress(raw))
    arr, aff, channels = load_array(path)
    assert channels == 1 and arr.shape == (1, 4, 5, 6)
    np.testing.assert_array_equal(arr[0], data)
    np.testing.assert_allclose(aff, affine)


def test_not_a_nifti_inside_the_gzip_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "x.nii.gz"
    path.write_bytes(gzip.compress(b"hello world, not a header" * 20))
    with pytest.raises(ValueError, match=r"x.nii.gz: not a NIfTI file"):
        load_array(path)


@pytest.mark.parametrize("entry", [{"image": 3}, {"image": ["./imagesTr/synth_000.nii.gz"]}, {"image": ""},
                                   {"image": "./imagesTr/synth_000.nii.gz", "label": 7}])
def test_dataset_json_entry_that_is_not_a_path(synth3d: Path, tmp_path: Path, entry: dict,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    root = _msd_copy(synth3d, tmp_path)
    meta = json.loads((root / "dataset.json").read_text())
    meta["training"][1] = entry
    (root / "dataset.json").write_text(json.dumps(meta))
    key = "label" if "label" in entry else "image"
    bad = entry[key]
    report = validate_dataset(root, make_config(root))
    assert len(report.fatal) == 1
    assert Path(report.fatal[0].file) == root / "dataset.json"
    assert report.fatal[0].message == f"training[1] {key!r} must be a file path (a non-empty string), got {bad!r}"
    assert main(["validate-data", str(root)]) == 1
    out = capsys.readouterr().out
    assert "Traceback" not in out and f"dataset.json: training[1] {key!r} must be a file path" in out


def test_unlabelled_image_is_a_warning_and_left_out_of_training(folders3d: Path) -> None:
    (folders3d / "labels" / "synth_003.nii.gz").unlink()
    report = validate_dataset(folders3d, make_config(folders3d))
    assert report.ok and report.n_cases == 6 and report.summary["n_labelled"] == 5
    assert [(Path(p.file).name, p.message) for p in report.warnings] == [
        ("synth_003.nii.gz", "no label found for this image (left out of training and evaluation)")]
    _, _, info = build_dataloaders(make_config(folders3d, val_fraction=0.2))
    assert info["n_unlabelled"] == 1 and "synth_003" not in info["train_names"] + info["val_names"]


def test_no_labelled_case_at_all_is_fatal(folders3d: Path) -> None:
    shutil.rmtree(folders3d / "labels")
    report = validate_dataset(folders3d, make_config(folders3d))
    assert [p.message for p in report.fatal] == ["no labelled case among 6 image(s): nothing to train on"]
    assert len(report.warnings) == 6


def test_validate_only_named_cases(folders3d: Path) -> None:
    lab = nib.load(folders3d / "labels" / "synth_004.nii.gz")
    data = np.asarray(lab.dataobj).copy()
    data[0, 0, 0] = 9
    nib.save(nib.Nifti1Image(data, lab.affine), str(folders3d / "labels" / "synth_004.nii.gz"))
    (folders3d / "images" / "synth_000.nii.gz").unlink()  # its label becomes an orphan
    cfg = make_config(folders3d)
    assert validate_dataset(folders3d, cfg, names=["synth_001", "synth_002"]).problems == []
    report = validate_dataset(folders3d, cfg, names=["synth_004"])
    assert report.n_cases == 1 and ["synth_004.nii.gz"] == [Path(p.file).name for p in report.problems]


def test_nnunet_second_channel_is_reported_as_unsupported(synth3d: Path, tmp_path: Path) -> None:
    root = _msd_copy(synth3d, tmp_path)
    (root / "dataset.json").unlink()  # nnU-Net raw data: imagesTr/ + labelsTr/, channel suffixes
    for p in sorted((root / "imagesTr").glob("*.nii.gz")):
        p.rename(p.with_name(p.name.replace(".nii.gz", "_0000.nii.gz")))
    second = root / "imagesTr" / "synth_002_0001.nii.gz"
    shutil.copy(root / "imagesTr" / "synth_002_0000.nii.gz", second)
    report = validate_dataset(root, make_config(root))
    assert len(report.fatal) == 1 and Path(report.fatal[0].file) == second
    assert report.fatal[0].message.startswith("multi-channel nnU-Net inputs (_0001 ...) are not supported")
    with pytest.raises(ValueError, match=r"synth_002_0001.nii.gz: multi-channel nnU-Net inputs"):
        discover_cases(make_config(root).data)
    # without a _0000 sibling, a name ending in _0001 is just a name
    second.rename(root / "imagesTr" / "other_0001.nii.gz")
    report = validate_dataset(root, make_config(root))
    assert report.ok and [Path(p.file).name for p in report.warnings] == ["other_0001.nii.gz"]


def test_every_nifti_reader_checks_the_gzip_crc(tmp_path: Path) -> None:
    """recon (--image), resample and train-resampler read NIfTI through the same CRC-checking reader."""
    from kmunet.inr.prior import train_resampler
    from kmunet.inr.resample import load_volume
    from kmunet.mri.io import load_image

    plain = tmp_path / "v.nii"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 8)).astype(np.float32), np.eye(4)), plain)
    bad = bytearray(gzip.compress(plain.read_bytes()))
    bad[-8] ^= 0xFF  # the trailer's CRC-32: the voxels decompress, the file is corrupt
    folder = tmp_path / "vols"
    folder.mkdir()
    (folder / "bad.nii.gz").write_bytes(bytes(bad))
    path = folder / "bad.nii.gz"
    with pytest.raises(ValueError, match="CRC check failed"):
        load_image(path)
    with pytest.raises(ValueError, match="CRC check failed"):
        load_volume(path)
    with pytest.raises(ValueError, match="CRC check failed"):
        train_resampler(folder, tmp_path / "prior.pt", epochs=1, holdout=0)
