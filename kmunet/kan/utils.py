"""Model-level helpers over every KAN layer of a network (regulariser, grid schedule, pruning)."""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn as nn
from torch import Tensor

from kmunet.kan.layers import KANConv, KANLinear, _KANLayer

__all__ = ["kan_layers", "kan_regularization", "update_model_grids", "extend_model_grids", "prune_model"]


def kan_layers(model: nn.Module) -> Iterator[_KANLayer]:
    """Every :class:`KANLinear` / :class:`KANConv` inside ``model`` (DDP wrappers included)."""
    for module in model.modules():
        if isinstance(module, (KANLinear, KANConv)):
            yield module


def kan_regularization(model: nn.Module, mu_1: float = 1.0, mu_2: float = 1.0) -> Tensor:
    """Sum of :meth:`KANConv.regularization_loss` over the model, on the last forward pass's inputs.

    Returns a zero tensor for a model without KAN layers.
    """
    terms = [layer.regularization_loss(mu_1, mu_2) for layer in kan_layers(model)]
    if not terms:
        param = next(model.parameters(), None)
        return torch.zeros((), device=param.device if param is not None else None)
    return torch.stack(terms).sum()


@torch.no_grad()
def update_model_grids(model: nn.Module, inputs: Tensor) -> int:
    """Update every KAN layer's grid from its own input activations on ``inputs``.

    Layers are updated one after another from the input side, each after a fresh forward pass, so a
    layer sees the activations produced by the already-updated layers before it (KAN paper Sec. 2.5).
    The passes run without dropout, but batch norms normalise with the batch's own statistics, as in
    training (their running statistics may not exist yet, e.g. before the first epoch); those running
    statistics are restored afterwards, so the model's state changes only in its KAN grids.

    Returns:
        Number of layers updated.
    """
    layers = list(kan_layers(model))
    modes = {m: m.training for m in model.modules()}
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in norms]
    model.eval()
    for m in norms:
        m.train()
    try:
        for layer in layers:
            captured: list[Tensor] = []
            handle = layer.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
            try:
                model(inputs)
            finally:
                handle.remove()
            layer.update_grid(captured[0])
    finally:
        for m, state in zip(norms, saved):
            m.load_state_dict(state)
        for m, mode in modes.items():
            m.training = mode
    return len(layers)


def extend_model_grids(model: nn.Module, new_grid_size: int) -> int:
    """Extend every KAN layer's grid to ``new_grid_size`` intervals (parameter shapes change)."""
    layers = list(kan_layers(model))
    for layer in layers:
        layer.extend_grid(new_grid_size)
    return len(layers)


def prune_model(model: nn.Module, threshold: float = 1e-2) -> int:
    """Prune weak edges of every KAN layer (see :meth:`KANConv.prune`); returns the number pruned."""
    return sum(layer.prune(threshold) for layer in kan_layers(model))
