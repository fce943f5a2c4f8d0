"""ModelEMA: the averaged weights follow the documented recursion (float64), buffers are copied."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from kmunet.training.ema import ModelEMA


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).double()
    return model


def test_average_follows_the_warmed_up_recursion_in_float64() -> None:
    model = _model()
    ema = ModelEMA(model, decay=0.9)
    expected = [p.detach().clone() for p in model.parameters()]
    gen = torch.Generator().manual_seed(1)
    for t in range(30):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
        model.train()(torch.randn(5, 3, generator=gen, dtype=torch.float64))  # moves the batch-norm statistics
        d = min(0.9, (1 + t) / (10 + t))
        assert ema.current_decay() == pytest.approx(d)
        ema.update(model)
        expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, model.parameters())]
    assert ema.updates == 30
    for e, p in zip(expected, ema.module.parameters()):
        torch.testing.assert_close(p, e, rtol=1e-12, atol=1e-12)
    for b_ema, b in zip(ema.module.buffers(), model.buffers()):
        assert torch.equal(b_ema, b)  # statistics and grids are copied, never averaged
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training
    assert all(p.requires_grad for p in model.parameters())  # the trained model is untouched


def test_decay_zero_follows_the_weights_and_reset_restarts() -> None:
    model = _model()
    ema = ModelEMA(model, decay=0.0)
    with torch.no_grad():
        model[0].weight.mul_(3.0)
    ema.update(model)
    assert torch.equal(ema.module[0].weight, model[0].weight)
    slow = ModelEMA(model, decay=0.99)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    slow.reset(model)
    assert torch.equal(slow.module[0].weight, model[0].weight) and slow.updates == 0


@pytest.mark.parametrize("decay,error,match", [
    (1.0, ValueError, r"decay must be in \[0, 1\), got 1.0"),
    (-0.1, ValueError, "decay must be a finite number >= 0"),
    ("0.9", ValueError, "decay must be a finite number >= 0, got .0.9."),
])
def test_bad_decay_raises(decay: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ModelEMA(_model(), decay)  # type: ignore[arg-type]


def test_model_must_be_a_module() -> None:
    with pytest.raises(TypeError, match="model must be an nn.Module, got dict"):
        ModelEMA({}, 0.9)  # type: ignore[arg-type]
