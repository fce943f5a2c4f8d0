"""Baseline reconstructions: zero-filled, compressed sensing with TV or L1-wavelet (sigpy).

All functions take ``(C, H, W)`` k-space, a boolean ``(H, W)`` mask (None: fully sampled) and optional
``(C, H, W)`` sensitivities, and return a complex ``(H, W)`` image on the scale of the input k-space.
For CS the k-space is divided by :func:`kspace_scale` first so that lambda means the same for every
input (the zero-filled image then peaks at 1); the result is scaled back.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from kmunet.mri import CS_LAMBDA_GRID, DEFAULT_CS_ITERATIONS, DEFAULT_CS_LAMBDA
from kmunet.mri.coils import rss, sense_adjoint
from kmunet.mri.fft import ifftnc
from kmunet.mri.metrics import best_on_grid, psnr

CS_METHODS: tuple[str, ...] = ("cs-tv", "cs-l1")


def _inputs(kspace: np.ndarray, mask: np.ndarray | None, sens: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    k = np.asarray(kspace)
    k = k[None] if k.ndim == 2 else k
    if k.ndim != 3:
        raise ValueError(f"k-space must be (H, W) or (C, H, W), got shape {list(k.shape)}")
    m = np.ones(k.shape[-2:], dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if m.shape != k.shape[-2:]:
        raise ValueError(f"mask shape {list(m.shape)} differs from k-space {list(k.shape[-2:])}")
    if sens is not None and np.asarray(sens).shape != k.shape:
        raise ValueError(f"sensitivities shape {list(np.asarray(sens).shape)} differ from k-space {list(k.shape)}")
    return k * m, m


def zero_filled(kspace: np.ndarray, mask: np.ndarray | None = None, sens: np.ndarray | None = None) -> np.ndarray:
    """Zero-filled reconstruction: ``A^H y`` with sensitivities, RSS of coil images (real) without.

    Args:
        kspace: ``(C, H, W)`` or ``(H, W)`` k-space.
        mask: boolean ``(H, W)``; unsampled points are zeroed.
        sens: optional ``(C, H, W)`` maps.

    Returns:
        complex128 ``(H, W)``.
    """
    k, m = _inputs(kspace, mask, sens)
    if sens is not None:
        return sense_adjoint(torch.from_numpy(k.astype(np.complex128)), torch.from_numpy(np.asarray(sens).astype(np.complex128)), None).numpy()
    coil = ifftnc(k)
    return coil[0].astype(np.complex128) if k.shape[0] == 1 else rss(coil).astype(np.complex128)


def kspace_scale(kspace: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Peak magnitude of the zero-filled RSS image (1.0 for all-zero data)."""
    k, m = _inputs(kspace, mask, None)
    peak = float(np.max(rss(ifftnc(k))))
    return peak if peak > 0 else 1.0


def cs_reconstruct(
    kspace: np.ndarray,
    mask: np.ndarray | None,
    sens: np.ndarray | None = None,
    method: str = "cs-tv",
    lam: float = DEFAULT_CS_LAMBDA,
    iterations: int = DEFAULT_CS_ITERATIONS,
) -> np.ndarray:
    """Compressed-sensing reconstruction with sigpy.

    ``"cs-tv"``: ``sigpy.mri.app.TotalVariationRecon``; ``"cs-l1"``: ``sigpy.mri.app.L1WaveletRecon``
    (db4 wavelets). Objective ``1/2 ||M (F S x) - y||^2 + lam R(x)`` on normalised k-space.

    Args:
        kspace: ``(C, H, W)`` k-space.
        mask: boolean ``(H, W)`` (None: fully sampled).
        sens: ``(C, H, W)`` maps (None: single coil / all-ones maps).
        method: ``"cs-tv"`` or ``"cs-l1"``.
        lam: regularisation weight (> 0).
        iterations: solver iterations.

    Returns:
        complex ``(H, W)`` image.
    """
    if method not in CS_METHODS:
        raise ValueError(f"unknown CS method {method!r}; valid: {list(CS_METHODS)}")
    if not lam > 0:
        raise ValueError(f"lam must be > 0, got {lam}")
    if int(iterations) < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    k, m = _inputs(kspace, mask, sens)
    if sens is None:
        if k.shape[0] != 1:
            raise ValueError("multi-coil CS needs sensitivity maps")
        sens = np.ones(k.shape, dtype=np.complex64)
    from sigpy.mri.app import L1WaveletRecon, TotalVariationRecon

    scale = kspace_scale(k, m)
    y = (k / scale).astype(np.complex64)
    cls = TotalVariationRecon if method == "cs-tv" else L1WaveletRecon
    app = cls(y, np.asarray(sens, dtype=np.complex64), float(lam), weights=m.astype(np.float32),
              max_iter=int(iterations), show_pbar=False)
    return np.asarray(app.run()) * scale


def fit_intensity(reference: np.ndarray, image: np.ndarray) -> np.ndarray:
    """``|image|`` times the least-squares factor ``<|ref|, |img|> / <|img|, |img|>`` matching ``reference``."""
    ref, mag = np.abs(np.asarray(reference, dtype=np.complex128)), np.abs(np.asarray(image, dtype=np.complex128))
    denom = float(np.sum(mag * mag))
    return mag * (float(np.sum(ref * mag)) / denom if denom > 0 else 1.0)


def tune_lambda(
    kspace: np.ndarray,
    mask: np.ndarray | None,
    reference: np.ndarray,
    sens: np.ndarray | None = None,
    method: str = "cs-tv",
    grid: Sequence[float] = CS_LAMBDA_GRID,
    iterations: int = DEFAULT_CS_ITERATIONS,
    fit_scale: bool = False,
) -> tuple[float, np.ndarray, dict[float, float]]:
    """Pick the lambda of ``grid`` whose CS reconstruction has the best PSNR against ``reference``.

    Args:
        fit_scale: score ``|x|`` after a least-squares intensity fit to ``reference`` (for references on
            another intensity scale, e.g. a reconstruction made by other software).

    Returns:
        ``(best_lambda, best_image, {lambda: psnr})``.
    """
    return best_on_grid(
        [float(v) for v in grid],
        lambda lam: cs_reconstruct(kspace, mask, sens, method=method, lam=lam, iterations=iterations),
        lambda img: psnr(reference, fit_intensity(reference, img) if fit_scale else img),
        name="lambda",
    )
