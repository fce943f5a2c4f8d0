"""Resampling of 3-D volumes to a new voxel size: scan-specific INRs, a learned prior and baselines.

* ``method="inr"``: fit a coordinate network (:func:`kmunet.inr.build_inr`) to this one scan, in world
  coordinates from its affine normalised to ``[-1, 1]`` (:mod:`kmunet.inr.geometry`), with intensities
  scaled to ``[0, 1]`` and restored; then evaluate it on the new grid in chunks. The fitted model can also
  be sampled at arbitrary world points and planes (:func:`sample_points`, :func:`sample_plane`).
* ``method="prior"`` (or ``prior=PATH``): the learned LIIF/ArSSR-style resampler of :mod:`kmunet.inr.prior`.
* ``method="prior+inr"`` (with ``prior=PATH``): the learned prior and the scan-specific INR, averaged
  with weights from self-validation on the input (:func:`fusion_weight`): both methods predict every
  other input slice of each upsampled axis from the remaining ones, and each gets a weight inversely
  proportional to its squared error there. Neither the reference nor the output grid is looked at.
* ``method="linear"`` / ``"bspline"``: trilinear and cubic B-spline interpolation
  (``scipy.ndimage.map_coordinates``, order 1 and 3 with the spline prefilter) at the new grid's points
  mapped into the input's voxel indices through both affines. Along an axis whose new voxel size is
  coarser (downsampling) the input is first smoothed with a Gaussian (anti-aliasing,
  :func:`anti_alias_sigma`); upsampled and unchanged axes are not touched.

The INR methods and the prior evaluate their continuous model at the new grid points, so downsampling
with them is point sampling (no anti-aliasing); :func:`resample_volume` says so through ``notify``.

The new grid keeps the input's origin and orientation and covers its extent (see
:func:`kmunet.inr.geometry.resampled_grid`); the output NIfTI's sform is its exact affine, and so is the
qform unless the affine has shear, which a qform cannot represent (see :func:`_output_image`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import torch

from kmunet.inr.geometry import (
    UPSAMPLED_EPS, Grid, Normalization, antialias_sigma, check_grid_size, grid_from_image, normalization_for,
    resampled_grid, three_positive,
)
from kmunet.options import RESAMPLE_METHODS

if TYPE_CHECKING:
    from kmunet.inr.prior import ResamplerNet

__all__ = [
    "METHODS",
    "INR_DEFAULTS",
    "FittedINR",
    "anti_alias_sigma",
    "fit_inr",
    "fusion_weight",
    "interpolate_array",
    "load_volume",
    "plane_grid",
    "resample_plane",
    "resample_volume",
    "sample_plane",
    "sample_points",
]

#: Resampling methods of :func:`resample_volume`.
METHODS: tuple[str, ...] = RESAMPLE_METHODS

#: Per-model defaults for scan-specific fitting: model arguments and optimiser settings.
INR_DEFAULTS: dict[str, dict[str, Any]] = {
    "siren": {"model": {"hidden_features": 128, "hidden_layers": 2, "omega_0": 15.0, "omega_hidden": 15.0}, "lr": 1e-3},
    "fourier": {"model": {"hidden_features": 128, "hidden_layers": 2, "sigma": 3.0, "num_frequencies": 128}, "lr": 1e-3},
    "wire": {"model": {"hidden_features": 128, "hidden_layers": 2, "omega_0": 10.0, "scale_0": 10.0}, "lr": 5e-3},
    "kan": {"model": {"hidden_features": 32, "hidden_layers": 1, "grid_size": 8, "num_frequencies": 24}, "lr": 1e-2},
}
DEFAULT_ITERATIONS = 800
DEFAULT_BATCH = 8192
_CHUNK = 1 << 16
#: An axis is downsampled when its new voxel size exceeds the old one by more than this fraction.
_COARSER_EPS = 1e-4
#: Gaussian kernel radius of the anti-aliasing, in sigmas (scipy's default).
_TRUNCATE = 4.0


# ------------------------------------------------------------------------------------------- loading
def load_volume(image: Any) -> tuple[Any, np.ndarray]:
    """A nibabel image (or a path to one) and its 3-D float32 data (trailing singleton dims dropped).

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: unreadable file or not a 3-D volume (the message names the file).
    """
    from kmunet.checks import error_reason
    from kmunet.data.io import read_nifti

    name = "image"
    raw = None
    if isinstance(image, (str, Path)):
        path = Path(image)
        name = str(path)
        if path.is_dir():
            raise ValueError(f"{path}: is a folder (a DICOM series?); resampling reads NIfTI volumes: convert it "
                             "first with `kmunet export-nifti --input FOLDER --output DIR`")
        if not path.is_file():
            raise FileNotFoundError(f"input not found: {path}")
        if path.suffix.lower() == ".dcm":
            raise ValueError(f"{path}: is a DICOM file; resampling reads NIfTI volumes: convert its series "
                             "first with `kmunet export-nifti --input FOLDER --output DIR`")
        try:
            image, raw = read_nifti(path)  # a .nii.gz is read to its end: its gzip CRC is checked
        except Exception as err:  # noqa: BLE001 - any reader failure is a bad input file
            raise ValueError(f"cannot read {path} as NIfTI: {error_reason(err, path)}") from None
    try:
        data = np.asarray(image.dataobj if raw is None else raw, dtype=np.float32)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"cannot read the voxel data of {name}: {err}") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{name}: expected a 3-D volume, got shape {tuple(data.shape)}")
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{name}: voxel data contains NaN or infinite values")
    return image, data


def _world_chunks(grid: Grid, chunk: int = _CHUNK) -> Iterator[tuple[slice, np.ndarray]]:
    """``(flat slice, (n, 3) world points)`` over the grid's voxels in C order, ``chunk`` at a time."""
    total = grid.num_voxels
    for start in range(0, total, chunk):
        stop = min(total, start + chunk)
        idx = np.stack(np.unravel_index(np.arange(start, stop), grid.shape), axis=-1).astype(np.float64)
        yield slice(start, stop), grid.index_to_world(idx)


# ------------------------------------------------------------------------------------------- baselines
def interpolate_array(data: np.ndarray, index: np.ndarray, order: int) -> np.ndarray:
    """Spline interpolation of ``data`` at fractional voxel indices ``(N, 3)`` (order 1: trilinear, 3: cubic
    B-spline with the exact interpolating prefilter). Points outside the volume take the nearest edge
    value (order 1) or the mirrored spline (order 3)."""
    from scipy import ndimage

    if order not in (1, 3):
        raise ValueError(f"order must be 1 or 3, got {order!r}")
    if order == 3:
        coeffs = ndimage.spline_filter(np.asarray(data, dtype=np.float64), order=3, mode="mirror")
        return ndimage.map_coordinates(coeffs, index.T, order=3, mode="mirror", prefilter=False)
    return ndimage.map_coordinates(np.asarray(data, dtype=np.float64), index.T, order=1, mode="nearest")


def anti_alias_sigma(old_spacing: Sequence[float], new_spacing: Sequence[float]) -> np.ndarray:
    """Per-axis Gaussian sigma (input voxels) that anti-aliases downsampling from ``old`` to ``new`` spacing.

    With ``r = new / old > 1`` along an axis, ``sigma = sqrt(r**2 - 1) / 2``: the input is taken to have a
    Gaussian point spread of half an input voxel, and smoothing brings it to half an output voxel
    (``0.5 * r`` input voxels; variances add) -- the rule of the prior's zoom augmentation
    (:class:`kmunet.inr.prior.ResamplerAugment`). Axes with ``r <= 1`` (upsampled or unchanged, up to a
    relative 1e-4) get 0.

    Raises:
        ValueError: spacings that are not three positive finite numbers.
    """
    ratio = three_positive("new_spacing", new_spacing) / three_positive("old_spacing", old_spacing)
    return np.where(ratio > 1.0 + _COARSER_EPS, antialias_sigma(ratio), 0.0)


def _anti_alias(data: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """``data`` smoothed along the axes where ``sigma`` (:func:`anti_alias_sigma`, voxels) is positive.

    Edges are mirrored (``scipy.ndimage`` mode ``"reflect"``, ITK's zero-flux Neumann condition), so a
    constant stays constant; a ramp is kept in the interior but bends within a few sigma of the edges.
    """
    from scipy import ndimage

    out = np.asarray(data, dtype=np.float64)
    for a in np.flatnonzero(sigma > 0):
        out = ndimage.gaussian_filter1d(out, float(sigma[a]), axis=int(a), mode="reflect", truncate=_TRUNCATE)
    return out


def _baseline(data: np.ndarray, in_grid: Grid, out_grid: Grid, order: int) -> np.ndarray:
    from scipy import ndimage

    out = np.empty(out_grid.num_voxels, dtype=np.float32)
    src = np.asarray(data, dtype=np.float64)
    if order == 3:
        src = ndimage.spline_filter(src, order=3, mode="mirror")
    for sl, world in _world_chunks(out_grid, 1 << 20):
        index = in_grid.world_to_index(world)
        mode = "mirror" if order == 3 else "nearest"
        out[sl] = ndimage.map_coordinates(src, index.T, order=order, mode=mode, prefilter=False)
    return out.reshape(out_grid.shape)


# ------------------------------------------------------------------------------------------- INR
@dataclass
class FittedINR:
    """A coordinate network fitted to one scan.

    Attributes:
        model: the network (unit coordinates -> normalised intensity).
        grid: the scan's grid.
        normalization: world -> unit-coordinate map.
        offset, scale: intensity = ``offset + scale * model output``.
        losses: training loss history.
        seconds: fitting time.
    """

    model: torch.nn.Module
    grid: Grid
    normalization: Normalization
    offset: float
    scale: float
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def fit_inr(
    image: Any,
    inr: str = "siren",
    iterations: int | None = None,
    *,
    lr: float | None = None,
    batch_size: int | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    progress: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    mask: np.ndarray | None = None,
    compression: Sequence[float] | None = None,
) -> FittedINR:
    """Fit a scan-specific INR to a volume in world coordinates.

    Args:
        image: nibabel image or path.
        inr: model name (:data:`kmunet.inr.INR_MODELS`).
        iterations: Adam steps (default :data:`DEFAULT_ITERATIONS`).
        lr: learning rate (default per model, :data:`INR_DEFAULTS`).
        batch_size: voxels per step (default :data:`DEFAULT_BATCH`).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        seed: model initialisation and batch sampling seed.
        progress: tqdm progress bar.
        model_kwargs: overrides of the model arguments in :data:`INR_DEFAULTS`.
        mask: optional boolean ``(X, Y, Z)``; only voxels where it is true are fitted (e.g. kept slices).
        compression: optional per-voxel-axis factors ``>= 1`` by which world space is shrunk along that
            axis before normalisation (:func:`kmunet.inr.geometry.normalization_for`): the network's
            bandwidth along the axis drops by the factor. :func:`resample_volume` passes the upsampling
            factor of each axis.
    """
    from kmunet.inr.fit import fit_coordinates
    from kmunet.inr.models import INR_MODELS, build_inr
    from kmunet.runtime import resolve_device

    key = str(inr).lower()
    if key not in INR_MODELS:
        raise ValueError(f"unknown INR model {inr!r}; valid: {list(INR_MODELS)}")
    image, data = load_volume(image)
    grid = grid_from_image(image)
    norm = normalization_for(grid, compression)
    lo, hi = float(data.min()), float(data.max())
    scale = hi - lo if hi > lo else 1.0
    dev = resolve_device(device)
    defaults = INR_DEFAULTS[key]
    kwargs = {**defaults["model"], **(model_kwargs or {})}
    model = build_inr(key, 3, 1, seed=seed, device=dev, **kwargs)
    coords = grid.world_points()
    values = ((data - lo) / scale).reshape(-1, 1)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != data.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the volume shape {data.shape}")
        coords, values = coords[mask.reshape(-1)], values[mask.reshape(-1)]
    coords_t = torch.as_tensor(norm.to_unit(coords), dtype=torch.float32)
    values_t = torch.as_tensor(values, dtype=torch.float32)
    result = fit_coordinates(
        model, coords_t, values_t,
        iterations=DEFAULT_ITERATIONS if iterations is None else iterations,
        lr=defaults["lr"] if lr is None else lr,
        batch_size=DEFAULT_BATCH if batch_size is None else batch_size,
        device=dev, progress=progress, seed=seed, description=f"fit {key}",
    )
    return FittedINR(model=model, grid=grid, normalization=norm, offset=lo, scale=scale,
                     losses=result.losses, seconds=result.seconds)


def sample_points(fitted: FittedINR, world_points: np.ndarray, chunk_size: int = _CHUNK) -> np.ndarray:
    """Intensities of a fitted INR at world points ``(N, 3)`` (mm, the image's world frame) -> ``(N,)``."""
    from kmunet.inr.models import evaluate

    pts = np.asarray(world_points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"world_points must be (N, 3), got shape {pts.shape}")
    unit = torch.as_tensor(fitted.normalization.to_unit(pts), dtype=torch.float32)
    out = evaluate(fitted.model, unit, chunk_size=chunk_size)
    if out.is_complex():
        out = out.real
    return (out[:, 0].double().numpy() * fitted.scale + fitted.offset).astype(np.float32)


def sample_plane(
    fitted: FittedINR,
    origin: Sequence[float],
    u: Sequence[float],
    v: Sequence[float],
    size: Sequence[int],
    spacing: Sequence[float] | float = 1.0,
) -> np.ndarray:
    """Sample an arbitrary (oblique) plane of a fitted INR.

    Pixel ``(i, j)`` lies at ``origin + i * spacing[0] * u_hat + j * spacing[1] * v_hat`` (world mm).

    Args:
        fitted: result of :func:`fit_inr`.
        origin: world position of pixel ``(0, 0)``.
        u, v: in-plane directions (normalised here; must not be parallel).
        size: ``(rows, columns)``.
        spacing: pixel size in mm, one number or ``(along u, along v)``.

    Returns:
        ``(rows, columns)`` float32 intensities.

    Raises:
        ValueError: a bad plane (:func:`plane_grid`) or one wholly outside the fitted volume.
    """
    grid = plane_grid(origin, u, v, size, spacing)
    _check_plane_inside(fitted.grid, grid)
    return _inr_on_grid(fitted, grid)[:, :, 0]


def _inr_on_grid(fitted: FittedINR, out_grid: Grid) -> np.ndarray:
    out = np.empty(out_grid.num_voxels, dtype=np.float32)
    for sl, world in _world_chunks(out_grid):
        out[sl] = sample_points(fitted, world)
    return out.reshape(out_grid.shape)


def _upsampling_factors(in_grid: Grid, out_grid: Grid) -> np.ndarray:
    """Per-voxel-axis upsampling factors ``max(old spacing / new spacing, 1)``, ``(3,)``: the prior's
    conditioning and the INR's coordinate compression."""
    return np.maximum(in_grid.spacing / out_grid.spacing, 1.0)


def _load_prior(prior: "str | Path | ResamplerNet", device: str | torch.device) -> "ResamplerNet":
    """The prior model: ``prior`` itself when already loaded, else loaded from its checkpoint file."""
    from kmunet.inr.prior import ResamplerNet, load_resampler
    from kmunet.runtime import resolve_device

    if isinstance(prior, ResamplerNet):
        return prior
    return load_resampler(prior, device=resolve_device(device))


def _prior_on_grid(model: "ResamplerNet", data: np.ndarray, in_grid: Grid, out_grid: Grid) -> np.ndarray:
    from kmunet.inr.prior import prior_resample_array

    factors = _upsampling_factors(in_grid, out_grid)
    index = in_grid.world_to_index(out_grid.world_points())
    return prior_resample_array(model, data, index, factors).reshape(out_grid.shape)


def _check_fusion_samples(shape: Sequence[int], axes: Sequence[int]) -> None:
    """Raise ``ValueError`` unless every axis in ``axes`` has the 3 samples self-validation needs."""
    for a in axes:
        if int(shape[a]) < 3:
            raise ValueError(f"method prior+inr (self-validation) needs at least 3 samples along axis {a}, which is "
                             f"upsampled; the input has {int(shape[a])}")


def _upsampled_axes(in_grid: Grid, out_grid: Grid) -> list[int]:
    """Upsampled voxel axes, on which :func:`fusion_weight` validates."""
    return [a for a, f in enumerate(_upsampling_factors(in_grid, out_grid)) if f > 1.0 + UPSAMPLED_EPS]


def fusion_weight(
    image: Any,
    axes: Sequence[int],
    prior: "str | Path | ResamplerNet",
    *,
    inr: str = "siren",
    iterations: int | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    scaled_coordinates: bool = True,
    **inr_options: Any,
) -> tuple[float, dict[str, float]]:
    """Weight of the learned prior in ``method="prior+inr"``, by self-validation on the input alone.

    The input is cropped to an odd number of samples along each axis in ``axes``; its even-indexed
    samples along those axes are kept, and the prior and a scan-specific INR (fitted to the kept voxels
    only; coordinates compressed by 2 along ``axes`` unless ``scaled_coordinates`` is False) predict the
    others -- a factor-2 version of the real task. With mean squared errors ``e_prior`` and ``e_inr`` on the predicted voxels, the prior's weight is
    ``e_inr / (e_prior + e_inr)`` (inverse-variance weighting).

    Args:
        image: nibabel image or path.
        axes: upsampled voxel axes (each needs at least 3 samples).
        prior: learned resampler checkpoint, or the loaded model.
        inr, iterations, device, seed, inr_options: as for :func:`fit_inr`.
        scaled_coordinates: as for :func:`resample_volume` (here the upsampling factor is 2).

    Returns:
        ``(weight, {"prior_mse", "inr_mse"})``.

    Raises:
        ValueError: no axes, an axis with fewer than 3 samples, or a bad prior checkpoint (all checked
            before any fitting).
        FileNotFoundError: missing prior checkpoint.
    """
    image, data = load_volume(image)
    axes = sorted({int(a) for a in axes})
    if not axes or any(a not in (0, 1, 2) for a in axes):
        raise ValueError(f"axes must be a non-empty subset of (0, 1, 2), got {list(axes)}")
    _check_fusion_samples(data.shape, axes)
    model = _load_prior(prior, device)
    crop = [slice(None)] * 3
    keep = [slice(None)] * 3
    for a in axes:
        n = (data.shape[a] - 1) // 2 * 2 + 1
        crop[a], keep[a] = slice(0, n), slice(0, n, 2)
    ref = np.ascontiguousarray(data[tuple(crop)])
    grid = Grid(ref.shape, grid_from_image(image).affine)
    kept = np.zeros(ref.shape, dtype=bool)
    kept[tuple(keep)] = True
    low = np.ascontiguousarray(ref[tuple(keep)])
    low_affine = grid.affine.copy()
    low_affine[:3, axes] *= 2.0  # every other sample: twice the spacing, same first voxel
    pred_prior = _prior_on_grid(model, low, Grid(low.shape, low_affine), grid)
    compression = np.ones(3)
    if scaled_coordinates:
        compression[axes] = 2.0
    fitted = fit_inr(_output_image(image, ref, grid.affine), inr=inr, iterations=iterations, device=device,
                     seed=seed, mask=kept, compression=compression, **inr_options)
    pred_inr = _inr_on_grid(fitted, grid)
    e_prior = float(np.mean((pred_prior[~kept] - ref[~kept]) ** 2))
    e_inr = float(np.mean((pred_inr[~kept] - ref[~kept]) ** 2))
    total = e_prior + e_inr
    weight = 0.5 if total <= 0 else e_inr / total
    return weight, {"prior_mse": e_prior, "inr_mse": e_inr}


# ------------------------------------------------------------------------------------------- main API
#: Largest deviation of an affine's unit directions from the nearest rotation that still counts as no shear
#: (float32-stored rotations deviate by ~1e-7).
_SHEAR_TOL = 1e-5


def _has_shear(affine: np.ndarray) -> bool:
    """Whether the affine's unit voxel directions are not orthogonal (a shear a qform cannot hold)."""
    rzs = np.asarray(affine, dtype=np.float64)[:3, :3]
    r = rzs / np.linalg.norm(rzs, axis=0)
    p, _, qt = np.linalg.svd(r)
    return float(np.abs(p @ qt - r).max()) > _SHEAR_TOL


def _output_image(reference: Any, data: np.ndarray, affine: np.ndarray):
    """A float32 NIfTI image of ``data`` whose sform is ``affine``, with the reference's codes and units.

    The qform is ``affine`` too, unless the affine has shear (:func:`_has_shear`): a qform holds only a
    rotation, zooms and an offset, so it then gets nibabel's nearest rotation with ``qform_code`` 0
    ("unknown", NIfTI's not-valid code) and readers use the exact sform.
    """
    import nibabel as nib

    out = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
    header = getattr(reference, "header", None)
    s_code = q_code = 1
    try:
        s_code = int(header["sform_code"]) or 1
        q_code = int(header["qform_code"]) or 1
        out.header.set_xyzt_units(*header.get_xyzt_units())
    except Exception:  # noqa: BLE001 - non-NIfTI headers: keep the defaults
        pass
    out.set_sform(affine, code=s_code)
    out.set_qform(affine, code=0 if _has_shear(affine) else q_code)
    return out


def resample_volume(
    image: Any,
    spacing: Sequence[float] | None = None,
    factor: float | None = None,
    axis: int | None = None,
    method: str = "inr",
    inr: str = "siren",
    iterations: int | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    prior: "str | Path | ResamplerNet | None" = None,
    progress: bool = False,
    scaled_coordinates: bool = True,
    anti_alias: bool = True,
    notify: Callable[[str], None] | None = None,
    **inr_options: Any,
):
    """Resample a 3-D volume to a new voxel size.

    Args:
        image: nibabel image or path to a NIfTI file.
        spacing: new voxel size per voxel axis (mm); or
        factor: sample-count multiplier along ``axis`` (all axes if ``axis`` is ``None``).
        axis: voxel axis (0, 1, 2) for ``factor``.
        method: ``"inr"``, ``"linear"``, ``"bspline"``, ``"prior"`` (implied by ``prior``) or
            ``"prior+inr"`` (needs ``prior``; see the module docstring).
        inr: INR model name for ``method="inr"`` and ``"prior+inr"``.
        iterations: INR fitting steps.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (INR and prior).
        seed: INR seed.
        prior: checkpoint of a learned resampler (:func:`kmunet.inr.prior.train_resampler`), or the
            loaded model; loaded and checked before any fitting.
        progress: progress bar while fitting.
        scaled_coordinates: for ``method="inr"``, divide the coordinate along each voxel axis by that
            axis' upsampling factor (``max(old spacing / new spacing, 1)``) before fitting, so the
            network's bandwidth along an upsampled axis is lowered in proportion to its coarser sampling
            (e.g. 4x fewer slices -> 4x lower through-plane bandwidth; the INR then interpolates smoothly
            between slices instead of oscillating). ``False``: isotropic world coordinates.
        anti_alias: for ``"linear"``/``"bspline"``, smooth the input along downsampled axes first
            (Gaussian, :func:`anti_alias_sigma`); ``False``: plain point sampling. Upsampled and
            unchanged axes are never smoothed.
        notify: called with one-line notes before the work starts: downsampling without anti-aliasing
            (INR and prior methods), a prior used outside its training factors or voxel sizes
            (:func:`kmunet.inr.prior.prior_domain_warning`). Default: ``warnings.warn``.
        **inr_options: passed to :func:`fit_inr` (``lr``, ``batch_size``, ``model_kwargs``).

    Returns:
        ``nib.Nifti1Image`` (float32) on the new grid, with the exact new affine.

    Raises:
        FileNotFoundError: missing input or prior file.
        ValueError: bad arguments, unreadable input or prior, or (``"prior+inr"``) an upsampled axis
            with fewer than 3 samples -- all before any fitting.
    """
    key = _method_key(method, prior)
    notify = _notifier(notify)
    image, data = load_volume(image)
    in_grid = grid_from_image(image)
    out_grid = resampled_grid(in_grid, spacing=spacing, factor=factor, axis=axis)
    model = _prepare_prior(key, prior, in_grid, out_grid, device, notify)
    sigma = anti_alias_sigma(in_grid.spacing, out_grid.spacing)
    coarser = [int(a) for a in np.flatnonzero(sigma > 0)]  # the downsampled voxel axes
    if coarser and key in ("linear", "bspline"):
        if anti_alias:  # anti_alias=False: point sampling asked for, no note
            data = _anti_alias(data, sigma)
    elif coarser:
        what = {"inr": "the fitted INR is", "prior": "the prior is", "prior+inr": "the prior and the INR are"}
        notify(f"downsampling along axis {', '.join(map(str, coarser))} without anti-aliasing: {what[key]} "
               "sampled at the coarser grid points (method linear or bspline smooths first)")
    if key in ("inr", "prior+inr") and scaled_coordinates:
        inr_options["compression"] = _upsampling_factors(in_grid, out_grid)
    out = _resample_on_grid(image, data, in_grid, out_grid, key, inr=inr, iterations=iterations, device=device,
                            seed=seed, prior=model, progress=progress, **inr_options)
    return _output_image(image, out, out_grid.affine)


def _notifier(notify: Callable[[str], None] | None) -> Callable[[str], None]:
    """``notify``, or ``warnings.warn`` (a ``UserWarning``) when ``None``."""
    if notify is not None:
        return notify
    return lambda message: warnings.warn(message, UserWarning, stacklevel=2)


def _prepare_prior(
    key: str, prior: "str | Path | ResamplerNet | None", in_grid: Grid, out_grid: Grid,
    device: str | torch.device, notify: Callable[[str], None],
) -> "ResamplerNet | None":
    """For the prior methods: the loaded prior, after checking (before any fit) that it loads, that
    ``"prior+inr"`` has 3 samples per upsampled axis, and notifying when the input is outside its
    training domain. ``None`` for the other methods."""
    if key not in ("prior", "prior+inr"):
        return None
    from kmunet.inr.prior import prior_domain_warning

    model = _load_prior(prior, device)
    if key == "prior+inr":
        _check_fusion_samples(in_grid.shape, _upsampled_axes(in_grid, out_grid))
    name = f"prior {prior}" if isinstance(prior, (str, Path)) else "the prior"
    message = prior_domain_warning(getattr(model, "train_config", {}), in_grid.spacing,
                                   _upsampling_factors(in_grid, out_grid), name=name)
    if message:
        notify(message)
    return model


def _method_key(method: str, prior: "str | Path | ResamplerNet | None") -> str:
    """Validated method name; ``prior`` implies ``"prior"`` unless the method is ``"prior+inr"``."""
    key = str(method).lower()
    if key not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {list(METHODS)}")
    if prior is not None:
        if key not in ("inr", "prior", "prior+inr"):
            raise ValueError(f"a prior model cannot be combined with method {method!r}")
        return "prior+inr" if key == "prior+inr" else "prior"
    if key in ("prior", "prior+inr"):
        raise ValueError(f"method {key!r} needs a prior model (prior=PATH)")
    return key


def _resample_on_grid(
    image: Any, data: np.ndarray, in_grid: Grid, out_grid: Grid, key: str, *, inr: str, iterations: int | None,
    device: str | torch.device, seed: int, prior: "ResamplerNet | None", progress: bool, **inr_options: Any,
) -> np.ndarray:
    """Values of the volume on ``out_grid`` (any regular grid in the input's world frame) by method ``key``.

    ``prior`` is the loaded model (:func:`_prepare_prior`) for the prior methods.
    """
    if key == "linear":
        return _baseline(data, in_grid, out_grid, order=1)
    if key == "bspline":
        return _baseline(data, in_grid, out_grid, order=3)
    if key == "prior":
        return _prior_on_grid(prior, data, in_grid, out_grid)
    axes = _upsampled_axes(in_grid, out_grid) if key == "prior+inr" else []  # 3 samples each: checked before the fit
    fitted = fit_inr(image, inr=inr, iterations=iterations, device=device, seed=seed, progress=progress, **inr_options)
    values = _inr_on_grid(fitted, out_grid)
    if key == "inr":
        return values
    weight = 0.5
    if axes:  # no upsampled axis (pure down-sampling): nothing to validate on, plain average
        # resample_volume passes ``compression`` exactly when the INR uses scaled coordinates.
        options = {k: v for k, v in inr_options.items() if k != "compression"}
        weight, _ = fusion_weight(image, axes, prior, inr=inr, iterations=iterations, device=device, seed=seed,
                                  scaled_coordinates="compression" in inr_options, **options)
    return weight * _prior_on_grid(prior, data, in_grid, out_grid) + (1.0 - weight) * values


def _check_plane_inside(in_grid: Grid, plane: Grid) -> None:
    """Raise ``ValueError`` when no pixel of ``plane`` lies inside ``in_grid``'s voxels (within half a voxel).

    Shared by :func:`resample_plane` and :func:`sample_plane`.
    """
    index = in_grid.world_to_index(plane.world_points())  # (rows * cols, 3) voxel indices of the plane
    inside = np.all((index >= -0.5) & (index <= np.asarray(in_grid.shape) - 0.5), axis=1)
    if not inside.any():
        corners = in_grid.corners_world()
        lo, hi = corners.min(0), corners.max(0)
        raise ValueError(f"the plane lies entirely outside the volume (its world extent is x {lo[0]:.1f}..{hi[0]:.1f}, "
                         f"y {lo[1]:.1f}..{hi[1]:.1f}, z {lo[2]:.1f}..{hi[2]:.1f} mm); origin, u and v are world "
                         "coordinates in mm (RAS), not voxel indices")


def plane_grid(
    origin: Sequence[float], u: Sequence[float], v: Sequence[float], size: Sequence[int],
    spacing: Sequence[float] | float = 1.0,
) -> Grid:
    """The one-voxel-thick grid of an (oblique) plane, as in :func:`sample_plane`.

    Pixel ``(i, j, 0)`` lies at ``origin + i * spacing[0] * u_hat + j * spacing[1] * v_hat``; the third
    axis is the plane normal ``u_hat x v_hat`` (its spacing is the smaller in-plane spacing), so the
    grid's affine is a valid NIfTI affine for the plane.

    Raises:
        ValueError: parallel or zero ``u``/``v``, non-positive size or spacing.
    """
    o = np.asarray(origin, dtype=np.float64).reshape(3)
    u_, v_ = np.asarray(u, dtype=np.float64).reshape(3), np.asarray(v, dtype=np.float64).reshape(3)
    nu, nv = np.linalg.norm(u_), np.linalg.norm(v_)
    if nu == 0 or nv == 0 or np.linalg.norm(np.cross(u_ / nu, v_ / nv)) < 1e-6:
        raise ValueError(f"plane directions u={u_.tolist()} and v={v_.tolist()} must be non-zero and not parallel")
    if len(size) != 2 or int(size[0]) < 1 or int(size[1]) < 1:
        raise ValueError(f"plane size must be two positive integers (rows, columns), got {list(size)}")
    check_grid_size((int(size[0]), int(size[1])))
    su, sv = (float(spacing), float(spacing)) if np.isscalar(spacing) else (float(spacing[0]), float(spacing[1]))
    if su <= 0 or sv <= 0:
        raise ValueError(f"plane spacing must be positive, got {spacing!r}")
    u_hat, v_hat = u_ / nu, v_ / nv
    normal = np.cross(u_hat, v_hat)
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1] = u_hat * su, v_hat * sv
    affine[:3, 2] = normal / np.linalg.norm(normal) * min(su, sv)
    affine[:3, 3] = o
    return Grid((int(size[0]), int(size[1]), 1), affine)


def resample_plane(
    image: Any,
    origin: Sequence[float],
    u: Sequence[float],
    v: Sequence[float],
    size: Sequence[int],
    spacing: Sequence[float] | float = 1.0,
    method: str = "inr",
    inr: str = "siren",
    iterations: int | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    prior: "str | Path | ResamplerNet | None" = None,
    progress: bool = False,
    notify: Callable[[str], None] | None = None,
    **inr_options: Any,
):
    """Sample an arbitrary (oblique) plane of a volume with any method of :func:`resample_volume`.

    The plane is point-sampled (no anti-aliasing, whatever its pixel size).

    Args:
        image: nibabel image or path to a NIfTI file.
        origin, u, v, size, spacing: the plane, as in :func:`plane_grid` (world mm, the image's frame).
        method, inr, iterations, device, seed, prior, progress, notify, inr_options: as in
            :func:`resample_volume`.

    Returns:
        ``nib.Nifti1Image`` of shape ``(rows, columns, 1)`` whose affine places every pixel in world space.

    Raises:
        ValueError: a bad plane, one wholly outside the volume, or a bad input or prior (before any fit).
        FileNotFoundError: missing input or prior file.
    """
    key = _method_key(method, prior)
    notify = _notifier(notify)
    out_grid = plane_grid(origin, u, v, size, spacing)
    image, data = load_volume(image)
    in_grid = grid_from_image(image)
    _check_plane_inside(in_grid, out_grid)
    model = _prepare_prior(key, prior, in_grid, out_grid, device, notify)
    out = _resample_on_grid(image, data, in_grid, out_grid, key, inr=inr, iterations=iterations, device=device,
                            seed=seed, prior=model, progress=progress, **inr_options)
    return _output_image(image, out, out_grid.affine)
