"""Review fixes of ``kmunet resample`` / ``kmunet.inr``: float32 sample counts, early input checks,
anti-aliased downsampling, planes outside the volume, the prior's voxel-size record, suffixes, shear."""

from __future__ import annotations

import math
import warnings

import nibabel as nib
import numpy as np
import pytest
import torch

import kmunet.inr.resample as rs
from kmunet.cli.main import main
from kmunet.inr.geometry import Grid, grid_from_image, resampled_grid, sample_count
from kmunet.inr.prior import ResamplerNet, load_resampler, prior_domain_warning, save_resampler, train_resampler


def _volume(shape=(9, 8, 7), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    return (50 + 20 * np.cos(2 * x) * np.sin(3 * y) + 5 * z + rng.normal(0, 1, shape)).astype(np.float32)


def _save(path, data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))
    return nib.load(str(path))


def _oblique_affine(deg: float = 30.0) -> np.ndarray:
    th = math.radians(deg)
    a = np.eye(4)
    a[:3, :3] = [[math.cos(th), -math.sin(th), 0], [math.sin(th), math.cos(th), 0], [0, 0, 1]]
    a[:3, 3] = (1.0, 1.0, 1.0)
    return a


@pytest.fixture()
def tiny_prior(tmp_path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ResamplerNet(features=2, blocks=0, hidden=4, decoder_layers=0)
    return save_resampler(model, tmp_path / "tiny.pt", factors=[2, 4],
                          spacing={"median": [1.0, 1.0, 1.0], "min": [1.0, 1.0, 1.0], "max": [1.0, 1.0, 1.0]})


@pytest.fixture()
def no_fit(monkeypatch):
    """Make any INR fit fail loudly: the checks under test must come before it."""
    def fail(*args, **kwargs):
        raise AssertionError("fit_inr ran before the input was checked")
    monkeypatch.setattr(rs, "fit_inr", fail)


# ------------------------------------------------------------------------------ 1. float32 sample counts
def test_sample_count_tolerates_float32_spacing() -> None:
    stored = float(np.float32(0.4297))  # 0.42969998717..., as an exported T2 stores 0.4297 mm
    assert sample_count(512, stored, 0.4297) == 512
    grid = Grid((512, 512, 22), np.diag([stored, stored, 3.25, 1.0]))
    assert resampled_grid(grid, spacing=(0.4297, 0.4297, 3.25)).shape == (512, 512, 22)
    assert sample_count(11, 1.0, 1.0 / (1 - 1e-3)) == 10  # a real shortfall still drops the sample
    with pytest.raises(ValueError, match="new spacing"):
        sample_count(5, 1.0, 0.0)


def test_spacing_and_factor_agree_on_a_float32_oblique_affine(tmp_path) -> None:
    img = _save(tmp_path / "obl.nii.gz", _volume((4, 51, 3)), _oblique_affine())
    assert grid_from_image(img).spacing[1] < 1.0  # float32 rotation: column norm 0.99999994
    out = tmp_path / "sp.nii.gz"
    assert main(["resample", "--input", str(tmp_path / "obl.nii.gz"), "--output", str(out), "--spacing", "0.5", "0.5",
                 "0.5", "--method", "linear"]) == 0
    by_factor = resampled_grid(grid_from_image(img), factor=2)
    assert nib.load(str(out)).shape == by_factor.shape == (7, 101, 5)


# ------------------------------------------------------------------------------ 2. inputs checked before the fit
@pytest.mark.parametrize("kind", ["corrupt", "missing"])
def test_prior_inr_checks_the_prior_before_fitting(tmp_path, capsys, no_fit, kind) -> None:
    src = tmp_path / "in.nii.gz"
    _save(src, _volume(), np.eye(4))
    prior = tmp_path / "bad.pt"
    if kind == "corrupt":
        prior.write_bytes(b"not a checkpoint")
    rc = main(["resample", "--input", str(src), "--output", str(tmp_path / "o.nii.gz"), "--factor", "2", "--axis", "2",
               "--prior", str(prior), "--method", "prior+inr", "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1 and str(prior) in err, err
    assert "Traceback" not in err and not (tmp_path / "o.nii.gz").exists()


def test_prior_inr_checks_the_sample_count_before_fitting(tmp_path, capsys, no_fit, tiny_prior) -> None:
    src = tmp_path / "two.nii.gz"
    _save(src, _volume((9, 8, 2)), np.eye(4))
    rc = main(["resample", "--input", str(src), "--output", str(tmp_path / "o.nii.gz"), "--factor", "2", "--axis", "2",
               "--prior", str(tiny_prior), "--method", "prior+inr", "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "at least 3 samples along axis 2" in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(ValueError, match="at least 3 samples along axis 2"):
        rs.resample_plane(str(src), (0, 0, 0.5), (1, 0, 0), (0, 0, 1), (4, 4), 0.25, prior=tiny_prior,
                          method="prior+inr", device="cpu")


# ------------------------------------------------------------------------------ 3. anti-aliased downsampling
def test_bspline_and_linear_downsampling_anti_alias() -> None:
    shape = (33, 4, 3)
    data = np.where(np.arange(shape[0]) % 2 == 0, 11.0, 9.0)[:, None, None] * np.ones(shape)  # Nyquist stripes
    img = nib.Nifti1Image(data.astype(np.float32), np.eye(4))
    for method in ("linear", "bspline"):
        out = np.asarray(rs.resample_volume(img, factor=0.5, axis=0, method=method).dataobj)
        decimated = data[::2]
        assert out.shape == decimated.shape
        assert not np.allclose(out, decimated)  # decimation would alias the stripes to a constant 11
        np.testing.assert_allclose(out[3:-3], 10.0, atol=0.1)  # the stripes are removed, the mean kept
    # Documented sigma: sqrt(r^2 - 1) / 2 input voxels along coarser axes only.
    np.testing.assert_allclose(rs.anti_alias_sigma((1, 1, 1), (2, 1, 0.5)), [math.sqrt(3) / 2, 0, 0])
    # Point sampling stays available.
    raw = np.asarray(rs.resample_volume(img, factor=0.5, axis=0, method="bspline", anti_alias=False).dataobj)
    np.testing.assert_allclose(raw, data[::2], atol=1e-4)


def test_upsampling_is_not_smoothed() -> None:
    img = nib.Nifti1Image(_volume(), np.diag([0.9, 1.1, 2.5, 1.0]))
    for method in ("linear", "bspline"):
        for target in ({"factor": 2.0}, {"spacing": (0.9, 0.5, 1.0)}):
            a = np.asarray(rs.resample_volume(img, method=method, **target).dataobj)
            b = np.asarray(rs.resample_volume(img, method=method, anti_alias=False, **target).dataobj)
            assert np.array_equal(a, b)


def test_cli_notes_that_inr_downsampling_does_not_anti_alias(tmp_path, capsys) -> None:
    src = tmp_path / "in.nii.gz"
    _save(src, _volume(), np.eye(4))
    assert main(["resample", "--input", str(src), "--output", str(tmp_path / "o.nii.gz"), "--factor", "0.5",
                 "--iterations", "2", "--device", "cpu", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "warning: downsampling along axis 0, 1, 2 without anti-aliasing" in err
    assert len(err.strip().splitlines()) == 1, err


# ------------------------------------------------------------------------------ 4. planes outside the volume
def test_sample_plane_rejects_a_plane_wholly_outside() -> None:
    img = nib.Nifti1Image(_volume(), np.eye(4))
    fitted = rs.fit_inr(img, iterations=1, device="cpu")
    assert rs.sample_plane(fitted, (0, 0, 3), (1, 0, 0), (0, 1, 0), (4, 4)).shape == (4, 4)
    with pytest.raises(ValueError, match="entirely outside the volume"):
        rs.sample_plane(fitted, (500, 500, 500), (1, 0, 0), (0, 1, 0), (4, 4))


# ------------------------------------------------------------------------------ 5. the prior's voxel sizes
def test_train_resampler_records_spacing_and_notes_anisotropy(tmp_path, capsys) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _save(data / "a.nii.gz", _volume((12, 12, 12), 0), np.diag([1.0, 1.0, 1.0, 1.0]))
    _save(data / "b.NII.GZ", _volume((12, 12, 12), 1), np.diag([0.5, 0.5, 2.0, 1.0]))  # any-case suffix is listed
    summary = train_resampler(data, tmp_path / "p.pt", epochs=1, crop=10, batch_size=2, holdout=0, device="cpu",
                              features=2, blocks=0, hidden=4, decoder_layers=0)
    assert "anisotropic voxels" in capsys.readouterr().out
    assert summary["spacing"] == {"median": [0.75, 0.75, 1.5], "min": [0.5, 0.5, 1.0], "max": [1.0, 1.0, 2.0]}
    cfg = torch.load(tmp_path / "p.pt", weights_only=True)["config"]
    assert cfg["spacing"] == summary["spacing"] and cfg["factors"] == [2, 4]
    assert load_resampler(tmp_path / "p.pt").train_config["spacing"]["max"] == [1.0, 1.0, 2.0]


def test_prior_domain_warning() -> None:
    cfg = {"factors": [2, 4], "spacing": {"median": [1.0] * 3, "min": [1.0] * 3, "max": [1.0] * 3}}
    assert prior_domain_warning(cfg, (1, 1, 2), (1, 1, 2)) is None
    assert prior_domain_warning(cfg, (1, 1, 4), (1, 1, 4)) is None
    assert "factors 1 x 1 x 3" in prior_domain_warning(cfg, (1, 1, 3), (1, 1, 3))
    assert "factors" in prior_domain_warning(cfg, (2, 2, 2), (2, 2, 2))  # one axis at a time
    assert "voxel size 0.43 x 0.43 x 3.25 mm" in prior_domain_warning(cfg, (0.43, 0.43, 3.25), (1, 1, 2))
    old = {"factors": [2, 4]}  # checkpoints from before the spacing was recorded: factors only
    assert prior_domain_warning(old, (0.43, 0.43, 3.25), (1, 1, 2)) is None
    assert "factors" in prior_domain_warning(old, (1, 1, 1), (1, 1, 8))


def test_resample_prior_warns_outside_training(tmp_path, capsys, tiny_prior) -> None:
    src = tmp_path / "in.nii.gz"
    _save(src, _volume(), np.diag([0.4, 0.4, 3.0, 1.0]))
    assert main(["resample", "--input", str(src), "--output", str(tmp_path / "o.nii.gz"), "--factor", "3", "--axis",
                 "2", "--prior", str(tiny_prior), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "factors 1 x 1 x 3" in err and "voxel size 0.4 x 0.4 x 3 mm" in err, err
    assert len(err.strip().splitlines()) == 1
    _save(src, _volume(), np.diag([1.0, 1.0, 2.0, 1.0]))  # as trained: 1 mm volumes with every 2nd slice kept
    assert main(["resample", "--input", str(src), "--output", str(tmp_path / "o.nii.gz"), "--factor", "2", "--axis",
                 "2", "--prior", str(tiny_prior), "--device", "cpu"]) == 0
    assert "warning" not in capsys.readouterr().err
    with warnings.catch_warnings(record=True) as caught:  # the library warns when no notify is given
        warnings.simplefilter("always")
        rs.resample_volume(str(src), factor=3, axis=2, prior=tiny_prior, device="cpu")
    assert any("factors 1 x 1 x 3" in str(w.message) for w in caught)


# ------------------------------------------------------------------------------ 6. suffixes
def test_output_suffixes(tmp_path, capsys) -> None:
    src = tmp_path / "in.nii.gz"
    _save(src, _volume(), np.eye(4))
    up = tmp_path / "UP.NII.GZ"
    assert main(["resample", "--input", str(src), "--output", str(up), "--factor", "2", "--method", "linear"]) == 0
    assert nib.load(str(up)).shape == (17, 15, 13) and up.read_bytes()[:2] == b"\x1f\x8b"
    capsys.readouterr()
    for name in ("m8", "m8.pth", "m8.nii.gz"):
        rc = main(["train-resampler", "--data", str(tmp_path), "--output", str(tmp_path / name), "--epochs", "1"])
        err = capsys.readouterr().err
        assert rc == 1 and "must end in .pt" in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / name).exists()
    with pytest.raises(ValueError, match="must end in .pt"):
        train_resampler(tmp_path, tmp_path / "m8", epochs=1)


# ------------------------------------------------------------------------------ 7. sheared affines
def test_sheared_affine_sform_exact_qform_not_valid(tmp_path) -> None:
    shear = np.array([[1.0, 0.0, 0.3, 1.0], [0.0, 1.0, 0.0, 2.0], [0.0, 0.0, 1.0, 3.0], [0, 0, 0, 1]])
    img = nib.Nifti1Image(_volume(), shear)
    out = rs.resample_volume(img, factor=2, axis=2, method="linear")
    expected = resampled_grid(grid_from_image(img), factor=2, axis=2).affine
    np.testing.assert_allclose(out.get_sform(), expected, atol=1e-6)
    path = tmp_path / "s.nii.gz"
    nib.save(out, str(path))
    back = nib.load(str(path))
    assert int(back.header["qform_code"]) == 0 and int(back.header["sform_code"]) > 0
    np.testing.assert_allclose(back.affine, expected, atol=1e-6)
    # Without shear (oblique rotation) both stay valid and equal.
    rot = nib.Nifti1Image(_volume(), _oblique_affine(30))
    out = rs.resample_volume(rot, factor=2, axis=2, method="linear")
    assert int(out.header["qform_code"]) > 0
    np.testing.assert_allclose(out.get_qform(), out.get_sform(), atol=1e-5)
