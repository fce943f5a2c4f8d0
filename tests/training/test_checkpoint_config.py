"""Regression tests: a checkpoint whose stored config this kmunet cannot read is named in the error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import kmunet
from kmunet.cli.main import main
from kmunet.config import load_config, to_dict
from kmunet.networks import build_network
from kmunet.training import model_from_checkpoint, models_from_checkpoints
from kmunet.training.checkpoint import (
    CHECKPOINT_FORMAT,
    FORMAT_VERSION,
    add_data_summary,
    load_checkpoint,
    save_checkpoint,
)


def _checkpoint(path: Path, edit=None) -> Path:
    config = load_config(None, ["network.channels=[4, 8]", "network.strides=[2]", "network.kan.grid_size=3"])
    stored = to_dict(config)
    if edit is not None:
        edit(stored)
    return save_checkpoint({
        "format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION,
        "state_dict": build_network(config.network).state_dict(), "config": stored, "epoch": 0,
    }, path)


def _newer(stored: dict) -> None:
    stored["network"]["attention"] = True  # a key of a newer kmunet


def test_unknown_stored_config_key_names_the_file_and_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _checkpoint(tmp_path / "newer.pt", _newer)
    expected = (re.escape(f"{ckpt}: stored config not understood by kmunet {kmunet.__version__} (")
                + r"unknown config key\(s\) \['attention'\] in 'network'")
    with pytest.raises(ValueError, match=expected):
        model_from_checkpoint(ckpt)
    with pytest.raises(ValueError, match=expected):
        models_from_checkpoints([_checkpoint(tmp_path / "ok.pt"), ckpt])
    with pytest.raises(ValueError, match=expected):
        add_data_summary(ckpt)
    from kmunet.training.checkpoint import stored_config

    with pytest.raises(ValueError, match=expected):
        stored_config(load_checkpoint(ckpt), ckpt)
    with pytest.raises(ValueError, match=r"^checkpoint: stored config not understood"):
        model_from_checkpoint(load_checkpoint(ckpt))  # a loaded dict has no file name
    assert main(["evaluate", "--checkpoint", str(ckpt), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(ckpt) in err and "stored config not understood" in err


def test_wrongly_typed_stored_config_names_the_file(tmp_path: Path) -> None:
    def bad(stored: dict) -> None:
        stored["train"]["epochs"] = "many"

    ckpt = _checkpoint(tmp_path / "bad.pt", bad)
    with pytest.raises(ValueError, match=re.escape(f"{ckpt}: stored config not understood") + ".*train.epochs"):
        models_from_checkpoints(ckpt)
    model, config = model_from_checkpoint(_checkpoint(tmp_path / "good.pt"))
    assert config.network.channels == (4, 8) and not model.training
