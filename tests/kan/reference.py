"""Independent float64 references for KAN layers: direct per-edge evaluation, no basis expansion."""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch


def np_basis(x: np.ndarray, knots: np.ndarray, order: int) -> np.ndarray:
    """Cox-de Boor in numpy: x (...,), knots (M,) -> (..., M - order - 1)."""
    xe = x[..., None]
    b = ((xe >= knots[:-1]) & (xe < knots[1:])).astype(np.float64)
    for p in range(1, order + 1):
        out = np.zeros(x.shape + (len(knots) - p - 1,))
        for i in range(len(knots) - p - 1):
            left = knots[i + p] - knots[i]
            right = knots[i + p + 1] - knots[i + 1]
            if left > 0:
                out[..., i] += (x - knots[i]) / left * b[..., i]
            if right > 0:
                out[..., i] += (knots[i + p + 1] - x) / right * b[..., i + 1]
        b = out
    return b


def np_phi(x: np.ndarray, w_b: float, w_s: float, coef: np.ndarray, knots: np.ndarray, order: int) -> np.ndarray:
    """phi(x) = w_b silu(x) + w_s sum_i c_i B_i(x)."""
    silu = x / (1.0 + np.exp(-x))
    return w_b * silu + w_s * np_basis(x, knots, order) @ coef


def reference_conv(layer, x: torch.Tensor) -> np.ndarray:
    """Y[o, p] = sum_{c, k} phi_{o,c,k}(X[c, p * stride + k * dilation - pad]); padded positions give 0."""
    xs = x.detach().double().numpy()
    bsz, cin = xs.shape[:2]
    spatial = xs.shape[2:]
    dims = len(spatial)
    ks, st, dl = layer.kernel_size, layer.stride, layer.dilation
    if layer.padding == "same":
        pads = [((k - 1) * d) // 2 for k, d in zip(ks, dl)]
        extra = [((k - 1) * d) - p for k, d, p in zip(ks, dl, pads)]
    elif layer.padding == "valid":
        pads, extra = [0] * dims, [0] * dims
    else:
        pads, extra = list(layer.padding), list(layer.padding)
    padded = np.pad(xs, [(0, 0), (0, 0)] + [(p, e) for p, e in zip(pads, extra)], constant_values=np.nan)
    out_size = [(n + p + e - d * (k - 1) - 1) // s + 1 for n, p, e, k, s, d in zip(spatial, pads, extra, ks, st, dl)]
    cout, groups = layer.out_channels, layer.groups
    cg, og = cin // groups, cout // groups
    w_b = layer.base_weight.detach().double().numpy()
    w_s = layer.spline_scaler.detach().double().numpy()
    coef = layer.spline_coef.detach().double().numpy()
    mask = layer.edge_mask.detach().double().numpy()
    grid = layer.grid.detach().double().numpy()
    y = np.zeros((bsz, cout) + tuple(out_size))
    for o in range(cout):
        g = o // og
        for cl in range(cg):
            c = g * cg + cl
            for koff in itertools.product(*[range(k) for k in ks]):
                sl = tuple(slice(ko * d, ko * d + s * (n - 1) + 1, s) for ko, d, s, n in zip(koff, dl, st, out_size))
                vals = padded[(slice(None), c) + sl]
                e = (o, cl) + koff
                phi = np_phi(np.nan_to_num(vals), w_b[e] * mask[e], w_s[e] * mask[e], coef[e], grid[c], layer.spline_order)
                y[:, o] += np.where(np.isnan(vals), 0.0, phi)
    return y


def reference_linear(layer, x: torch.Tensor) -> np.ndarray:
    xs = x.detach().double().numpy().reshape(-1, layer.in_channels)
    w_b = layer.base_weight.detach().double().numpy()
    w_s = layer.spline_scaler.detach().double().numpy()
    coef = layer.spline_coef.detach().double().numpy()
    grid = layer.grid.detach().double().numpy()
    mask = layer.edge_mask.detach().double().numpy()
    y = np.zeros((xs.shape[0], layer.out_channels))
    for o in range(layer.out_channels):
        for c in range(layer.in_channels):
            e = (o, c)
            y[:, o] += np_phi(xs[:, c], w_b[e] * mask[e], w_s[e] * mask[e], coef[e], grid[c], layer.spline_order)
    return y.reshape(tuple(x.shape[:-1]) + (layer.out_channels,))


def smooth_coefficients(layer, seed: int = 0, amplitude: float = 0.3) -> None:
    """Give every edge a smooth spline (as training produces), replacing the white-noise initialisation."""
    gen = torch.Generator().manual_seed(seed)
    shape = layer.spline_coef.shape
    i = torch.arange(shape[-1], dtype=torch.float64)
    freq = torch.rand(shape[:-1] + (1,), generator=gen, dtype=torch.float64) * 0.8
    phase = torch.rand(shape[:-1] + (1,), generator=gen, dtype=torch.float64) * 2 * math.pi
    with torch.no_grad():
        layer.spline_coef.copy_((amplitude * torch.sin(freq * i + phase)).to(layer.spline_coef.dtype))
