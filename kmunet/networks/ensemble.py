"""Ensembles of segmentation networks: the members' softmax probabilities averaged (as nnU-Net does).

nnU-Net ensembles the models of its cross-validation folds by averaging their softmax outputs
(Isensee et al., "nnU-Net: a self-configuring method for deep learning-based biomedical image
segmentation", Nature Methods 2021). :class:`ProbabilityEnsemble` is that average as one
``nn.Module``: it returns the *log* of the mean probability, so anything that takes logits (softmax,
argmax, sliding-window blending, mirroring TTA) can use it unchanged: ``softmax(log p) = p`` when
``p`` sums to one over the class axis.

Members trained with different patch sizes (nnU-Net likewise ensembles configurations with different
patch sizes) keep their own sliding-window sizes in :attr:`ProbabilityEnsemble.windows`:
:func:`kmunet.inference.tta.sliding_window_probabilities` then runs each member over the image with its
own window and averages the members' probabilities.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ["ProbabilityEnsemble"]


class ProbabilityEnsemble(nn.Module):
    """Mean of the members' softmax probabilities, returned as log-probabilities.

    Args:
        members: networks mapping ``(B, C, *spatial)`` to logits ``(B, K, *spatial)``, all with the
            same ``K``.
        windows: optional sliding-window size of each member (its training patch size, one entry
            per spatial axis). ``None``: every member runs in the caller's window.

    Shapes:
        ``(B, C, *spatial)`` -> ``(B, K, *spatial)`` float32 log-probabilities (``logsumexp`` over
        ``K`` is 0).

    Raises:
        ValueError: no members, or ``windows`` not one positive size per member, all of one length.
        TypeError: a member is not an ``nn.Module``.
    """

    def __init__(self, members: Sequence[nn.Module], windows: Sequence[Sequence[int]] | None = None) -> None:
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("an ensemble needs at least one member network")
        for i, m in enumerate(members):
            if not isinstance(m, nn.Module):
                raise TypeError(f"ensemble member {i} must be an nn.Module, got {type(m).__name__}")
        self.members = nn.ModuleList(members)
        self.windows: list[tuple[int, ...]] | None = None
        if windows is not None:
            sizes = [tuple(int(v) for v in w) for w in windows]
            if (len(sizes) != len(members) or len({len(w) for w in sizes}) != 1
                    or any(v < 1 for w in sizes for v in w)):
                raise ValueError(f"windows must give one positive size per member ({len(members)}), all with "
                                 f"one entry per spatial axis, got {[list(w) for w in sizes]}")
            self.windows = sizes

    @property
    def mixed_windows(self) -> bool:
        """True when the members' sliding windows differ (each must then run in its own window)."""
        return self.windows is not None and len(set(self.windows)) > 1

    def forward(self, x: Tensor) -> Tensor:
        # log(mean_m softmax(z_m)) = logsumexp_m(log_softmax(z_m)) - log(M), stable for any logits.
        # float32 first: under autocast the members may return float16 / bfloat16 logits.
        outs = [torch.log_softmax(m(x).float(), dim=1) for m in self.members]
        shapes = sorted({tuple(t.shape) for t in outs})
        if len(shapes) > 1:
            raise ValueError(f"ensemble members return different output shapes: {shapes}")
        logp = torch.stack(outs)  # (M, B, K, *spatial)
        return torch.logsumexp(logp, dim=0) - math.log(len(outs))
