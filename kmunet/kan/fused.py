"""Fused CPU kernels for the cubic KAN feature expansion (uniform knots), compiled with Numba.

The pure-PyTorch closed form in :mod:`kmunet.kan.basis` needs about twenty elementwise passes over the
input plus a zero fill, four ``scatter_add_`` calls forward and four ``gather`` calls backward; on CPU
that costs about half as much as the dense convolution that follows. These kernels do the same
arithmetic in one pass per direction: forward writes every slot of an input's expanded features
(``silu(x)``, the four non-zero cubic B-spline values, zeros elsewhere); backward recomputes the
local interval from ``x`` and contracts the incoming gradient at those slots with the closed-form
derivatives, so nothing but ``x`` is saved for backward.

The values are the ones :func:`kmunet.kan.basis.uniform_local_basis` gives (cubic, uniform knots
``t_j = t0 + j h``, zero outside the extended grid, partial functions beyond it dropped); the tests
check both paths against each other and against the Cox-de Boor recursion.

Used automatically by :func:`kmunet.kan.basis.kan_features` for float32/float64 CPU tensors when Numba
is importable, unless the environment variable ``KMUNET_FUSED_KAN=0`` disables it. Kernels are compiled
on first use (a few seconds) and cached on disk.
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor

__all__ = ["FUSED_ENV", "fused_available", "fused_cubic_features"]

#: Environment variable that disables the fused kernels when set to ``0``.
FUSED_ENV = "KMUNET_FUSED_KAN"

try:  # Numba is a dependency of kmunet, but keep the pure-PyTorch path working without it.
    import numba
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None

_DTYPES = (torch.float32, torch.float64)


def fused_available(x: Tensor | None = None) -> bool:
    """Whether the fused kernels can run (for ``x``: a float32/float64 CPU tensor).

    False when Numba is not installed or ``KMUNET_FUSED_KAN=0``.
    """
    if numba is None or os.environ.get(FUSED_ENV, "1") == "0":
        return False
    return x is None or (x.device.type == "cpu" and x.dtype in _DTYPES)


#: LLVM fast-math flags of the kernels: fused multiply-add, approximate exp and reciprocals. NaN/inf
#: semantics are kept (no ``nnan``/``ninf``), so a NaN input stays out of every spline slot.
_FASTMATH = {"contract", "afn", "arcp"}

if numba is not None:

    @numba.njit(inline="always", fastmath=_FASTMATH)
    def _forward_one(xv, t_first, step, inv, out, o, c, i, num_basis):  # pragma: no cover - compiled
        """Write the ``1 + num_basis`` features of one input value into ``out[o, c, :, i]``."""
        out[o, c, 0, i] = xv / (1.0 + math.exp(-xv))
        for s in range(1, num_basis + 1):
            out[o, c, s, i] = 0.0
        span = math.floor((xv - t_first) * inv)
        # Intervals 0 .. G + 2k - 1 of the extended grid; NaN fails the test and leaves the slots zero.
        if span >= 0.0 and span <= num_basis + 2.0:
            f = (xv - (t_first + span * step)) * inv  # fraction inside the interval, relative to its knot
            g = 1.0 - f
            f2 = f * f
            g2 = g * g
            j0 = int(span) - 3  # first non-zero basis function B_{j0}; partial ones beyond the grid dropped
            if j0 >= 0:
                out[o, c, 1 + j0, i] = g2 * g / 6.0
            if 0 <= j0 + 1 < num_basis:
                out[o, c, 2 + j0, i] = (0.5 * f - 1.0) * f2 + 2.0 / 3.0
            if 0 <= j0 + 2 < num_basis:
                out[o, c, 3 + j0, i] = (0.5 * g - 1.0) * g2 + 2.0 / 3.0
            if j0 + 3 < num_basis:
                out[o, c, 4 + j0, i] = f2 * f / 6.0

    @numba.njit(inline="always", fastmath=_FASTMATH)
    def _backward_one(xv, t_first, step, inv, grad, o, c, i, num_basis):  # pragma: no cover - compiled
        """``sum_s grad[o, c, s, i] * d feature_s / dx`` at one input value."""
        sig = 1.0 / (1.0 + math.exp(-xv))
        acc = grad[o, c, 0, i] * (sig * (1.0 + xv * (1.0 - sig)))
        span = math.floor((xv - t_first) * inv)
        if span >= 0.0 and span <= num_basis + 2.0:
            f = (xv - (t_first + span * step)) * inv
            g = 1.0 - f
            j0 = int(span) - 3
            if j0 >= 0:
                acc += grad[o, c, 1 + j0, i] * (-0.5 * g * g * inv)
            if 0 <= j0 + 1 < num_basis:
                acc += grad[o, c, 2 + j0, i] * (f * (1.5 * f - 2.0) * inv)
            if 0 <= j0 + 2 < num_basis:
                acc += grad[o, c, 3 + j0, i] * (g * (2.0 - 1.5 * g) * inv)
            if j0 + 3 < num_basis:
                acc += grad[o, c, 4 + j0, i] * (0.5 * f * f * inv)
        return acc

    # Two loop orders: channels-last data (I == 1) parallelises over points with channels inside (no
    # integer division per value); channels-first data over (outer, channel) rows with a long inner loop.
    @numba.njit(parallel=True, cache=True, nogil=True, fastmath=_FASTMATH)
    def _cubic_forward(x, t0, h, out):  # pragma: no cover - compiled
        """``x (O, C, I)`` -> ``out (O, C, 1 + G + 3, I)``: slot 0 silu, slot 1 + j the cubic B_j."""
        n_outer, n_chan, n_inner = x.shape
        num_basis = out.shape[2] - 1
        if n_inner == 1:
            for o in numba.prange(n_outer):
                for c in range(n_chan):
                    _forward_one(x[o, c, 0], t0[c], h[c], 1.0 / h[c], out, o, c, 0, num_basis)
        else:
            for oc in numba.prange(n_outer * n_chan):
                o = oc // n_chan
                c = oc - o * n_chan
                inv = 1.0 / h[c]
                for i in range(n_inner):
                    _forward_one(x[o, c, i], t0[c], h[c], inv, out, o, c, i, num_basis)

    @numba.njit(parallel=True, cache=True, nogil=True, fastmath=_FASTMATH)
    def _cubic_backward(x, t0, h, grad, grad_x):  # pragma: no cover - compiled
        """``grad (O, C, 1 + G + 3, I)`` -> ``grad_x (O, C, I)``."""
        n_outer, n_chan, n_inner = x.shape
        num_basis = grad.shape[2] - 1
        if n_inner == 1:
            for o in numba.prange(n_outer):
                for c in range(n_chan):
                    grad_x[o, c, 0] = _backward_one(x[o, c, 0], t0[c], h[c], 1.0 / h[c], grad, o, c, 0, num_basis)
        else:
            for oc in numba.prange(n_outer * n_chan):
                o = oc // n_chan
                c = oc - o * n_chan
                inv = 1.0 / h[c]
                for i in range(n_inner):
                    grad_x[o, c, i] = _backward_one(x[o, c, i], t0[c], h[c], inv, grad, o, c, i, num_basis)


def _launch(kernel, *args) -> None:
    """Run a kernel on as many threads as PyTorch's intra-op pool (never more than Numba has).

    Starting Numba's OpenMP pool resets the process-wide OpenMP thread count to Numba's own default
    (all cores), which PyTorch then picks up; PyTorch's setting is put back afterwards so that
    ``torch.set_num_threads`` / ``OMP_NUM_THREADS`` keep meaning what they say.
    """
    threads = torch.get_num_threads()
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    kernel(*args)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _outer_channel_inner(x: Tensor, channels_last: bool) -> Tensor:
    """``(B, C, *spatial)`` -> contiguous ``(O, C, I)``: ``(B, C, prod(spatial))`` or ``(B * prod(spatial), C, 1)``."""
    if channels_last:
        xin = x.movedim(1, -1).contiguous()  # (B, *spatial, C)
        return xin.reshape(-1, x.shape[1], 1)
    return x.contiguous().reshape(x.shape[0], x.shape[1], -1)


class _FusedCubicFeatures(torch.autograd.Function):
    """Autograd wrapper of the fused kernels; output and layouts as ``kmunet.kan.basis._UniformKANFeatures``."""

    @staticmethod
    def forward(ctx, x: Tensor, t0: Tensor, h: Tensor, num_basis: int, channels_last: bool) -> Tensor:  # type: ignore[override]
        xin = _outer_channel_inner(x.detach(), channels_last)  # (O, C, I)
        out = torch.empty((xin.shape[0], xin.shape[1], num_basis + 1, xin.shape[2]), dtype=x.dtype)
        _launch(_cubic_forward, xin.numpy(), t0.contiguous().numpy(), h.contiguous().numpy(), out.numpy())
        ctx.save_for_backward(x, t0, h)
        ctx.channels_last = channels_last
        b, c, spatial = x.shape[0], x.shape[1], tuple(x.shape[2:])
        if channels_last:  # memory (B, *spatial, C, S) viewed as (B, C, S, *spatial)
            return out.reshape((b,) + spatial + (c, num_basis + 1)).movedim(-2, 1).movedim(-1, 2)
        return out.reshape((b, c, num_basis + 1) + spatial)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        x, t0, h = ctx.saved_tensors
        slots = grad_out.shape[2]
        if ctx.channels_last:
            grad = grad_out.permute(0, *range(3, grad_out.dim()), 1, 2).contiguous()  # (B, *spatial, C, S)
            grad = grad.reshape(-1, x.shape[1], slots, 1)  # (O = B * P, C, S, 1)
        else:
            grad = grad_out.contiguous().reshape(x.shape[0], x.shape[1], slots, -1)  # (B, C, S, P)
        xin = _outer_channel_inner(x.detach(), ctx.channels_last)
        grad_x = torch.empty_like(xin)
        _launch(_cubic_backward, xin.numpy(), t0.contiguous().numpy(), h.contiguous().numpy(), grad.numpy(),
                grad_x.numpy())
        if ctx.channels_last:
            grad_x = grad_x.reshape((x.shape[0],) + tuple(x.shape[2:]) + (x.shape[1],)).movedim(-1, 1)
        else:
            grad_x = grad_x.reshape(x.shape)
        return grad_x, None, None, None, None


def fused_cubic_features(x: Tensor, t0: Tensor, h: Tensor, num_basis: int, channels_last: bool) -> Tensor:
    """Cubic KAN features of ``x (B, C, *spatial)`` on uniform knots ``t0 + j h`` (per channel ``(C,)``).

    Returns:
        ``(B, C, 1 + num_basis, *spatial)`` (channels-last memory when ``channels_last``), equal to the
        pure-PyTorch path of :func:`kmunet.kan.basis.kan_features`.

    Raises:
        RuntimeError: the fused kernels are unavailable for ``x`` (see :func:`fused_available`).
    """
    if not fused_available(x):
        raise RuntimeError(
            f"fused KAN kernels need numba and a float32/float64 CPU tensor (and {FUSED_ENV} != 0); "
            f"got {x.dtype} on {x.device}"
        )
    return _FusedCubicFeatures.apply(x, t0.to(x.dtype), h.to(x.dtype), num_basis, channels_last)
