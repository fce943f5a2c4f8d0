"""The built-in demo behind ``kmunet demo`` (callable from Python as :func:`run_demo`).

On a fresh machine with no data it: generates a small synthetic 3D segmentation dataset (MSD layout,
two foreground classes), trains KM-UNet on it for about a minute on CPU with the regular training
pipeline (``configs/demo.yaml``), reports the validation Dice, predicts a folder of unseen synthetic
scans into NIfTI masks in the exact geometry of each input, and plots the learned KAN filters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.resources
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

from kmunet.config import ExperimentConfig, apply_overrides, load_config

#: The demo's configuration file name, in ``configs/`` with the other experiment configs.
DEMO_CONFIG_NAME = "demo.yaml"


@contextlib.contextmanager
def demo_config_file(name: str = DEMO_CONFIG_NAME) -> Iterator[Path]:
    """Path of the experiment config ``name`` of ``configs/`` (the file itself, for as long as the block runs).

    The repository's ``configs/`` is the single copy. A wheel installs it as ``kmunet/configs/`` (the
    data-only package ``kmunet.configs``, which ``pyproject.toml`` maps onto the folder), read with
    :mod:`importlib.resources`; an editable install or a source checkout reads ``<repository>/configs``.

    Raises:
        FileNotFoundError: neither holds ``name`` (the message says where it looked).
    """
    resource = importlib.resources.files("kmunet") / "configs" / name  # installed wheel: kmunet/configs/
    if resource.is_file():
        with importlib.resources.as_file(resource) as path:
            yield path
        return
    path = Path(__file__).resolve().parents[1] / "configs" / name  # editable install or source checkout
    if not path.is_file():
        raise FileNotFoundError(f"config {name} not found: neither {resource} (installed kmunet) nor {path} "
                                "(source checkout) exists; reinstall kmunet")
    yield path


def demo_config(output: Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """``configs/demo.yaml`` with its data and output folders placed under ``output``."""
    with demo_config_file() as path:
        config = load_config(path)
    config = dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, root=str(output / "data")),
        train=dataclasses.replace(config.train, output_dir=str(output / "train")),
    )
    return apply_overrides(config, overrides) if overrides else config


def run_demo(
    output: str | Path = "runs/demo",
    device: str = "auto",
    epochs: int | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Synthetic data -> train KM-UNet -> validation Dice -> predict a folder -> NIfTI masks.

    Args:
        output: folder for everything the demo writes (data, checkpoints, predictions, plots).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        epochs: override the number of training epochs of ``configs/demo.yaml``.
        overrides: extra ``section.key=value`` config overrides.
        progress: show progress bars.

    Returns:
        A summary dict: per-class Dice, seconds, checkpoint, prediction report and filter plot paths
        (``filter_plot`` is ``None`` for a network without KAN layers, e.g. ``network.name=unet``).
    """
    from kmunet.data import make_synthetic_dataset
    from kmunet.inference import predict_folder
    from kmunet.kan import kan_layers, plot_edge_functions
    from kmunet.networks import count_parameters
    from kmunet.training import model_from_checkpoint, train
    from kmunet.training.trainer import run_files

    output = Path(output)
    extra = list(overrides) + ([f"train.epochs={epochs}"] if epochs is not None else [])
    config = demo_config(output, extra)
    start = time.perf_counter()
    data_root = make_synthetic_dataset(config.data.root, n_cases=12, shape=(32, 32, 32), spatial_dims=3, seed=0)
    unseen = make_synthetic_dataset(output / "unseen", n_cases=3, shape=(36, 30, 28), spatial_dims=3, seed=123)
    print(f"synthetic dataset: {data_root} (12 cases); unseen scans: {unseen / 'imagesTr'}")

    own = output / "train"
    if Path(config.train.output_dir).resolve() == own.resolve() and run_files(own):
        # the demo trains afresh each time: it replaces its own earlier run (OUTPUT/train) and nothing
        # else; any other folder holding a run is refused by train()
        shutil.rmtree(own)
    result = train(config, device=device, progress=progress)
    model, _ = model_from_checkpoint(result.best_checkpoint)
    label = "KM-UNet" if config.network.name == "kmunet" else config.network.name
    print(f"{label}: {count_parameters(model):,} parameters; best validation Dice {result.best_metric:.3f} "
          f"at epoch {result.best_epoch}")
    for name, dice in result.dice_per_class.items():
        print(f"  Dice {name}: {dice:.3f}")

    report = predict_folder(unseen / "imagesTr", output / "predictions", checkpoint=result.best_checkpoint, device=device, overwrite=True,
                            progress=progress)
    print(f"predicted {len(report.cases)} scans -> {output / 'predictions'} (report: predict_report.json)")

    first = next(kan_layers(model), None)
    if first is None:  # e.g. --set network.name=unet: nothing to plot
        plot = None
        print(f"KAN filter plot skipped: network.name={config.network.name} has no KAN layer")
    else:
        plot = plot_edge_functions(first, output / "kan_filters.png")
        print(f"learned KAN filters of the first layer: {plot}")
    seconds = time.perf_counter() - start
    print(f"demo finished in {seconds:.0f} s")
    return {
        "best_dice": result.best_metric,
        "dice_per_class": dict(result.dice_per_class),
        "checkpoint": str(result.best_checkpoint),
        "predictions": str(output / "predictions"),
        "filter_plot": str(plot) if plot is not None else None,
        "seconds": seconds,
    }
