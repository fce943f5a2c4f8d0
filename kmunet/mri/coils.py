"""Coil combination, sensitivity estimation and the SENSE forward model.

SENSE model (centred orthonormal FFT, see :mod:`kmunet.mri.fft`)::

    A x = M * F(S_c * x)            image (H, W) -> k-space (C, H, W)
    A^H y = sum_c conj(S_c) * F^H(M * y_c)

with ``M`` a boolean ``(H, W)`` sampling mask (or all ones) and ``S`` the ``(C, H, W)`` sensitivities.
"""

from __future__ import annotations

import numpy as np
import torch

from kmunet.mri import DEFAULT_CALIB_WIDTH
from kmunet.mri.fft import fftnc_torch, ifftnc, ifftnc_torch

SENS_METHODS: tuple[str, ...] = ("auto", "espirit", "lowres", "ones")
#: Smallest calibration width for which ``"auto"`` uses ESPIRiT (kernel width 6 needs room).
ESPIRIT_MIN_CALIB: int = 12
_EPS = 1e-12


def rss(x: np.ndarray | torch.Tensor, axis: int = 0) -> np.ndarray | torch.Tensor:
    """Root-sum-of-squares over the coil ``axis`` of coil images ``(C, H, W)`` -> ``(H, W)`` (real)."""
    if isinstance(x, torch.Tensor):
        return torch.sqrt(torch.sum(torch.abs(x) ** 2, dim=axis))
    return np.sqrt(np.sum(np.abs(np.asarray(x)) ** 2, axis=axis))


def _check_kspace(kspace: np.ndarray) -> np.ndarray:
    kspace = np.asarray(kspace)
    if kspace.ndim != 3:
        raise ValueError(f"k-space must be (C, H, W), got shape {list(kspace.shape)}")
    return kspace


def calibration_size(kspace_or_mask: np.ndarray, limit: int = DEFAULT_CALIB_WIDTH) -> tuple[int, int]:
    """Size ``(h, w)`` (each at most ``limit``) of the fully sampled centred calibration block.

    Args:
        kspace_or_mask: boolean ``(H, W)`` mask or ``(C, H, W)`` k-space (nonzero = sampled).
        limit: largest size returned per axis.
    """
    a = np.asarray(kspace_or_mask)
    m = np.any(a != 0, axis=0) if a.ndim == 3 else a.astype(bool)
    h, w = m.shape
    cy, cx = h // 2, w // 2
    size = [0, 0]
    for ax, n in ((0, h), (1, w)):
        for s in range(1, min(n, limit) + 1):
            lo = (cy if ax == 0 else cx) - s // 2
            block = m[lo:lo + s, cx - 1:cx + 2] if ax == 0 else m[cy - 1:cy + 2, lo:lo + s]
            if lo < 0 or not block.all():
                break
            size[ax] = s
    # the block must be sampled jointly: shrink the larger side until the rectangle is fully sampled
    sy, sx = size
    while sy > 0 and sx > 0 and not m[cy - sy // 2:cy - sy // 2 + sy, cx - sx // 2:cx - sx // 2 + sx].all():
        if sy >= sx:
            sy -= 1
        else:
            sx -= 1
    return sy, sx


def lowres_sensitivities(kspace: np.ndarray, calib: int | tuple[int, int] = DEFAULT_CALIB_WIDTH) -> np.ndarray:
    """Sensitivities from the low-resolution calibration image divided by its RSS.

    Args:
        kspace: ``(C, H, W)`` k-space (sampled centre needed).
        calib: side (or ``(h, w)``) of the centre block kept (Hann-windowed) for the calibration image.

    Returns:
        complex64 ``(C, H, W)`` maps with RSS 1 wherever the calibration image is nonzero.
    """
    kspace = _check_kspace(kspace)
    ch, cw = (calib, calib) if isinstance(calib, (int, np.integer)) else calib
    if min(ch, cw) < 1:
        raise ValueError(f"calibration size must be >= 1, got {calib}")
    _, h, w = kspace.shape
    win = np.zeros((h, w))
    ch, cw = min(int(ch), h), min(int(cw), w)
    h0, w0 = h // 2 - ch // 2, w // 2 - cw // 2
    win[h0:h0 + ch, w0:w0 + cw] = np.outer(np.hanning(ch + 2)[1:-1], np.hanning(cw + 2)[1:-1])
    low = ifftnc(kspace * win)
    norm = rss(low)
    return (low / np.maximum(norm, _EPS * max(norm.max(), 1.0))).astype(np.complex64)


def espirit_sensitivities(
    kspace: np.ndarray, calib_width: int = DEFAULT_CALIB_WIDTH, thresh: float = 0.02, crop: float = 0.0
) -> np.ndarray:
    """ESPIRiT sensitivities via ``sigpy.mri.app.EspiritCalib`` (first map set), complex64 ``(C, H, W)``.

    ``crop=0`` keeps the maps nonzero everywhere so a reconstruction is defined over the whole field of view.
    """
    kspace = _check_kspace(kspace)
    from sigpy.mri.app import EspiritCalib

    maps = EspiritCalib(np.asarray(kspace, dtype=np.complex64), calib_width=calib_width, thresh=thresh,
                        crop=crop, show_pbar=False).run()
    return np.asarray(maps, dtype=np.complex64)


def estimate_sensitivities(
    kspace: np.ndarray, method: str = "auto", calib_width: int | None = None
) -> np.ndarray:
    """Coil sensitivities of ``(C, H, W)`` k-space (fully or under-sampled with a sampled centre).

    Args:
        kspace: ``(C, H, W)`` k-space; single-coil data (C = 1) always gets all-ones maps.
        method: ``"auto"`` (ESPIRiT when sigpy imports and the fully sampled centre is at least
            :data:`ESPIRIT_MIN_CALIB` wide, else low-res), ``"espirit"``, ``"lowres"``, ``"ones"``.
        calib_width: calibration size; default the fully sampled centre block found in the data
            (at most ``DEFAULT_CALIB_WIDTH``).

    Returns:
        complex64 ``(C, H, W)`` maps.
    """
    kspace = _check_kspace(kspace)
    if method not in SENS_METHODS:
        raise ValueError(f"unknown sensitivity method {method!r}; valid: {list(SENS_METHODS)}")
    if kspace.shape[0] == 1 or method == "ones":
        return np.ones(kspace.shape, dtype=np.complex64)
    if not np.any(kspace):
        raise ValueError("k-space is all zero: cannot estimate coil sensitivities")
    calib = (calib_width, calib_width) if calib_width is not None else calibration_size(kspace)
    if min(calib) < 1:
        raise ValueError("k-space centre is not sampled: cannot estimate coil sensitivities")
    if method == "auto":
        method = "lowres"
        if min(calib) >= ESPIRIT_MIN_CALIB:
            try:
                import sigpy.mri.app  # noqa: F401
                method = "espirit"
            except ImportError:
                pass
    if method == "espirit":
        return espirit_sensitivities(kspace, calib_width=int(min(calib)))
    return lowres_sensitivities(kspace, calib)


def _as_tensor(x: np.ndarray | torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
    t = torch.as_tensor(x)
    if like is not None:
        t = t.to(like.device)
    return t


def _check_mask(mask: torch.Tensor | np.ndarray, like: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The mask as a boolean tensor on ``like``'s device, checked to be ``shape`` = ``(H, W)``."""
    m = _as_tensor(mask, like).to(torch.bool)
    if tuple(m.shape) != tuple(shape):
        raise ValueError(f"mask shape {list(m.shape)} does not match the image grid {list(shape)}")
    return m


def sense_forward(
    image: torch.Tensor, sens: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray | None = None
) -> torch.Tensor:
    """SENSE forward operator: image ``(..., H, W)`` -> masked multi-coil k-space ``(..., C, H, W)``.

    Args:
        image: complex image tensor.
        sens: ``(C, H, W)`` sensitivities.
        mask: boolean ``(H, W)`` sampling mask or None (fully sampled).
    """
    sens = _as_tensor(sens, image).to(image.dtype if image.is_complex() else torch.complex64)
    if sens.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"sensitivities {list(sens.shape)} do not match image {list(image.shape)}")
    k = fftnc_torch(sens * image.unsqueeze(-3))
    if mask is not None:
        k = k * _check_mask(mask, image, sens.shape[-2:])
    return k


def sense_adjoint(
    kspace: torch.Tensor, sens: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray | None = None
) -> torch.Tensor:
    """Adjoint SENSE operator: k-space ``(..., C, H, W)`` (torch or NumPy) -> image ``(..., H, W)``."""
    kspace = torch.as_tensor(kspace)
    if not kspace.is_complex():
        kspace = kspace.to(torch.complex64)
    sens = _as_tensor(sens, kspace).to(kspace.dtype)
    if sens.shape != kspace.shape[-3:]:
        raise ValueError(f"sensitivities {list(sens.shape)} do not match k-space {list(kspace.shape)}")
    if mask is not None:
        kspace = kspace * _check_mask(mask, kspace, sens.shape[-2:])
    return torch.sum(torch.conj(sens) * ifftnc_torch(kspace), dim=-3)
