"""kmunet.inr geometry and resampling: new-grid affines, normalisation, baselines, INR and plane sampling."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest

from kmunet.inr.geometry import Grid, grid_from_image, new_spacing, normalization_for, resampled_grid
from kmunet.inr.resample import fit_inr, resample_volume, sample_plane, sample_points


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _affine(direction: np.ndarray, spacing, origin) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = direction @ np.diag(spacing)
    a[:3, 3] = origin
    return a


AFFINES = {
    "ras": _affine(np.eye(3), (1.0, 1.0, 1.0), (-10.0, 5.0, 2.5)),
    "lps": _affine(np.diag([-1.0, -1.0, 1.0]), (0.9, 0.9, 2.0), (100.0, 120.0, -30.0)),
    "oblique": _affine(_rotation(0.3, -0.2, 0.5), (0.8, 1.2, 3.0), (12.0, -7.0, 40.0)),
    "anisotropic_flipped": _affine(np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]), (0.5, 0.5, 5.0), (1.0, 2.0, 3.0)),
}


@pytest.mark.parametrize("name", list(AFFINES))
@pytest.mark.parametrize(
    "target",
    [{"factor": 2.0, "axis": 2}, {"factor": 3.0}, {"spacing": (0.7, 0.45, 1.3)}, {"factor": 0.5, "axis": 0}],
)
def test_new_grid_affine_is_exact(name: str, target: dict) -> None:
    grid = Grid((9, 11, 7), AFFINES[name])
    new = resampled_grid(grid, **target)
    spacing = new_spacing(grid.spacing, **target)
    np.testing.assert_allclose(new.spacing, spacing, rtol=1e-12)
    np.testing.assert_allclose(new.direction, grid.direction, atol=1e-12)  # orientation kept
    np.testing.assert_allclose(new.origin, grid.origin, atol=1e-12)  # first voxel centre kept
    np.testing.assert_allclose(new.affine[:3, :3], grid.direction @ np.diag(spacing), atol=1e-12)
    old_extent = (np.array(grid.shape) - 1) * grid.spacing
    new_extent = (np.array(new.shape) - 1) * new.spacing
    assert np.all(new_extent <= old_extent + 1e-9)  # inside the input
    assert np.all(new_extent > old_extent - new.spacing - 1e-9)  # and covering it
    expected = [math.floor((n - 1) * o / s + 1e-6) + 1 for n, o, s in zip(grid.shape, grid.spacing, spacing)]
    assert list(new.shape) == expected
    # Last voxel centre along each axis lies on the input's axis line.
    last = new.index_to_world(np.array([[new.shape[0] - 1, 0, 0]]))
    idx = grid.world_to_index(last)
    np.testing.assert_allclose(idx[0, 1:], 0.0, atol=1e-9)


def test_factor_counts() -> None:
    grid = Grid((10, 10, 10), np.eye(4))
    assert resampled_grid(grid, factor=2, axis=2).shape == (10, 10, 19)
    assert resampled_grid(grid, factor=4).shape == (37, 37, 37)
    assert resampled_grid(grid, spacing=(3.0, 1.0, 0.5)).shape == (4, 10, 19)


@pytest.mark.parametrize(
    "kwargs, match",
    [({}, "exactly one"), ({"factor": 2, "spacing": (1, 1, 1)}, "exactly one"), ({"factor": 0}, "factor"),
     ({"factor": 2, "axis": 3}, "axis"), ({"spacing": (1, -1, 1)}, "spacing"), ({"spacing": (1, 1)}, "spacing")],
)
def test_bad_targets(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        resampled_grid(Grid((4, 4, 4), np.eye(4)), **kwargs)


@pytest.mark.parametrize("name", list(AFFINES))
def test_normalization_maps_voxels_into_unit_box(name: str) -> None:
    grid = Grid((9, 11, 7), AFFINES[name])
    norm = normalization_for(grid)
    unit = norm.to_unit(grid.world_points())
    assert np.abs(unit).max() == pytest.approx(1.0)
    np.testing.assert_allclose(norm.to_world(unit), grid.world_points(), atol=1e-9)
    np.testing.assert_allclose(grid.world_to_index(grid.world_points()), grid.voxel_indices(), atol=1e-9)


@pytest.mark.parametrize("name", list(AFFINES))
def test_compressed_normalization_shrinks_one_voxel_axis(name: str) -> None:
    grid = Grid((9, 11, 7), AFFINES[name])
    iso, comp = normalization_for(grid), normalization_for(grid, (1.0, 1.0, 4.0))
    unit = comp.to_unit(grid.world_points())
    assert np.abs(unit).max() == pytest.approx(1.0)
    np.testing.assert_allclose(comp.to_world(unit), grid.world_points(), atol=1e-9)
    # One voxel step along axes 0 and 2, measured in unit coordinates relative to world millimetres:
    steps = grid.index_to_world(np.array([[1.0, 0, 0], [0, 0, 1.0]])) - grid.index_to_world(np.zeros((1, 3)))
    d_unit = np.linalg.norm(comp.to_unit(steps + comp.center) , axis=1) * comp.scale
    np.testing.assert_allclose(d_unit, np.linalg.norm(steps, axis=1) / [1.0, 4.0], rtol=1e-9)
    np.testing.assert_allclose(normalization_for(grid, (1, 1, 1)).to_unit(grid.world_points()),
                               iso.to_unit(grid.world_points()), atol=1e-12)
    for bad in ((1.0, 1.0), (0.5, 1.0, 1.0), (1.0, float("nan"), 1.0)):
        with pytest.raises(ValueError, match="compression"):
            normalization_for(grid, bad)


def _ramp_image(name: str, shape=(9, 11, 7)) -> tuple[nib.Nifti1Image, np.ndarray]:
    affine = AFFINES[name]
    grid = Grid(shape, affine)
    world = grid.world_points().reshape(shape + (3,))
    coef = np.array([0.7, -1.3, 2.1])
    data = (world @ coef + 5.0).astype(np.float32)  # linear in world coordinates, hence in voxel indices
    return nib.Nifti1Image(data, affine), coef


@pytest.mark.parametrize("name", list(AFFINES))
@pytest.mark.parametrize("target", [{"factor": 2.0, "axis": 2}, {"spacing": (0.6, 0.35, 1.1)}])
def test_linear_resampling_is_exact_on_a_ramp(name: str, target: dict) -> None:
    img, coef = _ramp_image(name)
    # Point sampling: the geometry is under test (anti-aliasing bends a ramp at the edges of downsampled axes).
    out = resample_volume(img, method="linear", anti_alias=False, **target)
    new = resampled_grid(grid_from_image(img), **target)
    assert out.shape == new.shape
    np.testing.assert_allclose(out.affine, new.affine, atol=1e-5)
    np.testing.assert_allclose(out.get_sform(), new.affine, atol=1e-5)
    np.testing.assert_allclose(out.get_qform(), new.affine, atol=1e-4)
    expected = new.world_points().reshape(new.shape + (3,)) @ coef + 5.0
    np.testing.assert_allclose(np.asarray(out.dataobj), expected, atol=1e-3)


def test_bspline_interpolates_and_is_smooth() -> None:
    img, coef = _ramp_image("oblique")
    same = resample_volume(img, method="bspline", factor=1.0)
    np.testing.assert_allclose(np.asarray(same.dataobj), np.asarray(img.dataobj), atol=1e-3)
    up = resample_volume(img, method="bspline", factor=2.0, axis=2)
    new = resampled_grid(grid_from_image(img), factor=2.0, axis=2)
    expected = new.world_points().reshape(new.shape + (3,)) @ coef + 5.0
    # Away from the borders (mirror boundary condition) linear functions are reproduced.
    inner = (slice(3, -3), slice(3, -3), slice(6, -6))
    np.testing.assert_allclose(np.asarray(up.dataobj)[inner], expected[inner], atol=0.1)


def _smooth_volume(shape=(12, 12, 8)) -> nib.Nifti1Image:
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    data = (100 + 40 * np.sin(2 * x) * np.cos(1.5 * y) + 20 * z).astype(np.float32)
    return nib.Nifti1Image(data, AFFINES["lps"])


def test_inr_resampling_runs_and_fits() -> None:
    img = _smooth_volume()
    out = resample_volume(img, factor=2, axis=2, method="inr", inr="siren", iterations=150, device="cpu", seed=0,
                          model_kwargs={"hidden_features": 32, "hidden_layers": 1})
    new = resampled_grid(grid_from_image(img), factor=2, axis=2)
    assert out.shape == new.shape and out.get_data_dtype() == np.float32
    np.testing.assert_allclose(out.affine, new.affine, atol=1e-5)
    data = np.asarray(out.dataobj)
    ref = np.asarray(img.dataobj)
    assert np.isfinite(data).all()
    # Even output slices coincide with input slices.
    assert np.abs(data[..., ::2] - ref).mean() < 0.05 * (ref.max() - ref.min())
    # Isotropic world coordinates (the opt-out) give the same geometry and also fit.
    world = resample_volume(img, factor=2, axis=2, method="inr", inr="siren", iterations=150, device="cpu", seed=0,
                            model_kwargs={"hidden_features": 32, "hidden_layers": 1}, scaled_coordinates=False)
    np.testing.assert_allclose(world.affine, new.affine, atol=1e-5)
    assert np.abs(np.asarray(world.dataobj)[..., ::2] - ref).mean() < 0.05 * (ref.max() - ref.min())
    assert not np.allclose(np.asarray(world.dataobj), data)


def test_scaled_coordinates_follow_the_upsampling_factor() -> None:
    img = _smooth_volume()
    fitted = fit_inr(img, inr="siren", iterations=1, device="cpu", compression=(1.0, 1.0, 3.0),
                     model_kwargs={"hidden_features": 8, "hidden_layers": 1})
    direction = fitted.grid.direction
    # The map shrinks voxel axis 2 by 3 and leaves axes 0 and 1 alone.
    np.testing.assert_allclose(fitted.normalization.matrix @ direction, direction @ np.diag([1.0, 1.0, 1 / 3]), atol=1e-12)


def test_sample_points_and_plane() -> None:
    img = _smooth_volume()
    fitted = fit_inr(img, inr="fourier", iterations=200, lr=5e-3, device="cpu",
                     model_kwargs={"hidden_features": 32, "hidden_layers": 1, "num_frequencies": 32, "sigma": 1.0})
    grid = fitted.grid
    ref = np.asarray(img.dataobj)
    values = sample_points(fitted, grid.world_points())
    assert values.shape == (ref.size,)
    assert np.abs(values - ref.reshape(-1)).mean() < 0.05 * (ref.max() - ref.min())
    # An axis-aligned plane through voxel slice k=3 equals the points of that slice.
    origin = grid.index_to_world(np.array([[0, 0, 3]]))[0]
    plane = sample_plane(fitted, origin, grid.direction[:, 0], grid.direction[:, 1], (12, 12), tuple(grid.spacing[:2]))
    expected = sample_points(fitted, grid.world_points().reshape(grid.shape + (3,))[:, :, 3].reshape(-1, 3))
    np.testing.assert_allclose(plane.reshape(-1), expected, rtol=1e-4, atol=1e-3)
    oblique = sample_plane(fitted, origin, (1, 1, 0), (0, 1, 1), (5, 6), 0.5)
    assert oblique.shape == (5, 6) and np.isfinite(oblique).all()
    with pytest.raises(ValueError, match="parallel"):
        sample_plane(fitted, origin, (1, 0, 0), (2, 0, 0), (3, 3))


def test_resample_errors(tmp_path) -> None:
    img = _smooth_volume()
    with pytest.raises(ValueError, match="method"):
        resample_volume(img, factor=2, method="nearest")
    with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
        resample_volume(tmp_path / "missing.nii.gz", factor=2)
    bad = tmp_path / "bad.nii.gz"
    bad.write_text("not a nifti file")
    with pytest.raises(ValueError, match="bad.nii.gz"):
        resample_volume(bad, factor=2, method="linear")
    with pytest.raises(ValueError, match="3-D"):
        resample_volume(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), np.eye(4)), factor=2, method="linear")
    with pytest.raises(ValueError, match="prior"):
        resample_volume(img, factor=2, method="prior")
    with pytest.raises(ValueError, match="would have .* voxels"):  # refused before any allocation
        resample_volume(img, spacing=(1e-3, 1e-3, 1e-3), method="linear")
    series = tmp_path / "series"
    series.mkdir()
    with pytest.raises(ValueError, match="folder .*export-nifti"):
        resample_volume(series, factor=2, method="linear")
    (tmp_path / "one.dcm").write_bytes(b"x")
    with pytest.raises(ValueError, match="DICOM file.*export-nifti"):
        resample_volume(tmp_path / "one.dcm", factor=2, method="linear")


def test_plane_errors_are_readable() -> None:
    from kmunet.inr.resample import resample_plane

    img = _smooth_volume()
    with pytest.raises(ValueError, match="entirely outside the volume"):
        resample_plane(img, (500.0, 500.0, 500.0), (1, 0, 0), (0, 1, 0), (4, 5), method="linear")
    with pytest.raises(ValueError, match=r"u=\[0\.0, 0\.0, 0\.0\] and v=\[0\.0, 1\.0, 0\.0\]"):
        resample_plane(img, (0.0, 0.0, 0.0), (0, 0, 0), (0, 1, 0), (4, 5), method="linear")
    with pytest.raises(ValueError, match="would have"):
        resample_plane(img, (0.0, 0.0, 0.0), (1, 0, 0), (0, 1, 0), (2**16, 2**16), method="linear")
    # LPS volume: it extends towards -x and -y from its first voxel; this plane starts 3 mm off it and reaches in
    start = img.affine[:3, 3] + [3.0, 3.0, 0.0]
    corner = resample_plane(img, start, (-1, 0, 0), (0, -1, 0), (9, 9), method="linear")
    assert corner.shape == (9, 9, 1)  # partly outside is fine
