"""KAN layers: :class:`KANLinear` and the N-dimensional :class:`KANConv`.

Every edge (a pair of input and output units, and for a convolution also a kernel offset) carries its
own learnable univariate function (Liu et al. 2024, "KAN: Kolmogorov-Arnold Networks", Eq. 2.10)::

    phi(x) = w_b * silu(x) + w_s * sum_i c_i B_i(x)

with B-splines ``B_i`` of order k on a grid of G intervals (extended by k knots on each side). A KAN
convolution computes ``Y[o, p] = sum_{c, k} phi_{o,c,k}(X[c, p * stride + k * dilation])``.

Exact and fast: because phi is linear in ``(w_b, w_s c_i)``, the layer is one dense linear map /
convolution of the expanded input ``[silu(x), B_0(x), ..., B_{G+k-1}(x)]`` (``1 + G + k`` channels per
input channel, see :func:`kmunet.kan.basis.kan_features`) with the composed weight. No patches are
unfolded. Zero padding pads the *expanded* input, so a padded position contributes nothing (phi of a
padded position is 0), whereas ``phi(0)`` itself is generally non-zero.

Out-of-grid inputs: the spline part is zero outside the extended knot range (see
:mod:`kmunet.kan.basis`); the SiLU base path still carries the signal. KM-UNet normalises activations
before each KAN convolution so that most of them fall inside the grid.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from kmunet.checks import check_dims, check_int, check_real, is_finite_real, is_integer
from kmunet.kan.basis import bspline_basis, grid_is_uniform, kan_features, make_grid

__all__ = ["KANLinear", "KANConv"]

#: Samples per input channel kept from the last forward pass for the regulariser and pruning scores.
NUM_ACTIVATION_SAMPLES = 64
#: At most this many points per input channel in the least-squares refit of :meth:`update_grid`.
REFIT_POINTS = 2048


def _even_rows(ordered: Tensor, m: int) -> Tensor:
    """``m`` evenly spaced rows (first and last included) of a sorted ``(n, C)`` tensor."""
    pos = torch.linspace(0, ordered.shape[0] - 1, m, device=ordered.device, dtype=torch.float64).round().long()
    return ordered[pos]


class _KANLayer(nn.Module):
    """Edge-function state and algorithms shared by :class:`KANLinear` and :class:`KANConv`.

    Parameters (edge shape ``E = (out, in // groups, *kernel_size)``):
        base_weight: ``w_b``, shape ``E``.
        spline_scaler: ``w_s``, shape ``E``.
        spline_coef: ``c_i``, shape ``(*E, G + k)``.
    Buffers:
        grid: knots per input channel ``(in, G + 2k + 1)``.
        edge_mask: 1 for active edges, 0 for pruned ones, shape ``E``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, ...],
        groups: int,
        grid_size: int,
        spline_order: int,
        grid_range: Sequence[float],
        scale_noise: float,
        scale_base: float,
        scale_spline: float,
        grid_eps: float,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
    ) -> None:
        super().__init__()
        in_channels, out_channels = check_int("in_channels", in_channels), check_int("out_channels", out_channels)
        groups, grid_size = check_int("groups", groups), check_int("grid_size", grid_size)
        spline_order = check_int("spline_order", spline_order, minimum=0)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible by groups ({groups})")
        if not isinstance(grid_range, Sequence) or isinstance(grid_range, str) or len(grid_range) != 2 \
                or not all(is_finite_real(v) for v in grid_range) \
                or not float(grid_range[1]) > float(grid_range[0]):
            raise ValueError(f"grid_range must be finite (low, high) with low < high, got {grid_range!r}")
        grid_eps = check_real("grid_eps", grid_eps, 0.0, 1.0)
        scale_noise = check_real("scale_noise", scale_noise, 0.0)
        scale_base, scale_spline = check_real("scale_base", scale_base), check_real("scale_spline", scale_spline)
        if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
        factory = {"device": device, "dtype": dtype}
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = kernel_size
        self.spline_order = spline_order
        self.grid_eps = float(grid_eps)
        self.channels_last = False  # memory layout of the expanded input (see kan_features)
        edge_shape = (out_channels, in_channels // groups) + kernel_size
        self.register_buffer("grid", make_grid(grid_range, grid_size, spline_order, in_channels, **factory))
        self.register_buffer("edge_mask", torch.ones(edge_shape, **factory))
        self.base_weight = nn.Parameter(torch.empty(edge_shape, **factory))
        self.spline_scaler = nn.Parameter(torch.empty(edge_shape, **factory))
        self.spline_coef = nn.Parameter(torch.empty(edge_shape + (grid_size + spline_order,), **factory))
        self._samples: Tensor | None = None
        # (grid tensor, its version, uniform?): the tensor itself is kept so that its identity cannot be
        # taken over by a new grid allocated at the same address (see _is_uniform).
        self._uniform_cache: tuple[Tensor, int, bool] | None = None
        self.reset_parameters(scale_noise, scale_base, scale_spline)

    # ------------------------------------------------------------------ initialisation and shapes
    def reset_parameters(self, scale_noise: float = 0.1, scale_base: float = 1.0, scale_spline: float = 1.0) -> None:
        """KAN-paper initialisation: ``w_s = scale_spline``, ``w_b`` Xavier-uniform with gain ``scale_base``,
        ``c_i ~ N(0, scale_noise^2 / fan_in)`` (the paper's N(0, 0.1^2) for one input per output, scaled
        so that the spline part's variance does not grow with the number of edges summed per output)."""
        fan_in = self.base_weight[0].numel()
        nn.init.xavier_uniform_(self.base_weight, gain=scale_base)
        nn.init.constant_(self.spline_scaler, scale_spline)
        with torch.no_grad():
            self.spline_coef.normal_(0.0, scale_noise / math.sqrt(fan_in))

    @property
    def grid_size(self) -> int:
        """Current number of grid intervals G."""
        return self.grid.shape[1] - 2 * self.spline_order - 1

    @property
    def num_basis(self) -> int:
        """Number of B-spline basis functions per edge, ``G + k``."""
        return self.grid.shape[1] - self.spline_order - 1

    def _is_uniform(self) -> bool:
        """Whether the grid is uniform, recomputed whenever the grid tensor is replaced or edited in place."""
        cache = self._uniform_cache
        if cache is None or cache[0] is not self.grid or cache[1] != self.grid._version:
            cache = self._uniform_cache = (self.grid, self.grid._version, grid_is_uniform(self.grid))
        return cache[2]

    def composed_weight(self) -> Tensor:
        """Dense weight over the expanded channels, ``(out, (in // groups) * (1 + G + k), *kernel_size)``."""
        w_b = self.base_weight * self.edge_mask
        w_s = self.spline_scaler * self.edge_mask
        weight = torch.cat([w_b.unsqueeze(-1), w_s.unsqueeze(-1) * self.spline_coef], dim=-1)  # (*E, 1 + G + k)
        weight = weight.movedim(-1, 2)  # (out, in // groups, 1 + G + k, *kernel)
        return weight.reshape((self.out_channels, -1) + self.kernel_size)

    def expand(self, x: Tensor) -> Tensor:
        """Expanded input ``(B, in * (1 + G + k), *spatial)`` for an input ``(B, in, *spatial)``."""
        self._record_samples(x)
        feats = kan_features(x, self.grid, self.spline_order, uniform=self._is_uniform(), channels_last=self.channels_last)
        return feats.flatten(1, 2)  # (B, in, 1 + G + k, *spatial) -> (B, in * (1 + G + k), *spatial)

    def _record_samples(self, x: Tensor) -> None:
        """Keep an evenly strided, detached subsample of each channel's inputs, ``(n, in)``."""
        if x.numel() == 0:  # an empty batch: nothing to learn from, keep the previous samples
            return
        flat = x.detach().reshape(x.shape[0], x.shape[1], -1)  # (B, C, S)
        total = flat.shape[0] * flat.shape[2]
        n = min(total, NUM_ACTIVATION_SAMPLES)
        # evenly strided int64 indices, first and last included (exact for any size, unlike float32)
        idx = torch.arange(n, device=x.device, dtype=torch.int64) * (total - 1) // max(n - 1, 1)
        self._samples = flat[idx // flat.shape[2], :, idx % flat.shape[2]]  # (n, C)

    # ------------------------------------------------------------------ edge functions
    def _per_channel_inputs(self, x: Tensor) -> Tensor:
        """Samples of each input channel ``(n, in)`` taken from a layer input."""
        if x.dim() < 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected an input (B, {self.in_channels}, ...), got shape {tuple(x.shape)}")
        return x.detach().movedim(1, -1).reshape(-1, self.in_channels)

    def edge_values(self, samples: Tensor, spline_only: bool = False) -> Tensor:
        """Every edge function evaluated at per-channel sample values.

        Args:
            samples: ``(n, in)``; column c holds the values at which the edges reading input channel c
                are evaluated.
            spline_only: return ``w_s * sum_i c_i B_i`` without the base path.

        Returns:
            ``(out, in // groups, *kernel_size, n)``.
        """
        n = samples.shape[0]
        g, cg, og = self.groups, self.in_channels // self.groups, self.out_channels // self.groups
        basis = bspline_basis(samples, self.grid, self.spline_order)  # (n, in, G + k)
        basis = basis.view(n, g, cg, -1)  # (n, groups, in // groups, G + k)
        kp = math.prod(self.kernel_size)
        coef = (self.spline_coef * self.spline_scaler.unsqueeze(-1)).view(g, og, cg, kp, -1)
        values = torch.einsum("ngcb,gocpb->gocpn", basis, coef)  # (groups, out // groups, in // groups, K, n)
        if not spline_only:
            base = F.silu(samples).view(n, g, cg)
            values = values + torch.einsum("ngc,gocp->gocpn", base, self.base_weight.view(g, og, cg, kp))
        values = values * self.edge_mask.view(g, og, cg, kp, 1)
        return values.reshape(self.base_weight.shape + (n,))

    def edge_functions(self, x: Tensor) -> Tensor:
        """Every learned edge function phi evaluated at the 1-D sample values ``x``.

        Args:
            x: ``(n,)`` sample values.

        Returns:
            ``(out, in // groups, *kernel_size, n)``. Summing it over each receptive field reproduces the
            layer output (this is how the layer's exactness is tested; :func:`plot_edge_functions` uses
            :meth:`edge_values` with per-channel ranges).
        """
        if x.dim() != 1:
            raise ValueError(f"edge_functions expects a 1-D tensor of sample values, got shape {tuple(x.shape)}")
        return self.edge_values(x.to(self.grid.dtype).unsqueeze(1).expand(-1, self.in_channels))

    # ------------------------------------------------------------------ regularisation and pruning
    def _activation_l1(self) -> Tensor:
        """Mean |phi| of each edge over the recorded input samples (KAN paper Eq. 2.17), shape ``E``."""
        if self._samples is None:
            raise RuntimeError(f"{type(self).__name__}: run a forward pass before asking for the regulariser")
        return self.edge_values(self._samples.to(self.grid.dtype)).abs().mean(-1)

    def regularization_loss(self, mu_1: float = 1.0, mu_2: float = 1.0) -> Tensor:
        """KAN-paper regulariser ``mu_1 * |Phi|_1 + mu_2 * S(Phi)`` (Liu et al. 2024, Eqs. 2.17-2.20).

        ``|Phi|_1`` is the sum over edges of the mean absolute activation on the last forward pass's inputs;
        ``S`` is the entropy of the edges' share of it. Non-negative; zero only when every edge function
        vanishes on the inputs.
        """
        l1 = self._activation_l1()
        total = l1.sum()
        p = l1 / total.clamp_min(1e-12)
        entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
        return mu_1 * total + mu_2 * entropy

    def prune(self, threshold: float = 1e-2) -> int:
        """Disable edges whose mean |phi| on the last inputs is below ``threshold`` times the largest one.

        Returns:
            Number of edges pruned by this call.
        """
        threshold = check_real("threshold", threshold, 0.0)
        with torch.no_grad():
            score = self._activation_l1()
            drop = (score < threshold * score.max()) & (self.edge_mask > 0)
            self.edge_mask[drop] = 0.0
        return int(drop.sum())

    # ------------------------------------------------------------------ grid update and extension
    def _refit(self, new_grid: Tensor, points: Tensor) -> None:
        """Replace grid and coefficients so the spline part keeps its values at ``points`` ``(n, in)``.

        Least squares per input channel in float64 through the pseudo-inverse (SVD), which is defined for
        rank-deficient systems (repeated samples, empty intervals) and runs on CPU and CUDA.
        """
        n = points.shape[0]
        g, cg, og = self.groups, self.in_channels // self.groups, self.out_channels // self.groups
        kp = math.prod(self.kernel_size)
        with torch.no_grad():
            old = self.edge_values(points, spline_only=True)  # (out, in // groups, *K, n)
            scaler = self.spline_scaler.unsqueeze(-1)
            # Targets per input channel: (in, n, edges of that channel) with edges = (out // groups) * K.
            target = old.reshape(g, og, cg, kp, n).permute(0, 2, 4, 1, 3).reshape(self.in_channels, n, og * kp)
            a = bspline_basis(points.double(), new_grid.double(), self.spline_order).transpose(0, 1)  # (in, n, G' + k)
            solution = torch.linalg.pinv(a) @ target.double()  # (in, G' + k, edges)
            coef = solution.reshape(g, cg, -1, og, kp).permute(0, 3, 1, 4, 2)  # (groups, out//g, in//g, K, G'+k)
            coef = coef.reshape(self.base_weight.shape + (-1,)).to(self.spline_coef.dtype)
            safe_scaler = torch.where(scaler.abs() > 1e-12, scaler, torch.ones_like(scaler))
            coef = coef / safe_scaler
        self.grid = new_grid.to(self.grid.dtype)
        if coef.shape == self.spline_coef.shape:
            with torch.no_grad():
                self.spline_coef.copy_(coef)
        else:
            self.spline_coef = nn.Parameter(coef)

    def update_grid(self, x: Tensor, margin: float = 0.01) -> None:
        """Adapt each input channel's grid to the distribution of ``x`` (KAN paper Sec. 2.5).

        The new interior knots mix sample quantiles (adaptive) and a uniform grid over the samples'
        range with weight ``grid_eps``; coefficients are refitted by least squares so that every edge
        function keeps its values on the samples (on :data:`REFIT_POINTS` evenly spaced quantiles of each
        channel when there are more). Constant channels keep a grid of minimal width.

        Args:
            x: a layer input, ``(B, in, *spatial)`` for :class:`KANConv` or ``(..., in)`` for
                :class:`KANLinear`.
            margin: relative widening of the samples' range.
        """
        margin = check_real("margin", margin, 0.0)
        samples = self._per_channel_inputs(self._as_channel_first(x)).to(self.grid.dtype)  # (n, in)
        samples = samples[torch.isfinite(samples).all(dim=1)]
        if samples.shape[0] < 2:
            raise ValueError("update_grid needs at least two finite input samples")
        k, gsize = self.spline_order, self.grid_size
        ordered = torch.sort(samples, dim=0).values
        lo, hi = ordered[0], ordered[-1]
        width = (hi - lo).clamp_min(1e-3)
        centre = (hi + lo) / 2
        lo, hi = centre - width * (0.5 + margin), centre + width * (0.5 + margin)
        adaptive = _even_rows(ordered, gsize + 1).t()  # (in, G + 1)
        adaptive[:, 0], adaptive[:, -1] = lo, hi
        steps = torch.linspace(0, 1, gsize + 1, device=x.device, dtype=lo.dtype)
        uniform = lo[:, None] + (hi - lo)[:, None] * steps  # (in, G + 1)
        interior = self.grid_eps * uniform + (1 - self.grid_eps) * adaptive
        interior = torch.cummax(interior, dim=1).values  # keep knots non-decreasing
        if ordered.shape[0] > REFIT_POINTS:
            # Refit on evenly spaced order statistics of each channel: distributed like the samples, but
            # bounded (all n samples of a 3D batch would evaluate every edge n times: minutes, gigabytes).
            samples = _even_rows(ordered, REFIT_POINTS)  # (REFIT_POINTS, in), column c = quantiles of channel c
        self._refit(self._extend_knots(interior), samples)

    def extend_grid(self, new_grid_size: int, points_per_interval: int = 8) -> None:
        """Refine the grid to ``new_grid_size`` intervals, keeping the learned functions (coarse-to-fine).

        The new interior knots interpolate the old ones (a uniform grid stays uniform; a multiple of the
        old size nests the old knots, making the refit exact); coefficients are refitted by least squares
        on points densely covering the old grid range. Parameter shapes change: rebuild the optimizer.

        The functions are kept on the grid range ``[t_k, t_{G+k}]``, the domain on which the KAN paper
        (Sec. 2.5) refines them. Beyond it, the spline part lives on ``k`` extension intervals of
        the grid's own spacing. That band narrows with the finer spacing, so inputs there get new values
        (zero beyond the new band). Keeping the old band would need a non-uniform grid and the slower
        general basis path. Run :meth:`update_grid` on typical inputs first (as the paper does) so that
        the grid range covers them.
        """
        new_grid_size = check_int("new_grid_size", new_grid_size)
        points_per_interval = check_int("points_per_interval", points_per_interval, minimum=2)
        k, gsize = self.spline_order, self.grid_size
        old_interior = self.grid[:, k : k + gsize + 1].double()  # (in, G + 1)
        position = torch.linspace(0, gsize, new_grid_size + 1, device=self.grid.device, dtype=torch.float64)
        left = position.floor().long().clamp(max=gsize - 1)
        frac = position - left
        interior = old_interior[:, left] * (1 - frac) + old_interior[:, left + 1] * frac  # (in, G' + 1)
        fine = max(new_grid_size, gsize) * points_per_interval
        t = torch.linspace(0, gsize, fine + 1, device=self.grid.device, dtype=torch.float64)
        tl = t.floor().long().clamp(max=gsize - 1)
        points = old_interior[:, tl] * (1 - (t - tl)) + old_interior[:, tl + 1] * (t - tl)  # (in, n)
        self._refit(self._extend_knots(interior), points.t().to(self.grid.dtype))

    def _extend_knots(self, interior: Tensor) -> Tensor:
        """Add ``k`` knots on each side of interior knots ``(in, G + 1)`` with the boundary spacing."""
        k = self.spline_order
        if k == 0:
            return interior
        steps = torch.arange(1, k + 1, device=interior.device, dtype=interior.dtype)
        h_lo = (interior[:, 1] - interior[:, 0]).clamp_min(1e-6)[:, None]
        h_hi = (interior[:, -1] - interior[:, -2]).clamp_min(1e-6)[:, None]
        below = interior[:, :1] - h_lo * steps.flip(0)
        above = interior[:, -1:] + h_hi * steps
        return torch.cat([below, interior, above], dim=1)

    def _as_channel_first(self, x: Tensor) -> Tensor:
        """Check a layer input's shape and return it as the ``(N, C, ...)`` layout ``expand`` takes."""
        raise NotImplementedError  # each layer type defines its input layout

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, grid_size={self.grid_size}, "
            f"spline_order={self.spline_order}, groups={self.groups}"
        )


class KANLinear(_KANLayer):
    """Fully connected KAN layer (Liu et al. 2024): ``y_o = sum_c phi_{o,c}(x_c)``.

    Args:
        in_features: input features.
        out_features: output features.
        grid_size: grid intervals G.
        spline_order: B-spline order k.
        grid_range: initial grid range.
        scale_noise: std of the initial spline coefficients (divided by sqrt(fan_in)).
        scale_base: Xavier gain of the base weights.
        scale_spline: initial spline scale ``w_s``.
        grid_eps: adaptive/uniform mix of :meth:`update_grid`.
        device: parameter device.
        dtype: parameter dtype.

    Shapes:
        ``(..., in_features) -> (..., out_features)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        grid_size: int = 5,
        spline_order: int = 3,
        grid_range: Sequence[float] = (-1.0, 1.0),
        scale_noise: float = 0.1,
        scale_base: float = 1.0,
        scale_spline: float = 1.0,
        grid_eps: float = 0.02,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            in_features, out_features, (), 1, grid_size, spline_order, grid_range,
            scale_noise, scale_base, scale_spline, grid_eps, device, dtype,
        )

    @property
    def in_features(self) -> int:
        return self.in_channels

    @property
    def out_features(self) -> int:
        return self.out_channels

    def _as_channel_first(self, x: Tensor) -> Tensor:
        if x.dim() < 1 or x.shape[-1] != self.in_channels:
            raise ValueError(f"KANLinear expects (..., {self.in_channels}), got {tuple(x.shape)}")
        return x.reshape(-1, self.in_channels)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        feats = self.expand(self._as_channel_first(x))  # (N, in * (1 + G + k))
        return F.linear(feats, self.composed_weight()).reshape(lead + (self.out_channels,))


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _ntuple(value: int | Sequence[int], n: int, name: str) -> tuple[int, ...]:
    if is_integer(value):
        out: tuple = (value,) * n
    elif isinstance(value, Sequence) and not isinstance(value, str):
        out = tuple(value)
    else:
        raise ValueError(f"{name} must be a non-negative int or {n} of them, got {value!r}")
    if len(out) != n or any(not is_integer(v) or int(v) < 0 for v in out):
        raise ValueError(f"{name} must be a non-negative int or {n} of them, got {value!r}")
    return tuple(int(v) for v in out)


class KANConv(_KANLayer):
    """N-dimensional KAN convolution: every kernel element of every (out, in) pair is its own phi.

    ``Y[o, p] = sum_{c, k} phi_{o,c,k}(X[c, p * stride + k * dilation - padding])``, computed exactly as
    one dense convolution over the expanded input ``[silu(x), B_0(x), ..., B_{G+k-1}(x)]`` (per channel)
    with weight ``[w_b, w_s c_0, ..., w_s c_{G+k-1}]``. Zero padding contributes nothing.

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: int or one per spatial dim.
        stride: int or one per spatial dim.
        padding: int, one per spatial dim, ``"same"`` (stride 1 only) or ``"valid"``. Default: ``"same"``
            for stride 1, else ``(kernel_size - 1) // 2 * dilation``.
        dilation: int or one per spatial dim.
        groups: channel groups (as in ``torch.nn.Conv``).
        grid_size, spline_order, grid_range, scale_noise, scale_base, scale_spline, grid_eps: as in
            :class:`KANLinear`.
        channels_last: memory layout of the expanded input; ``None`` picks channels-last for 3D.
        device: parameter device.
        dtype: parameter dtype.

    Shapes:
        ``(B, in_channels, *spatial) -> (B, out_channels, *spatial_out)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | str | None = None,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        grid_size: int = 5,
        spline_order: int = 3,
        grid_range: Sequence[float] = (-1.0, 1.0),
        scale_noise: float = 0.1,
        scale_base: float = 1.0,
        scale_spline: float = 1.0,
        grid_eps: float = 0.02,
        channels_last: bool | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        spatial_dims = check_dims("spatial_dims", spatial_dims, tuple(sorted(_CONV)))
        ks = _ntuple(kernel_size, spatial_dims, "kernel_size")
        if min(ks) < 1:
            raise ValueError(f"kernel_size must be >= 1, got {kernel_size!r}")
        self.stride = _ntuple(stride, spatial_dims, "stride")
        if min(self.stride) < 1:
            raise ValueError(f"stride must be >= 1, got {stride!r}")
        self.dilation = _ntuple(dilation, spatial_dims, "dilation")
        if min(self.dilation) < 1:
            raise ValueError(f"dilation must be >= 1, got {dilation!r}")
        if padding is None:
            padding = "same" if max(self.stride) == 1 else tuple((k - 1) // 2 * d for k, d in zip(ks, self.dilation))
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"padding must be an int, a tuple, 'same' or 'valid', got {padding!r}")
            if padding == "same" and max(self.stride) > 1:
                raise ValueError(f"padding='same' needs stride 1, got stride={stride!r}")
            self.padding: tuple[int, ...] | str = padding
        else:
            self.padding = _ntuple(padding, spatial_dims, "padding")
        self.spatial_dims = spatial_dims
        super().__init__(
            in_channels, out_channels, ks, groups, grid_size, spline_order, grid_range,
            scale_noise, scale_base, scale_spline, grid_eps, device, dtype,
        )
        # Channels-last expanded inputs make CPU (oneDNN) 3D convolutions several times faster, while
        # 1D/2D ones are faster channels-first (measured by benchmarks/kanconv.py).
        self.channels_last = spatial_dims == 3 if channels_last is None else bool(channels_last)

    def _as_channel_first(self, x: Tensor) -> Tensor:
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"KANConv({self.spatial_dims}D) expects (B, {self.in_channels}, *spatial) with "
                f"{self.spatial_dims} spatial dims, got {tuple(x.shape)}"
            )
        return x

    def forward(self, x: Tensor) -> Tensor:
        x = self._as_channel_first(x)  # checks the shape
        return _CONV[self.spatial_dims](
            self.expand(x), self.composed_weight(), None, self.stride, self.padding, self.dilation, self.groups
        )

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, spatial_dims={self.spatial_dims}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}"
        )
