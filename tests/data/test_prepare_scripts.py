"""Regression tests for the data-preparation scripts (review fixes): DRIVE split choice and image
formats, truncated/corrupt archives, nothing left behind on failure, DICOM output names, known MD5."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from kmunet.data import prepare
from kmunet.data.prepare import ChecksumError, convert_dicom_folder, prepare_drive, prepare_msd
from tests.data.conftest import load_script, make_drive_like, write_dicom_series



def _run(capsys: pytest.CaptureFixture[str], name: str, *argv: str) -> tuple[int, str, str]:
    rc = load_script(name).main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


# ----------------------------------------------------------------------------------------------- DRIVE


def _drive_release(root: Path) -> Path:
    """``root/DRIVE/{training,test}`` as in the DRIVE release (test with 1st_ and 2nd_manual)."""
    make_drive_like(root / "DRIVE" / "training", n=2)
    test = root / "DRIVE" / "test"
    make_drive_like(test, n=2)
    for sub, pattern, new in (("images", "{i}_training.tif", "{j:02d}_test.tif"),
                              ("1st_manual", "{i}_manual1.gif", "{j:02d}_manual1.gif"),
                              ("mask", "{i}_training_mask.gif", "{j:02d}_test_mask.gif")):
        for i, j in ((21, 1), (22, 2)):
            (test / sub / pattern.format(i=i)).rename(test / sub / new.format(j=j))
    (test / "2nd_manual").mkdir()
    for j in (1, 2):
        shutil.copy(test / "1st_manual" / f"{j:02d}_manual1.gif", test / "2nd_manual" / f"{j:02d}_manual2.gif")
    return root / "DRIVE"


def _zip_dir(folder: Path, zpath: Path) -> Path:
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted(folder.rglob("*")):
            zf.write(p, p.relative_to(folder.parent))
    return zpath


def test_drive_zip_with_both_splits_uses_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    zpath = _zip_dir(_drive_release(tmp_path / "src"), tmp_path / "DRIVE.zip")
    rc, out, _ = _run(capsys, "prepare_drive", zpath, "--out", tmp_path / "out")
    assert rc == 0
    assert f"{tmp_path / 'out' / 'DRIVE' / 'training'}: verified" in out and "training split" in out
    assert prepare_drive(zpath, tmp_path / "out_test", split="test") == tmp_path / "out_test" / "DRIVE" / "test"
    # a folder holding both splits: training too, and the test split only when asked for
    assert prepare_drive(tmp_path / "src") == tmp_path / "src" / "DRIVE" / "training"
    assert prepare_drive(tmp_path / "src", split="test") == tmp_path / "src" / "DRIVE" / "test"
    with pytest.raises(ValueError, match="split must be one of"):
        prepare_drive(tmp_path / "src", split="val")


def test_drive_test_split_only_is_refused_for_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    release = _drive_release(tmp_path / "src")
    shutil.rmtree(release / "training")
    zpath = _zip_dir(release, tmp_path / "DRIVE_test.zip")
    rc, _, err = _run(capsys, "prepare_drive", zpath, "--out", tmp_path / "out")
    line = _one_line_error(err)
    assert rc == 1 and "--split test" in line and str(zpath) in line
    assert not (tmp_path / "out").exists()


def test_drive_png_manual_and_fov_masks_accepted(tmp_path: Path) -> None:
    from PIL import Image

    drive = make_drive_like(tmp_path / "png", n=3)
    for sub in ("1st_manual", "mask"):
        for p in sorted((drive / sub).glob("*.gif")):
            Image.open(p).save(p.with_suffix(".png"))
            p.unlink()
    assert prepare_drive(drive) == drive
    (drive / "mask" / "22_training_mask.png").unlink()
    (drive / "1st_manual" / "23_manual1.png").unlink()
    with pytest.raises(ValueError) as info:
        prepare_drive(drive)
    msg = str(info.value)
    assert "\n" not in msg and "22_training.tif" in msg and "field-of-view" in msg and "23_training.tif" in msg


def test_drive_flat_folder_without_out_names_the_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    drive = make_drive_like(tmp_path / "DRIVE" / "training", n=2)
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in drive.rglob("*.*"):
        shutil.copy(p, flat / p.name)
    rc, _, err = _run(capsys, "prepare_drive", flat)
    line = _one_line_error(err)
    assert rc == 1 and "--out" in line and "out_dir" not in line.split("(")[0]
    assert line.count("prepare_drive") == 1 and str(flat) in line


def test_drive_flat_folder_failing_verification_leaves_nothing(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    drive = make_drive_like(tmp_path / "DRIVE" / "training", n=3)
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in drive.rglob("*.*"):
        shutil.copy(p, flat / p.name)
    (flat / "23_manual1.gif").unlink()
    rc, _, err = _run(capsys, "prepare_drive", flat, "--out", tmp_path / "out")
    assert rc == 1 and "23_training.tif" in _one_line_error(err)
    assert not (tmp_path / "out").exists()
    # an existing output folder is left exactly as it was
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "notes.txt").write_text("mine")
    assert _run(capsys, "prepare_drive", flat, "--out", tmp_path / "keep")[0] == 1
    assert _tree(tmp_path / "keep") == ["notes.txt"]


def test_drive_zip_failing_verification_leaves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    drive = make_drive_like(tmp_path / "src" / "DRIVE" / "training", n=2)
    (drive / "mask" / "22_training_mask.gif").unlink()
    zpath = _zip_dir(tmp_path / "src" / "DRIVE", tmp_path / "DRIVE.zip")
    rc, _, err = _run(capsys, "prepare_drive", zpath, "--out", tmp_path / "a" / "b")
    assert rc == 1 and "22_training_mask.gif: missing field-of-view" in _one_line_error(err)
    assert not (tmp_path / "a").exists()


# ------------------------------------------------------------------------------------------------- MSD


@pytest.fixture
def task_dir(synth3d: Path, tmp_path: Path) -> Path:
    """An editable MSD task folder ``Task04_Hippocampus`` (the synthetic dataset)."""
    return Path(shutil.copytree(synth3d, tmp_path / "src" / "Task04_Hippocampus"))


def _tar(folder: Path, path: Path, mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tf:
        tf.add(folder, arcname=folder.name)
    return path


@pytest.mark.parametrize("kind", ["mid_member", "block_boundary", "gzip", "zip"])
def test_msd_truncated_archive_one_line_error(task_dir: Path, tmp_path: Path, kind: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    if kind == "zip":
        full = tmp_path / "task.zip"
        with zipfile.ZipFile(full, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in sorted(task_dir.rglob("*")):
                zf.write(p, p.relative_to(task_dir.parent))
    else:
        full = _tar(task_dir, tmp_path / ("task.tar.gz" if kind == "gzip" else "task.tar"),
                    "w:gz" if kind == "gzip" else "w")
    data = full.read_bytes()
    if kind == "block_boundary":  # cut right after a member's data: tarfile sees a clean (short) archive
        with tarfile.open(full) as tf:
            members = tf.getmembers()
        cut = members[len(members) // 2].offset
        assert cut % 512 == 0
    else:
        cut = len(data) * 2 // 3
    trunc = tmp_path / f"trunc_{full.name}"
    trunc.write_bytes(data[:cut])
    rc, _, err = _run(capsys, "prepare_msd", "Task04_Hippocampus", "--out", tmp_path / "out", "--archive", trunc)
    line = _one_line_error(err)
    assert rc == 1 and str(trunc) in line and "truncated or corrupt" in line
    assert not (tmp_path / "out").exists()


def test_msd_missing_listed_file_leaves_nothing(task_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    (task_dir / "labelsTr" / "synth_002.nii.gz").unlink()
    archive = _tar(task_dir, tmp_path / "task04_missing.tar")
    rc, _, err = _run(capsys, "prepare_msd", "Task04_Hippocampus", "--out", tmp_path / "out", "--archive", archive)
    line = _one_line_error(err)
    assert rc == 1 and "synth_002.nii.gz: listed in dataset.json but missing" in line and ".partial" not in line
    assert not (tmp_path / "out").exists()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "other.txt").write_text("mine")
    with pytest.raises(ValueError, match="listed in dataset.json but missing"):
        prepare_msd("Task04_Hippocampus", tmp_path / "data", archive=archive)
    assert _tree(tmp_path / "data") == ["other.txt"]


def test_msd_success_publishes_and_refuses_to_merge(task_dir: Path, tmp_path: Path) -> None:
    archive = _tar(task_dir, tmp_path / "task04.tar")
    root = prepare_msd("Task04_Hippocampus", tmp_path / "data", archive=archive)
    assert root == tmp_path / "data" / "Task04_Hippocampus" and (root / "dataset.json").is_file()
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["Task04_Hippocampus"]  # no staging folder left
    with pytest.raises(ValueError, match="already exists"):
        prepare_msd("Task04_Hippocampus", tmp_path / "data", archive=archive)
    assert (root / "dataset.json").is_file()


def test_msd_local_official_archive_checks_known_md5(task_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    official = _tar(task_dir, tmp_path / "Task04_Hippocampus.tar")  # the official name, not the official bytes
    rc, _, err = _run(capsys, "prepare_msd", "Task04_Hippocampus", "--out", tmp_path / "o1", "--archive", official)
    line = _one_line_error(err)
    assert rc == 1 and "md5" in line and prepare.MSD_MD5["Task04_Hippocampus"] in line and "--no-verify-md5" in line
    assert not (tmp_path / "o1").exists()
    with pytest.raises(ChecksumError):
        prepare_msd("Task04_Hippocampus", tmp_path / "o2", archive=official)
    rc, out, _ = _run(capsys, "prepare_msd", "Task04_Hippocampus", "--out", tmp_path / "o3", "--archive", official,
                      "--no-verify-md5")
    assert rc == 0 and "verified" in out
    monkeypatch.setitem(prepare.MSD_MD5, "Task04_Hippocampus", hashlib.md5(official.read_bytes()).hexdigest())
    assert prepare_msd("Task04_Hippocampus", tmp_path / "o4", archive=official).name == "Task04_Hippocampus"
    # an archive under another name is not checksummed, and the script says so
    other = shutil.copy(official, tmp_path / "mine.tar")
    rc, _, err = _run(capsys, "prepare_msd", "Task04_Hippocampus", "--out", tmp_path / "o5", "--archive", other)
    assert rc == 0 and "not checksummed" in err


# ----------------------------------------------------------------------------------------------- DICOM


def test_dicom_no_series_no_folder_no_itk_warning(task_dir: Path, tmp_path: Path,
                                                  capfd: pytest.CaptureFixture[str]) -> None:
    rc = load_script("dicom_to_nifti").main([str(task_dir), "--out", str(tmp_path / "none")])
    err = capfd.readouterr().err
    line = _one_line_error(err)
    assert rc == 1 and "no DICOM series found" in line and "WARNING" not in err
    assert not (tmp_path / "none").exists()


def test_dicom_output_name_collision_made_unique(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    vol_a, vol_b = rng.integers(0, 300, (8, 6, 3)), rng.integers(0, 300, (8, 6, 4))
    write_dicom_series(tmp_path / "dc" / "p1" / "ax", vol_a)
    write_dicom_series(tmp_path / "dc" / "p1_ax", vol_b)
    rc, out, err = _run(capsys, "dicom_to_nifti", tmp_path / "dc", "--out", tmp_path / "nii")
    assert rc == 0 and "p1_ax-2.nii.gz" in err and "p1/ax" in err
    files = sorted(p.name for p in (tmp_path / "nii").iterdir())
    assert files == ["p1_ax-2.nii.gz", "p1_ax.nii.gz"]
    import nibabel as nib

    assert nib.load(tmp_path / "nii" / "p1_ax.nii.gz").shape == (8, 6, 3)  # p1/ax sorts first
    assert nib.load(tmp_path / "nii" / "p1_ax-2.nii.gz").shape == (8, 6, 4)
    assert len(out.split()) == 2


def test_dicom_existing_output_is_not_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_dicom_series(tmp_path / "dc" / "s", np.random.default_rng(0).integers(0, 300, (8, 6, 3)))
    (tmp_path / "nii").mkdir()
    (tmp_path / "nii" / "s.nii.gz").write_bytes(b"earlier")
    rc, _, err = _run(capsys, "dicom_to_nifti", tmp_path / "dc", "--out", tmp_path / "nii")
    assert rc == 1 and "--overwrite" in _one_line_error(err)
    assert (tmp_path / "nii" / "s.nii.gz").read_bytes() == b"earlier"
    assert _run(capsys, "dicom_to_nifti", tmp_path / "dc", "--out", tmp_path / "nii", "--overwrite")[0] == 0
    assert (tmp_path / "nii" / "s.nii.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert sorted(p.name for p in (tmp_path / "nii").iterdir()) == ["s.nii.gz"]


def test_dicom_unreadable_series_leaves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_dicom_series(tmp_path / "dc" / "a", np.random.default_rng(0).integers(0, 300, (8, 6, 3)))
    write_dicom_series(tmp_path / "dc" / "b", np.random.default_rng(1).integers(0, 300, (8, 6, 3)))
    # a slice of another size with the same series UID (same folder name): ImageSeriesReader fails
    write_dicom_series(tmp_path / "other" / "b", np.random.default_rng(2).integers(0, 300, (10, 6, 3)))
    shutil.copy(tmp_path / "other" / "b" / "0001.dcm", tmp_path / "dc" / "b" / "0001.dcm")
    rc, out, err = _run(capsys, "dicom_to_nifti", tmp_path / "dc", "--out", tmp_path / "nii")
    line = _one_line_error(err)
    assert rc == 1 and out == "" and str(tmp_path / "dc" / "b") in line and "Size mismatch" in line
    assert "0x" not in line and not (tmp_path / "nii").exists()  # series "a" converted fine but is not kept


def test_safe_extract_corrupt_archive_removes_what_it_wrote(task_dir: Path, tmp_path: Path) -> None:
    full = _tar(task_dir, tmp_path / "t.tar")
    trunc = tmp_path / "trunc.tar"
    trunc.write_bytes(full.read_bytes()[: full.stat().st_size * 2 // 3])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("x")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        prepare.safe_extract(trunc, tmp_path / "out")
    assert _tree(tmp_path / "out") == ["mine.txt"]
    bad_gz = tmp_path / "bad.tar.gz"
    bad_gz.write_bytes(gzip.compress(full.read_bytes())[:-100])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        prepare.safe_extract(bad_gz, tmp_path / "out")
    assert _tree(tmp_path / "out") == ["mine.txt"]


# ------------------------------------------------------------------------ publishing (review fixes, 2)


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_msd_top_level_dataset_json_published_readable(task_dir: Path, tmp_path: Path, umask_022: None) -> None:
    archive = tmp_path / "flat.tar"
    with tarfile.open(archive, "w") as tf:
        for p in sorted(task_dir.iterdir()):
            tf.add(p, arcname=p.name)  # dataset.json at the top of the archive
    root = prepare_msd("Task04_Hippocampus", tmp_path / "data", archive=archive)
    assert root == tmp_path / "data" / "Task04_Hippocampus" and (root / "dataset.json").is_file()
    assert stat.S_IMODE(root.stat().st_mode) == 0o755
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["Task04_Hippocampus"]


def test_drive_zip_macosx_and_other_split_not_published(tmp_path: Path) -> None:
    release = _drive_release(tmp_path / "src")
    (tmp_path / "src" / "__MACOSX" / "DRIVE").mkdir(parents=True)
    (tmp_path / "src" / "__MACOSX" / "DRIVE" / "._x").write_bytes(b"fork")
    zpath = tmp_path / "DRIVE.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted((tmp_path / "src").rglob("*")):
            zf.write(p, p.relative_to(tmp_path / "src"))
    assert prepare_drive(zpath, tmp_path / "out") == tmp_path / "out" / "DRIVE" / "training"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["DRIVE"]
    # a zip of a flat folder holding both splits' files: only the sorted split is published
    flat_zip = tmp_path / "flat.zip"
    with zipfile.ZipFile(flat_zip, "w") as zf:
        for p in sorted(release.rglob("*.*")):
            if p.parent.name != "2nd_manual":
                zf.write(p, p.name)
    out = prepare_drive(flat_zip, tmp_path / "out_flat")
    assert out == tmp_path / "out_flat" / "training"
    assert sorted(p.name for p in (tmp_path / "out_flat").iterdir()) == ["training"]
    assert _tree(out / "images") == ["21_training.tif", "22_training.tif"]


def test_drive_flat_other_split_without_out_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    release = _drive_release(tmp_path / "src")
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in (release / "test").rglob("*_test*.*"):
        shutil.copy(p, flat / p.name)
    with pytest.raises(ValueError, match=r"nor DRIVE training files .*pass --split test"):
        prepare_drive(flat)
    with pytest.raises(SystemExit):
        load_script("prepare_drive").main([str(flat), "--split", "val"])
    assert "invalid choice" in capsys.readouterr().err


def test_dicom_output_appearing_during_conversion_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import SimpleITK as sitk

    write_dicom_series(tmp_path / "dc" / "a", np.random.default_rng(0).integers(0, 300, (8, 6, 3)))
    write_dicom_series(tmp_path / "dc" / "b", np.random.default_rng(1).integers(0, 300, (8, 6, 3)))
    real_write = sitk.WriteImage

    def write_and_race(image: Any, path: str) -> None:
        real_write(image, path)
        if path.endswith("b.nii.gz"):  # someone else writes b.nii.gz meanwhile
            (tmp_path / "nii" / "b.nii.gz").write_bytes(b"theirs")

    monkeypatch.setattr(sitk, "WriteImage", write_and_race)
    with pytest.raises(ValueError, match=r"b\.nii\.gz: already exists"):
        convert_dicom_folder(tmp_path / "dc", tmp_path / "nii")
    assert _tree(tmp_path / "nii") == ["b.nii.gz"] and (tmp_path / "nii" / "b.nii.gz").read_bytes() == b"theirs"


def test_dicom_failure_while_publishing_rolls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_dicom_series(tmp_path / "dc" / "a", np.random.default_rng(0).integers(0, 300, (8, 6, 3)))
    write_dicom_series(tmp_path / "dc" / "b", np.random.default_rng(1).integers(0, 300, (8, 6, 3)))
    (tmp_path / "nii").mkdir()
    (tmp_path / "nii" / "a.nii.gz").write_bytes(b"earlier")
    real_replace = Path.replace

    def failing_replace(self: Path, target: Any) -> Path:
        if Path(target) == tmp_path / "nii" / "b.nii.gz":
            raise OSError("disk full")
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        convert_dicom_folder(tmp_path / "dc", tmp_path / "nii", overwrite=True)
    assert _tree(tmp_path / "nii") == ["a.nii.gz"] and (tmp_path / "nii" / "a.nii.gz").read_bytes() == b"earlier"
