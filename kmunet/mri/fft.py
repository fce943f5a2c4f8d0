"""Centred, orthonormal FFTs over chosen axes (NumPy and PyTorch).

``fftnc(x) == fftshift(fftn(ifftshift(x, axes), axes, norm="ortho"), axes)``: k-space has DC in the middle
(index ``n // 2`` along each transformed axis) and the image is centred. Both transforms are unitary, so
``ifftnc(fftnc(x)) == x`` and energies are preserved.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

Axes = Sequence[int]


def _axes(axes: Axes | int, ndim: int) -> tuple[int, ...]:
    axes = (axes,) if isinstance(axes, int) else tuple(int(a) for a in axes)
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} out of range for an array with {ndim} dimensions")
    if len({a % ndim for a in axes}) != len(axes):
        raise ValueError(f"axes must be distinct, got {list(axes)}")
    return axes


def fftnc(x: np.ndarray, axes: Axes | int = (-2, -1)) -> np.ndarray:
    """Centred orthonormal forward FFT (image -> k-space) of a NumPy array over ``axes``.

    Args:
        x: array of any shape, e.g. an image ``(H, W)`` or coil images ``(C, H, W)``.
        axes: axes to transform (default the last two).

    Returns:
        Complex array of the same shape.
    """
    x = np.asarray(x)
    ax = _axes(axes, x.ndim)
    return np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(x, axes=ax), axes=ax, norm="ortho"), axes=ax)


def ifftnc(x: np.ndarray, axes: Axes | int = (-2, -1)) -> np.ndarray:
    """Centred orthonormal inverse FFT (k-space -> image); the exact inverse of :func:`fftnc`."""
    x = np.asarray(x)
    ax = _axes(axes, x.ndim)
    return np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(x, axes=ax), axes=ax, norm="ortho"), axes=ax)


def fftnc_torch(x: torch.Tensor, dim: Axes | int = (-2, -1)) -> torch.Tensor:
    """Centred orthonormal forward FFT of a torch tensor (real or complex) over ``dim``; differentiable."""
    d = _axes(dim, x.dim())
    return torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(x, dim=d), dim=d, norm="ortho"), dim=d)


def ifftnc_torch(x: torch.Tensor, dim: Axes | int = (-2, -1)) -> torch.Tensor:
    """Centred orthonormal inverse FFT of a torch tensor over ``dim``; differentiable."""
    d = _axes(dim, x.dim())
    return torch.fft.fftshift(torch.fft.ifftn(torch.fft.ifftshift(x, dim=d), dim=d, norm="ortho"), dim=d)
