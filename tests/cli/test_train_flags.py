"""Regression tests: ``kmunet train`` applies --data/--output/--init-from/--epochs/--device as typed values.

They used to be turned into ``--set key=value`` YAML strings, so ``--output "/tmp/exp #1"`` lost its
``#1`` (a YAML comment), ``--init-from ~`` became ``None`` and ``--data 2024`` / ``--data on`` /
``--data "/a: b"`` were refused or mangled.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

import kmunet.training
from kmunet.cli.main import main
from kmunet.config import ExperimentConfig


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[ExperimentConfig]:
    """Replace training by a stub that records the config ``kmunet train`` resolved."""
    configs: list[ExperimentConfig] = []

    def fake_train(config: ExperimentConfig, resume: bool = False, progress: bool = True) -> SimpleNamespace:
        configs.append(config)
        return SimpleNamespace(best_epoch=0, last_checkpoint=Path("/nonexistent/last.pt"))

    monkeypatch.setattr(kmunet.training, "train", fake_train)
    return configs


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text("data:\n  root: /yaml/data\ntrain:\n  epochs: 7\n  output_dir: /yaml/out\n  device: cuda\n")
    return path


@pytest.mark.parametrize("value", ["/tmp/exp #1", "2024", "on", "/a: b", "~", "null", "[1, 2]", "1e-3"])
def test_path_flags_are_taken_as_given(config_file: Path, captured: list, value: str) -> None:
    assert main(["train", "--config", str(config_file), "--data", value, "--output", value, "--init-from", value]) == 0
    (cfg,) = captured
    assert cfg.data.root == value and cfg.train.output_dir == value and cfg.train.init_from == value


def test_flags_win_over_yaml_and_set(config_file: Path, captured: list) -> None:
    argv = ["train", "--config", str(config_file), "--set", "train.epochs=9", "--set", "data.root=/set/data",
            "--set", "train.device=auto", "--set", "train.output_dir=/set/out", "--set", "train.init_from=/set/init.pt"]
    assert main(argv) == 0  # no flags: --set over the YAML
    cfg = captured.pop()
    assert (cfg.train.epochs, cfg.data.root, cfg.train.device) == (9, "/set/data", "auto")
    assert (cfg.train.output_dir, cfg.train.init_from) == ("/set/out", "/set/init.pt")
    assert main(argv + ["--epochs", "3", "--data", "/flag/data", "--device", "cpu", "--output", "/flag/out",
                        "--init-from", "/flag/init.pt"]) == 0
    cfg = captured.pop()
    assert (cfg.train.epochs, cfg.data.root, cfg.train.device) == (3, "/flag/data", "cpu")
    assert (cfg.train.output_dir, cfg.train.init_from) == ("/flag/out", "/flag/init.pt")
    assert main(["train", "--config", str(config_file)]) == 0  # neither: the YAML
    cfg = captured.pop()
    assert (cfg.train.epochs, cfg.data.root, cfg.train.device, cfg.train.init_from) == (7, "/yaml/data", "cuda", None)


def test_bad_epochs_flag_is_a_one_line_error(config_file: Path, captured: list, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--config", str(config_file), "--epochs", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.epochs must be a positive integer, got 0" in err
    assert not captured
