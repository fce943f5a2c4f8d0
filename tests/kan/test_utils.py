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
    model = _model().double()
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64) * 3
    before = model(x)
    assert update_model_grids(model, x) == 2
    assert all(torch.isfinite(layer.grid).all() for layer in kan_layers(model))
    assert model.training
    # every layer's grid now spans its own inputs (the first layer's: x, about +-10)
    first = next(kan_layers(model)).grid[:, 3:-3]
    assert first.min() <= x.min() and first.max() >= x.max()
    updated = model(x)
    assert ((updated - before).norm() / before.norm()).item() < 0.05  # least-squares refit keeps the functions
    assert extend_model_grids(model, 10) == 2  # 5 -> 10 nests the knots: exact on the grid range
    assert all(layer.grid_size == 10 for layer in kan_layers(model))
    torch.testing.assert_close(model(x), updated, atol=1e-9, rtol=0)
    assert prune_model(model, threshold=0.0) == 0


def test_update_model_grids_uses_batch_statistics_and_restores_norm_state() -> None:
    model = nn.Sequential(KANConv(2, 2, 3, 3), nn.BatchNorm2d(3), nn.Dropout(0.5), KANConv(2, 3, 2, 3))
    state = {k: v.clone() for k, v in model[1].state_dict().items()}
    model[2].eval()  # a mixed mode must come back as it was
    x = torch.randn(4, 2, 8, 8) * 50  # raw activations of order 100: the running stats (0, 1) would not normalise them
    update_model_grids(model, x)
    last = model[3].grid[:, 3:-3]
    assert last.abs().max() < 10  # fitted to batch-normalised inputs (|z| of a few units)
    for key, value in model[1].state_dict().items():
        assert torch.equal(value, state[key]), key
    assert model.training and model[1].training and not model[2].training
