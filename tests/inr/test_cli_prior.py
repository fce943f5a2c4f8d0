"""``kmunet resample`` / ``kmunet train-resampler`` end to end, and the learned prior's checkpoint."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from kmunet.cli.main import main
from kmunet.inr.geometry import grid_from_image, resampled_grid
from kmunet.inr.prior import CHECKPOINT_FORMAT, ResamplerNet, holdout_split, load_resampler


def _affine() -> np.ndarray:
    a = np.diag([-0.9, -0.9, 2.5, 1.0])  # LPS-like, anisotropic
    a[:3, 3] = (50.0, 60.0, -20.0)
    return a


def _write_volume(path, shape=(10, 9, 6), seed=0) -> nib.Nifti1Image:
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    data = (80 + 30 * np.cos(2 * x) * np.sin(2 * y) + 10 * z + rng.normal(0, 1, shape)).astype(np.float32)
    img = nib.Nifti1Image(data, _affine())
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))
    return img


def _no_temp_files(folder) -> bool:
    return not [p for p in folder.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize("extra", [["--method", "linear"], ["--method", "bspline"], ["--inr", "siren", "--iterations", "20"]])
def test_resample_cli_writes_valid_nifti(tmp_path, capsys, extra) -> None:
    src = tmp_path / "in.nii.gz"
    img = _write_volume(src)
    out = tmp_path / "out.nii.gz"
    rc = main(["resample", "--input", str(src), "--output", str(out), "--factor", "2", "--axis", "2",
               "--device", "cpu", *extra])
    assert rc == 0
    assert str(out) in capsys.readouterr().out
    res = nib.load(str(out))
    expected = resampled_grid(grid_from_image(img), factor=2, axis=2)
    assert res.shape == expected.shape == (10, 9, 11)
    np.testing.assert_allclose(res.affine, expected.affine, atol=1e-5)
    np.testing.assert_allclose(res.header.get_zooms()[:3], (0.9, 0.9, 1.25), atol=1e-6)
    assert np.isfinite(np.asarray(res.dataobj)).all()
    assert _no_temp_files(tmp_path)


def test_resample_cli_spacing(tmp_path) -> None:
    src = tmp_path / "in.nii"
    _write_volume(src)
    out = tmp_path / "out.nii"
    assert main(["resample", "--input", str(src), "--output", str(out), "--spacing", "0.45", "0.9", "1.0",
                 "--method", "linear"]) == 0
    assert nib.load(str(out)).shape == (19, 9, 13)


@pytest.mark.parametrize("content", [None, b"this is not a NIfTI file"])
def test_resample_cli_bad_input(tmp_path, capsys, content) -> None:
    src = tmp_path / "bad.nii.gz"
    if content is not None:
        src.write_bytes(content)
    out = tmp_path / "out.nii.gz"
    rc = main(["resample", "--input", str(src), "--output", str(out), "--factor", "2", "--method", "linear"])
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.nii.gz" in err and err.startswith("kmunet resample: error:")
    assert not out.exists() and _no_temp_files(tmp_path)


def test_resample_cli_requires_a_target(tmp_path) -> None:
    with pytest.raises(SystemExit):
        main(["resample", "--input", "a.nii", "--output", "b.nii"])
    src = tmp_path / "in.nii.gz"
    _write_volume(src)
    assert main(["resample", "--input", str(src), "--output", str(tmp_path / "o.nii.gz"), "--factor", "0"]) == 1
    assert not (tmp_path / "o.nii.gz").exists()


def test_holdout_split_is_deterministic(tmp_path) -> None:
    files = [tmp_path / f"v{i:02d}.nii.gz" for i in range(10)]
    a_train, a_held = holdout_split(files, 3, seed=0)
    b_train, b_held = holdout_split(list(reversed(files)), 3, seed=0)
    assert a_held == b_held and a_train == b_train and len(a_held) == 3
    assert set(a_train) | set(a_held) == set(files) and not set(a_train) & set(a_held)
    with pytest.raises(ValueError, match="holdout"):
        holdout_split(files, 10)


def test_train_resampler_argument_errors(tmp_path, capsys) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        _write_volume(data / f"vol{i}.nii.gz", shape=(14, 13, 12), seed=i)
    base = ["train-resampler", "--data", str(data), "--epochs", "1", "--device", "cpu", "--no-progress"]
    for extra, message in ((["--crop", "40"], "crop 40 is larger than every training volume (largest side 14"),
                           (["--batch-size", "0"], "batch_size must be a positive integer"),
                           (["--output", str(tmp_path)], "is a folder")):
        output = [] if "--output" in extra else ["--output", str(tmp_path / "p.pt")]
        assert main(base + output + extra) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "p.pt").exists()
    assert main(base + ["--output", str(tmp_path / "p.pt"), "--crop", "10", "--batch-size", "2"]) == 0  # --holdout 20
    assert "holdout 20 reduced to 1" in capsys.readouterr().out


def test_prior_train_save_load_and_resample(tmp_path, capsys) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        _write_volume(data / f"vol{i}.nii.gz", shape=(14, 13, 12), seed=i)
    model_path = tmp_path / "prior.pt"
    rc = main(["train-resampler", "--data", str(data), "--output", str(model_path), "--epochs", "1",
               "--crop", "10", "--batch-size", "2", "--holdout", "0", "--device", "cpu",
               "--zoom", "1", "1.3", "--slice-blur", "0.5", "--contrast", "0.5"])
    assert rc == 0 and model_path.is_file()
    assert "trained" in capsys.readouterr().out
    ckpt = torch.load(model_path, weights_only=True)
    assert ckpt["config"]["format"] == CHECKPOINT_FORMAT
    assert sorted(ckpt["config"]["train"]) == ["vol0.nii.gz", "vol1.nii.gz"]
    assert ckpt["config"]["augment"] == {"zoom": [1.0, 1.3], "slice_blur": 0.5, "contrast": 0.5}
    model = load_resampler(model_path)
    assert isinstance(model, ResamplerNet) and not model.training

    src = tmp_path / "in.nii.gz"
    img = _write_volume(src)
    out = tmp_path / "out.nii.gz"
    assert main(["resample", "--input", str(src), "--output", str(out), "--factor", "2", "--axis", "2",
                 "--prior", str(model_path), "--device", "cpu"]) == 0
    res = nib.load(str(out))
    expected = resampled_grid(grid_from_image(img), factor=2, axis=2)
    assert res.shape == expected.shape
    np.testing.assert_allclose(res.affine, expected.affine, atol=1e-5)
    values = np.asarray(res.dataobj)
    ref = np.asarray(img.dataobj)
    assert np.isfinite(values).all()
    # Kept slices stay close to the input (trilinear base plus a small learned correction).
    assert np.abs(values[..., ::2] - ref).mean() < 0.1 * (ref.max() - ref.min())


def test_prior_errors(tmp_path) -> None:
    src = tmp_path / "in.nii.gz"
    _write_volume(src)
    assert main(["resample", "--input", str(src), "--output", str(tmp_path / "o.nii.gz"), "--factor", "2",
                 "--prior", str(tmp_path / "missing.pt")]) == 1
    junk = tmp_path / "junk.pt"
    torch.save({"state_dict": {}, "config": {"format": "other"}}, junk)
    with pytest.raises(ValueError, match="not a kmunet resampler"):
        load_resampler(junk)
    assert main(["train-resampler", "--data", str(tmp_path / "nodata"), "--output", str(tmp_path / "m.pt")]) == 1
    assert main(["train-resampler", "--data", str(tmp_path), "--output", str(tmp_path / "m.pt"), "--contrast", "2"]) == 1
    assert not (tmp_path / "m.pt").exists()


def test_prior_starts_as_trilinear() -> None:
    model = ResamplerNet(features=4, blocks=1, hidden=8, decoder_layers=1)
    vol = torch.arange(4 * 5 * 3, dtype=torch.float32).reshape(1, 1, 4, 5, 3)
    q = torch.tensor([[[1.0, 2.0, 0.5], [3.0, 4.0, 2.0], [0.25, 1.5, 1.0]]])
    out = model(vol, q, torch.tensor([[1.0, 1.0, 2.0]]))
    expected = q[0, :, 0] * 15 + q[0, :, 1] * 3 + q[0, :, 2]  # the volume is linear in its indices
    torch.testing.assert_close(out[0], expected)


def test_resample_cli_plane_linear_equals_voxel_slice(tmp_path) -> None:
    src = tmp_path / "in.nii.gz"
    img = _write_volume(src)
    grid = grid_from_image(img)
    origin = grid.index_to_world(np.array([[0.0, 0.0, 3.0]]))[0]
    u, v = grid.direction[:, 0], grid.direction[:, 1]
    out = tmp_path / "plane.nii.gz"
    rc = main(["resample", "--input", str(src), "--output", str(out), "--method", "linear",
               "--plane", *map(str, origin), *map(str, u), *map(str, v),
               "--plane-size", "10", "9", "--plane-spacing", "0.9"])
    assert rc == 0
    res = nib.load(str(out))
    assert res.shape == (10, 9, 1)
    # Pixels land exactly on the input's voxel centres of slice 3, so trilinear interpolation is exact.
    np.testing.assert_allclose(np.asarray(res.dataobj)[:, :, 0], np.asarray(img.dataobj)[:, :, 3], atol=1e-4)
    np.testing.assert_allclose(res.affine[:3, :2], img.affine[:3, :2], atol=1e-6)
    np.testing.assert_allclose(res.affine[:3, 3], origin, atol=1e-5)
    assert main(["resample", "--input", str(src), "--output", str(tmp_path / "p2.nii.gz"), "--method", "linear",
                 "--plane", *["0"] * 9, "--plane-size", "3", "3"]) == 1  # zero directions
    assert main(["resample", "--input", str(src), "--output", str(tmp_path / "p3.nii.gz"), "--method", "linear",
                 "--plane", *map(str, origin), *map(str, u), *map(str, v)]) == 1  # no --plane-size
    assert not (tmp_path / "p2.nii.gz").exists() and _no_temp_files(tmp_path)


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    from kmunet.inr.prior import train_resampler

    root = tmp_path_factory.mktemp("prior")
    data = root / "data"
    data.mkdir()
    for i in range(2):
        _write_volume(data / f"vol{i}.nii.gz", shape=(14, 13, 12), seed=i)
    train_resampler(data, root / "prior.pt", epochs=2, crop=10, batch_size=2, holdout=0, device="cpu")
    return root / "prior.pt"


def test_prior_plus_inr_is_the_self_validated_blend(tmp_path, tiny_prior) -> None:
    from kmunet.inr.resample import fusion_weight, resample_volume

    src = tmp_path / "in.nii.gz"
    img = _write_volume(src, shape=(10, 9, 7))
    kw = dict(factor=2, axis=2, iterations=30, device="cpu", seed=0)
    fused = resample_volume(src, method="prior+inr", prior=tiny_prior, **kw)
    prior_only = resample_volume(src, prior=tiny_prior, **kw)
    inr_only = resample_volume(src, method="inr", **kw)
    weight, errors = fusion_weight(img, [2], tiny_prior, iterations=30, device="cpu", seed=0)
    assert 0.0 <= weight <= 1.0 and weight == pytest.approx(errors["inr_mse"] / (errors["prior_mse"] + errors["inr_mse"]))
    expected = weight * np.asarray(prior_only.dataobj) + (1 - weight) * np.asarray(inr_only.dataobj)
    np.testing.assert_allclose(np.asarray(fused.dataobj), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(fused.affine, prior_only.affine)
    # Deterministic: the same call gives the same weight.
    assert fusion_weight(img, [2], tiny_prior, iterations=30, device="cpu", seed=0)[0] == weight
    # In isotropic world coordinates the blend validates its INR in the same coordinates.
    world = resample_volume(src, method="prior+inr", prior=tiny_prior, scaled_coordinates=False, **kw)
    w_world, _ = fusion_weight(img, [2], tiny_prior, iterations=30, device="cpu", seed=0, scaled_coordinates=False)
    inr_world = resample_volume(src, method="inr", scaled_coordinates=False, **kw)
    np.testing.assert_allclose(np.asarray(world.dataobj), w_world * np.asarray(prior_only.dataobj)
                               + (1 - w_world) * np.asarray(inr_world.dataobj), rtol=1e-5, atol=1e-4)


def test_fusion_weight_prefers_the_method_that_predicts_held_slices(tmp_path, tiny_prior) -> None:
    from kmunet.inr.resample import fusion_weight

    # A volume linear along the slice axis: the prior (trilinear base + a near-zero correction early in
    # training) predicts the odd slices almost exactly, a 5-step INR does not.
    x, y, z = np.meshgrid(np.arange(8.0), np.arange(7.0), np.arange(9.0), indexing="ij")
    img = nib.Nifti1Image((10 + 2 * z + 0.5 * x).astype(np.float32), _affine())
    weight, errors = fusion_weight(img, [2], tiny_prior, iterations=5, device="cpu", seed=0)
    assert errors["prior_mse"] < errors["inr_mse"] and weight > 0.5


def test_prior_plus_inr_errors(tmp_path, tiny_prior) -> None:
    from kmunet.inr.resample import fusion_weight, resample_volume

    src = tmp_path / "in.nii.gz"
    img = _write_volume(src, shape=(10, 9, 2))
    with pytest.raises(ValueError, match="needs a prior model"):
        resample_volume(src, factor=2, axis=2, method="prior+inr")
    with pytest.raises(ValueError, match="at least 3 samples along axis 2"):
        fusion_weight(img, [2], tiny_prior, iterations=5, device="cpu")
    with pytest.raises(ValueError, match="axes"):
        fusion_weight(img, [], tiny_prior)
    out = tmp_path / "o.nii.gz"
    assert main(["resample", "--input", str(src), "--output", str(out), "--factor", "2", "--method", "prior+inr"]) == 1
    assert main(["resample", "--input", str(src), "--output", str(out), "--factor", "2", "--axis", "2",
                 "--method", "prior+inr", "--prior", str(tiny_prior), "--iterations", "5", "--device", "cpu"]) == 1
    assert not out.exists() and _no_temp_files(tmp_path)


def test_resample_cli_prior_plus_inr(tmp_path, tiny_prior) -> None:
    src = tmp_path / "in.nii.gz"
    img = _write_volume(src, shape=(10, 9, 5))
    out = tmp_path / "out.nii.gz"
    assert main(["resample", "--input", str(src), "--output", str(out), "--factor", "2", "--axis", "2",
                 "--method", "prior+inr", "--prior", str(tiny_prior), "--iterations", "10", "--device", "cpu"]) == 0
    res = nib.load(str(out))
    expected = resampled_grid(grid_from_image(img), factor=2, axis=2)
    assert res.shape == expected.shape and np.isfinite(np.asarray(res.dataobj)).all()
    np.testing.assert_allclose(res.affine, expected.affine, atol=1e-5)


def test_wrong_files_as_prior_or_checkpoint_are_named(tmp_path) -> None:
    from kmunet.training import load_checkpoint
    from tests.conftest import REPO_ROOT

    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="notes.pt: not a PyTorch checkpoint file"):
        load_resampler(text)
    with pytest.raises(ValueError, match="it is a learned resampler: use it with kmunet resample --prior"):
        load_checkpoint(REPO_ROOT / "checkpoints" / "resampler_hippocampus.pt")
