"""Fixtures for inference tests: tiny checkpoints, synthetic NIfTI volumes, a threshold predictor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.conftest import SHARED_DATA

#: Preprocessing of the threshold predictor tests: RAS reorientation + z-score, no resampling.
PARAMS: dict[str, Any] = {
    "version": 1,
    "spatial_dims": 3,
    "in_channels": 1,
    "num_classes": 2,
    "class_names": ["background", "box"],
    "orientation": "RAS",
    "target_spacing": None,
    "normalization": "zscore",
    "ct_window": [-1000.0, 1000.0],
    "patch_size": [16, 16, 16],
}


def threshold_predictor(x: torch.Tensor) -> torch.Tensor:
    """Logits whose argmax is ``x > 0.1`` (z-scored intensities): class 1 = bright voxels."""
    return torch.cat([torch.zeros_like(x), 10.0 * x - 1.0], dim=1)


def make_volume(shape: tuple[int, int, int] = (20, 24, 16), seed: int = 0) -> np.ndarray:
    """Background 0, a dim region (20) and a bright off-centre box (100); returns float32."""
    rng = np.random.default_rng(seed)
    a = np.zeros(shape, np.float32)
    a[2:-2, 2:-2, 2:-2] = 20.0
    x, y, z = shape
    a[3 : x // 2, 4 : y - 8, 5 : z - 4] = 100.0
    a[x // 2 + 2, y - 4, 2] = 100.0  # a single bright voxel near a corner (catches flips)
    a += np.where(a > 0, rng.uniform(0, 1, shape), 0).astype(np.float32)
    return a


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray, sform_code: int = 1, qform_code: int = 1) -> Path:
    """Save ``data`` with explicit sform/qform codes."""
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, sform_code)
    img.set_qform(affine, qform_code)
    nib.save(img, str(path))
    return path


def make_tiny_checkpoint(path: Path, extra: dict[str, Any] | None = None) -> Path:
    """An untrained tiny KM-UNet checkpoint in the kmunet checkpoint layout."""
    from kmunet.config import ExperimentConfig, from_dict, to_dict
    from kmunet.data import preprocessing_params
    from kmunet.networks import build_network

    config = from_dict(
        ExperimentConfig,
        {
            "name": "tiny",
            "network": {"name": "kmunet", "channels": [4, 8], "strides": [2], "out_channels": 3},
            "data": {"patch_size": [16, 16, 16], "layout": "msd"},
            "train": {"sw_batch_size": 2},
        },
    )
    torch.manual_seed(0)
    model = build_network(config.network)
    ckpt = {
        "format": "kmunet-checkpoint",
        "format_version": 1,
        "kmunet_version": "test",
        "state_dict": model.state_dict(),
        "config": to_dict(config),
        "class_names": list(config.data.class_names),
        "preprocessing": preprocessing_params(config),
        "epoch": 0,
        "metrics": {},
        "best_metric": 0.0,
    }
    ckpt.update(extra or {})
    torch.save(ckpt, path)
    return path


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    """Path of an untrained tiny KM-UNet checkpoint."""
    return make_tiny_checkpoint(tmp_path / "tiny.pt")


@pytest.fixture
def hcrop_series() -> Path:
    """The 32-slice ``13_HCropVolume`` DICOM series (skips when the shared data is absent)."""
    folder = SHARED_DATA / "dicom_mr" / "Study1" / "13_HCropVolume"
    if not folder.is_dir():
        pytest.skip(f"shared DICOM data not found: {folder}")
    return folder
