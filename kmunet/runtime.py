"""Process-level runtime helpers: device choice, CPU allocator tuning, one-line errors, output folders."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
from pathlib import Path
from typing import Iterator

import torch

from kmunet.checks import first_line  # noqa: F401  (re-exported: kmunet.runtime.first_line)

__all__ = ["resolve_device", "tune_cpu_allocator", "first_line", "new_folder", "DEVICES"]

#: Valid ``--device`` values.
DEVICES = ("auto", "cpu", "cuda")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_tuned = False


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or ``None``) -> CUDA when available (``LOCAL_RANK``'s GPU under torchrun), else CPU.

    Raises:
        ValueError: unknown device name, or ``"cuda"`` without a GPU.
    """
    if isinstance(device, torch.device):
        return device
    name = "auto" if device is None else str(device).lower()
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if name == "auto":
        return torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available")
        return torch.device(name if ":" in name else f"cuda:{local}")
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {device!r}; valid: {list(DEVICES)}")


def tune_cpu_allocator(cache_bytes: int = 1 << 30) -> bool:
    """Let glibc keep large freed blocks instead of returning them to the OS after every tensor.

    PyTorch's CPU allocator gets every tensor above glibc's mmap threshold (at most 32 MiB) straight
    from the kernel and returns it when freed, so each training step pays page faults again for its
    large activations (KAN convolutions expand their inputs ``1 + G + k``-fold). Raising the mmap and
    trim thresholds keeps those blocks in the heap for reuse, the same effect as the jemalloc/tcmalloc
    setting recommended for PyTorch CPU training. No-op (returns False) outside glibc Linux.

    Args:
        cache_bytes: blocks below this size are served from (and returned to) the heap.
    """
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, int(cache_bytes)) == 1 and mallopt(_M_TRIM_THRESHOLD, int(2 * cache_bytes)) == 1
    _tuned = ok
    return ok


@contextlib.contextmanager
def new_folder(path: str | Path) -> Iterator[Path]:
    """Create ``path`` (with its parents) for the body; remove it afterwards if this call created it
    and it is still empty, so a run that wrote nothing (or failed) leaves no empty folder behind."""
    path = Path(path)
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    finally:
        if created and path.is_dir() and not any(path.iterdir()):
            path.rmdir()
