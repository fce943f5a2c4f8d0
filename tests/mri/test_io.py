"""k-space readers on tiny generated files and on the shared BART / twix data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kmunet.mri import KSpaceData, load_image, load_kspace, read_cfl, write_cfl
from kmunet.mri.io import simulate_kspace


def _kspace(c: int = 3, h: int = 8, w: int = 6) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.standard_normal((c, h, w)) + 1j * rng.standard_normal((c, h, w))).astype(np.complex64)


def test_npy_multi_and_single_coil(tmp_path: Path) -> None:
    k = _kspace()
    np.save(tmp_path / "k.npy", k)
    d = load_kspace(tmp_path / "k.npy")
    assert isinstance(d, KSpaceData) and d.kspace.shape == (3, 8, 6) and d.mask is None
    np.testing.assert_array_equal(d.kspace, k)
    np.save(tmp_path / "s.npy", k[0])
    assert load_kspace(tmp_path / "s.npy").kspace.shape == (1, 8, 6)


def test_npz_with_zeros_gives_mask(tmp_path: Path) -> None:
    k = _kspace()
    k[:, ::2] = 0
    np.savez(tmp_path / "k.npz", kspace=k)
    d = load_kspace(tmp_path / "k.npz")
    assert d.is_undersampled and d.mask.shape == (8, 6) and d.mask[1].all() and not d.mask[0].any()


def test_cfl_roundtrip(tmp_path: Path) -> None:
    k = _kspace()
    bart = np.moveaxis(k, 0, -1)[None]  # (1, H, W, C) as BART stores it
    write_cfl(tmp_path / "k", bart)
    np.testing.assert_array_equal(read_cfl(tmp_path / "k.cfl"), bart)
    d = load_kspace(tmp_path / "k.hdr")
    np.testing.assert_array_equal(d.kspace, k)


def test_h5_fastmri_layout(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    k = np.stack([_kspace() * (i + 1) for i in range(3)])  # (slices, coils, H, W)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["kspace"] = k
    np.testing.assert_array_equal(load_kspace(tmp_path / "f.h5").kspace, k[1])
    np.testing.assert_array_equal(load_kspace(tmp_path / "f.h5", slice_index=2).kspace, k[2])
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["kspace"] = k[:, 0]
    assert load_kspace(tmp_path / "s.h5", 0).kspace.shape == (1, 8, 6)
    with pytest.raises(ValueError, match="slice 7 out of range"):
        load_kspace(tmp_path / "f.h5", slice_index=7)


def test_reader_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        load_kspace(tmp_path / "missing.npy")
    (tmp_path / "bad.npy").write_text("not numpy")
    with pytest.raises(ValueError, match="bad.npy"):
        load_kspace(tmp_path / "bad.npy")
    np.save(tmp_path / "real.npy", np.ones((4, 4)))
    with pytest.raises(ValueError, match="must be complex"):
        load_kspace(tmp_path / "real.npy")
    with pytest.raises(ValueError, match="unknown k-space format"):
        load_kspace(tmp_path / "x.txt")
    (tmp_path / "b.hdr").write_text("# Dimensions\n2 2\n")
    (tmp_path / "b.cfl").write_bytes(b"\0" * 8)
    with pytest.raises(ValueError, match="b.cfl"):
        read_cfl(tmp_path / "b")


def test_simulate_from_nifti(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    vol = np.random.default_rng(0).random((10, 12, 5)) * 7
    affine = np.array([[0, -2.0, 0, 10], [1.5, 0, 0, -5], [0, 0, 3.0, 2], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(vol, affine), str(tmp_path / "v.nii.gz"))
    d = simulate_kspace(tmp_path / "v.nii.gz", 3)
    assert d.kspace.shape == (1, 10, 12) and d.mask is None
    np.testing.assert_allclose(d.reference, vol[:, :, 3] / vol[:, :, 3].max(), atol=1e-6)
    np.testing.assert_allclose(d.affine[:, 3], affine @ [0, 0, 3, 1])
    img, _ = load_image(tmp_path / "v.nii.gz")
    np.testing.assert_allclose(img, vol[:, :, 2])


def test_shared_bart(shared_data: Path) -> None:
    d = load_kspace(shared_data / "kspace" / "bart_pics_brain" / "ksp.cfl")
    assert d.kspace.shape == (8, 180, 230) and d.is_undersampled
    assert 0.05 < d.mask.mean() < 0.25
    img = read_cfl(shared_data / "kspace" / "bart_pics_brain" / "img")
    assert img.shape == (1, 180, 230, 1, 2)


def test_shared_twix(shared_data: Path) -> None:
    pytest.importorskip("twixtools")
    d = load_kspace(shared_data / "kspace" / "twix_gre" / "gre.dat")
    assert d.kspace.shape == (2, 160, 160) and d.mask is None and d.kspace.dtype == np.complex64
    assert np.all(np.isfinite(d.kspace))
    # DC near the centre after oversampling removal
    peak = np.unravel_index(np.argmax(np.abs(d.kspace).sum(0)), d.shape)
    assert abs(peak[0] - 80) < 8 and abs(peak[1] - 80) < 8
    # geometry from the protocol: 200 mm FOV / 160 pixels in-plane, 4 mm slice
    np.testing.assert_allclose(d.spacing, (1.25, 1.25))
    np.testing.assert_allclose(d.affine, np.diag([1.25, 1.25, 4.0, 1.0]))


def test_simulate_from_one_dicom_file_takes_its_slice(shared_data: Path) -> None:
    pydicom = pytest.importorskip("pydicom")
    series = shared_data / "dicom_mr" / "Study1" / "12-T1post-05670"
    one = series / "000010.dcm"
    d = simulate_kspace(one)
    # the slice's world origin is that file's ImagePositionPatient (LPS -> RAS flips x and y)
    ipp = np.asarray(pydicom.dcmread(one).ImagePositionPatient, dtype=float)
    np.testing.assert_allclose(d.affine[:3, 3], ipp * [-1, -1, 1], atol=1e-3)
    pixels = pydicom.dcmread(one).pixel_array.astype(float).T  # (cols, rows) = voxel axes (x, y)
    np.testing.assert_allclose(d.reference, pixels / pixels.max(), atol=1e-5)
    whole = simulate_kspace(series)
    assert whole.slice_index == len(list(series.glob("*.dcm"))) // 2 != d.slice_index
    assert simulate_kspace(one, 3).slice_index == 3  # an explicit slice wins


def test_image_given_as_kspace_gets_a_hint(tmp_path: Path) -> None:
    (tmp_path / "v.nii.gz").write_bytes(b"x")
    with pytest.raises(ValueError, match="--image"):
        load_kspace(tmp_path / "v.nii.gz")
