"""Regression tests: ``kmunet evaluate`` checks the cases it scores and names the bad file and problem."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from kmunet.cli.main import main
from kmunet.config import ExperimentConfig, load_config, to_dict
from kmunet.data import discover_cases, make_synthetic_dataset, preprocessing_params, split_cases
from kmunet.networks import build_network
from kmunet.training.checkpoint import CHECKPOINT_FORMAT, FORMAT_VERSION, load_checkpoint, save_checkpoint


def _config(root: str | Path) -> ExperimentConfig:
    return load_config(None, [
        f"data.root={root}", "network.channels=[4, 8]", "network.strides=[2]", "network.kan.grid_size=3",
        "data.class_names=[background, bright, dark]", "data.patch_size=[16, 16, 16]", "data.cache=none",
        "data.val_fraction=0.34", "train.sw_batch_size=2",
    ])


def _write_checkpoint(root: str | Path, path: Path) -> Path:
    """An untrained tiny network's checkpoint whose config stores ``data.root = root`` as given."""
    config = _config(root)
    return save_checkpoint({
        "format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION,
        "state_dict": build_network(config.network).state_dict(), "config": to_dict(config),
        "class_names": list(config.data.class_names), "preprocessing": preprocessing_params(config), "epoch": 0,
    }, path)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth"), n_cases=6, shape=(16, 16, 16), seed=3)


@pytest.fixture
def data(synth: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(synth, root)
    return root


def _val_case(root: Path) -> dict:
    """The first case of the checkpoint config's validation split."""
    cfg = _config(root).data
    return split_cases(discover_cases(cfg), cfg)[1][0]


def _evaluate(ckpt: Path, root: Path | None, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    argv = ["evaluate", "--checkpoint", str(ckpt), "--device", "cpu"] + (["--data", str(root)] if root else [])
    code = main(argv)
    return code, capsys.readouterr().err.strip()


def test_label_value_out_of_range_names_the_label_file(data: Path, tmp_path: Path, capsys) -> None:
    ckpt = _write_checkpoint(data, tmp_path / "best.pt")
    label = Path(_val_case(data)["label"])
    lab = nib.load(label)
    values = np.asarray(lab.dataobj).copy()
    values[0, 0, 0] = 5
    nib.save(nib.Nifti1Image(values, lab.affine), str(label))
    code, err = _evaluate(ckpt, data, capsys)
    assert code == 1 and len(err.splitlines()) == 1, err
    assert str(label) in err and "label values [5] not in [0, 1, 2]" in err and "out of bounds" not in err


def test_truncated_image_names_the_file(data: Path, tmp_path: Path, capsys) -> None:
    ckpt = _write_checkpoint(data, tmp_path / "best.pt")
    image = Path(_val_case(data)["image"])
    image.write_bytes(image.read_bytes()[:-200])
    code, err = _evaluate(ckpt, data, capsys)
    assert code == 1 and len(err.splitlines()) == 1, err
    assert str(image) in err and "truncated gzip stream" in err and "LoadImaged" not in err


def test_listed_but_missing_label_names_the_file(data: Path, tmp_path: Path, capsys) -> None:
    ckpt = _write_checkpoint(data, tmp_path / "best.pt")
    label = Path(_val_case(data)["label"])
    label.unlink()
    code, err = _evaluate(ckpt, data, capsys)
    assert code == 1 and len(err.splitlines()) == 1, err
    assert str(label) in err and "label file not found" in err and "LoadImaged" not in err


def test_several_problems_are_each_listed(data: Path, tmp_path: Path, capsys) -> None:
    ckpt = _write_checkpoint(data, tmp_path / "best.pt")
    cfg = _config(data).data
    val = split_cases(discover_cases(cfg), cfg)[1]
    assert len(val) >= 2
    for case in val[:2]:
        Path(case["label"]).unlink()
    code, err = _evaluate(ckpt, data, capsys)
    lines = err.splitlines()
    assert code == 1 and len(lines) == 3, err
    assert all(line.startswith("FATAL ") for line in lines[:2])
    assert "2 fatal problems in the 2 evaluated case(s)" in lines[2]


def test_relative_root_stored_in_the_checkpoint_gets_a_hint(data: Path, tmp_path: Path, capsys,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(data.parent)
    ckpt = _write_checkpoint("data", tmp_path / "best.pt")  # data.root stored as typed: relative
    monkeypatch.chdir(tmp_path / "..")
    code, err = _evaluate(ckpt, None, capsys)
    assert code == 1
    assert err == ("kmunet evaluate: error: data folder not found: data "
                   "(the path stored in the checkpoint; pass --data DIR)")
    code, err = _evaluate(ckpt, tmp_path / "nowhere", capsys)  # typed by the user: no hint
    assert code == 1 and err.endswith(f"data folder not found: {tmp_path / 'nowhere'}")


def test_unlabelled_images_are_left_out_with_a_warning(data: Path, tmp_path: Path, capsys) -> None:
    ckpt = _write_checkpoint(data, tmp_path / "best.pt")
    folders = tmp_path / "folders"
    shutil.copytree(data / "imagesTr", folders / "images")
    shutil.copytree(data / "labelsTr", folders / "labels")
    shutil.copy(folders / "images" / "synth_000.nii.gz", folders / "images" / "extra.nii.gz")
    out_json = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--device", "cpu", "--data", str(folders),
                 "--output", str(out_json)]) == 0
    err = capsys.readouterr().err
    assert "warning: 1 image(s) without a label left out" in err and "extra.nii.gz" in err
    assert "extra" not in json.loads(out_json.read_text())["cases"]


def test_split_train_scores_the_training_cases(data: Path, tmp_path: Path, capsys) -> None:
    ckpt = _write_checkpoint(data, tmp_path / "best.pt")
    cfg = _config(data).data
    train, val = split_cases(discover_cases(cfg), cfg)
    results = {}
    for split in ("train", "val"):
        out_json = tmp_path / f"{split}.json"
        assert main(["evaluate", "--checkpoint", str(ckpt), "--device", "cpu", "--split", split,
                     "--output", str(out_json)]) == 0
        results[split] = json.loads(out_json.read_text())
        expected = {"train": "training", "val": "validation"}[split]
        assert f"{len(results[split]['cases'])} {expected} cases" in capsys.readouterr().out
    assert results["train"]["split"] == "train" and results["val"]["split"] == "val"
    assert results["train"]["cases"] == [c["name"] for c in train]
    assert results["val"]["cases"] == [c["name"] for c in val]


def test_split_train_scores_the_subset_a_train_fraction_checkpoint_trained_on(
    data: Path, tmp_path: Path, capsys
) -> None:
    full = _write_checkpoint(data, tmp_path / "full.pt")
    ckpt = load_checkpoint(full)
    ckpt["config"]["data"]["train_fraction"] = 0.5
    half = save_checkpoint(ckpt, tmp_path / "half.pt")
    cfg = load_config(None, [f"data.root={data}", "data.val_fraction=0.34", "data.train_fraction=0.5"]).data
    train_half, val = split_cases(discover_cases(cfg), cfg)
    out_json = tmp_path / "half.json"
    assert main(["evaluate", "--checkpoint", str(half), "--device", "cpu", "--split", "train",
                 "--output", str(out_json)]) == 0
    assert json.loads(out_json.read_text())["cases"] == [c["name"] for c in train_half]
    assert len(train_half) == 2  # half of the 4 training cases of 6
    capsys.readouterr()
    # The same validation cases: the pair is scored on them, but not on training cases they do not share.
    assert main(["evaluate", "--checkpoint", str(full), str(half), "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(full), str(half), "--device", "cpu", "--split", "train"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "half.pt" in err and "data.train_fraction" in err, err
    assert "members trained on the same cases" in err


def test_unknown_split_lists_the_valid_ones(data: Path, tmp_path: Path, capsys) -> None:
    ckpt = _write_checkpoint(data, tmp_path / "best.pt")
    assert main(["evaluate", "--checkpoint", str(ckpt), "--device", "cpu", "--split", "test"]) == 1
    assert capsys.readouterr().err.strip() == (
        "kmunet evaluate: error: unknown split 'test'; valid: ['val', 'train']")
