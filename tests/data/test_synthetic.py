"""The synthetic dataset generator."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from kmunet.data import make_synthetic_dataset


def test_3d_dataset_layout_and_content(synth3d: Path) -> None:
    meta = json.loads((synth3d / "dataset.json").read_text())
    assert meta["numTraining"] == 6 and len(meta["training"]) == 6
    img = nib.load(synth3d / meta["training"][0]["image"])
    lab = nib.load(synth3d / meta["training"][0]["label"])
    assert img.shape == lab.shape == (20, 24, 28)
    assert "".join(nib.aff2axcodes(img.affine)) == "LAS" and np.allclose(img.affine, lab.affine)
    data, labels = img.get_fdata(), np.asarray(lab.dataobj)
    assert set(np.unique(labels)) == {0, 1, 2}
    # class 1 bright, class 2 dark, background body in between, outside zero
    assert data[labels == 1].mean() > data[(labels == 0) & (data != 0)].mean() > data[labels == 2].mean()
    assert np.count_nonzero(data == 0) > 0


def test_2d_dataset_and_determinism(tmp_path: Path) -> None:
    a = make_synthetic_dataset(tmp_path / "a", n_cases=2, spatial_dims=2, seed=3)
    b = make_synthetic_dataset(tmp_path / "b", n_cases=2, spatial_dims=2, seed=3)
    img_a = nib.load(a / "imagesTr" / "synth_001.nii.gz")
    assert img_a.shape == (32, 32)
    assert np.array_equal(img_a.get_fdata(), nib.load(b / "imagesTr" / "synth_001.nii.gz").get_fdata())
    assert set(np.unique(np.asarray(nib.load(a / "labelsTr" / "synth_001.nii.gz").dataobj))) == {0, 1, 2}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"spatial_dims": 4}, "spatial_dims"), ({"n_cases": 0}, "n_cases"), ({"shape": (32, 4, 32)}, "shape")],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_synthetic_dataset(tmp_path, **kwargs)
