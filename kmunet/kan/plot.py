"""Plots of learned KAN edge functions (the "interpretability" figures of Liu et al. 2024)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from kmunet.kan.layers import _KANLayer

__all__ = ["plot_edge_functions"]


def plot_edge_functions(
    layer: _KANLayer,
    path: str | Path,
    max_out: int = 6,
    max_in: int = 6,
    num_points: int = 200,
) -> Path:
    """Write a PNG grid of a layer's learned edge functions.

    Row ``o``, column ``c`` shows ``phi_{o,c,k}`` for every kernel offset ``k`` (one curve each) over the
    grid range of the input channel that edge reads (shaded: that channel's interior grid range, which
    differs between channels after :meth:`~kmunet.kan.KANConv.update_grid`). Column ``c`` is the
    ``c``-th input channel of output ``o``'s group, so with ``groups > 1`` the panel titles name the input
    channel of each panel.

    Args:
        layer: a :class:`~kmunet.kan.KANConv` or :class:`~kmunet.kan.KANLinear`.
        path: output PNG path (written atomically).
        max_out: at most this many output channels (rows).
        max_in: at most this many input channels per group (columns).
        num_points: samples per curve.

    Returns:
        The PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not isinstance(layer, _KANLayer):
        raise TypeError(f"plot_edge_functions expects a KANConv or KANLinear, got {type(layer).__name__}")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: plot_edge_functions writes PNG files; give a path ending in .png")
    k, g = layer.spline_order, layer.grid_size
    rows = min(max_out, layer.out_channels)
    cols = min(max_in, layer.in_channels // layer.groups)
    og, cg = layer.out_channels // layer.groups, layer.in_channels // layer.groups
    lo, hi = layer.grid[:, k], layer.grid[:, k + g]  # (in,) interior grid range per input channel
    pad = 0.25 * (hi - lo)
    steps = torch.linspace(0, 1, num_points, device=layer.grid.device, dtype=layer.grid.dtype)
    samples = (lo - pad)[None, :] + (hi - lo + 2 * pad)[None, :] * steps[:, None]  # (n, in): a range per channel
    with torch.no_grad():
        phi = layer.edge_values(samples)[:rows, :cols].reshape(rows, cols, -1, num_points).cpu()  # (O, C, K, n)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 1.5 * rows), squeeze=False)
    samples, lo, hi = samples.cpu().numpy(), lo.cpu().numpy(), hi.cpu().numpy()
    for o in range(rows):
        for c in range(cols):
            ch = (o // og) * cg + c  # the input channel edge (o, c) reads
            ax = axes[o][c]
            if o == 0 or layer.groups > 1:
                ax.set_title(f"in {ch}", fontsize=7)
            ax.axvspan(lo[ch], hi[ch], color="0.93", lw=0)
            for curve in phi[o, c]:
                ax.plot(samples[:, ch], curve.numpy(), lw=0.8)
            ax.tick_params(labelsize=5)
            if c == 0:
                ax.set_ylabel(f"out {o}", fontsize=7)
    fig.suptitle(f"{type(layer).__name__} edge functions (G={g}, k={k})", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path
