"""A real ``torchrun`` launch (2 CPU processes) shards the cases and merges the reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.conftest import REPO_ROOT
from tests.inference.conftest import make_tiny_checkpoint, make_volume, save_nifti


def test_torchrun_two_processes(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(3):
        save_nifti(inp / f"c{i}.nii.gz", make_volume(seed=i), np.eye(4))
    ckpt = make_tiny_checkpoint(tmp_path / "t.pt")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "kmunet",
         "predict", "--input", str(inp), "--output", str(tmp_path / "out"), "--checkpoint", str(ckpt),
         "--device", "cpu", "--no-progress"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, errors="replace", timeout=110,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    ranks = [json.loads((tmp_path / "out" / f"predict_report.rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(len(r["cases"]) for r in ranks) == [1, 2]
    merged = json.loads((tmp_path / "out" / "predict_report.json").read_text())
    assert [c["case"] for c in merged["cases"]] == ["c0", "c1", "c2"] and merged["n_ok"] == 3
    assert merged["settings"]["kmunet_version"] and merged["settings"]["device"] == "cpu"  # kept by the merge
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == ["c0.nii.gz", "c1.nii.gz", "c2.nii.gz"]
