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


def test_yaml_1_2_floats_are_numbers_in_files_and_overrides(tmp_path) -> None:
    # PyYAML (YAML 1.1) reads 1e-3 as the string "1e-3", which the config then refused
    path = tmp_path / "cfg.yaml"
    path.write_text("train:\n  lr: 1e-3\n  weight_decay: 5E-4\n  grad_clip: 1.0e3\ndata:\n  label_tolerance: .5e-2\n")
    cfg = load_config(path)
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.grad_clip) == (1e-3, 5e-4, 1000.0)
    assert cfg.data.label_tolerance == 0.005
    cfg = load_config(None, ["train.lr=1e-3", "train.weight_decay=5E-4", "train.grad_clip=1.0e3", "data.ct_window=[-1e3, 2E+3]"])
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.grad_clip) == (1e-3, 5e-4, 1000.0)
    assert cfg.data.ct_window == (-1000.0, 2000.0)
    # integers stay integers, other strings stay strings; PyYAML's own SafeLoader is left as it was
    assert load_config(None, ["train.epochs=10", "name=1e3x"]).train.epochs == 10
    assert load_config(None, ["name=1e3x"]).name == "1e3x"
    with pytest.raises(ValueError, match="train.epochs: expected an integer, got 1000.0"):
        load_config(None, ["train.epochs=1e3"])
    import yaml

    assert yaml.safe_load("a: 1e-3") == {"a": "1e-3"}


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1e999"])
def test_non_finite_numbers_are_refused(tmp_path, value: str) -> None:
    with pytest.raises(ValueError, match="train.lr: expected a finite number"):
        load_config(None, [f"train.lr={value}"])
    with pytest.raises(ValueError, match="data.flip_prob: expected a finite number"):
        load_config(None, [f"data.flip_prob={value}"])
    path = tmp_path / "cfg.yaml"
    path.write_text(f"data:\n  ct_window: [{value}, 1.0]\n")
    with pytest.raises(ValueError, match=r"cfg.yaml: data.ct_window\[0\]: expected a finite number"):
        load_config(path)


def test_unet_patch_size_must_be_divisible_by_the_total_stride(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"data.patch_size \[30, 32, 32\] is not divisible by the total stride 8.*"
                                         r"data.patch_size=\[32, 32, 32\]"):
        load_config(None, ["network.name=unet", "data.patch_size=[30, 32, 32]"])
    path = tmp_path / "unet.yaml"
    path.write_text("network:\n  name: unet\n  channels: [8, 16, 32]\n  strides: [2, 3]\ndata:\n  patch_size: [24, 24, 20]\n")
    with pytest.raises(ValueError, match=r"unet.yaml: data.patch_size \[24, 24, 20\] .* total stride 6"):
        load_config(path)
    assert load_config(None, ["network.name=unet", "data.patch_size=[24, 24, 18]", "network.channels=[8, 16, 32]",
                              "network.strides=[2, 3]"]).data.patch_size == (24, 24, 18)
    # KM-UNet pads to its total stride internally: any patch size is fine
    assert load_config(None, ["data.patch_size=[30, 31, 32]"]).data.patch_size == (30, 31, 32)


def test_replace_values_sets_typed_values_without_yaml_parsing() -> None:
    from kmunet.config import replace_values

    cfg = replace_values(ExperimentConfig(), {"data.root": "2024", "train.output_dir": "/tmp/exp #1",
                                              "train.init_from": "~", "train.epochs": 3})
    assert (cfg.data.root, cfg.train.output_dir, cfg.train.init_from, cfg.train.epochs) == ("2024", "/tmp/exp #1", "~", 3)
    with pytest.raises(ValueError, match="train.epochs must be a positive integer"):
        replace_values(ExperimentConfig(), {"train.epochs": 0})
    with pytest.raises(ValueError, match="train.epochs: expected an integer"):
        replace_values(ExperimentConfig(), {"train.epochs": "3"})
    with pytest.raises(ValueError, match="unknown config key 'train.epoch'"):
        replace_values(ExperimentConfig(), {"train.epoch": 3})


def test_saved_config_round_trips_strings_that_look_like_exponent_floats(tmp_path) -> None:
    from kmunet.config import replace_values

    config = replace_values(ExperimentConfig(), {"train.output_dir": "1e-3", "name": "2E5"})
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config  # quoted when saved, strings when read back


@pytest.mark.parametrize("value", ["._e1", ".e1", "_1e3"])
def test_malformed_exponents_are_not_numbers(value: str) -> None:
    with pytest.raises(ValueError, match="train.lr"):  # a string for a number field: named, not a bare float() error
        apply_overrides(ExperimentConfig(), [f"train.lr={value}"])
