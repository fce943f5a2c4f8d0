"""Generic fitting of a coordinate network to scattered samples."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch import Tensor

__all__ = ["FitResult", "fit_coordinates"]


@dataclass
class FitResult:
    """Outcome of :func:`fit_coordinates`.

    Attributes:
        model: the fitted model (same object as the input, left in eval mode).
        losses: mean-squared error of every iteration's batch.
        seconds: wall time of the fit.
    """

    model: nn.Module
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def fit_coordinates(
    model: nn.Module,
    coords: Tensor,
    values: Tensor,
    iterations: int = 1000,
    lr: float = 1e-4,
    batch_size: int | None = 65536,
    device: str | torch.device | None = None,
    progress: bool = False,
    seed: int | None = 0,
    lr_decay: float = 0.1,
    description: str = "fit",
) -> FitResult:
    """Fit ``model(coords) ~ values`` with Adam on the mean-squared error.

    Each iteration uses a random batch of ``batch_size`` points (all points when ``batch_size`` is ``None``
    or at least ``N``); the learning rate decays exponentially to ``lr * lr_decay`` at the end. Complex
    models are fitted to complex values (``|model - values|^2``); a complex model fitted to real values
    uses its real part.

    Args:
        model: a coordinate network ``(..., d) -> (..., c)``.
        coords: ``(N, d)`` coordinates, normally in ``[-1, 1]``.
        values: ``(N, c)`` (or ``(N,)`` for ``c = 1``) targets.
        iterations: optimiser steps.
        lr: initial Adam learning rate.
        batch_size: points per step.
        device: where to fit (default: the model's device). The model is moved there.
        progress: show a tqdm progress bar with the loss.
        seed: seed of the batch sampler's own generator (global RNG untouched).
        lr_decay: final learning rate as a fraction of ``lr`` (1 disables the schedule).
        description: progress-bar label.

    Returns:
        :class:`FitResult` with the loss history.

    Raises:
        ValueError: mismatched shapes or invalid settings.
    """
    import time

    from tqdm.auto import tqdm

    if coords.dim() != 2:
        raise ValueError(f"coords must be (N, d), got shape {tuple(coords.shape)}")
    if values.dim() == 1:
        values = values.unsqueeze(1)
    if values.dim() != 2 or values.shape[0] != coords.shape[0]:
        raise ValueError(f"values must be (N, c) with N = {coords.shape[0]}, got shape {tuple(values.shape)}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be an integer >= 0, got {iterations!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if not 0 < lr_decay <= 1:
        raise ValueError(f"lr_decay must be in (0, 1], got {lr_decay!r}")
    if coords.shape[0] == 0:
        raise ValueError("cannot fit to zero points")

    params = list(model.parameters())
    if device is None:
        device = params[0].device if params else coords.device
    else:
        from kmunet.runtime import resolve_device

        device = resolve_device(device)
    model.to(device)
    real_dtype = params[0].real.dtype if params else torch.float32
    x_all = coords.to(device=device, dtype=real_dtype)
    y_all = values.to(device=device)
    y_all = y_all.to(torch.complex128 if real_dtype == torch.float64 else torch.complex64) if y_all.is_complex() else y_all.to(real_dtype)
    n = x_all.shape[0]
    bs = n if batch_size is None else min(batch_size, n)
    gen = torch.Generator(device="cpu")
    gen.manual_seed(0 if seed is None else int(seed))

    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    gamma = lr_decay ** (1.0 / max(iterations, 1))
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimiser, gamma=gamma)
    result = FitResult(model=model)
    model.train()
    start = time.perf_counter()
    bar = tqdm(range(iterations), desc=description, disable=not progress, leave=False)
    for _ in bar:
        if bs < n:
            idx = torch.randint(0, n, (bs,), generator=gen).to(device)
            x, y = x_all[idx], y_all[idx]
        else:
            x, y = x_all, y_all
        pred = model(x)
        if pred.is_complex() and not y.is_complex():
            pred = pred.real
        loss = (pred - y).abs().square().mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        scheduler.step()
        value = float(loss.detach())
        result.losses.append(value)
        if progress:
            bar.set_postfix(loss=f"{value:.3e}", refresh=False)
    bar.close()
    model.eval()
    result.seconds = time.perf_counter() - start
    return result
