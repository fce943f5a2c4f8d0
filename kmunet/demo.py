"""The built-in demo behind ``kmunet demo`` (callable from Python as :func:`run_demo`)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from kmunet.config import NetworkConfig
from kmunet.kan import kan_layers, plot_edge_functions
from kmunet.networks import build_network, count_parameters
from kmunet.runtime import resolve_device


def run_demo(output: str | Path = "runs/demo", device: str = "auto") -> dict:
    """Build a small 3D KM-UNet, run it on a synthetic volume and plot its learned filters.

    Returns:
        A summary dict (parameter count, output shape, seconds, filter plot path).
    """
    output = Path(output)
    dev = resolve_device(device)
    cfg = NetworkConfig(channels=(8, 16, 32), strides=(2, 2))
    model = build_network(cfg).to(dev)
    gen = torch.Generator().manual_seed(0)
    volume = torch.randn((1, cfg.in_channels, 32, 40, 24), generator=gen).to(dev)
    start = time.perf_counter()
    with torch.no_grad():
        logits = model(volume)
    seconds = time.perf_counter() - start
    first_kan = next(kan_layers(model))
    plot = plot_edge_functions(first_kan, output / "kan_filters.png")
    summary = {
        "parameters": count_parameters(model),
        "input_shape": tuple(volume.shape),
        "output_shape": tuple(logits.shape),
        "seconds": seconds,
        "filter_plot": str(plot),
        "device": str(dev),
    }
    print(f"KM-UNet 3D: {summary['parameters']:,} parameters on {dev}")
    print(f"forward {tuple(volume.shape)} -> {tuple(logits.shape)} in {seconds:.2f} s")
    print(f"learned KAN filters of the first layer: {plot}")
    return summary
