"""KANConv speed and memory against the dense floor, a plain convolution and unfold-based ConvKAN.

For each setting it measures forward+backward time (median of ``--repeats`` runs) and peak memory of:

* ``KANConv``: kmunet's exact KAN convolution (basis expansion + one dense convolution);
* ``dense floor``: a plain convolution over the same number of expanded input channels
  ``C_in * (1 + G + k)`` (the arithmetic floor of any exact KAN convolution);
* ``plain conv``: a convolution with the same in/out channels;
* ``convkan``: the unfold-based ``ConvKAN`` of the ``convkan`` package (2D only, when installed).

All ratios are measured in the same run. Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA
and, on CPU, the peak of the tensors alive during the step (``torch.profiler`` memory accounting).

Run: ``python benchmarks/kanconv.py [--device cuda] [--amp] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn as nn

from kmunet.kan import KANConv

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}


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


def measure(module: nn.Module, x: torch.Tensor, repeats: int, amp: bool) -> tuple[float, float]:
    """Median forward+backward seconds and peak memory (MiB) of ``module`` on ``x``."""
    dev = x.device

    def step() -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            y = module(x)
        y.float().square().mean().backward()

    step()  # warm-up
    times = []
    for _ in range(repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _peak_cpu_bytes(step)
    module.zero_grad(set_to_none=True)
    return statistics.median(times), peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--grid-size", type=int, default=5)
    parser.add_argument("--spline-order", type=int, default=3)
    args = parser.parse_args()
    dev = torch.device(args.device)
    g, k = args.grid_size, args.spline_order
    settings = [
        ("2D B=4 C=32 96x96", 2, 4, 32, (96, 96)),
        ("3D B=2 C=16 32x48x32", 3, 2, 16, (32, 48, 32)),
    ]
    print(f"device={dev} amp={args.amp} threads={torch.get_num_threads()} G={g} k={k} repeats={args.repeats}")
    header = f"{'setting':24s} {'layer':12s} {'fwd+bwd ms':>11s} {'peak MiB':>9s} {'time/floor':>10s} {'mem/floor':>9s}"
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
        rows = [("KANConv", kan, x), ("dense floor", floor, xe), ("plain conv", plain, x)]
        if dims == 2:
            try:
                from convkan import ConvKAN

                rows.append(("convkan", ConvKAN(c, c, 3, padding=1).to(dev), x))
            except ImportError:
                pass
        results = {name: measure(m, inp, args.repeats, args.amp) for name, m, inp in rows}
        t_floor, m_floor = results["dense floor"]
        for name, (t, mem) in results.items():
            print(f"{label:24s} {name:12s} {t * 1e3:11.1f} {mem:9.1f} {t / t_floor:10.2f} {mem / m_floor:9.2f}")
        if "convkan" in results:
            t_ck, m_ck = results["convkan"]
            t_kan, m_kan = results["KANConv"]
            print(f"{label:24s} KANConv vs convkan: {t_ck / t_kan:.1f}x faster, {m_kan / m_ck:.3f}x the peak memory")


if __name__ == "__main__":
    main()
