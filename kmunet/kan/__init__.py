"""KAN layers: exact, fast B-spline KAN linear layers and N-dimensional convolutions.

Reference: Liu et al. 2024, "KAN: Kolmogorov-Arnold Networks" (arXiv:2404.19756).
"""

from kmunet.kan.basis import bspline_basis, grid_is_uniform, kan_features, make_grid, uniform_local_basis
from kmunet.kan.layers import KANConv, KANLinear
from kmunet.kan.plot import plot_edge_functions
from kmunet.kan.utils import extend_model_grids, kan_layers, kan_regularization, prune_model, update_model_grids

__all__ = [
    "KANConv",
    "KANLinear",
    "bspline_basis",
    "extend_model_grids",
    "grid_is_uniform",
    "kan_features",
    "kan_layers",
    "kan_regularization",
    "make_grid",
    "plot_edge_functions",
    "prune_model",
    "uniform_local_basis",
    "update_model_grids",
]
