"""DICOM-SEG round trip, export-nifti of DICOM series and NumPy arrays, CLI registration."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch

from kmunet.cli.main import build_parser, main
from kmunet.inference import export_nifti, predict_folder
from tests.inference.conftest import PARAMS, make_volume, save_nifti

PARAMS3 = dict(PARAMS, num_classes=3, class_names=["background", "bright", "dim"])


def three_class_predictor(x: torch.Tensor) -> torch.Tensor:
    """Class 1 for z > 0.5, class 2 for 0 < z <= 0.5 (by z-scored intensity), else background."""
    return torch.cat([torch.zeros_like(x), 20.0 * (x - 0.5), 20.0 * x * (x < 0.5)], dim=1)


def test_dicom_seg_round_trip(tmp_path: Path, hcrop_series: Path) -> None:
    kw = dict(predictor=three_class_predictor, preprocessing=PARAMS3, device="cpu", progress=False)
    nifti = predict_folder(hcrop_series, tmp_path / "nii", **kw)
    seg = predict_folder(hcrop_series, tmp_path / "seg", fmt="dicom-seg", **kw)
    assert nifti.exit_code == 0 and seg.exit_code == 0
    seg_file = Path(seg.cases[0].output)
    assert seg_file.name.endswith("_seg.dcm")
    ds = pydicom.dcmread(seg_file)
    assert ds.Modality == "SEG" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    source_uid = pydicom.dcmread(next(hcrop_series.iterdir()), stop_before_pixels=True).SeriesInstanceUID
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == source_uid
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["bright", "dim"]

    expected = nib.load(nifti.cases[0].output)
    exp = np.asarray(expected.dataobj)
    assert set(np.unique(exp)) == {0, 1, 2}
    # With the source series as reference: same grid, voxel for voxel.
    rep = export_nifti(seg_file, tmp_path / "back_ref", reference=hcrop_series)
    assert rep.exit_code == 0, rep.failed
    back = nib.load(rep.written[0][1])
    np.testing.assert_array_equal(np.asarray(back.dataobj), exp)
    np.testing.assert_allclose(back.affine, expected.affine, atol=1e-4)
    # Without reference: the SEG's own geometry gives the same mask in world space.
    assert main(["export-nifti", "--input", str(seg_file), "--output", str(tmp_path / "back")]) == 0
    own = nib.load(str(tmp_path / "back" / (seg_file.name[:-4] + ".nii.gz")))
    np.testing.assert_allclose(own.affine, expected.affine, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(own.dataobj), exp)


def test_export_dicom_series_and_numpy(tmp_path: Path, hcrop_series: Path) -> None:
    rep = export_nifti(hcrop_series, tmp_path / "out")
    assert rep.exit_code == 0 and len(rep.written) == 1
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(hcrop_series)))
    ref = reader.Execute()
    img = sitk.ReadImage(rep.written[0][1])
    assert img.GetSize() == ref.GetSize()
    np.testing.assert_allclose(img.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(img.GetDirection(), ref.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(ref))
    # A second run refuses to overwrite.
    assert export_nifti(hcrop_series, tmp_path / "out").exit_code == 1

    labels = np.zeros(ref.GetSize(), np.uint8)
    labels[10:20, 5:9, 3] = 2
    np.save(tmp_path / "lab.npy", labels)
    assert main(["export-nifti", "--input", str(tmp_path / "lab.npy"), "--output", str(tmp_path / "np"),
                 "--reference", str(hcrop_series)]) == 0
    out = sitk.ReadImage(str(tmp_path / "np" / "lab.nii.gz"))
    np.testing.assert_allclose(out.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out).transpose(2, 1, 0), labels)


def test_export_numpy_with_nifti_reference(tmp_path: Path) -> None:
    affine = np.array([[0, 0, -3.0, 30], [-0.7, 0, 0, 20], [0, 1.4, 0, -5], [0, 0, 0, 1]])
    save_nifti(tmp_path / "ref.nii.gz", make_volume(), affine, 2, 1)
    labels = (make_volume() > 50).astype(np.int64)
    np.save(tmp_path / "m.npy", labels)
    rep = export_nifti(tmp_path / "m.npy", tmp_path / "o", reference=tmp_path / "ref.nii.gz")
    assert rep.exit_code == 0
    out = nib.load(rep.written[0][1])
    np.testing.assert_allclose(out.affine, affine, atol=1e-6)
    assert int(out.header["sform_code"]) == 2 and out.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(out.dataobj), labels)
    np.save(tmp_path / "bad.npy", labels[:, :, :3])
    assert export_nifti(tmp_path / "bad.npy", tmp_path / "o", reference=tmp_path / "ref.nii.gz").exit_code == 1
    with pytest.raises(ValueError, match="needs --reference"):
        export_nifti(tmp_path / "m.npy", tmp_path / "o")


def test_cli_commands_registered() -> None:
    parser = build_parser()
    args = parser.parse_args(["predict", "--input", "a", "--output", "b"])
    assert args.checkpoint is None and args.fmt == "nifti" and callable(args.func)  # run() uses DEFAULT_CHECKPOINT
    args = parser.parse_args(["predict", "--input", "a", "--output", "b", "--checkpoint", "x.pt", "--checkpoint", "y.pt", "z.pt"])
    assert args.checkpoint == ["x.pt", "y.pt", "z.pt"]  # repeated flags add members, they do not replace
    args = parser.parse_args(["evaluate", "--checkpoint", "x.pt", "--checkpoint", "y.pt"])
    assert args.checkpoint == ["x.pt", "y.pt"]
    args = parser.parse_args(["export-nifti", "--input", "a", "--output", "b", "--reference", "r"])
    assert args.reference == "r" and callable(args.func)


def test_export_failures_leave_no_empty_folder(tmp_path: Path) -> None:
    from kmunet.inference import export_nifti

    nothing = tmp_path / "nothing"
    nothing.mkdir()
    (nothing / "notes.txt").write_text("no images here")
    report = export_nifti(nothing, tmp_path / "out", log=lambda line: None)
    assert report.exit_code == 1 and not (tmp_path / "out").exists()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="afile: output exists and is not a folder"):
        export_nifti(nothing, tmp_path / "afile")
