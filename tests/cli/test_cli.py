"""The console script: help lists every command, bad arguments give one-line errors, the demo runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kmunet.cli.main import COMMAND_MODULES, main


def test_help_lists_every_command(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for module in COMMAND_MODULES:
        assert module.replace("_", "-") in out


def test_user_errors_are_one_line_with_nonzero_exit(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epoch: 3\n")
    assert main(["train", "--config", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.yaml" in err and "epoch" in err


def test_demo_end_to_end_short(tmp_path: Path, capsys) -> None:
    from kmunet.demo import run_demo

    summary = run_demo(tmp_path / "demo", device="cpu", epochs=1, overrides=["train.val_every=1"], progress=False)
    assert "\r" not in capsys.readouterr().err  # no progress bars: clean log files
    assert 0.0 <= summary["best_dice"] <= 1.0
    assert Path(summary["checkpoint"]).is_file() and Path(summary["filter_plot"]).is_file()
    report = json.loads((tmp_path / "demo" / "predictions" / "predict_report.json").read_text())
    assert report["cases"] and all(case["status"] == "ok" for case in report["cases"])
    assert len(list((tmp_path / "demo" / "predictions").glob("*.nii.gz"))) == 3
    # a second demo replaces its own earlier run; a user folder named by --set is never removed
    again = run_demo(tmp_path / "demo", device="cpu", epochs=1, progress=False)
    assert Path(again["checkpoint"]).is_file()
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "config.yaml").write_text("precious: 1\n")
    with pytest.raises(ValueError, match="already holds a run"):
        run_demo(tmp_path / "demo", device="cpu", epochs=1, overrides=[f"train.output_dir={mine}"], progress=False)
    assert (mine / "config.yaml").read_text() == "precious: 1\n"
