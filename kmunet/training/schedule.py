"""Learning-rate schedules (per iteration) and mixed-precision settings."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from kmunet.options import SCHEDULES

__all__ = ["SCHEDULES", "lr_factor", "AmpSettings", "amp_settings"]


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str, poly_power: float = 0.9) -> float:
    """Multiplier of the peak learning rate at iteration ``step``.

    Linear warm-up from ``1 / (warmup_steps + 1)`` to 1 over ``warmup_steps``, then cosine decay to 0
    or polynomial decay ``(1 - t) ** poly_power`` (nnU-Net's schedule) over the remaining steps.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; valid: {list(SCHEDULES)}")
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    return (1.0 - t) ** poly_power


@dataclass(frozen=True)
class AmpSettings:
    """Mixed precision: autocast dtype (``None`` = off) and whether a GradScaler is needed."""

    dtype: torch.dtype | None
    use_scaler: bool


def amp_settings(device: torch.device, enabled: bool, bf16_supported: bool | None = None) -> AmpSettings:
    """AMP on CUDA only: bf16 where supported (no scaler), else fp16 with a GradScaler; off on CPU."""
    if not enabled or device.type != "cuda":
        return AmpSettings(None, False)
    if bf16_supported is None:
        bf16_supported = torch.cuda.is_bf16_supported()
    return AmpSettings(torch.bfloat16, False) if bf16_supported else AmpSettings(torch.float16, True)
