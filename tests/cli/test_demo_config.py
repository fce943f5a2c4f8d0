"""Regression tests: the demo config ships in a wheel, names the synthetic labels, and a UNet demo runs.

``kmunet demo`` used to read ``<repository>/configs/demo.yaml`` only, so it failed after a normal (non
editable) wheel install; the demo configs named the classes ``blob_a, blob_b`` while the synthetic
dataset's ``dataset.json`` says ``bright, dark`` (``kmunet evaluate`` then warned about another
dataset); and ``--set network.name=unet`` crashed with ``StopIteration`` at the KAN filter plot.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kmunet.config import load_config
from kmunet.data import make_synthetic_dataset
from kmunet.demo import demo_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["demo.yaml", "demo_unet.yaml"])
def test_demo_configs_name_the_synthetic_datasets_labels(tmp_path: Path, name: str) -> None:
    from kmunet.training.evaluation import _label_name_mismatch

    root = make_synthetic_dataset(tmp_path / "synth", n_cases=1, shape=(8, 8, 8))
    labels = json.loads((root / "dataset.json").read_text())["labels"]
    config = load_config(REPO / "configs" / name)
    assert list(config.data.class_names) == [labels[str(i)] for i in range(len(labels))]
    assert _label_name_mismatch(root, list(config.data.class_names)) == ""  # what kmunet evaluate warns about


def test_demo_config_is_read_from_the_source_checkout(tmp_path: Path) -> None:
    from kmunet.demo import demo_config_file

    with demo_config_file() as path:
        assert path == REPO / "configs" / "demo.yaml"
    config = demo_config(tmp_path)
    assert config.data.root == str(tmp_path / "data") and config.train.output_dir == str(tmp_path / "train")
    with pytest.raises(FileNotFoundError, match="missing.yaml not found"):
        with demo_config_file("missing.yaml"):
            pass


def test_pyproject_lists_every_subpackage_and_maps_configs() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "kmunet").rglob("__init__.py")}
    assert set(setuptools["packages"]) == found | {"kmunet.configs"}
    assert setuptools["package-dir"] == {"kmunet.configs": "configs"}
    assert setuptools["package-data"]["kmunet.configs"] == ["*.yaml"]


@pytest.mark.slow
def test_an_installed_wheel_ships_and_loads_the_demo_config(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for folder in ("kmunet", "configs"):
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src),
                            "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=240)
    if build.returncode != 0 and "No module named pip" in build.stderr:
        pytest.skip("pip is not available to build a wheel")
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("kmunet-*.whl")
    site = tmp_path / "site"
    shutil.unpack_archive(wheel, site, format="zip")
    assert (site / "kmunet" / "configs" / "demo.yaml").read_text() == (REPO / "configs" / "demo.yaml").read_text()
    check = (
        "import kmunet, kmunet.demo, pathlib, sys\n"
        f"assert pathlib.Path(kmunet.__file__).is_relative_to({str(site)!r}), kmunet.__file__\n"
        "with kmunet.demo.demo_config_file() as path:\n"
        f"    assert path.is_relative_to({str(site / 'kmunet' / 'configs')!r}), path\n"
        "print(kmunet.demo.demo_config(pathlib.Path(sys.argv[1])).name)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = subprocess.run([sys.executable, "-c", check, str(tmp_path / "out")], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == load_config(REPO / "configs" / "demo.yaml").name


def test_unet_demo_skips_the_kan_filter_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kmunet.demo import run_demo

    summary = run_demo(tmp_path / "demo", device="cpu", epochs=1, progress=False,
                       overrides=["network.name=unet", "network.num_res_units=0", "train.val_every=1"])
    out = capsys.readouterr().out
    assert summary["filter_plot"] is None and not (tmp_path / "demo" / "kan_filters.png").exists()
    assert "KAN filter plot skipped: network.name=unet has no KAN layer" in out
    assert Path(summary["checkpoint"]).is_file()
    assert len(list((tmp_path / "demo" / "predictions").glob("*.nii.gz"))) == 3
