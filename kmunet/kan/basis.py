"""B-spline bases for KAN edge functions.

Two evaluation paths, both exact:

* :func:`bspline_basis` is the general Cox-de Boor recursion (de Boor 1972) over any non-decreasing
  knot vector, one knot vector per input channel, as the KAN grid update produces (Liu et al. 2024,
  "KAN: Kolmogorov-Arnold Networks", Sec. 2.5). It returns all ``G + k`` basis values and is the
  reference implementation.
* :func:`uniform_local_basis` is the closed form for uniform knots: only the ``k + 1`` non-zero basis
  values of each input are computed, from the fractional position inside its knot interval, with
  no division by knot differences and no large intermediate. :class:`KANFeatures` builds the KAN
  convolution's expanded input from it.

Out-of-grid behaviour (documented once, here): a B-spline basis function is zero outside its support,
so for an input outside the extended knot range ``[t_0, t_{G+2k}]`` every basis value is 0 and only
the SiLU base path of a KAN edge carries signal. Inside ``[t_0, t_k)`` and ``[t_{G+k}, t_{G+2k}]``
(the extension knots) the basis is partial (it does not sum to one); the partition of unity holds on
the grid range ``[t_k, t_{G+k}]``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from kmunet.kan.fused import fused_available, fused_cubic_features

__all__ = [
    "make_grid",
    "bspline_basis",
    "uniform_local_basis",
    "uniform_local_basis_derivative",
    "grid_is_uniform",
    "kan_features",
]


def make_grid(
    grid_range: Sequence[float],
    grid_size: int,
    spline_order: int,
    num_channels: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Uniform knot vectors extended by ``spline_order`` knots on each side.

    Args:
        grid_range: ``(low, high)`` of the grid.
        grid_size: number of intervals G inside the range.
        spline_order: B-spline order k.
        num_channels: number of input channels C (one knot vector each).

    Returns:
        Knots of shape ``(C, G + 2k + 1)``.
    """
    low, high = float(grid_range[0]), float(grid_range[1])
    if not high > low:
        raise ValueError(f"grid_range must satisfy low < high, got {tuple(grid_range)}")
    h = (high - low) / grid_size
    steps = torch.arange(-spline_order, grid_size + spline_order + 1, device=device, dtype=torch.float64)
    knots = (low + h * steps).to(dtype or torch.get_default_dtype())
    return knots.unsqueeze(0).repeat(num_channels, 1)


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` where ``den > 0``, else 0 (repeated knots), without inf/NaN in any branch."""
    positive = den > 0
    return num / torch.where(positive, den, torch.ones_like(den)) * positive


def bspline_basis(x: Tensor, grid: Tensor, spline_order: int) -> Tensor:
    """All B-spline basis values by the Cox-de Boor recursion.

    Args:
        x: inputs of shape ``(..., C)``.
        grid: non-decreasing knots per channel, shape ``(C, M)`` with ``M = G + 2k + 1``.
        spline_order: order k >= 0.

    Returns:
        Basis values ``(..., C, G + k)``; entry ``i`` is ``B_{i,k}(x)`` on that channel's knots.
    """
    if grid.dim() != 2 or grid.shape[0] != x.shape[-1]:
        raise ValueError(f"grid must be (C, M) with C = x.shape[-1] = {x.shape[-1]}, got {tuple(grid.shape)}")
    if grid.shape[1] < spline_order + 2:
        raise ValueError(f"grid has {grid.shape[1]} knots; order {spline_order} needs at least {spline_order + 2}")
    g = grid.to(x.dtype)
    lo, hi = g[:, 0], g[:, -1]
    # Beyond the knots every basis value is 0; pulling far inputs in keeps (x - t) / dt finite (float16).
    x = torch.minimum(torch.maximum(x, lo - (hi - lo)), hi + (hi - lo))
    xe = x.unsqueeze(-1)  # (..., C, 1)
    basis = ((xe >= g[:, :-1]) & (xe < g[:, 1:])).to(x.dtype)  # order 0: (..., C, M - 1)
    for p in range(1, spline_order + 1):
        left = _safe_div(xe - g[:, : -(p + 1)], g[:, p:-1] - g[:, : -(p + 1)])
        right = _safe_div(g[:, p + 1 :] - xe, g[:, p + 1 :] - g[:, 1:-p])
        basis = left * basis[..., :-1] + right * basis[..., 1:]
    return basis


def uniform_local_basis(f: Tensor, spline_order: int) -> list[Tensor]:
    """Non-zero basis values of a uniform B-spline inside one knot interval.

    For knots ``t_j = t_0 + j h`` and ``u = (x - t_0) / h = i + f`` with ``i = floor(u)`` and
    ``f`` in [0, 1), the non-zero order-k basis functions at ``x`` are ``B_{i-k}, ..., B_i``. This is
    de Boor's triangular scheme with every knot difference equal to ``h`` (it cancels).

    Args:
        f: fractional positions in [0, 1), any shape.
        spline_order: order k.

    Returns:
        ``k + 1`` tensors shaped like ``f``: entry ``r`` is ``B_{i-k+r}(x)``.
    """
    values = [torch.ones_like(f)]
    for j in range(1, spline_order + 1):
        saved = torch.zeros_like(f)
        new = []
        for r in range(j):
            temp = values[r] / j
            new.append(saved + (r + 1 - f) * temp)
            saved = (f + (j - r - 1)) * temp
        new.append(saved)
        values = new
    return values


def uniform_local_basis_derivative(f: Tensor, spline_order: int) -> list[Tensor]:
    """d/du of :func:`uniform_local_basis` (divide by ``h`` for d/dx).

    Uses ``B'_{j,k}(u) = B_{j,k-1}(u) - B_{j+1,k-1}(u)`` for cardinal B-splines.
    """
    if spline_order == 0:
        return [torch.zeros_like(f)]
    lower = uniform_local_basis(f, spline_order - 1)  # entry r' is B_{i-k+1+r', k-1}
    zero = torch.zeros_like(f)
    return [(lower[r - 1] if r >= 1 else zero) - (lower[r] if r < spline_order else zero) for r in range(spline_order + 1)]


#: Knot spacings may differ by this many units of rounding (machine epsilon times the largest knot
#: magnitude of the channel), and by at most ``UNIFORM_MAX_RTOL`` of the spacing, and still count as
#: uniform: the closed-form uniform basis is then exact to rounding, while any real non-uniformity takes
#: the general (exact) Cox-de Boor path.
UNIFORM_ROUNDING_UNITS = 64
UNIFORM_MAX_RTOL = 1e-5


def grid_is_uniform(grid: Tensor) -> bool:
    """True when every channel's knots are equally spaced up to rounding (each channel its own spacing).

    Args:
        grid: ``(C, n)`` knots per channel.
    """
    diffs = grid[:, 1:] - grid[:, :-1]
    h = diffs[:, :1]
    rounding = UNIFORM_ROUNDING_UNITS * torch.finfo(grid.dtype).eps * grid.abs().amax(dim=1, keepdim=True)
    tol = torch.minimum(rounding, UNIFORM_MAX_RTOL * h.abs())
    return bool(torch.all(h > 0)) and bool(torch.all((diffs - h).abs() <= tol))


def _cubic_values(f: Tensor, inv_h: Tensor, out: list[Tensor], dout: list[Tensor]) -> None:
    """Closed-form uniform cubic B-spline values and d/dx, written into the four ``out``/``dout`` tensors.

    ``f`` is the fraction inside the knot interval and ``inv_h`` the inverse knot spacing (broadcast
    against ``f``); entry ``r`` is ``B_{i-3+r}`` (as :func:`uniform_local_basis`).
    """
    g = 1 - f
    f2 = f * f
    g2 = g * g
    torch.mul(g2, g, out=out[0]).mul_(1 / 6)
    torch.mul(f2, f, out=out[3]).mul_(1 / 6)
    # B_{i-2} = f^3 / 2 - f^2 + 2/3 and B_{i-1} = g^3 / 2 - g^2 + 2/3 (mirror image).
    torch.mul(f, 0.5, out=out[1]).sub_(1).mul_(f2).add_(2 / 3)
    torch.mul(g, 0.5, out=out[2]).sub_(1).mul_(g2).add_(2 / 3)
    torch.mul(g2, inv_h * -0.5, out=dout[0])
    torch.mul(f2, inv_h * 0.5, out=dout[3])
    torch.mul(f, 1.5, out=dout[1]).sub_(2).mul_(f).mul_(inv_h)
    torch.mul(g, -1.5, out=dout[2]).add_(2).mul_(g).mul_(inv_h)


def _uniform_local(
    x: Tensor, t0: Tensor, h: Tensor, num_basis: int, spline_order: int, channel_dim: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Slots, values and d/dx of the k+1 non-zero basis functions of each input (uniform knots).

    Args:
        x: contiguous inputs with channels at ``channel_dim``: ``(B, C, *spatial)`` (``channel_dim=1``)
            or ``(B, *spatial, C)`` (``channel_dim=-1``).
        t0, h: first knot and spacing per channel, ``(C,)``.
        num_basis: ``G + k``.
        spline_order: k.
        channel_dim: 1 or -1.

    Returns:
        ``(first_slot, values, dvalues)``: ``first_slot`` (int64, shaped like ``x``) is the unclamped feature
        slot ``1 + j`` of the first local basis function ``B_j``, ``j = span - k`` (local entry ``r`` belongs
        to slot ``first_slot + r``; slot 0 is the SiLU path); ``values`` and ``dvalues`` ``(k + 1, *x.shape)``
        (entry-major, so each entry is one dense tensor) are zero for entries whose ``j`` falls outside
        ``[0, G + k)`` (partial functions beyond the extended grid, or ``x`` outside it), so they may be
        added at any clamped slot.
    """
    k = spline_order
    shape = [1] * x.dim()
    shape[channel_dim] = -1  # per-channel parameters broadcast along the channel axis of x
    inv_h = (1.0 / h).view(shape)
    t0v, hv = t0.view(shape), h.view(shape)
    # Inputs far outside the extended grid (where every basis value is 0 anyway) are pulled to just
    # beyond its ends, so (x - t0) / h and its cube cannot overflow (float16 at ~1e4, float32 at ~1e26).
    x = torch.minimum(torch.maximum(x, t0v - hv), t0v + (num_basis + k + 1) * hv)
    span = torch.floor(torch.addcmul(-t0v * inv_h, x, inv_h))  # floor((x - t0) / h)
    # Fraction relative to the span's own knot: small operands keep float32 accurate to ~1e-7.
    f = (x - torch.addcmul(t0v, span, hv)).mul_(inv_h)
    if k == 3:
        values, dvalues = x.new_empty((4,) + x.shape), x.new_empty((4,) + x.shape)
        _cubic_values(f, inv_h, list(values), list(dvalues))
    else:
        values = torch.stack(uniform_local_basis(f, k))
        dvalues = torch.stack([d * inv_h for d in uniform_local_basis_derivative(f, k)])
    first = span.clamp_(-k - 1, num_basis + k).sub_(k - 1)  # out-of-grid spans: every entry invalid
    for r in range(k + 1):
        valid = (first >= 1 - r) & (first <= num_basis - r)
        values[r].mul_(valid)
        dvalues[r].mul_(valid)
    return first.long(), values, dvalues


def _slot(first: Tensor, r: int, num_basis: int, dim: int) -> Tensor:
    """Clamped feature slot of local entry ``r``, with a size-1 entry axis at ``dim`` (scatter/gather index).

    Its value is zero wherever clamping changed the slot.
    """
    return (first + r).clamp_(1, num_basis).unsqueeze(dim)


class _UniformKANFeatures(torch.autograd.Function):
    """Expanded KAN input ``[silu(x), B_0(x), ..., B_{G+k-1}(x)]`` per channel, for uniform knots.

    Forward writes the k+1 non-zero basis values of each input with ``scatter_add_`` into a zero tensor
    and keeps their first slot and closed-form derivatives; backward gathers the incoming gradient at
    those slots and contracts it with the derivatives. Index tensors are built one local entry at a
    time, so no index tensor larger than the input is ever allocated.

    With ``channels_last`` the features are laid out ``(B, *spatial, C, 1 + G + k)`` in memory (returned
    as a ``(B, C, 1 + G + k, *spatial)`` view), which flattens into a channels-last tensor: CPU (oneDNN)
    3D convolutions over many input channels run several times faster in that format.
    """

    @staticmethod
    def forward(ctx, x: Tensor, t0: Tensor, h: Tensor, num_basis: int, spline_order: int, channels_last: bool) -> Tensor:  # type: ignore[override]
        # (B, *spatial, C) or (B, C, *spatial), contiguous so every elementwise pass below is dense
        xin = x.movedim(1, -1).contiguous() if channels_last else x.contiguous()
        edim = xin.dim() if channels_last else 2  # axis of the feature slots
        first, values, dvalues = _uniform_local(xin, t0, h, num_basis, spline_order, -1 if channels_last else 1)
        size = list(xin.shape)
        size.insert(edim, num_basis + 1)
        out = x.new_zeros(size)
        for r in range(spline_order + 1):
            out.scatter_add_(edim, _slot(first, r, num_basis, edim), values[r].unsqueeze(edim))
        out.select(edim, 0).copy_(F.silu(xin))
        ctx.save_for_backward(x, first, dvalues)
        ctx.num_basis, ctx.channels_last = num_basis, channels_last
        return out.movedim(-2, 1).movedim(-1, 2) if channels_last else out  # (B, C, 1 + G + k, *spatial)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        x, first, dvalues = ctx.saved_tensors
        if ctx.channels_last:
            grad = grad_out.permute(0, *range(3, grad_out.dim()), 1, 2)  # (B, *spatial, C, 1 + G + k)
            xin, edim = x.movedim(1, -1).contiguous(), grad.dim() - 1
        else:
            grad, xin, edim = grad_out, x.contiguous(), 2
        sig = torch.sigmoid(xin)
        grad_x = grad.select(edim, 0) * (sig * (1 + xin * (1 - sig)))
        for r in range(dvalues.shape[0]):
            picked = grad.gather(edim, _slot(first, r, ctx.num_basis, edim))  # size 1 on the slot axis
            grad_x.addcmul_(picked.squeeze(edim), dvalues[r])
        return (grad_x.movedim(-1, 1) if ctx.channels_last else grad_x), None, None, None, None, None


def kan_features(
    x: Tensor,
    grid: Tensor,
    spline_order: int,
    uniform: bool | None = None,
    channels_last: bool = False,
    fused: bool | None = None,
) -> Tensor:
    """Expand every input channel into its SiLU and B-spline basis values.

    This is the first half of an exact KAN layer: a KAN linear layer or convolution is then one dense
    linear map / convolution of these features with the composed weights ``[w_b, w_s * c_i]``.

    Args:
        x: ``(B, C, *spatial)`` (``spatial`` may be empty).
        grid: knots per channel ``(C, G + 2k + 1)``.
        spline_order: B-spline order k.
        uniform: whether every channel's knots are equally spaced; ``None`` checks the grid. Uniform
            grids use the fast closed-form path, others the general Cox-de Boor recursion.
        channels_last: lay the features out as ``(B, *spatial, C, 1 + G + k)`` in memory, so that
            ``flatten(1, 2)`` gives a channels-last tensor without a copy (faster 3D convolutions on CPU).
        fused: use the fused Numba kernels of :mod:`kmunet.kan.fused` (cubic, uniform knots, float32/64
            CPU tensors); ``None`` uses them whenever they apply, ``False`` never (pure PyTorch),
            ``True`` requires them (``RuntimeError`` where they do not apply).

    Returns:
        ``(B, C, 1 + G + k, *spatial)``: slot 0 is ``silu(x)``, slot ``1 + i`` is ``B_i(x)``.
    """
    if x.dim() < 2 or x.shape[1] != grid.shape[0]:
        raise ValueError(f"x must be (B, C, *spatial) with C = {grid.shape[0]}, got {tuple(x.shape)}")
    num_basis = grid.shape[1] - spline_order - 1
    if uniform is None:
        uniform = grid_is_uniform(grid)
    if uniform:
        g = grid.double()
        h = (g[:, -1] - g[:, 0]) / (g.shape[1] - 1)  # mean spacing: t0 + j h matches every stored knot
        t0, h = g[:, 0].to(x.dtype), h.to(x.dtype)
        layout = channels_last and x.dim() > 2
        if fused or (fused is None and spline_order == 3 and fused_available(x)):
            if spline_order != 3:
                raise RuntimeError(f"fused KAN kernels support spline_order 3 only, got {spline_order}")
            if x.numel() > 0:  # an empty batch takes the PyTorch path, which handles it
                return fused_cubic_features(x, t0, h, num_basis, layout)
        return _UniformKANFeatures.apply(x, t0, h, num_basis, spline_order, layout)
    if fused:
        raise RuntimeError("fused KAN kernels need a uniform knot grid")
    basis = bspline_basis(x.movedim(1, -1), grid, spline_order)  # (B, *spatial, C, G + k)
    feats = torch.cat([F.silu(x).movedim(1, -1).unsqueeze(-1), basis], dim=-1)  # (B, *spatial, C, 1 + G + k)
    feats = feats.movedim(-2, 1).movedim(-1, 2)  # (B, C, 1 + G + k, *spatial), channels-last memory
    return feats if channels_last else feats.contiguous()
