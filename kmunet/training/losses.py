"""Deep-supervision loss: one segmentation loss on every output level of a deeply supervised network.

nnU-Net (Isensee et al., "nnU-Net: a self-configuring method for deep learning-based biomedical image
segmentation", Nature Methods 2021) scores each decoder level against the label downsampled to that
level, with weights ``2^-l`` normalised to sum to 1. MONAI's ``DeepSupervisionLoss`` sums the same
weights unnormalised and resizes the label with ``nearest-exact`` interpolation, which drifts off the
network's grid when a patch is not divisible by the level's stride; this loss keeps the label on it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from torch import Tensor

from kmunet.checks import is_integer
from kmunet.config import TrainConfig
from kmunet.networks.kmunet import pad_to_multiple

__all__ = ["DeepSupervisedLoss", "deep_supervision_weights", "downsample_label", "segmentation_loss"]


def deep_supervision_weights(levels: int) -> list[float]:
    """Weights ``2^-l / sum_j 2^-j`` for levels ``l = 0..levels-1`` (full resolution first; they sum to 1)."""
    if not is_integer(levels) or levels < 1:
        raise ValueError(f"levels must be a positive integer, got {levels!r}")
    raw = [0.5**level for level in range(levels)]
    return [w / sum(raw) for w in raw]


def downsample_label(label: Tensor, factor: int) -> Tensor:
    """A label map on the grid of an output ``factor`` times coarser, by block-centre sampling.

    Output voxel ``i`` of a stride-``factor`` network level covers input voxels ``[i * factor,
    (i + 1) * factor)`` (KM-UNet pads its input at the high end up to a multiple of the total stride,
    then crops each output to ``ceil(n / factor)``); it gets the label at the block's centre voxel
    ``i * factor + factor // 2``, the last voxel standing in where that lies past a patch not divisible
    by ``factor`` (the replicate padding the network applies to the image).

    Args:
        label: ``(B, 1, *spatial)`` class indices (any dtype).
        factor: the level's total stride (1 returns ``label`` itself).

    Returns:
        ``(B, 1, *ceil(spatial / factor))``, same dtype.
    """
    if not is_integer(factor) or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    if label.ndim < 3:
        raise ValueError(f"label must be (B, 1, *spatial), got shape {tuple(label.shape)}")
    if factor == 1:
        return label
    centre = factor // 2
    # (B, 1, *spatial) -> padded to a multiple of factor -> every factor-th voxel from the first block's centre
    return pad_to_multiple(label, factor)[(slice(None), slice(None)) + (slice(centre, None, factor),) * (label.ndim - 2)]


class DeepSupervisedLoss(nn.Module):
    """A segmentation loss over ``[logits, aux_1, ..., aux_n]`` (or plain logits).

    Args:
        loss: the per-level loss, called as ``loss(logits, label)`` (e.g. MONAI ``DiceCELoss``).
        factors: total stride of each auxiliary output, ``(prod(strides[:1]), ..., prod(strides[:n]))``
            (a deeply supervised :class:`~kmunet.networks.KMUNet`'s ``aux_strides``).

    Shapes:
        ``outputs``: ``(B, K, *spatial)`` or a list whose ``l``-th tensor is ``(B, K, *ceil(spatial /
        factors[l - 1]))``; ``label``: ``(B, 1, *spatial)``. Returns a scalar: the weighted mean of the
        levels' losses (:func:`deep_supervision_weights`).
    """

    def __init__(self, loss: nn.Module, factors: Sequence[int] = ()) -> None:
        super().__init__()
        if not callable(loss):
            raise TypeError(f"loss must be callable, got {type(loss).__name__}")
        if any(not is_integer(f) or f < 1 for f in factors):
            raise ValueError(f"factors must be positive integers, got {list(factors)!r}")
        self.loss = loss
        self.factors = [1, *(int(f) for f in factors)]
        self.weights = deep_supervision_weights(len(self.factors))

    def forward(self, outputs: Tensor | Sequence[Tensor], label: Tensor) -> Tensor:
        """Loss of the logits, or the weighted mean over levels for a deeply supervised list."""
        if isinstance(outputs, Tensor):
            return self.loss(outputs.float(), label)
        if len(outputs) != len(self.factors):
            raise ValueError(f"got {len(outputs)} outputs for {len(self.factors)} levels (factors {self.factors})")
        total = torch.zeros((), dtype=torch.float32, device=label.device)
        for weight, factor, out in zip(self.weights, self.factors, outputs):
            target = downsample_label(label, factor)
            if target.shape[2:] != out.shape[2:]:
                raise ValueError(f"output of shape {tuple(out.shape)} does not match the label downsampled by "
                                 f"{factor} to {tuple(target.shape)}")
            total = total + weight * self.loss(out.float(), target)
        return total


def segmentation_loss(train: TrainConfig, aux_strides: Sequence[int] = ()) -> DeepSupervisedLoss:
    """The training loss a :class:`~kmunet.config.TrainConfig` describes.

    MONAI ``DiceCELoss`` (softmax, one-hot labels) weighted by ``dice_weight`` / ``ce_weight``, its Dice
    term with or without the background class (``dice_include_background``) and per sample or over the
    batch (``dice_batch``), its cross-entropy term with optional uniform label smoothing
    (``label_smoothing``), wrapped in :class:`DeepSupervisedLoss` for the network's auxiliary outputs.

    Args:
        train: the training config.
        aux_strides: total stride of each auxiliary output (empty for plain logits).

    Returns:
        ``loss(outputs, label)`` with ``outputs`` ``(B, K, *spatial)`` logits (or the deeply supervised
        list) and ``label`` ``(B, 1, *spatial)`` class indices.
    """
    from monai.losses import DiceCELoss

    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=train.dice_weight, lambda_ce=train.ce_weight,
                         include_background=train.dice_include_background, batch=train.dice_batch,
                         label_smoothing=train.label_smoothing)
    return DeepSupervisedLoss(dice_ce, factors=aux_strides)
