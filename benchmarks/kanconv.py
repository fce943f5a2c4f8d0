"""KANConv speed and memory against the dense floor, a plain convolution and unfold-based ConvKAN.

For each setting it measures forward+backward time (median of ``--repeats`` runs) and peak memory of:

* ``KANConv``: kmunet's exact KAN convolution (basis expansion + one dense convolution), with the fused
  Numba feature kernels on CPU (:mod:`kmunet.kan.fused`) when they apply;
* ``KANConv (torch)``: the same layer with its pure-PyTorch feature expansion (``KMUNET_FUSED_KAN=0``);
* ``dense floor``: a plain convolution over the same number of expanded input channels
  ``C_in * (1 + G + k)`` (the arithmetic floor of any exact KAN convolution), measured in both memory
  formats (channels-first ``NC*`` and channels-last ``N*C``); the faster one is the floor;
* ``plain conv``: a convolution with the same in/out channels;
* ``convkan``: the unfold-based ``ConvKAN`` of the ``convkan`` package (2D only, when installed).

All ratios are measured in the same run. Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA
and, on CPU, the peak of the tensors alive during the step (``torch.profiler`` memory accounting);
both include the layer's input tensor (for the dense floor that is the expanded input).

Run: ``python benchmarks/kanconv.py [--device cuda] [--amp] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

import torch
import torch.nn as nn

from kmunet.kan import KANConv
from kmunet.kan.fused import FUSED_ENV, fused_available

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CHANNELS_LAST = {2: torch.channels_last, 3: torch.channels_last_3d}


def _peak_cpu_bytes(fn: Callable[[], None]) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e for e in prof.events() if e.cpu_memory_usage != 0), key=lambda e: e.time_range.start
    )
    current = peak = 0
    for e in events:
        current += e.cpu_memory_usage
        peak = max(peak, current)
    return peak


class _TorchPath(nn.Module):
    """Runs a KAN layer with the fused kernels switched off (pure-PyTorch feature expansion)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        old = os.environ.get(FUSED_ENV)
        os.environ[FUSED_ENV] = "0"
        try:
            return self.layer(x)
        finally:
            if old is None:
                del os.environ[FUSED_ENV]
            else:
                os.environ[FUSED_ENV] = old


def _step_fn(module: nn.Module, x: torch.Tensor, amp: bool) -> Callable[[], None]:
    def step() -> None:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            y = module(x)
        y.float().square().mean().backward()

    return step


def _time(step: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def _peak_mib(step: Callable[[], None], x: torch.Tensor) -> float:
    """Peak memory of one step, counting the layer's input (for the dense floor: the expanded input)."""
    if x.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _peak_cpu_bytes(step)
    return (peak + x.numel() * x.element_size()) / 2**20


def measure(rows: list[tuple[str, nn.Module, torch.Tensor]], repeats: int, amp: bool) -> dict[str, tuple[float, float]]:
    """Median forward+backward seconds and peak MiB per layer.

    Repeats are interleaved (one step of every layer per round) so that load from other processes on a
    shared machine hits every layer alike and the ratios stay meaningful.
    """
    steps = {name: _step_fn(m, x, amp) for name, m, x in rows}
    for step in steps.values():
        step()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            times[name].append(_time(step, rows[0][2].device))
    out = {}
    for name, module, x in rows:
        out[name] = (statistics.median(times[name]), _peak_mib(steps[name], x))
        module.zero_grad(set_to_none=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--grid-size", type=int, default=5)
    parser.add_argument("--spline-order", type=int, default=3)
    parser.add_argument(
        "--tune-allocator",
        action="store_true",
        help="keep large freed blocks in glibc's heap (kmunet.runtime.tune_cpu_allocator), for every layer alike",
    )
    args = parser.parse_args()
    if args.tune_allocator:
        from kmunet.runtime import tune_cpu_allocator

        tune_cpu_allocator()
    dev = torch.device(args.device)
    g, k = args.grid_size, args.spline_order
    settings = [
        ("2D B=4 C=32 96x96", 2, 4, 32, (96, 96)),
        ("3D B=2 C=16 32x48x32", 3, 2, 16, (32, 48, 32)),
    ]
    print(
        f"device={dev} amp={args.amp} threads={torch.get_num_threads()} G={g} k={k} "
        f"repeats={args.repeats} tuned_allocator={args.tune_allocator} fused_kernels={fused_available(torch.zeros(1, device=dev))}"
    )
    header = f"{'setting':24s} {'layer':15s} {'fwd+bwd ms':>11s} {'peak MiB':>9s} {'time/floor':>10s} {'mem/floor':>9s}"
    print(header)
    print("-" * len(header))
    for label, dims, b, c, spatial in settings:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn((b, c) + spatial, generator=gen).to(dev).requires_grad_(True)
        kan = KANConv(dims, c, c, 3, padding=1, grid_size=g, spline_order=k).to(dev)
        expanded = c * (1 + g + k)
        floor = _CONV[dims](expanded, c, 3, padding=1, bias=False).to(dev)
        xe = torch.randn((b, expanded) + spatial, generator=gen).to(dev).requires_grad_(True)
        plain = _CONV[dims](c, c, 3, padding=1).to(dev)
        floor_cl = _CONV[dims](expanded, c, 3, padding=1, bias=False).to(dev, memory_format=_CHANNELS_LAST[dims])
        xe_cl = xe.detach().to(memory_format=_CHANNELS_LAST[dims]).requires_grad_(True)
        rows = [
            ("KANConv", kan, x),
            ("KANConv (torch)", _TorchPath(kan), x),
            ("floor (NC*)", floor, xe),
            ("floor (N*C)", floor_cl, xe_cl),
            ("plain conv", plain, x),
        ]
        results = measure(rows, args.repeats, args.amp)
        # The floor is the faster of the two memory formats of the same dense convolution.
        results["dense floor"] = min(results["floor (NC*)"], results["floor (N*C)"])
        if dims == 2:
            try:
                from convkan import ConvKAN
            except ImportError:
                ConvKAN = None
            if ConvKAN is not None:
                # Unfold-based and ~100x slower: two interleaved rounds with KANConv are enough.
                ck = measure([("KANConv", kan, x), ("convkan", ConvKAN(c, c, 3, padding=1).to(dev), x)], 2, args.amp)
                results["convkan"] = ck["convkan"]
                results["KANConv (convkan run)"] = ck["KANConv"]
        t_floor, m_floor = results["dense floor"]
        for name, (t, mem) in results.items():
            print(f"{label:24s} {name:15s} {t * 1e3:11.1f} {mem:9.1f} {t / t_floor:10.2f} {mem / m_floor:9.2f}")
        if "convkan" in results:
            t_ck, m_ck = results["convkan"]
            t_kan, m_kan = results["KANConv (convkan run)"]
            print(f"{label:24s} KANConv vs convkan: {t_ck / t_kan:.1f}x faster, {m_kan / m_ck:.3f}x the peak memory")


if __name__ == "__main__":
    main()
