"""Model-level KAN helpers: regulariser sum, grid update schedule, extension, pruning."""

from __future__ import annotations

import torch
import torch.nn as nn

from kmunet.kan import KANConv, extend_model_grids, kan_layers, kan_regularization, prune_model, update_model_grids


def _model() -> nn.Module:
    return nn.Sequential(KANConv(2, 2, 3, 3), nn.InstanceNorm2d(3), KANConv(2, 3, 2, 3))


def test_kan_regularization_sums_layers() -> None:
    model = _model()
    model(torch.randn(2, 2, 8, 8))
    total = kan_regularization(model, 1.0, 0.5)
    parts = sum(layer.regularization_loss(1.0, 0.5) for layer in kan_layers(model))
    torch.testing.assert_close(total, parts)
    assert kan_regularization(nn.Linear(2, 2)).item() == 0.0


def test_update_and_extend_model_grids() -> None:
    model = _model()
    x = torch.randn(2, 2, 8, 8) * 3
    assert update_model_grids(model, x) == 2
    assert all(torch.isfinite(layer.grid).all() for layer in kan_layers(model))
    assert model.training
    assert extend_model_grids(model, 8) == 2
    assert all(layer.grid_size == 8 for layer in kan_layers(model))
    assert torch.isfinite(model(x)).all()
    model(x)
    assert prune_model(model, threshold=0.0) == 0
