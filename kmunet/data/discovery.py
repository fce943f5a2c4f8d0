"""Dataset discovery (MSD, ``images/`` + ``labels/`` folders, DRIVE) and deterministic splits."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kmunet.config import DataConfig
from kmunet.data.io import NIFTI_SUFFIXES, RASTER_SUFFIXES, is_dicom_series_dir, path_stem

#: Valid values of ``DataConfig.layout``.
LAYOUTS: tuple[str, ...] = ("auto", "msd", "folders", "drive")


def resolve_root(data_cfg: DataConfig, root: str | Path | None = None) -> Path:
    """The dataset folder: ``root`` if given, else ``data_cfg.root`` (relative to the working dir).

    Raises:
        ValueError: neither is set.
        FileNotFoundError: the folder does not exist.
    """
    value = root if root is not None else data_cfg.root
    if value is None or str(value) == "":
        raise ValueError("no dataset folder: set data.root in the config or pass root")
    path = Path(value).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {path}")
    return path


def detect_layout(root: str | Path) -> str:
    """Detect the layout of ``root``: ``"msd"``, ``"drive"`` or ``"folders"``.

    Raises:
        ValueError: none matches (the message says what each layout expects).
    """
    root = Path(root)
    if (root / "dataset.json").is_file():
        return "msd"
    if (root / "images").is_dir() and (root / "1st_manual").is_dir():
        return "drive"
    if (root / "images").is_dir() or (root / "imagesTr").is_dir():
        return "folders"
    raise ValueError(
        f"{root}: cannot detect the dataset layout; expected dataset.json (msd), images/ + "
        "1st_manual/ + mask/ (drive) or images/ [+ labels/] or imagesTr/ [+ labelsTr/] (folders)"
    )


def _folder_pair(root: Path) -> tuple[Path, Path]:
    """``images/`` + ``labels/``, or the MSD / nnU-Net names ``imagesTr/`` + ``labelsTr/``."""
    if not (root / "images").is_dir() and (root / "imagesTr").is_dir():
        return root / "imagesTr", root / "labelsTr"
    return root / "images", root / "labels"


def _is_image_entry(path: Path) -> bool:
    if path.name.startswith("."):
        return False
    if path.is_file():
        return path.name.lower().endswith(NIFTI_SUFFIXES + RASTER_SUFFIXES)
    return is_dicom_series_dir(path)


def _discover_msd(root: Path) -> list[dict[str, Any]]:
    try:
        with (root / "dataset.json").open() as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{root / 'dataset.json'}: not valid JSON ({err})") from None
    training = meta.get("training") if isinstance(meta, dict) else None
    if not isinstance(training, list):
        raise ValueError(f"{root / 'dataset.json'}: no 'training' list")
    cases = []
    for i, item in enumerate(training):
        if not isinstance(item, dict) or "image" not in item:
            raise ValueError(f"{root / 'dataset.json'}: training[{i}] has no 'image': {item!r}")
        for key in ("image", "label"):
            value = item.get(key)
            if (key == "image" or value is not None) and not (isinstance(value, str) and value.strip()):
                raise ValueError(f"{root / 'dataset.json'}: training[{i}] {key!r} must be a file path (a "
                                 f"non-empty string), got {value!r}")
        image = Path(item["image"])
        image = image if image.is_absolute() else (root / image).resolve()
        case: dict[str, Any] = {"name": path_stem(image), "image": str(image)}
        if item.get("label"):
            label = Path(item["label"])
            case["label"] = str(label if label.is_absolute() else (root / label).resolve())
        cases.append(case)
    return cases


#: nnU-Net raw-data image names: ``<case>_<4-digit channel>``.
_NNUNET_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def _discover_folders(root: Path) -> list[dict[str, Any]]:
    """Pair images and labels by file name; nnU-Net's channel suffix (``case_0000.nii.gz``) is dropped.

    Raises:
        ValueError: nnU-Net channel files beyond ``_0000`` (``case_0001.nii.gz`` next to
            ``case_0000.nii.gz``): multi-channel inputs are not supported (the message names a file).
    """
    images_dir, labels_dir = _folder_pair(root)
    labels: dict[str, Path] = {}
    if labels_dir.is_dir():
        for p in sorted(labels_dir.iterdir()):
            if _is_image_entry(p):
                labels[path_stem(p)] = p
    images = [p for p in sorted(images_dir.iterdir()) if _is_image_entry(p)]
    stems = {path_stem(p) for p in images}
    extra_channels = [
        p for p in images
        if (m := _NNUNET_CHANNEL.match(path_stem(p))) and m["channel"] != "0000" and f"{m['case']}_0000" in stems
    ]
    if extra_channels:
        raise ValueError(
            f"{extra_channels[0]}: multi-channel nnU-Net inputs (_0001 ...) are not supported "
            f"({len(extra_channels)} such file(s) in {images_dir.name}/); stack the channels of each case "
            "into one 4D NIfTI and set network.in_channels, or keep only the _0000 files"
        )
    cases = []
    for p in images:
        stem = path_stem(p)
        if stem not in labels and len(stem) > 5 and stem.endswith("_0000") and stem[:-5] in labels:
            stem = stem[:-5]  # nnU-Net raw data: image case_0000 (channel 0) pairs with label case
        case: dict[str, Any] = {"name": stem, "image": str(p.resolve())}
        if stem in labels:
            case["label"] = str(labels[stem].resolve())
        cases.append(case)
    return cases


def _find_by_id(folder: Path, case_id: str) -> Path | None:
    if not folder.is_dir():
        return None
    hits = sorted(p for p in folder.iterdir() if p.is_file() and p.name.split("_")[0] == case_id)
    return hits[0] if hits else None


def discover_drive(root: Path) -> list[dict[str, Any]]:
    """DRIVE: ``images/21_training.tif`` + ``1st_manual/21_manual1.gif`` + ``mask/21_training_mask.gif``."""
    cases = []
    for p in sorted((root / "images").iterdir()):
        if not p.is_file() or p.name.startswith(".") or not p.name.lower().endswith(RASTER_SUFFIXES):
            continue
        stem = path_stem(p)
        case_id = stem.split("_")[0]
        case: dict[str, Any] = {"name": stem, "image": str(p.resolve())}
        label = root / "1st_manual" / f"{case_id}_manual1.gif"
        label = label if label.is_file() else _find_by_id(root / "1st_manual", case_id)
        if label is not None:
            case["label"] = str(label.resolve())
        fov = root / "mask" / f"{stem}_mask.gif"
        fov = fov if fov.is_file() else _find_by_id(root / "mask", case_id)
        if fov is not None:
            case["fov"] = str(fov.resolve())
        cases.append(case)
    return cases


def discover_cases(data_cfg: DataConfig, root: str | Path | None = None) -> list[dict[str, Any]]:
    """Find the cases of a dataset.

    Args:
        data_cfg: data settings (``layout`` and, when ``root`` is ``None``, ``root``).
        root: dataset folder overriding ``data_cfg.root``.

    Returns:
        One dict per case, sorted by name: ``"name"`` (unique), ``"image"`` (NIfTI file, DICOM series
        folder or 2D raster image), ``"label"`` (absent for unlabelled cases) and, for DRIVE,
        ``"fov"`` (field-of-view mask).

    Raises:
        ValueError: unknown layout, undetectable layout, a ``dataset.json`` entry that is not a file
            path, nnU-Net multi-channel inputs (``case_0001``), duplicate names or no case found.
        FileNotFoundError: the dataset folder does not exist.
    """
    if data_cfg.layout not in LAYOUTS:
        raise ValueError(f"unknown data.layout {data_cfg.layout!r}; valid: {list(LAYOUTS)}")
    path = resolve_root(data_cfg, root)
    layout = detect_layout(path) if data_cfg.layout == "auto" else data_cfg.layout
    if layout == "msd":
        if not (path / "dataset.json").is_file():
            raise FileNotFoundError(f"{path}: layout 'msd' needs dataset.json")
        cases = _discover_msd(path)
    else:
        if not (path / "images" if layout == "drive" else _folder_pair(path)[0]).is_dir():
            raise FileNotFoundError(f"{path}: layout {layout!r} needs an images/ folder"
                                    + (" (or imagesTr/)" if layout == "folders" else ""))
        cases = discover_drive(path) if layout == "drive" else _discover_folders(path)
    if not cases:
        raise ValueError(f"{path}: no cases found (layout {layout!r})")
    names = [c["name"] for c in cases]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{path}: duplicate case names {dupes}")
    return sorted(cases, key=lambda c: c["name"])


def unpaired_labels(cases: Sequence[dict[str, Any]], root: Path, layout: str) -> list[Path]:
    """Label files no case uses (an image missing, or misnamed), for the ``msd`` and ``folders`` layouts.

    Args:
        cases: :func:`discover_cases` output for ``root``.
        root: the dataset folder.
        layout: its resolved layout (``"drive"`` has no free-standing label folder: ``[]``).

    Returns:
        Sorted paths in ``labelsTr/`` (or ``labels/``) that are no case's ``"label"``.
    """
    if layout not in ("msd", "folders"):
        return []
    folder = root / "labelsTr" if layout == "msd" else _folder_pair(root)[1]
    if not folder.is_dir():
        return []
    used = {Path(c["label"]).resolve() for c in cases if c.get("label")}
    return sorted(p for p in folder.iterdir() if _is_image_entry(p) and p.resolve() not in used)


def split_cases(
    cases: Sequence[dict[str, Any]], data_cfg: DataConfig
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Deterministic train/validation split.

    The cases are sorted by name and permuted with ``numpy.random.default_rng(data_cfg.seed)``. With
    ``data_cfg.fold = None`` the first ``round(n * val_fraction)`` (at least 1 when ``n >= 2`` and
    ``val_fraction > 0``) permuted cases are validation; with a fold index ``k`` the permutation is
    cut into ``num_folds`` near-equal parts (``numpy.array_split``) and part ``k`` is validation, so
    the folds are disjoint and cover every case. With ``train_fraction < 1`` only the first
    ``round(n_train * train_fraction)`` (at least 1) training cases in permutation order are kept, so
    the subsets of growing fractions are nested and the validation cases do not change.

    Returns:
        ``(train, val)``, each sorted by name.

    Raises:
        ValueError: bad ``val_fraction``, ``train_fraction``, ``num_folds`` or ``fold``, or duplicate
            names.
    """
    cases = list(cases)
    names = [c["name"] for c in cases]
    if len(set(names)) != len(names):
        raise ValueError("split_cases: case names must be unique")
    if not 0.0 < data_cfg.train_fraction <= 1.0:
        raise ValueError(f"data.train_fraction must be in (0, 1], got {data_cfg.train_fraction}")
    ordered = sorted(cases, key=lambda c: c["name"])
    n = len(ordered)
    perm = np.random.default_rng(data_cfg.seed).permutation(n)
    if data_cfg.fold is None:
        if not 0.0 <= data_cfg.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {data_cfg.val_fraction}")
        n_val = int(round(n * data_cfg.val_fraction))
        if data_cfg.val_fraction > 0 and n >= 2:
            n_val = min(max(n_val, 1), n - 1)
        val_idx = set(perm[:n_val].tolist())
    else:
        if data_cfg.num_folds < 2:
            raise ValueError(f"data.num_folds must be >= 2, got {data_cfg.num_folds}")
        if not 0 <= data_cfg.fold < data_cfg.num_folds:
            raise ValueError(f"data.fold must be in [0, {data_cfg.num_folds}), got {data_cfg.fold}")
        if n < data_cfg.num_folds:
            raise ValueError(f"data.num_folds={data_cfg.num_folds} exceeds the number of cases ({n})")
        val_idx = set(np.array_split(perm, data_cfg.num_folds)[data_cfg.fold].tolist())
    train_idx = [i for i in perm.tolist() if i not in val_idx]  # permutation order: nested subsets
    kept = set(train_idx[: max(1, round(len(train_idx) * data_cfg.train_fraction))])
    train = [c for i, c in enumerate(ordered) if i in kept]
    val = [c for i, c in enumerate(ordered) if i in val_idx]
    return train, val
