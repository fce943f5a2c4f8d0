"""Geometry round trips: masks land on the input's exact grid (NIfTI RAS/LPS/oblique/anisotropic, DICOM)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from kmunet.inference import discover_cases, predict_folder
from tests.inference.conftest import PARAMS, make_volume, save_nifti, threshold_predictor

_ROT = np.array(
    [[0.866, -0.5, 0.0], [0.433, 0.75, -0.5], [0.25, 0.433, 0.866]]
)  # a proper rotation (30 deg about z then 30 deg about x), rounded
_U, _, _VT = np.linalg.svd(_ROT)
_ROT = _U @ _VT

AFFINES = {
    # name: (affine, sform_code, qform_code)
    "ras": (np.diag([1.0, 1.0, 1.0, 1.0]) + np.array([[0, 0, 0, -10], [0, 0, 0, 5], [0, 0, 0, 3], [0, 0, 0, 0]]), 1, 1),
    "lps": (np.array([[-1.0, 0, 0, 12], [0, -1.0, 0, 40], [0, 0, 1.0, -7], [0, 0, 0, 1]]), 0, 1),
    "oblique": (np.vstack([np.hstack([_ROT * [0.8, 1.1, 1.3], [[4.0], [-2.0], [9.0]]]), [0, 0, 0, 1]]), 2, 0),
    "anisotropic_permuted": (np.array([[0, 0, -3.0, 30], [-0.7, 0, 0, 20], [0, 1.4, 0, -5], [0, 0, 0, 1]]), 4, 1),
}


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_nifti_mask_keeps_exact_geometry_and_voxels(tmp_path: Path, name: str) -> None:
    affine, scode, qcode = AFFINES[name]
    data = make_volume()
    inp = tmp_path / "in"
    inp.mkdir()
    save_nifti(inp / f"{name}.nii.gz", data, affine, scode, qcode)
    src = nib.load(str(inp / f"{name}.nii.gz"))

    report = predict_folder(inp, tmp_path / "out", predictor=threshold_predictor, preprocessing=PARAMS,
                            device="cpu", progress=False)
    assert report.exit_code == 0, report.to_dict()
    out = nib.load(str(tmp_path / "out" / f"{name}.nii.gz"))
    assert out.shape == data.shape
    assert out.get_data_dtype() == np.uint8
    np.testing.assert_allclose(out.affine, src.affine, atol=1e-6)
    assert int(out.header["sform_code"]) == scode and int(out.header["qform_code"]) == qcode
    np.testing.assert_allclose(out.header.get_sform(), src.header.get_sform(), atol=1e-6)
    np.testing.assert_allclose(out.header.get_qform(), src.header.get_qform(), atol=1e-6)
    # Orientation-only preprocessing: the thresholded structure lands voxel for voxel.
    np.testing.assert_array_equal(np.asarray(out.dataobj), (data > 50).astype(np.uint8))
    row = report.cases[0]
    spacing = np.sqrt((src.affine[:3, :3] ** 2).sum(0))
    assert row.volumes_mm3["box"] == pytest.approx((data > 50).sum() * abs(np.linalg.det(src.affine[:3, :3])))
    np.testing.assert_allclose(row.spacing, spacing, rtol=1e-5)


def test_resampling_preprocessing_maps_back_to_input_grid(tmp_path: Path) -> None:
    affine, _, _ = AFFINES["anisotropic_permuted"]
    data = make_volume((24, 28, 12))
    inp = tmp_path / "in"
    inp.mkdir()
    save_nifti(inp / "aniso.nii", data, affine)
    params = dict(PARAMS, target_spacing=[1.0, 1.0, 1.0])
    report = predict_folder(inp, tmp_path / "out", predictor=threshold_predictor, preprocessing=params,
                            device="cpu", progress=False, save_probabilities=True, png=True)
    assert report.exit_code == 0, report.to_dict()
    out = nib.load(str(tmp_path / "out" / "aniso.nii.gz"))
    assert out.shape == data.shape
    np.testing.assert_allclose(out.affine, affine, atol=1e-6)
    mask, truth = np.asarray(out.dataobj) == 1, data > 50
    dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
    assert dice > 0.85, dice
    probs = nib.load(str(tmp_path / "out" / "aniso_probabilities.nii.gz"))
    assert probs.shape == (*data.shape, 2)
    np.testing.assert_allclose(np.asarray(probs.dataobj).sum(-1), 1.0, atol=1e-4)
    png = (tmp_path / "out" / "aniso.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "out" / "predict_report.json").read_text())
    assert saved["cases"][0]["png"].endswith("aniso.png")


def test_dicom_study_discovery_sorts_by_position(shared_data: Path) -> None:
    study = shared_data / "dicom_mr" / "Study1"
    if not study.is_dir():
        pytest.skip("dicom_mr/Study1 not found")
    cases, skipped = discover_cases(study)
    assert len(cases) == 5 and not skipped
    assert len({c.name for c in cases}) == 5
    for case in cases:
        assert not case.error and "/" not in case.name
        reader_files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(case.path), case.series_uid)
        assert [Path(f).name for f in reader_files] == [f.name for f in case.files]  # GDCM's slice order
    hcrop = [c for c in cases if c.path.name == "13_HCropVolume"]
    assert len(hcrop) == 1 and len(hcrop[0].files) == 32
    # A single DICOM file selects its whole series.
    single, _ = discover_cases(hcrop[0].files[5])
    assert len(single) == 1 and single[0].files == hcrop[0].files


def test_preprocessing_matches_training_pipeline(shared_data: Path) -> None:
    from kmunet.data import build_preprocessing
    from kmunet.inference import inference_transforms, load_case
    from kmunet.inference.predict import _to_meta_tensor

    hippo = shared_data / "hippocampus" / "imagesTr"
    if not hippo.is_dir():
        pytest.skip("hippocampus data not found")
    path = sorted(p for p in hippo.glob("*.nii.gz") if not p.name.startswith("."))[0]
    params = dict(PARAMS, target_spacing=[1.3, 0.9, 1.1])
    train = build_preprocessing(params, keys=("image",))({"image": str(path)})["image"]
    case = discover_cases(path)[0][0]
    ours = inference_transforms(params)({"image": _to_meta_tensor(load_case(case))})["image"]
    assert ours.shape == train.shape
    np.testing.assert_allclose(ours.affine.numpy(), train.affine.numpy(), atol=1e-6)
    np.testing.assert_allclose(ours.numpy(), train.numpy(), atol=1e-5)


def test_dicom_series_mask_matches_simpleitk_geometry(tmp_path: Path, hcrop_series: Path) -> None:
    report = predict_folder(hcrop_series, tmp_path / "out", predictor=threshold_predictor, preprocessing=PARAMS,
                            device="cpu", progress=False)
    assert report.exit_code == 0, report.to_dict()
    assert len(report.cases) == 1
    reader = sitk.ImageSeriesReader()
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(hcrop_series))
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(hcrop_series), ids[0]))
    ref = reader.Execute()
    mask = sitk.ReadImage(report.cases[0].output)
    assert mask.GetSize() == ref.GetSize()
    np.testing.assert_allclose(mask.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(mask.GetSpacing(), ref.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(mask.GetDirection(), ref.GetDirection(), atol=1e-6)
    # Voxel-exact placement: the thresholded z-scored image equals the written mask.
    arr = sitk.GetArrayFromImage(ref).astype(np.float64)
    nz = arr[arr != 0]
    expected = (arr != 0) & ((arr - nz.mean()) / nz.std() * 10.0 - 1.0 > 0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), expected.astype(np.uint8))
    # The same mask read with nibabel has the RAS version of that geometry.
    nii = nib.load(report.cases[0].output)
    assert nii.shape == ref.GetSize()


def _write_oblique_series(folder: Path, volume: np.ndarray) -> sitk.Image:
    """Write ``volume`` (z, y, x) as an oblique, anisotropic DICOM series with shuffled file names."""
    folder.mkdir(parents=True)
    image = sitk.GetImageFromArray(volume.astype(np.int16))
    image.SetSpacing((0.8, 1.1, 2.5))
    image.SetOrigin((12.0, -30.0, 7.5))
    image.SetDirection(tuple(_ROT.flatten()))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = image.GetDirection()
    iop = "\\".join(f"{v:.6f}" for v in (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7]))
    uid = "1.2.826.0.1.3680043.8.498.1234567"
    order = np.random.default_rng(0).permutation(image.GetDepth())
    for i in range(image.GetDepth()):
        sl = image[:, :, i]
        for tag, value in [("0008|0060", "MR"), ("0020|000e", uid), ("0020|000d", uid + ".1"),
                           ("0020|0037", iop), ("0010|0020", "synthetic"), ("0008|103e", "oblique test"),
                           ("0020|0011", "7"), ("0008|0016", "1.2.840.10008.5.1.4.1.1.4"),
                           ("0008|0018", f"{uid}.2.{i}"), ("0020|0013", str(i + 1)),
                           ("0020|0032", "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, i)))),
                           ("0018|0050", "2.5")]:
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"img{order[i]:03d}.dcm"))
        writer.Execute(sl)
    return image


def test_oblique_dicom_series_round_trip(tmp_path: Path) -> None:
    vol = np.transpose(make_volume((20, 18, 10)), (2, 1, 0)) * 10  # (z, y, x)
    _write_oblique_series(tmp_path / "in" / "series", vol)
    report = predict_folder(tmp_path / "in", tmp_path / "out", predictor=threshold_predictor, preprocessing=PARAMS,
                            device="cpu", progress=False)
    assert report.exit_code == 0, report.to_dict()
    assert report.cases[0].case == "synthetic_S7_oblique_test"
    folder = str(tmp_path / "in" / "series")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder))
    ref = reader.Execute()
    mask = sitk.ReadImage(report.cases[0].output)
    assert mask.GetSize() == ref.GetSize() == (20, 18, 10)
    np.testing.assert_allclose(mask.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(mask.GetSpacing(), ref.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(mask.GetDirection(), ref.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(ref.GetDirection(), _ROT.flatten(), atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), (sitk.GetArrayFromImage(ref) > 500).astype(np.uint8))


def test_mirroring_tta_keeps_geometry_and_needs_mirror_axes(tmp_path: Path) -> None:
    data = make_volume()
    affine = np.diag([1.2, 0.9, 2.0, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 3.0]
    inp = tmp_path / "in"
    inp.mkdir()
    save_nifti(inp / "vol.nii.gz", data, affine)
    with pytest.raises(ValueError, match="mirror_axes"):
        predict_folder(inp, tmp_path / "none", predictor=threshold_predictor, preprocessing=PARAMS,
                       device="cpu", progress=False, tta=True)
    params = dict(PARAMS, mirror_axes=[0, 2])
    plain = predict_folder(inp, tmp_path / "plain", predictor=threshold_predictor, preprocessing=params,
                           device="cpu", progress=False, save_probabilities=True)
    tta = predict_folder(inp, tmp_path / "tta", predictor=threshold_predictor, preprocessing=params,
                         device="cpu", progress=False, save_probabilities=True, tta=True)
    assert plain.exit_code == tta.exit_code == 0
    out = nib.load(str(tmp_path / "tta" / "vol.nii.gz"))
    np.testing.assert_allclose(out.affine, affine, atol=1e-6)
    # The threshold predictor is pointwise, so mirroring must give back exactly the same maps.
    p_plain = np.asarray(nib.load(str(tmp_path / "plain" / "vol_probabilities.nii.gz")).dataobj)
    p_tta = np.asarray(nib.load(str(tmp_path / "tta" / "vol_probabilities.nii.gz")).dataobj)
    np.testing.assert_allclose(p_tta, p_plain, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(out.dataobj), np.asarray(nib.load(str(tmp_path / "plain" / "vol.nii.gz")).dataobj))


def test_checkpoint_mirror_axes_come_from_training_flips(tiny_checkpoint: Path, tmp_path: Path) -> None:
    import torch

    from kmunet.inference import load_model
    from tests.inference.conftest import make_tiny_checkpoint

    assert load_model(tiny_checkpoint).preprocessing["mirror_axes"] == [0]
    # Checkpoints written before "mirror_axes" existed fall back to the stored config's data.flip_axes.
    old = dict(torch.load(tiny_checkpoint, weights_only=True)["preprocessing"])
    del old["mirror_axes"]
    legacy = make_tiny_checkpoint(tmp_path / "legacy.pt", {"preprocessing": old})
    assert load_model(legacy).preprocessing["mirror_axes"] == [0]
