"""Image-quality metrics on magnitude images: PSNR, SSIM (Gaussian window) and NMSE.

All take a ``reference`` and an ``image`` of the same ``(H, W)`` shape (complex inputs are turned into
magnitudes) and an optional boolean ``mask`` restricting the metric to a foreground region.
"""

from __future__ import annotations

from typing import Callable, Hashable, Sequence, TypeVar

import numpy as np
from scipy import ndimage

from kmunet.mri import SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_TRUNCATE

H = TypeVar("H", bound=Hashable)


def _prepare(reference: np.ndarray, image: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    ref = np.abs(np.asarray(reference)).astype(np.float64)
    img = np.abs(np.asarray(image)).astype(np.float64)
    if ref.shape != img.shape:
        raise ValueError(f"reference shape {list(ref.shape)} differs from image shape {list(img.shape)}")
    if ref.size == 0:
        raise ValueError("empty images")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != ref.shape:
            raise ValueError(f"mask shape {list(mask.shape)} differs from image shape {list(ref.shape)}")
        if not mask.any():
            raise ValueError("mask selects no pixels")
    return ref, img, mask


def nmse(reference: np.ndarray, image: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Normalised MSE ``||ref - img||^2 / ||ref||^2`` of magnitudes (inside ``mask`` if given)."""
    ref, img, mask = _prepare(reference, image, mask)
    if mask is not None:
        ref, img = ref[mask], img[mask]
    denom = float(np.sum(ref**2))
    if denom == 0:
        raise ValueError("reference is all zero")
    return float(np.sum((ref - img) ** 2) / denom)


def psnr(reference: np.ndarray, image: np.ndarray, mask: np.ndarray | None = None, data_range: float | None = None) -> float:
    """PSNR in dB, ``10 log10(range^2 / MSE)`` with ``range = reference.max()`` (inside ``mask``) by default."""
    ref, img, mask = _prepare(reference, image, mask)
    if mask is not None:
        ref, img = ref[mask], img[mask]
    rng = float(ref.max()) if data_range is None else float(data_range)
    if rng <= 0:
        raise ValueError(f"data range must be > 0, got {rng}")
    mse = float(np.mean((ref - img) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(rng**2 / mse))


def ssim_map(reference: np.ndarray, image: np.ndarray, data_range: float | None = None) -> np.ndarray:
    """Per-pixel SSIM with a Gaussian window (sigma 1.5, truncate 3.5, population covariances).

    Matches ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=range)`` before its border crop.
    """
    ref, img, _ = _prepare(reference, image, None)
    rng = float(ref.max()) if data_range is None else float(data_range)
    if rng <= 0:
        raise ValueError(f"data range must be > 0, got {rng}")

    def filt(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, sigma=SSIM_SIGMA, truncate=SSIM_TRUNCATE, mode="reflect")

    ux, uy = filt(ref), filt(img)
    vx = filt(ref * ref) - ux * ux
    vy = filt(img * img) - uy * uy
    vxy = filt(ref * img) - ux * uy
    c1, c2 = (SSIM_K1 * rng) ** 2, (SSIM_K2 * rng) ** 2
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))


def ssim(reference: np.ndarray, image: np.ndarray, mask: np.ndarray | None = None, data_range: float | None = None) -> float:
    """Mean SSIM of magnitudes; ``data_range`` defaults to ``reference.max()``.

    Without ``mask`` the map is averaged after cropping the window half-width at the borders (as skimage);
    with ``mask`` it is averaged over the mask pixels.
    """
    ref, img, mask = _prepare(reference, image, mask)
    if data_range is None and mask is not None:
        data_range = float(ref[mask].max())
    smap = ssim_map(ref, img, data_range)
    if mask is not None:
        return float(smap[mask].mean())
    pad = (2 * int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5) + 1 - 1) // 2
    crop = smap[pad:smap.shape[0] - pad, pad:smap.shape[1] - pad] if min(smap.shape) > 2 * pad else smap
    return float(crop.mean())


def all_metrics(reference: np.ndarray, image: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """``{"psnr", "ssim", "nmse"}`` of ``image`` against ``reference``."""
    return {"psnr": psnr(reference, image, mask), "ssim": ssim(reference, image, mask), "nmse": nmse(reference, image, mask)}


def best_on_grid(
    grid: Sequence[H],
    reconstruct: Callable[[H], np.ndarray],
    score: Callable[[np.ndarray], float],
    name: str = "value",
) -> tuple[H, np.ndarray, dict[H, float]]:
    """Try every value of ``grid`` and keep the reconstruction with the highest score.

    The shared search behind :func:`kmunet.mri.cs.tune_lambda` and :func:`kmunet.mri.recon.tune_inr`
    (regularisation weights and network settings tuned against a reference).

    Args:
        grid: candidate values (numbers or tuples of them), tried in order (the first wins ties).
        reconstruct: maps a value to an image.
        score: maps an image to a score, higher is better (e.g. PSNR against the reference).
        name: what the values are, for the error message.

    Returns:
        ``(best_value, best_image, {value: score})``.

    Raises:
        ValueError: empty grid.
    """
    if len(grid) == 0:
        raise ValueError(f"{name} grid is empty")
    scores: dict[H, float] = {}
    best_value, best_image = grid[0], None
    for value in grid:
        image = reconstruct(value)
        scores[value] = float(score(image))
        if best_image is None or scores[value] > scores[best_value]:
            best_value, best_image = value, image
    assert best_image is not None  # the grid is not empty
    return best_value, best_image, scores
