"""Exponential moving average (EMA) of a model's weights, for validation and checkpoints.

Averaging the weights over the last few thousand optimizer steps smooths the noise of small-batch
training (Polyak & Juditsky 1992; the warm-up follows TensorFlow's ``ExponentialMovingAverage``
with ``num_updates``). Parameters are averaged; buffers (KAN spline grids, batch-norm statistics)
are copied from the trained model, so the average always uses the current grids, and the trainer
restarts the average (:meth:`ModelEMA.reset`) when it updates or extends the grids.
"""

from __future__ import annotations

import copy
import torch
import torch.nn as nn

from kmunet.checks import check_real

__all__ = ["ModelEMA"]


class ModelEMA:
    """A frozen copy of ``model`` whose parameters follow an exponential moving average of its own.

    After each optimizer step, :meth:`update` sets ``ema = d * ema + (1 - d) * weights`` with the
    warmed-up decay ``d = min(decay, (1 + t) / (10 + t))`` at update ``t`` (early weights, far from
    the optimum, are forgotten quickly).

    Args:
        model: the model being trained (its current weights start the average).
        decay: the decay in ``[0, 1)``; 0 makes the copy follow the weights exactly.

    Attributes:
        module: the averaged model (eval it, save its ``state_dict``).
        updates: number of :meth:`update` calls so far.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not 0 <= check_real("decay", decay, 0.0) < 1:
            raise ValueError(f"decay must be in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.updates = 0
        self.module = _frozen_copy(model)

    def current_decay(self) -> float:
        """The decay the next :meth:`update` applies (warm-up ``(1 + t) / (10 + t)``, capped at ``decay``)."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold ``model``'s current weights into the average and copy its buffers."""
        d = self.current_decay()
        for ema_p, p in zip(self.module.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1.0 - d)
        for ema_b, b in zip(self.module.buffers(), model.buffers()):
            ema_b.copy_(b)
        self.updates += 1

    @torch.no_grad()
    def reset(self, model: nn.Module) -> None:
        """Restart the average from ``model`` (after a KAN grid update or extension changed the
        meaning or the shape of the spline coefficients); the update count is kept."""
        self.module = _frozen_copy(model)


def _frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode whose parameters need no gradient."""
    copied = copy.deepcopy(model).eval()
    for p in copied.parameters():
        p.requires_grad_(False)
    return copied
