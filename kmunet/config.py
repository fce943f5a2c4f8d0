"""Experiment configuration: frozen dataclasses, strict YAML loading and ``key=value`` overrides.

Every default lives here, once. A YAML file in ``configs/`` maps onto :class:`ExperimentConfig`
section by section (unknown keys are an error that lists the valid ones); command-line flags and
``--set section.key=value`` overrides are applied on top with :func:`apply_overrides`. The resolved
config is written beside every checkpoint (``config.yaml``) and stored inside it (``to_dict``).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import yaml

from kmunet.checks import check_int, check_real, is_integer
from kmunet.options import OPTIMIZERS, SCHEDULES

T = TypeVar("T")


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads YAML 1.2 floats: ``1e-3``, ``5E-4``, ``1.0e3``, ``.5e-2``.

    PyYAML follows YAML 1.1, whose floats need a dot and, with an exponent, its sign, so it reads
    ``1e-3`` and ``1.0e3`` as strings. The extra resolver covers the exponent forms YAML 1.2 adds;
    integers, ``.inf`` / ``.nan`` and everything else resolve as before. Config files and ``--set``
    values are both parsed with this loader (non-finite numbers are then refused by the config).
    """


class ConfigDumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that quotes the strings :class:`ConfigLoader` would read as floats (``"1e-3"``),
    so a saved ``config.yaml`` loads back to the same values."""


#: YAML 1.2 exponent floats that YAML 1.1 (PyYAML) reads as strings: ``1e-3``, ``5E-4``, ``1.0e3``, ``.5e-2``.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$")

for _cls in (ConfigLoader, ConfigDumper):  # tried after the YAML 1.1 resolvers (ints, timestamps) of SafeLoader
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789."))


def _yaml_load(stream: Any) -> Any:
    """Parse YAML with :class:`ConfigLoader` (safe: plain data only)."""
    return yaml.load(stream, Loader=ConfigLoader)  # noqa: S506 - a SafeLoader subclass


@dataclass(frozen=True)
class KANConfig:
    """B-spline KAN edge functions (Liu et al. 2024, "KAN: Kolmogorov-Arnold Networks").

    Attributes:
        grid_size: number of grid intervals G inside ``grid_range``.
        spline_order: B-spline order k (3 = cubic).
        grid_range: initial grid range; activations are normalised before each KAN layer so that
            most of them fall inside it. (-2, 2) here, wider than a bare ``KANConv``'s default (-1, 1)
            (the KAN paper's), because instance-normalised activations spread over about +-2.
        scale_noise: standard deviation of the initial spline coefficients c_i.
        scale_base: gain of the Xavier-like initialisation of the base weights w_b.
        scale_spline: initial value of the spline scale w_s.
        grid_eps: mix between an adaptive (sample quantile, 0.0) and a uniform (1.0) grid in
            ``update_grid``, as in the KAN paper.
    """

    grid_size: int = 5
    spline_order: int = 3
    grid_range: tuple[float, float] = (-2.0, 2.0)
    scale_noise: float = 0.1
    scale_base: float = 1.0
    scale_spline: float = 1.0
    grid_eps: float = 0.02


@dataclass(frozen=True)
class NetworkConfig:
    """Segmentation network.

    Attributes:
        name: ``"kmunet"`` (KAN convolutions) or ``"unet"`` (MONAI ``UNet`` baseline).
        spatial_dims: 2 or 3.
        in_channels: image channels (1 for MR, 3 for RGB fundus images).
        out_channels: number of classes including background.
        channels: feature channels per resolution level.
        strides: downsampling stride between consecutive levels (``len(channels) - 1`` entries).
        kernel_size: convolution kernel size.
        norm: ``"instance"``, ``"batch"`` or ``"group"``.
        dropout: dropout probability inside conv blocks.
        num_res_units: residual units per level of the MONAI ``UNet`` baseline.
        kan: KAN edge-function settings (KM-UNet only).
        deep_supervision: auxiliary outputs on that many decoder levels below full resolution, each
            trained with the segmentation loss on the label sampled on that level's grid (weights 1, 1/2,
            1/4, ... normalised to sum to 1, as nnU-Net does; ``kmunet/training/losses.py``); 0 turns it
            off. KM-UNet only; the checkpoints' parameter count includes the auxiliary heads.
    """

    name: str = "kmunet"
    spatial_dims: int = 3
    in_channels: int = 1
    out_channels: int = 3
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    kernel_size: int = 3
    norm: str = "instance"
    dropout: float = 0.0
    num_res_units: int = 2
    kan: KANConfig = field(default_factory=KANConfig)
    deep_supervision: int = 0


@dataclass(frozen=True)
class DataConfig:
    """Dataset layout, preprocessing and augmentation.

    Attributes:
        root: dataset folder (MSD task folder with ``dataset.json``, or ``images/`` + ``labels/``).
        layout: ``"auto"``, ``"msd"``, ``"folders"`` (``images/`` + ``labels/`` paired by name) or
            ``"drive"`` (DRIVE-style 2D: ``images/``, ``1st_manual/``, ``mask/``).
        class_names: one name per label value 0..N-1 (background first).
        image_key_channels: number of image channels after loading (3 for RGB).
        orientation: axcodes images are reoriented to (3D only).
        target_spacing: resample to this spacing in mm, or ``None`` to keep the native spacing.
        normalization: ``"zscore"`` (on foreground voxels), ``"ct"`` (window then scale to [0, 1]),
            ``"minmax"`` or ``"none"``.
        ct_window: HU window for ``normalization="ct"``.
        clahe: contrast-limited adaptive histogram equalisation (albumentations ``CLAHE`` on the
            luminance of RGB images) after scaling raster images to [0, 1] and before ``normalization``;
            8-bit raster layouts (``"drive"``) only. It brings out thin vessels in fundus photographs.
        patch_size: training patch (and sliding-window roi) size.
        samples_per_image: random patches drawn per image per epoch.
        pos_fraction: fraction of patches centred on foreground (RandCropByPosNegLabel).
        flip_axes: spatial axes random flips may use (never the anterior-posterior axis for
            hippocampus: flipping it swaps the labels).
        flip_prob: probability of a flip on each allowed axis.
        affine_prob: probability of a random affine (rotation + scaling).
        rotate_range: rotation range in radians (per axis).
        scale_range: relative scaling range.
        intensity_prob: probability of random intensity scale and shift.
        noise_prob: probability of Gaussian noise.
        smooth_prob: probability of Gaussian smoothing.
        gamma_prob: probability of a random gamma (contrast) transform, nnU-Net's augmentation
            (Isensee et al. 2021): MONAI ``RandAdjustContrastd`` with gamma in
            ``kmunet.data.transforms.GAMMA_RANGE``, mean and standard deviation kept.
        lowres_prob: probability of simulating a lower resolution (nnU-Net's augmentation): MONAI
            ``RandSimulateLowResolutiond``, down by a zoom in ``kmunet.data.transforms.LOWRES_ZOOM_RANGE``
            (nearest) and back up (linear).
        val_fraction: fraction of cases held out for validation (ignored when ``fold`` is set).
        train_fraction: fraction of the split's training cases that are trained on, in (0, 1]: a
            seeded subset, nested across fractions (0.5 of the cases lies inside 0.75), with the
            validation cases unchanged, for learning curves (how much would more labelled cases help?).
        num_folds: number of folds for k-fold splits.
        fold: k-fold index, or ``None`` for a single seeded split.
        seed: seed of the train/validation split.
        cache: ``"memory"`` (CacheDataset), ``"disk"`` (PersistentDataset) or ``"none"``.
        cache_dir: folder of the disk cache (default: ``<output>/cache``).
        num_workers: DataLoader workers.
        label_tolerance: absolute tolerance when comparing image and label affines.
        elastic_prob: probability of a random elastic deformation (2D albumentations pipeline only).
    """

    root: str = ""
    layout: str = "auto"
    class_names: tuple[str, ...] = ("background", "anterior", "posterior")
    image_key_channels: int = 1
    orientation: str = "RAS"
    target_spacing: tuple[float, ...] | None = None
    normalization: str = "zscore"
    ct_window: tuple[float, float] = (-1000.0, 1000.0)
    clahe: bool = False
    patch_size: tuple[int, ...] = (48, 48, 48)
    samples_per_image: int = 2
    pos_fraction: float = 0.67
    flip_axes: tuple[int, ...] = (0,)
    flip_prob: float = 0.5
    affine_prob: float = 0.2
    rotate_range: float = 0.26
    scale_range: float = 0.15
    intensity_prob: float = 0.3
    noise_prob: float = 0.15
    smooth_prob: float = 0.1
    gamma_prob: float = 0.0
    lowres_prob: float = 0.0
    val_fraction: float = 0.2
    train_fraction: float = 1.0
    num_folds: int = 5
    fold: int | None = None
    seed: int = 0
    cache: str = "memory"
    cache_dir: str | None = None
    num_workers: int = 0
    label_tolerance: float = 1e-3
    elastic_prob: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, validation and checkpointing.

    Attributes:
        epochs: number of epochs.
        batch_size: images per batch (each contributes ``samples_per_image`` patches).
        optimizer: ``"adamw"`` or ``"sgd"`` (SGD with Nesterov momentum, nnU-Net's optimizer: with
            ``lr=0.01``, ``momentum=0.99``, ``weight_decay=3e-5`` and ``schedule="poly"`` it is
            nnU-Net's recipe, Isensee et al. 2021).
        lr: peak learning rate.
        weight_decay: weight decay (decoupled for AdamW, L2 for SGD).
        momentum: SGD's Nesterov momentum (unused by AdamW).
        warmup_epochs: linear warm-up length.
        schedule: ``"cosine"`` or ``"poly"`` after warm-up.
        grad_clip: max gradient norm (0 disables clipping).
        dice_weight: weight of the Dice term of ``DiceCELoss``.
        ce_weight: weight of the cross-entropy term of ``DiceCELoss``.
        dice_include_background: let the background class into the Dice term (MONAI's default);
            nnU-Net leaves it out (``False``).
        dice_batch: one Dice over the whole batch per class instead of one per sample, averaged
            (nnU-Net's "batch Dice"; steadier on patches where a class is small or absent).
        label_smoothing: uniform label smoothing of the cross-entropy term (MONAI ``DiceCELoss``'s
            ``label_smoothing``; Szegedy et al. 2016): its target is ``(1 - e) * onehot + e / K``
            for ``K`` classes; 0 disables it. The Dice term keeps the hard labels.
        kan_reg_weight: weight of the KAN L1 + entropy regulariser (0 disables it).
        kan_reg_mu1: weight of the L1 part inside the regulariser.
        kan_reg_mu2: weight of the entropy part inside the regulariser.
        grid_update_epochs: epochs (0-based, before the epoch starts) at which KAN grids are
            updated from a batch of activations.
        grid_extend: ``(epoch, new_grid_size)`` pairs for coarse-to-fine grid extension.
        val_every: validate every N epochs (and at the last epoch).
        sw_batch_size: sliding-window batch size during validation/inference.
        sw_overlap: sliding-window overlap.
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        amp: mixed precision on CUDA (bf16 where supported, else fp16 with a scaler).
        seed: global training seed.
        deterministic: ask PyTorch for deterministic algorithms.
        output_dir: where checkpoints, logs and curves go.
        init_from: a kmunet checkpoint whose weights initialise the network (fine-tuning: the
            optimizer, schedule and epoch count start afresh); its network must match ``network``
            (deep-supervision heads excepted: those missing start afresh, those extra are dropped).
        ema_decay: exponential moving average of the weights (0: off). With ``d > 0`` every optimizer
            step updates ``ema = d' * ema + (1 - d') * weights`` with ``d' = min(d, (1 + t) / (10 + t))``
            at step ``t`` (the warm-up of TensorFlow's ``ExponentialMovingAverage(num_updates=t)``),
            validation scores the averaged weights and the checkpoints' ``state_dict`` holds them
            (``last.pt`` keeps the raw weights and the update count to resume). A KAN grid update or
            extension restarts the average from the current weights (coefficients on another grid
            cannot be averaged with the new ones).
    """

    epochs: int = 100
    batch_size: int = 2
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 1e-5
    momentum: float = 0.99
    warmup_epochs: int = 2
    schedule: str = "cosine"
    grad_clip: float = 12.0
    dice_weight: float = 1.0
    ce_weight: float = 1.0
    dice_include_background: bool = True
    dice_batch: bool = False
    label_smoothing: float = 0.0
    kan_reg_weight: float = 0.0
    kan_reg_mu1: float = 1.0
    kan_reg_mu2: float = 1.0
    grid_update_epochs: tuple[int, ...] = ()
    grid_extend: tuple[tuple[int, int], ...] = ()
    val_every: int = 1
    sw_batch_size: int = 4
    sw_overlap: float = 0.25
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    deterministic: bool = False
    output_dir: str = "runs/experiment"
    init_from: str | None = None
    ema_decay: float = 0.0

    def __post_init__(self) -> None:
        """Check value ranges when the config is built (so a bad ``--set`` fails before any training)."""
        for key in ("epochs", "batch_size", "val_every", "sw_batch_size"):
            check_int(f"train.{key}", getattr(self, key))
        check_int("train.warmup_epochs", self.warmup_epochs, minimum=0)
        for key in ("lr", "weight_decay", "grad_clip", "dice_weight", "ce_weight", "kan_reg_weight", "kan_reg_mu1", "kan_reg_mu2"):
            check_real(f"train.{key}", getattr(self, key), 0.0)
        if self.dice_weight == 0 and self.ce_weight == 0:
            raise ValueError("train.dice_weight and train.ce_weight are both 0: the loss would be zero")
        for key, hint in (("sw_overlap", ""), ("label_smoothing", ""), ("momentum", ""),
                          ("ema_decay", " (0: no weight averaging)")):
            if check_real(f"train.{key}", getattr(self, key), 0.0) >= 1:
                raise ValueError(f"train.{key} must be in [0, 1){hint}, got {getattr(self, key)!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown train.optimizer {self.optimizer!r}; valid: {list(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown train.schedule {self.schedule!r}; valid: {list(SCHEDULES)}")


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: network, data and training settings."""

    name: str = "experiment"
    network: NetworkConfig = field(default_factory=NetworkConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        """MONAI's ``UNet`` needs patches divisible by its total stride (KM-UNet pads, any size works)."""
        ds = self.network.deep_supervision
        if not is_integer(ds) or ds < 0:
            raise ValueError(f"network.deep_supervision must be a non-negative integer (0: off), got {ds!r}")
        if ds and ds >= len(self.network.strides):
            raise ValueError(f"network.deep_supervision={ds!r} is too large: the decoder has "
                             f"len(network.strides) - 1 = {len(self.network.strides) - 1} levels below full resolution")
        if self.network.name != "kmunet" and self.network.deep_supervision:
            raise ValueError(f"network.deep_supervision={self.network.deep_supervision!r} needs network.name='kmunet' "
                             f"(MONAI's UNet has no auxiliary outputs), got {self.network.name!r}")
        strides, patch = self.network.strides, self.data.patch_size
        if self.network.name != "unet" or not all(is_integer(s) and s >= 1 for s in strides):
            return  # bad strides are build_network's to report
        total = math.prod(strides)
        if any(is_integer(p) and p % total for p in patch):
            fit = [max(total, round(p / total) * total) if is_integer(p) else p for p in patch]
            raise ValueError(
                f"data.patch_size {list(patch)} is not divisible by the total stride {total} of network.strides "
                f"{list(strides)}, which network.name='unet' (MONAI UNet) needs; e.g. data.patch_size={fit}"
            )


# ----------------------------------------------------------------------------------------------
# Conversion between dicts and dataclasses (strict).
# ----------------------------------------------------------------------------------------------


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type ``tp`` or raise a ``TypeError`` naming ``where``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise TypeError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except (TypeError, ValueError) as err:
                errors.append(str(err))
        raise TypeError(f"{where}: {value!r} does not match {tp}: {'; '.join(errors)}")
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise TypeError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ValueError(f"{where}: expected {len(args)} values, got {list(value)!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{where}: expected a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:  # an integer too large for a float
            number = math.inf
        if not math.isfinite(number):  # .nan, .inf, or 1e999 (which a float rounds to inf)
            raise TypeError(f"{where}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise TypeError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys raise ``ValueError`` listing valid ones."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f" in '{prefix}'" if prefix else ""
        raise ValueError(f"unknown config key(s) {unknown}{where}; valid keys: {names}")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict (tuples become lists) suitable for YAML and ``torch.save``."""

    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (tuple, list)):
            return [convert(v) for v in value]
        return value

    return convert(config)


def apply_overrides(config: T, overrides: Sequence[str]) -> T:
    """Apply ``section.key=value`` overrides (values parsed as YAML) to a frozen config.

    Args:
        config: a dataclass instance, usually an :class:`ExperimentConfig`.
        overrides: strings like ``"train.epochs=5"`` or ``"network.channels=[8,16,32]"``.

    Raises:
        ValueError: a malformed override or an unknown key (the message lists the valid keys).
    """
    data = to_dict(config)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for depth, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part), dict):
                valid = [k for k, v in node.items() if isinstance(v, dict)]
                raise ValueError(
                    f"override {item!r}: unknown section {'.'.join(parts[: depth + 1])!r}; valid: {valid}"
                )
            node = node[part]
        if parts[-1] not in node:
            raise ValueError(f"override {item!r}: unknown key {key!r}; valid keys: {sorted(node)}")
        try:
            node[parts[-1]] = _yaml_load(raw)
        except yaml.YAMLError as err:
            raise ValueError(f"override {item!r}: value is not valid YAML ({_yaml_problem(err)})") from None
    try:
        return from_dict(type(config), data)
    except TypeError as err:  # a wrong-typed value: the same one-line user error as in a YAML file
        raise ValueError(f"config override: {err}") from None


def replace_values(config: T, values: Mapping[str, Any]) -> T:
    """``config`` with ``section.key`` fields set to already typed ``values`` (``dataclasses.replace``).

    Unlike :func:`apply_overrides`, values are not parsed as YAML: a path such as ``"/tmp/exp #1"``,
    ``"~"``, ``"2024"`` or ``"on"`` stays that string. Each value is still checked against the field's
    type, and every dataclass on the way re-runs its checks.

    Raises:
        ValueError: an unknown key, or a value of the wrong type (the message names the key).
    """
    for key, value in values.items():
        config = _replace_path(config, key.split("."), value, key)
    return config


def _replace_path(node: T, parts: list[str], value: Any, key: str) -> T:
    """``node`` with the field at ``parts`` (``key`` split at the dots) replaced by ``value``."""
    names = [f.name for f in dataclasses.fields(node)]
    name = parts[0]
    if name not in names:
        raise ValueError(f"unknown config key {key!r}: no {name!r} in {type(node).__name__}; valid keys: {names}")
    if len(parts) == 1:
        try:
            new = _coerce(value, typing.get_type_hints(type(node))[name], key)
        except TypeError as err:
            raise ValueError(str(err)) from None
    else:
        child = getattr(node, name)
        if not dataclasses.is_dataclass(child):
            raise ValueError(f"unknown config key {key!r}: {name!r} is not a section")
        new = _replace_path(child, parts[1:], value, key)
    return dataclasses.replace(node, **{name: new})


def _yaml_problem(err: Exception) -> str:
    """First line of a PyYAML error, with its line/column when known."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).strip().splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(problem)


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Load an :class:`ExperimentConfig` from YAML (or the defaults) and apply overrides.

    Args:
        path: YAML file, or ``None`` for the built-in defaults.
        overrides: ``section.key=value`` strings applied after the file.

    Raises:
        FileNotFoundError: the YAML file does not exist.
        ValueError: unknown keys or malformed values (the message names the file).
    """
    config = ExperimentConfig()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: config file not found")
        with path.open() as f:
            try:
                data = _yaml_load(f) or {}
            except yaml.YAMLError as err:
                raise ValueError(f"{path}: not valid YAML ({_yaml_problem(err)})") from None
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: top level must be a mapping, got {type(data).__name__}")
        try:
            config = from_dict(ExperimentConfig, data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: {err}") from None
    return apply_overrides(config, overrides) if overrides else config


def save_config(config: Any, path: str | Path) -> None:
    """Write the resolved config as YAML atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        yaml.dump(to_dict(config), f, Dumper=ConfigDumper, sort_keys=False)
    tmp.replace(path)
