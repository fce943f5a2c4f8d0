"""Config loading: defaults, strict YAML, overrides, round trip."""

from __future__ import annotations

import pytest

from kmunet.config import ExperimentConfig, apply_overrides, from_dict, load_config, save_config, to_dict


def test_defaults_and_round_trip(tmp_path) -> None:
    cfg = load_config()
    assert cfg == ExperimentConfig()
    path = tmp_path / "cfg.yaml"
    save_config(cfg, path)
    assert load_config(path) == cfg
    assert from_dict(ExperimentConfig, to_dict(cfg)) == cfg


def test_yaml_maps_onto_dataclasses_and_overrides_win(tmp_path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("name: x\nnetwork:\n  channels: [4, 8]\n  strides: [2]\n  kan:\n    grid_size: 7\ntrain:\n  epochs: 3\n")
    cfg = load_config(path, ["train.epochs=5", "network.kan.grid_range=[-3, 3]", "data.target_spacing=null"])
    assert cfg.network.channels == (4, 8) and cfg.network.kan.grid_size == 7
    assert cfg.train.epochs == 5 and cfg.network.kan.grid_range == (-3.0, 3.0) and cfg.data.target_spacing is None


def test_unknown_keys_and_bad_values_are_errors(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ValueError, match=r"bad.yaml.*unknown config key\(s\) \['epoch'\].*valid keys"):
        load_config(path)
    path.write_text("train:\n  epochs: three\n")
    with pytest.raises(ValueError, match="train.epochs"):
        load_config(path)
    with pytest.raises(ValueError, match="unknown key"):
        apply_overrides(ExperimentConfig(), ["train.epoch=3"])
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(ExperimentConfig(), ["train.epochs"])
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")
