"""Training: tiny end-to-end runs, exact resume, data validation gate, schedules, AMP choice, DDP."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from kmunet.config import ExperimentConfig, apply_overrides, load_config
from kmunet.data import make_synthetic_dataset
from kmunet.training import (
    amp_settings,
    evaluate_checkpoint,
    load_checkpoint,
    lr_factor,
    model_from_checkpoint,
    train,
)
from kmunet.training.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[2]


def tiny_config(data: Path, output: Path, *extra: str) -> ExperimentConfig:
    return apply_overrides(
        ExperimentConfig(),
        [
            f"data.root={data}",
            f"train.output_dir={output}",
            "network.channels=[4, 8]",
            "network.strides=[2]",
            "network.kan.grid_size=3",
            "data.class_names=[background, a, b]",
            "data.patch_size=[16, 16, 16]",
            "data.samples_per_image=1",
            "data.cache=none",
            "data.val_fraction=0.34",
            "train.epochs=2",
            "train.batch_size=2",
            "train.lr=0.01",
            "train.warmup_epochs=0",
            "train.sw_batch_size=2",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("data"), n_cases=6, shape=(16, 16, 16), seed=3)


def test_two_epochs_write_loadable_checkpoints_and_logs(tiny_data: Path, tmp_path: Path) -> None:
    result = train(tiny_config(tiny_data, tmp_path / "run", "train.epochs=3"))
    assert result.epochs_run == 3 and result.best_epoch >= 1
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < losses[0]
    for name in ("best.pt", "last.pt", "config.yaml", "metrics.csv", "curves.png"):
        assert (tmp_path / "run" / name).is_file(), name
    assert list((tmp_path / "run" / "tensorboard").iterdir())
    raw = torch.load(tmp_path / "run" / "best.pt", weights_only=True)  # must never need pickle code
    assert raw["format"] == "kmunet-checkpoint" and raw["class_names"] == ["background", "a", "b"]
    assert raw["preprocessing"]["spatial_dims"] == 3 and raw["kmunet_version"]
    summary = raw["data_summary"]  # the training data's range, for predict's out-of-domain warning
    assert set(summary) == {"spacing_min", "spacing_max", "shape_min", "shape_max"}
    assert len(summary["spacing_min"]) == 3 and all(lo <= hi for lo, hi in zip(summary["shape_min"], summary["shape_max"]))
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert {"optimizer", "scheduler", "rng"} <= set(last)
    model, cfg = model_from_checkpoint(tmp_path / "run" / "best.pt")
    assert cfg.network.channels == (4, 8)
    assert model(torch.zeros(1, 1, 16, 16, 16)).shape == (1, 3, 16, 16, 16)
    assert load_config(tmp_path / "run" / "config.yaml").network == cfg.network
    assert not list((tmp_path / "run").glob(".*tmp*"))

    # `kmunet evaluate` rebuilds the same validation split and reproduces the best epoch's score.
    best_row = next(r for r in result.history if r["epoch"] == result.best_epoch)
    scores = evaluate_checkpoint(tmp_path / "run" / "best.pt", output=tmp_path / "eval.json")
    assert scores["mean_dice"] == pytest.approx(best_row["val_mean_dice"], abs=1e-6)
    assert scores["epoch"] == result.best_epoch and len(scores["cases"]) == 2 and not scores["tta"]
    written = json.loads((tmp_path / "eval.json").read_text(), parse_constant=pytest.fail)  # strict JSON: no NaN
    assert written["mean_dice"] == pytest.approx(scores["mean_dice"])
    # Per-case scores, in the order of "cases", average to the per-class means.
    assert [r["case"] for r in scores["per_case"]] == scores["cases"] == [r["case"] for r in written["per_case"]]
    for name, value in scores["dice"].items():
        per_case = [r["dice"][name] for r in scores["per_case"] if not math.isnan(r["dice"][name])]
        assert value == pytest.approx(sum(per_case) / len(per_case), abs=1e-6)
    mirrored = evaluate_checkpoint(tmp_path / "run" / "best.pt", tta=True)
    assert mirrored["mirror_axes"] == [0] and 0.0 <= mirrored["mean_dice"] <= 1.0


def test_evaluate_checkpoint_rejects_missing_data(tiny_data: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from kmunet.cli.main import main

    train(tiny_config(tiny_data, tmp_path / "run", "train.epochs=1"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        evaluate_checkpoint(tmp_path / "run" / "best.pt", tmp_path / "nowhere")
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--data", str(tmp_path / "nowhere")]) == 1
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--tta", "--per-case"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = out[out.index("per case, worst first:") + 2:]  # after the header line: one row per validation case
    assert len(rows) == 2 and all(r.split()[0].startswith("synth_") for r in rows)
    means = [float(r.split()[3]) for r in rows]
    assert means == sorted(means)
    with pytest.raises(ValueError, match="is a folder"):  # checked before any inference
        evaluate_checkpoint(tmp_path / "run" / "best.pt", output=tmp_path)


def test_evaluate_warns_about_differently_named_labels(tmp_path: Path) -> None:
    from kmunet.training.evaluation import _label_name_mismatch

    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "Anterior", "2": "Posterior"}}))
    assert _label_name_mismatch(tmp_path, ["background", "anterior", "posterior"]) == ""  # case does not matter
    assert "names the labels" in _label_name_mismatch(tmp_path, ["background", "a", "b"])
    assert _label_name_mismatch(tmp_path / "none", ["background"]) == ""


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_resume_reproduces_uninterrupted_run_exactly(tiny_data: Path, tmp_path: Path, optimizer: str) -> None:
    # SGD's Nesterov momentum buffers must be restored as exactly as AdamW's moments
    straight = train(tiny_config(tiny_data, tmp_path / "straight", f"train.optimizer={optimizer}"))
    config = tiny_config(tiny_data, tmp_path / "resumed", f"train.optimizer={optimizer}")
    _run_until(config, stop_after=1)  # the 2-epoch run is killed after its first epoch
    resumed = train(config, resume=True)
    _assert_same_tensors(load_checkpoint(straight.last_checkpoint)["state_dict"],
                         load_checkpoint(resumed.last_checkpoint)["state_dict"])
    assert resumed.epochs_run == 1


def test_resume_checks_the_network_and_says_when_done(tiny_data: Path, tmp_path: Path, capsys) -> None:
    config = tiny_config(tiny_data, tmp_path / "run", "train.epochs=1")
    train(config)
    with pytest.raises(ValueError, match=r"changed settings \(network.channels: \[4, 8\] in the run, \[8, 16\] asked"):
        train(apply_overrides(config, ["network.channels=[8, 16]", "train.epochs=2"]), resume=True)
    # a changed split would leak training cases into validation; a changed lr would be overridden by the
    # restored optimizer while the saved config claimed it
    with pytest.raises(ValueError, match=r"data.seed: 0 in the run, 7 asked, data.val_fraction: 0.34 in the run, 0.5 asked"):
        train(apply_overrides(config, ["data.seed=7", "data.val_fraction=0.5", "train.epochs=2"]), resume=True)
    with pytest.raises(ValueError, match=r"train.lr: 0.01 in the run, 0.5 asked"):
        train(apply_overrides(config, ["train.lr=0.5", "train.epochs=2"]), resume=True)
    # the run's folder is refused without --resume, whatever is asked
    with pytest.raises(ValueError, match=r"already holds a run \(last.pt, best.pt, config.yaml, metrics.csv\); pass --resume"):
        train(config)
    capsys.readouterr()
    assert train(config, resume=True).epochs_run == 0
    assert "already finished epoch 1 of 1" in capsys.readouterr().out


def test_failed_start_leaves_no_output_folder(tmp_path: Path) -> None:
    # empty data.root: the synthetic dataset is generated into the output folder, then the missing
    # --init-from checkpoint stops the run; nothing of it may remain
    config = tiny_config(tmp_path, tmp_path / "run", "data.root=''", f"train.init_from={tmp_path / 'missing.pt'}")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        train(config)
    assert not (tmp_path / "run").exists()
    existing = tmp_path / "mine"
    existing.mkdir()
    (existing / "notes.txt").write_text("keep me")
    with pytest.raises(FileNotFoundError):
        train(apply_overrides(config, [f"train.output_dir={existing}"]))
    assert (existing / "notes.txt").read_text() == "keep me"  # a folder that existed before is never removed
    (existing / "config.yaml").write_text("mine: 1\n")  # a folder with a config.yaml of the user's
    with pytest.raises(ValueError, match=r"mine: already holds a run \(config.yaml\)"):
        train(apply_overrides(config, [f"train.output_dir={existing}"]))
    assert (existing / "config.yaml").read_text() == "mine: 1\n"
    with pytest.raises(ValueError, match="notes.txt: exists and is not a folder"):
        train(apply_overrides(config, [f"train.output_dir={existing / 'notes.txt'}"]))


def test_config_errors_are_one_line_value_errors(tmp_path: Path) -> None:
    for override, match in [("train.sw_overlap=1.0", r"train.sw_overlap must be in \[0, 1\), got 1.0"),
                            ("train.sw_batch_size=0", "train.sw_batch_size must be a positive integer, got 0"),
                            ("train.lr=-1", "train.lr must be a finite number >= 0, got -1.0"),
                            ("train.schedule=step", r"unknown train.schedule 'step'; valid: \['cosine', 'poly'\]"),
                            ("train.optimizer=lbfgs", r"unknown train.optimizer 'lbfgs'; valid: \['adamw', 'sgd'\]"),
                            ("train.momentum=1.0", r"train.momentum must be in \[0, 1\), got 1.0"),
                            ("train.label_smoothing=1", r"train.label_smoothing must be in \[0, 1\), got 1")]:
        with pytest.raises(ValueError, match=match):
            load_config(None, [override])
    with pytest.raises(ValueError, match="config override: train.lr: expected a number, got 'abc'"):
        load_config(None, ["train.lr=abc"])
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(None, ["train.lr=[1"])
    broken = tmp_path / "broken.yaml"
    broken.write_text("network: [1\n")
    with pytest.raises(ValueError, match=r"broken.yaml: not valid YAML .* line 2"):
        load_config(broken)


def test_init_from_starts_from_the_checkpoint_weights(tiny_data: Path, tmp_path: Path) -> None:
    source = train(tiny_config(tiny_data, tmp_path / "source", "train.epochs=1"))
    # lr 0: the fine-tuning run must end exactly where the source checkpoint's weights are.
    tuned = train(tiny_config(tiny_data, tmp_path / "tuned", "train.epochs=1", "train.lr=0.0",
                              f"train.init_from={source.best_checkpoint}"))
    a = load_checkpoint(source.best_checkpoint)
    b = load_checkpoint(tuned.last_checkpoint)
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert b["config"]["train"]["init_from"] == str(source.best_checkpoint)
    assert b["epoch"] == 0  # a fresh run: epochs, optimizer and schedule start afresh

    with pytest.raises(ValueError, match=r"source.*best\.pt: weights do not fit this network.*channels"):
        train(tiny_config(tiny_data, tmp_path / "wide", "network.channels=[8, 16]",
                          f"train.init_from={source.best_checkpoint}"))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        train(tiny_config(tiny_data, tmp_path / "none", f"train.init_from={tmp_path / 'missing.pt'}"))


DEEP = ("network.channels=[4, 8, 8]", "network.strides=[2, 2]", "network.deep_supervision=1", "train.ema_decay=0.9")


def test_deep_supervision_with_weight_averaging_resumes_exactly(tiny_data: Path, tmp_path: Path) -> None:
    straight = train(tiny_config(tiny_data, tmp_path / "straight", *DEEP))
    config = tiny_config(tiny_data, tmp_path / "resumed", *DEEP)
    _run_until(config, stop_after=1)
    resumed = train(config, resume=True)
    a, b = load_checkpoint(straight.last_checkpoint), load_checkpoint(resumed.last_checkpoint)
    for part in ("state_dict", "train_state_dict"):  # the average and the raw weights both continue exactly
        _assert_same_tensors(a[part], b[part])
    assert a["ema_updates"] == b["ema_updates"] == 2 * 2  # 2 epochs of 2 steps (4 training cases, batch 2)
    assert any(k.startswith("aux_heads.") for k in a["state_dict"])
    # the checkpoints hold the average, which is not the last weights
    assert not all(torch.equal(a["state_dict"][k], a["train_state_dict"][k]) for k in a["state_dict"])
    best = load_checkpoint(straight.best_checkpoint)
    assert "train_state_dict" not in best  # best.pt holds the weights to use: the average
    model, cfg = model_from_checkpoint(straight.best_checkpoint)  # inference: plain logits
    assert cfg.network.deep_supervision == 1 and cfg.train.ema_decay == 0.9
    assert model(torch.zeros(1, 1, 16, 16, 16)).shape == (1, 3, 16, 16, 16)


GRID_SCHEDULE = ("train.grid_update_epochs=[0]", "train.grid_extend=[[1, 5]]", "network.kan.grid_eps=1.0")


def test_kan_grid_update_and_extension_schedule_resumes_exactly(tiny_data: Path, tmp_path: Path) -> None:
    # epoch 0 adapts every grid to a training batch, epoch 1 refines G = 3 -> 5 (new parameter shapes,
    # new optimizer); a run killed between the two redoes the extension on resume and ends identical
    straight = train(tiny_config(tiny_data, tmp_path / "straight", *GRID_SCHEDULE))
    config = tiny_config(tiny_data, tmp_path / "resumed", *GRID_SCHEDULE)
    _run_until(config, stop_after=1)
    after_update = load_checkpoint(tmp_path / "resumed" / "last.pt")
    resumed = train(config, resume=True)
    a = load_checkpoint(straight.last_checkpoint)
    _assert_same_tensors(a["state_dict"], load_checkpoint(resumed.last_checkpoint)["state_dict"])
    grids = [k for k in after_update["state_dict"] if k.endswith(".grid")]
    assert grids
    initial = torch.linspace(-2.0, 2.0, 4)  # the G + 1 = 4 interior knots of grid_range [-2, 2] at init
    for key in grids:
        grid = after_update["state_dict"][key]  # (in, G + 2k + 1) after the update, still G = 3
        assert grid.shape[1] == 3 + 2 * 3 + 1 and torch.isfinite(grid).all()
        assert a["state_dict"][key].shape[1] == 5 + 2 * 3 + 1  # extended
    # the update fitted the grids to the data: not every channel keeps the initial interior knots
    interiors = [after_update["state_dict"][k][:, 3:7] for k in grids]  # (in, G + 1) interior knots, k = 3
    assert not all(torch.allclose(knots, initial.expand_as(knots)) for knots in interiors)
    assert after_update["config"]["network"]["kan"]["grid_size"] == 3
    assert a["config"]["network"]["kan"]["grid_size"] == 5  # inference rebuilds the extended network
    model, cfg = model_from_checkpoint(straight.last_checkpoint)
    assert cfg.network.kan.grid_size == 5
    assert torch.isfinite(model(torch.zeros(1, 1, 16, 16, 16))).all()


def test_init_from_adds_or_drops_deep_supervision_heads(tiny_data: Path, tmp_path: Path) -> None:
    plain = ("network.channels=[4, 8, 8]", "network.strides=[2, 2]")
    source = train(tiny_config(tiny_data, tmp_path / "plain", *plain, "train.epochs=1"))
    deep = train(tiny_config(tiny_data, tmp_path / "deep", *plain, "network.deep_supervision=1", "train.epochs=1",
                             "train.lr=0.0", f"train.init_from={source.best_checkpoint}"))
    a, b = load_checkpoint(source.best_checkpoint)["state_dict"], load_checkpoint(deep.last_checkpoint)["state_dict"]
    assert set(b) - set(a) and all(k.startswith("aux_heads.") for k in set(b) - set(a))
    for key in a:  # lr 0: every shared weight is the source's
        assert torch.equal(a[key], b[key]), key
    back = train(tiny_config(tiny_data, tmp_path / "back", *plain, "train.epochs=1", "train.lr=0.0",
                             f"train.init_from={deep.last_checkpoint}"))
    assert set(load_checkpoint(back.last_checkpoint)["state_dict"]) == set(a)


def _assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Same keys and bit-identical tensors (CPU training is deterministic)."""
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _run_until(config: ExperimentConfig, stop_after: int) -> None:
    """Train ``config`` but stop (as a crash would) after ``stop_after`` epochs."""
    import kmunet.training.trainer as trainer

    calls = {"n": 0}
    original = trainer._write_csv

    def crash_after(history, path):
        original(history, path)
        calls["n"] += 1
        if calls["n"] >= stop_after:
            raise KeyboardInterrupt

    trainer._write_csv = crash_after
    try:
        with pytest.raises(KeyboardInterrupt):
            train(config)
    finally:
        trainer._write_csv = original


def test_training_refuses_a_dataset_with_fatal_problems(tiny_data: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_data, broken)
    next((broken / "labelsTr").iterdir()).unlink()
    with pytest.raises(ValueError, match="fatal problem"):
        train(tiny_config(broken, tmp_path / "run"))
    assert not (tmp_path / "run" / "last.pt").exists()


def test_schedule_warmup_then_decay() -> None:
    cos = [lr_factor(s, 100, 10, "cosine") for s in range(100)]
    poly = [lr_factor(s, 100, 10, "poly") for s in range(100)]
    assert cos[0] < cos[5] < cos[9] <= 1.0 and all(a >= b for a, b in zip(cos[10:], cos[11:]))
    assert poly[10] == pytest.approx(1.0) and poly[-1] < 0.1
    with pytest.raises(ValueError, match="valid"):
        lr_factor(0, 10, 1, "step")


def test_optimizer_choice() -> None:
    from kmunet.training.trainer import _make_optimizer

    model = torch.nn.Linear(2, 2)
    sgd = load_config(None, ["train.optimizer=sgd", "train.lr=0.01", "train.momentum=0.9", "train.weight_decay=3e-5"])
    opt, sched = _make_optimizer(model, sgd, total_steps=10, warmup_steps=0, step=0)
    assert isinstance(opt, torch.optim.SGD)
    group = opt.param_groups[0]
    assert group["nesterov"] and group["momentum"] == 0.9 and group["weight_decay"] == 3e-5 and group["lr"] == 0.01
    opt, _ = _make_optimizer(model, load_config(None, []), total_steps=10, warmup_steps=0, step=0)
    assert isinstance(opt, torch.optim.AdamW)
    assert load_config(None, []).train.optimizer == "adamw"  # the default is unchanged


def test_amp_settings() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert amp_settings(cpu, True).dtype is None
    assert amp_settings(cuda, True, bf16_supported=True).dtype == torch.bfloat16
    fp16 = amp_settings(cuda, True, bf16_supported=False)
    assert fp16.dtype == torch.float16 and fp16.use_scaler
    assert amp_settings(cuda, False).dtype is None


def test_crafted_checkpoint_cannot_run_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pt"
    torch.save({"format": "kmunet-checkpoint", "payload": Evil()}, path)
    with pytest.raises(ValueError, match="evil.pt"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()
    save_checkpoint({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a kmunet segmentation checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_ddp_two_cpu_processes(tiny_data: Path, tmp_path: Path) -> None:
    cfg_path = tmp_path / "ddp.yaml"
    from kmunet.config import save_config

    save_config(tiny_config(tiny_data, tmp_path / "ddp", "train.epochs=1"), cfg_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "kmunet", "train", "--config", str(cfg_path), "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, errors="replace", timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert ckpt["epoch"] == 0
    written = sorted(p.name for p in (tmp_path / "ddp").iterdir())
    assert written.count("last.pt") == 1 and not [n for n in written if "rank" in n]


def test_segmentation_sums_match_a_direct_count() -> None:
    from kmunet.training.trainer import metrics_from_sums, segmentation_sums

    gen = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 3, (2, 1, 6, 7), generator=gen)
    label = torch.randint(0, 3, (2, 1, 6, 7), generator=gen)
    label[1][label[1] == 2] = 0  # class 2 absent from case 1 in reference and prediction:
    pred[1][pred[1] == 2] = 0  # its Dice is undefined there and not counted in the mean
    metrics = metrics_from_sums(segmentation_sums(pred, label, 3), ["bg", "a", "b"])
    for c, name in ((1, "a"), (2, "b")):
        scores = []
        for b in range(2):
            p, t = (pred[b] == c).double(), (label[b] == c).double()
            if p.sum() + t.sum() > 0:
                scores.append((2 * (p * t).sum() / (p.sum() + t.sum())).item())
        assert metrics["dice"][name] == pytest.approx(sum(scores) / len(scores))
    assert "f1_fov" not in metrics

    pred2, label2 = (pred > 0).long(), (label > 0).long()
    fov = torch.zeros_like(pred2)
    fov[..., 1:5, :] = 1
    f1 = metrics_from_sums(segmentation_sums(pred2, label2, 2, fov), ["bg", "fg"])["f1_fov"]
    inside = fov.bool()
    p, t = pred2.bool() & inside, label2.bool() & inside
    tp, fp, fn = (p & t).sum().item(), (p & ~t).sum().item(), (~p & t).sum().item()
    assert f1 == pytest.approx(2 * tp / (2 * tp + fp + fn))


def test_evaluate_an_ensemble_of_checkpoints(tiny_data: Path, tmp_path: Path) -> None:
    from kmunet.cli.main import main

    run = tmp_path / "run"
    train(tiny_config(tiny_data, run, "train.epochs=2"))
    single = evaluate_checkpoint(run / "best.pt")
    twice = evaluate_checkpoint([run / "best.pt", run / "best.pt"])  # averaging a model with itself changes nothing
    assert twice["mean_dice"] == pytest.approx(single["mean_dice"], abs=1e-6)
    assert twice["checkpoints"] == [str(run / "best.pt")] * 2 and twice["epochs"] == [single["epoch"]] * 2
    assert single["checkpoints"] == [str(run / "best.pt")] and single["epochs"] == [single["epoch"]]
    pair = evaluate_checkpoint([run / "best.pt", run / "last.pt"], tta=True)
    assert 0.0 <= pair["mean_dice"] <= 1.0 and pair["cases"] == single["cases"]
    assert main(["evaluate", "--checkpoint", str(run / "best.pt"), str(run / "last.pt")]) == 0

    # A member trained on another split would score on its own training cases: refused.
    other = load_checkpoint(run / "last.pt")
    other["config"]["data"]["seed"] = 7
    save_checkpoint(other, tmp_path / "other_split.pt")
    with pytest.raises(ValueError, match=r"other_split.pt: cannot be ensembled .* differ in data.seed; scoring needs"):
        evaluate_checkpoint([run / "best.pt", tmp_path / "other_split.pt"])
    assert main(["evaluate", "--checkpoint", str(run / "best.pt"), str(tmp_path / "other_split.pt")]) == 1


def test_ensemble_accepts_an_older_checkpoint_without_optional_preprocessing_keys(tiny_data: Path, tmp_path: Path) -> None:
    from kmunet.training import models_from_checkpoints

    run = tmp_path / "run"
    train(tiny_config(tiny_data, run, "train.epochs=1"))
    older = load_checkpoint(run / "best.pt")
    assert older["preprocessing"]["clahe"] is False
    del older["preprocessing"]["clahe"]  # checkpoints written before data.clahe existed lack the key
    save_checkpoint(older, tmp_path / "older.pt")
    model, _, ckpts = models_from_checkpoints([tmp_path / "older.pt", run / "best.pt"])
    assert len(ckpts) == 2 and len(model.members) == 2
    newer = load_checkpoint(run / "best.pt")
    newer["preprocessing"]["clahe"] = True  # a real difference is still refused
    save_checkpoint(newer, tmp_path / "clahe.pt")
    with pytest.raises(ValueError, match="differ in clahe"):
        models_from_checkpoints([tmp_path / "older.pt", tmp_path / "clahe.pt"])

    # A missing mirror_axes means the config's flip axes (here [0]), not "no flips".
    del older["preprocessing"]["mirror_axes"]
    save_checkpoint(older, tmp_path / "older.pt")
    assert load_checkpoint(run / "best.pt")["preprocessing"]["mirror_axes"] == [0]
    models_from_checkpoints([tmp_path / "older.pt", run / "best.pt"])
    unflipped = load_checkpoint(run / "best.pt")
    unflipped["preprocessing"]["mirror_axes"] = []
    save_checkpoint(unflipped, tmp_path / "unflipped.pt")
    with pytest.raises(ValueError, match="differ in mirror_axes"):
        models_from_checkpoints([tmp_path / "older.pt", tmp_path / "unflipped.pt"])


def test_members_trained_with_other_patch_sizes_keep_their_windows(tiny_data: Path, tmp_path: Path) -> None:
    from kmunet.training import models_from_checkpoints

    run = tmp_path / "run"
    train(tiny_config(tiny_data, run, "train.epochs=1"))
    wider = load_checkpoint(run / "best.pt")
    small = list(wider["preprocessing"]["patch_size"])
    wider["preprocessing"]["patch_size"] = [2 * p for p in small]
    wider["config"]["data"]["patch_size"] = [2 * p for p in small]
    save_checkpoint(wider, tmp_path / "wider.pt")
    model, config, _ = models_from_checkpoints([run / "best.pt", tmp_path / "wider.pt"], scored_split="val")
    assert model.windows == [tuple(small), tuple(2 * p for p in small)] and model.mixed_windows
    assert list(config.data.patch_size) == small  # the first member's config
    single = evaluate_checkpoint(run / "best.pt")
    pair = evaluate_checkpoint([run / "best.pt", tmp_path / "wider.pt"], tta=True)
    assert 0.0 <= pair["mean_dice"] <= 1.0 and pair["cases"] == single["cases"]


def test_split_settings_name_only_what_decides_the_split() -> None:
    from kmunet.config import DataConfig
    from kmunet.training.checkpoint import split_settings

    base = DataConfig()
    assert split_settings(replace(base, num_folds=3)) == split_settings(base)  # no fold: num_folds unused
    assert split_settings(replace(base, val_fraction=0.3)) != split_settings(base)
    fold = replace(base, fold=1)
    assert split_settings(replace(fold, val_fraction=0.3)) == split_settings(fold)  # a fold: val_fraction unused
    assert split_settings(replace(fold, num_folds=3)) != split_settings(fold)
    assert split_settings(replace(base, seed=1)) != split_settings(base)
    half = replace(base, train_fraction=0.5)
    assert split_settings(half) == split_settings(base)  # the validation cases do not change
    assert split_settings(half, training_cases=True) != split_settings(base, training_cases=True)
