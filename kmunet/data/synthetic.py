"""Synthetic MSD-style segmentation datasets for tests, the demo and CI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np


def _ellipsoid(grid: list[np.ndarray], centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    acc = np.zeros(grid[0].shape, dtype=np.float64)
    for g, c, r in zip(grid, centre, radii):
        acc += ((g - c) / r) ** 2
    return acc <= 1.0


def make_synthetic_dataset(
    out_dir: str | Path,
    n_cases: int = 8,
    shape: Sequence[int] = (32, 32, 32),
    spatial_dims: int = 3,
    seed: int = 0,
) -> Path:
    """Write an MSD-style dataset (``dataset.json``, ``imagesTr/``, ``labelsTr/``) of NIfTI files.

    Each image is a noisy "body" ellipsoid (intensity ~100, zero outside) holding two smaller
    ellipsoids: class 1 (bright, ~180) and class 2 (dark, ~50), with Gaussian noise (sigma 10). The
    affine has anisotropic spacing (1.2, 0.9, 1.5 mm), a flipped first axis ("LAS") and a non-zero
    origin, so reorientation is exercised. Labels are ``uint8`` 0/1/2. A small network learns it in
    well under a minute on CPU.

    Args:
        out_dir: output folder (created).
        n_cases: number of cases (>= 1).
        shape: spatial shape; with ``spatial_dims=2`` only the first two entries are used.
        spatial_dims: 2 (2D NIfTI) or 3.
        seed: seed of the generator (``numpy.random.default_rng``).

    Returns:
        ``out_dir`` as a ``Path``.

    Raises:
        ValueError: bad ``n_cases``, ``spatial_dims`` or ``shape``.
    """
    import nibabel as nib

    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if n_cases < 1:
        raise ValueError(f"n_cases must be >= 1, got {n_cases}")
    shape = tuple(int(s) for s in shape)
    if spatial_dims == 2 and len(shape) == 3:
        shape = shape[:2]
    if len(shape) != spatial_dims or any(s < 8 for s in shape):
        raise ValueError(f"shape must have {spatial_dims} entries >= 8, got {shape}")
    out = Path(out_dir)
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    size = np.asarray(shape, dtype=np.float64)
    grid = list(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij"))
    affine = np.diag([-1.2, 0.9, 1.5, 1.0])
    affine[:3, 3] = [20.0, -15.0, 7.5]
    training = []
    for i in range(n_cases):
        body = _ellipsoid(grid, size / 2 + rng.uniform(-1, 1, spatial_dims), size * rng.uniform(0.40, 0.46, spatial_dims))
        label = np.zeros(shape, dtype=np.uint8)
        for cls, offset in ((1, -0.14), (2, 0.14)):
            centre = size / 2 + rng.uniform(-0.06, 0.06, spatial_dims) * size
            centre[0] += offset * size[0]
            radii = size * rng.uniform(0.09, 0.14, spatial_dims)
            label[_ellipsoid(grid, centre, radii) & body] = cls
        image = np.where(body, 100.0, 0.0)
        image[label == 1] = 180.0
        image[label == 2] = 50.0
        image = image + body * rng.normal(0.0, 10.0, shape)
        name = f"synth_{i:03d}"
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine), str(out / "imagesTr" / f"{name}.nii.gz"))
        nib.save(nib.Nifti1Image(label, affine), str(out / "labelsTr" / f"{name}.nii.gz"))
        training.append({"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"})
    meta = {
        "name": f"Synthetic{spatial_dims}D",
        "description": "kmunet synthetic two-blob segmentation dataset",
        "tensorImageSize": f"{spatial_dims}D",
        "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "bright", "2": "dark"},
        "numTraining": n_cases,
        "numTest": 0,
        "training": training,
        "test": [],
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=1))
    return out
