"""Fixtures for kmunet.data tests: tiny synthetic datasets in every supported layout."""

from __future__ import annotations

import importlib.util
import shutil
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from kmunet.config import ExperimentConfig, load_config
from kmunet.data.synthetic import make_synthetic_dataset


def make_config(root: str | Path, spatial_dims: int = 3, **data: Any) -> ExperimentConfig:
    """A small config for ``root``: patch 16^d, no caching, extra ``data.*`` overrides as kwargs."""
    overrides = [
        f"data.root={root}",
        f"network.spatial_dims={spatial_dims}",
        f"data.patch_size={[16] * spatial_dims}",
        "data.cache=none",
        "train.batch_size=2",
    ]
    for key, value in data.items():
        overrides.append(f"data.{key}={value}")
    return load_config(None, overrides)


@pytest.fixture(scope="session")
def synth3d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MSD-style synthetic 3D dataset, 6 cases of 20 x 24 x 28 (read-only: copy before editing)."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth3d"), n_cases=6, shape=(20, 24, 28), seed=1)


@pytest.fixture(scope="session")
def synth2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MSD-style synthetic 2D NIfTI dataset, 5 cases of 40 x 36."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth2d"), n_cases=5, shape=(40, 36), spatial_dims=2)


@pytest.fixture
def folders3d(synth3d: Path, tmp_path: Path) -> Path:
    """``images/`` + ``labels/`` copy of the synthetic 3D dataset (editable per test)."""
    root = tmp_path / "folders"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for p in sorted((synth3d / "imagesTr").glob("*.nii.gz")):
        shutil.copy(p, root / "images" / p.name)
        shutil.copy(synth3d / "labelsTr" / p.name, root / "labels" / p.name)
    return root


def make_drive_like(root: Path, n: int = 3, shape: tuple[int, int] = (60, 52), seed: int = 0) -> Path:
    """Write a tiny DRIVE-style folder (RGB tif, 0/255 vessel gif, 0/255 FOV gif)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for sub in ("images", "1st_manual", "mask"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    fov = ((yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2) < (min(shape) / 2 - 1) ** 2
    for i in range(21, 21 + n):
        vessel = (np.abs(np.sin(xx / 4.0 + i) * 8 + shape[0] / 2 - yy) < 2) & fov
        rgb = np.stack([fov * 150 - vessel * 60, fov * 80 - vessel * 40, fov * 30], -1).astype(np.float64)
        rgb = np.clip(rgb + rng.normal(0, 5, rgb.shape) * fov[..., None], 0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(root / "images" / f"{i}_training.tif")
        Image.fromarray((vessel * 255).astype(np.uint8)).save(root / "1st_manual" / f"{i}_manual1.gif")
        Image.fromarray((fov * 255).astype(np.uint8)).save(root / "mask" / f"{i}_training_mask.gif")
    return root


@pytest.fixture
def drive_like(tmp_path: Path) -> Path:
    """A tiny DRIVE-style dataset with 3 cases."""
    return make_drive_like(tmp_path / "drive")


def write_dicom_series(folder: Path, volume: np.ndarray, spacing: tuple[float, float, float] = (0.8, 0.8, 2.0)) -> Any:
    """Write ``volume`` (x, y, z) as a DICOM series with SimpleITK; returns the SimpleITK image."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.transpose(2, 1, 0)).astype(np.int16))
    image.SetSpacing(spacing)
    image.SetOrigin((-10.0, 5.0, 2.0))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid = "1.2.826.0.1.3680043.2.1125.1." + str(zlib.crc32(folder.name.encode()) + 1)
    for z in range(image.GetDepth()):
        sl = image[:, :, z]
        origin = image.TransformIndexToPhysicalPoint((0, 0, z))
        for tag, value in (
            ("0008|0060", "MR"),
            ("0008|0016", "1.2.840.10008.5.1.4.1.1.4"),
            ("0008|0018", f"{series_uid}.{z + 1}"),
            ("0020|000d", series_uid + ".0"),
            ("0020|000e", series_uid),
            ("0020|0013", str(z + 1)),
            ("0020|0032", "\\".join(f"{v:.4f}" for v in origin)),
            ("0020|0037", "1\\0\\0\\0\\1\\0"),
            ("0018|0050", f"{spacing[2]:.4f}"),
            ("0028|0030", f"{spacing[1]:.4f}\\{spacing[0]:.4f}"),
        ):
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{z:04d}.dcm"))
        writer.Execute(sl)
    return image


def save_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    """Write a NIfTI file."""
    nib.save(nib.Nifti1Image(array, affine), str(path))


REPO_ROOT = Path(__file__).resolve().parents[2]


def load_script(name: str) -> Any:
    """Import ``data_scripts/<name>.py`` as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "data_scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
