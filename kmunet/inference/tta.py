"""Sliding-window inference with mirroring test-time augmentation (as in nnU-Net).

The network is evaluated on the input and on its mirror images along every subset of ``mirror_axes``
(spatial axes, 0-based, of ``(B, C, *spatial)``); each prediction is mirrored back and the softmax
probabilities are averaged. Only axes the network was trained to be invariant to (the training
config's ``data.flip_axes``) should be mirrored: for the hippocampus that is the left-right axis alone,
because an anterior-posterior flip swaps the two labels.

An ensemble whose members were trained with different patch sizes
(:attr:`kmunet.networks.ProbabilityEnsemble.mixed_windows`) runs each member over the image in its own
window; the members' probabilities are averaged.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

__all__ = ["mirror_subsets", "sliding_window_probabilities"]


def mirror_subsets(mirror_axes: Sequence[int], spatial_dims: int) -> list[tuple[int, ...]]:
    """Every subset of ``mirror_axes`` (the empty one first), as tuples of spatial axes.

    Raises:
        ValueError: an axis outside ``[0, spatial_dims)`` or repeated.
    """
    axes = [int(a) for a in mirror_axes]
    if len(set(axes)) != len(axes) or any(not 0 <= a < spatial_dims for a in axes):
        raise ValueError(f"mirror axes must be distinct spatial axes in [0, {spatial_dims}), got {list(mirror_axes)}")
    return [combo for r in range(len(axes) + 1) for combo in itertools.combinations(sorted(axes), r)]


def sliding_window_probabilities(
    inputs: Tensor,
    roi_size: Sequence[int],
    sw_batch_size: int,
    predictor: Callable[[Tensor], Tensor],
    overlap: float = 0.25,
    mirror_axes: Sequence[int] = (),
    **kwargs: Any,
) -> Tensor:
    """Softmax probabilities from MONAI ``sliding_window_inference``, averaged over mirror images.

    Args:
        inputs: ``(B, C, *spatial)`` image batch.
        roi_size: window size (one entry per spatial axis).
        sw_batch_size: windows per forward pass.
        predictor: maps ``(B, C, *roi)`` to logits ``(B, K, *roi)``. A
            :class:`~kmunet.networks.ProbabilityEnsemble` with mixed windows ignores ``roi_size``: each
            member uses its own.
        overlap: window overlap.
        mirror_axes: spatial axes to mirror (``()``: no test-time augmentation; ``2**len(axes)`` passes).
        **kwargs: passed to ``sliding_window_inference`` (e.g. ``sw_device``, ``device``).

    Returns:
        ``(B, K, *spatial)`` float32 probabilities.

    Raises:
        TypeError: the predictor does not return one tensor.
        ValueError: bad mirror axes.
    """
    from monai.inferers import sliding_window_inference

    from kmunet.networks.ensemble import ProbabilityEnsemble

    if isinstance(predictor, ProbabilityEnsemble) and predictor.mixed_windows:
        assert predictor.windows is not None  # mixed_windows implies windows
        per_member = [
            sliding_window_probabilities(inputs, window, sw_batch_size, member, overlap, mirror_axes, **kwargs)
            for member, window in zip(predictor.members, predictor.windows)
        ]
        return torch.stack(per_member).mean(0)  # (M, B, K, *spatial) -> (B, K, *spatial)
    subsets = mirror_subsets(mirror_axes, inputs.ndim - 2)
    total: Tensor | None = None
    for axes in subsets:
        dims = [2 + a for a in axes]  # spatial axis -> tensor dim of (B, C, *spatial)
        x = torch.flip(inputs, dims) if dims else inputs
        logits = sliding_window_inference(x, list(roi_size), int(sw_batch_size), predictor, overlap=float(overlap), **kwargs)
        if isinstance(logits, (tuple, list, dict)):
            raise TypeError(f"predictor must return one logits tensor, got {type(logits).__name__}")
        probs = torch.softmax(torch.as_tensor(logits).float(), dim=1)
        probs = torch.flip(probs, dims) if dims else probs
        total = probs if total is None else total + probs
    assert total is not None  # subsets always holds the empty tuple
    return total / len(subsets)
