"""Real data: hippocampus volumes (geometry with a tiny checkpoint; Dice with the shipped checkpoint)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from kmunet.inference import predict_folder
from tests.conftest import REPO_ROOT
from tests.inference.conftest import PARAMS, threshold_predictor

SHIPPED = REPO_ROOT / "checkpoints" / "hippocampus_kmunet.pt"


def _link_cases(hippo: Path, names: list[str], dst: Path) -> Path:
    """Symlink a few read-only volumes into ``dst`` (no copy of the shared data)."""
    dst.mkdir()
    for name in names:
        (dst / name).symlink_to(hippo / "imagesTr" / name)
    return dst


def _hippocampus(shared_data: Path) -> Path:
    hippo = shared_data / "hippocampus"
    if not (hippo / "imagesTr").is_dir():
        pytest.skip("hippocampus data not found")
    return hippo


def test_hippocampus_masks_match_label_geometry(tmp_path: Path, shared_data: Path, tiny_checkpoint: Path) -> None:
    hippo = _hippocampus(shared_data)
    names = sorted(p.name for p in (hippo / "imagesTr").glob("*.nii.gz") if not p.name.startswith("."))[:2]
    inp = _link_cases(hippo, names, tmp_path / "in")
    report = predict_folder(inp, tmp_path / "out", checkpoint=tiny_checkpoint, device="cpu", progress=False)
    assert report.exit_code == 0, report.to_dict()
    for name in names:
        label = nib.load(str(hippo / "labelsTr" / name))
        mask = nib.load(str(tmp_path / "out" / name))
        assert mask.shape == label.shape
        np.testing.assert_allclose(mask.affine, label.affine, atol=1e-5)
        assert int(mask.header["sform_code"]) == int(nib.load(str(hippo / "imagesTr" / name)).header["sform_code"])


def test_torchrun_sharding_splits_cases(tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hippo = _hippocampus(shared_data)
    names = sorted(p.name for p in (hippo / "imagesTr").glob("*.nii.gz") if not p.name.startswith("."))[:3]
    inp = _link_cases(hippo, names, tmp_path / "in")
    done = []
    for rank in (0, 1):
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", str(rank))
        rep = predict_folder(inp, tmp_path / "out", predictor=threshold_predictor, preprocessing=PARAMS,
                             device="cpu", progress=False)
        assert rep.report_json.endswith(f"predict_report.rank{rank}.json") and rep.exit_code == 0
        done += [c.case for c in rep.cases]
    assert sorted(done) == sorted(n[: -len(".nii.gz")] for n in names)


def test_shipped_checkpoint_dice_close_to_training_report(tmp_path: Path, shared_data: Path) -> None:
    if not SHIPPED.is_file():
        pytest.skip(f"shipped checkpoint not found: {SHIPPED}")
    from kmunet.config import ExperimentConfig, from_dict
    from kmunet.data import discover_cases, split_cases
    from kmunet.training import load_checkpoint

    hippo = _hippocampus(shared_data)
    ckpt = load_checkpoint(SHIPPED)
    reported = float(ckpt.get("metrics", {}).get("mean_dice", ckpt.get("best_metric", float("nan"))))
    if math.isnan(reported):
        pytest.skip("shipped checkpoint carries no validation Dice")
    config = from_dict(ExperimentConfig, ckpt["config"])
    _, val = split_cases(discover_cases(config.data, root=hippo), config.data)
    chosen = val[:4]  # validation cases of the training split
    inp = tmp_path / "in"
    inp.mkdir()
    for case in chosen:
        (inp / Path(case["image"]).name).symlink_to(Path(case["image"]).resolve())
    report = predict_folder(inp, tmp_path / "out", checkpoint=SHIPPED, device="cpu", progress=False)
    assert report.exit_code == 0, report.to_dict()
    dices = []
    for case in chosen:
        name = Path(case["image"]).name
        pred = np.asarray(nib.load(str(tmp_path / "out" / name)).dataobj)
        truth = np.asarray(nib.load(str(case["label"])).dataobj)
        for k in range(1, config.network.out_channels):
            p, t = pred == k, truth == k
            dices.append(2 * (p & t).sum() / max(p.sum() + t.sum(), 1))
    mean = float(np.mean(dices))
    assert mean >= reported - 0.1, f"mean Dice {mean:.3f} vs training report {reported:.3f}"
    assert json.loads(Path(report.report_json).read_text())["n_ok"] == len(chosen)


def test_shipped_checkpoint_warns_about_unfamiliar_inputs(tmp_path: Path, shared_data: Path) -> None:
    hippo = _hippocampus(shared_data)
    src = nib.load(str(hippo / "imagesTr" / "hippocampus_001.nii.gz"))
    inp = tmp_path / "in"
    inp.mkdir()
    nib.save(src, str(inp / "familiar.nii.gz"))
    coarse = src.affine.copy()
    coarse[:3, :3] *= 4.0  # 4 mm voxels: far outside the 1 mm training data
    nib.save(nib.Nifti1Image(np.asarray(src.dataobj), coarse), str(inp / "coarse.nii.gz"))
    lines: list[str] = []
    report = predict_folder(inp, tmp_path / "out", checkpoint=SHIPPED, device="cpu", progress=False, log=lines.append)
    assert report.exit_code == 0
    by_case = {c.case: c for c in report.cases}
    assert by_case["familiar"].warning == ""
    assert "voxel size 4x4x4 mm" in by_case["coarse"].warning and by_case["coarse"].status == "ok"
    assert any(line.startswith("warning:") and "coarse.nii.gz" in line for line in lines)
    saved = json.loads((tmp_path / "out" / "predict_report.json").read_text())
    assert {c["case"]: c["warning"] for c in saved["cases"]}["coarse"] == by_case["coarse"].warning
