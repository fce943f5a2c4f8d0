"""Dataset validation before training (``kmunet validate-data``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection

import numpy as np

from kmunet.checks import error_reason, strip_path
from kmunet.config import ExperimentConfig
from kmunet.data.discovery import detect_layout, discover_cases, resolve_root, unpaired_labels
from kmunet.data.io import load_array

#: Problem severities: ``fatal`` stops training, ``warning`` is reported only.
SEVERITIES: tuple[str, ...] = ("fatal", "warning")


@dataclass(frozen=True)
class Problem:
    """One problem found in a dataset.

    Attributes:
        severity: ``"fatal"`` or ``"warning"``.
        file: the offending file (or the dataset folder).
        message: what is wrong.
    """

    severity: str
    file: str
    message: str

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}; valid: {list(SEVERITIES)}")

    def __str__(self) -> str:
        return f"{self.severity.upper():7s} {self.file}: {self.message}"


@dataclass
class ValidationReport:
    """Result of :func:`validate_dataset`.

    Attributes:
        root: the dataset folder.
        layout: detected/configured layout.
        n_cases: number of cases checked.
        problems: every problem found, in case order.
        summary: ``spacings`` / ``orientations`` / ``shapes`` / ``channels`` (value -> count),
            ``shape_min`` / ``shape_max``, ``label_values`` (value -> voxel count), ``empty_labels``
            (case names), ``intensity_min`` / ``intensity_max``, ``n_labelled``.
        hints: how to fix what the problems point to (e.g. a config of the other dimensionality).
    """

    root: str
    layout: str
    n_cases: int = 0
    problems: list[Problem] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    hints: list[str] = field(default_factory=list)

    @property
    def fatal(self) -> list[Problem]:
        """The fatal problems."""
        return [p for p in self.problems if p.severity == "fatal"]

    @property
    def warnings(self) -> list[Problem]:
        """The warnings."""
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when no problem is fatal."""
        return not self.fatal

    def add(self, severity: str, file: str | Path, message: str) -> None:
        """Record a problem."""
        self.problems.append(Problem(severity, str(file), message))

    def format(self) -> str:
        """Human-readable report: every problem, then the summary."""
        lines = [str(p) for p in self.problems]
        lines.append(f"dataset {self.root} (layout {self.layout}): {self.n_cases} case(s)")
        for key, value in self.summary.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k}: {v}" for k, v in value.items()) or "-"
            elif isinstance(value, list):
                value = ", ".join(map(str, value[:20])) + (f" ... ({len(value)} in all)" if len(value) > 20 else "") or "-"
            lines.append(f"  {key}: {value}")
        lines.append(f"{len(self.fatal)} fatal problem(s), {len(self.warnings)} warning(s)")
        return "\n".join(lines)


def _spacing(affine: np.ndarray, dims: int) -> tuple[float, ...]:
    return tuple(round(float(v), 3) for v in np.linalg.norm(affine[:3, :dims], axis=0))


def _axcodes(affine: np.ndarray, dims: int) -> str:
    import nibabel as nib

    if dims == 2:
        return "2D"
    return "".join(nib.aff2axcodes(affine))


#: :func:`domain_warning` flags a voxel size outside ``[min / f, max * f]`` of the training data's ...
DOMAIN_SPACING_FACTOR: float = 2.0
#: ... or a physical extent above ``f`` times the training data's largest.
DOMAIN_EXTENT_FACTOR: float = 3.0


def training_data_summary(summary: dict[str, Any]) -> dict[str, list[float]]:
    """The part of a :class:`ValidationReport` summary a checkpoint keeps to recognise unfamiliar inputs.

    Returns:
        ``{"spacing_min", "spacing_max", "shape_min", "shape_max"}`` (per voxel axis; empty lists when
        the cases do not share a dimensionality).
    """
    return {k: [float(v) for v in summary.get(k) or []] for k in ("spacing_min", "spacing_max", "shape_min", "shape_max")}


def domain_warning(data_summary: dict[str, Any] | None, spacing: Any, shape: Any) -> str:
    """A one-line warning when an image is far from the data a model was trained on, else ``""``.

    Compares the sorted voxel sizes with the training range (factor :data:`DOMAIN_SPACING_FACTOR`)
    and the sorted physical extents with the largest training extent (:data:`DOMAIN_EXTENT_FACTOR`);
    sorting makes the check independent of the axis order (orientation) of the file.

    Args:
        data_summary: the checkpoint's ``data_summary`` (:func:`training_data_summary`); None or
            incomplete: no check.
        spacing: the image's voxel size (mm) per spatial axis.
        shape: the image's spatial shape.
    """
    if not data_summary:
        return ""
    smin, smax, shmax = (np.asarray(data_summary.get(k) or [], dtype=float) for k in ("spacing_min", "spacing_max", "shape_max"))
    sp, sh = np.asarray(spacing, dtype=float), np.asarray(shape, dtype=float)
    if not (len(smin) == len(smax) == len(shmax) == len(sp) == len(sh)) or len(sp) == 0:
        return ""
    problems = []
    lo, hi = np.sort(smin) / DOMAIN_SPACING_FACTOR, np.sort(smax) * DOMAIN_SPACING_FACTOR
    if np.any(np.sort(sp) < lo) or np.any(np.sort(sp) > hi):
        trained = _fmt(smin) if _fmt(smin) == _fmt(smax) else f"{_fmt(smin)}-{_fmt(smax)}"
        problems.append(f"voxel size {_fmt(sp)} mm vs {trained} mm in training")
    if np.any(np.sort(sp * sh) > DOMAIN_EXTENT_FACTOR * np.sort(smax * shmax)):
        problems.append(f"field of view {_fmt(sp * sh)} mm vs at most {_fmt(smax * shmax)} mm in training")
    if not problems:
        return ""
    return "unlike the training data (" + "; ".join(problems) + "): the mask may be unreliable"


def _per_axis_range(rows: list[tuple]) -> tuple[list, list]:
    """Per-axis minimum and maximum of equal-length tuples; empty lists when there are none or lengths differ."""
    if not rows or len(set(map(len, rows))) != 1:
        return [], []
    return np.min(rows, axis=0).tolist(), np.max(rows, axis=0).tolist()


def _fmt(values: np.ndarray) -> str:
    return "x".join(f"{float(v):.3g}" for v in values)


def _split_file(message: str, root: str) -> tuple[str, str]:
    """``(file, message)`` of a discovery error: the file it names first (e.g. ``dataset.json``), else ``root``."""
    stripped = strip_path(message, root)  # the file column names it already
    if stripped != message:
        return root, stripped
    head, sep, rest = message.partition(": ")
    if sep and Path(head).exists():
        return head, rest
    return root, message


def validate_dataset(
    root: str | Path | None,
    config: ExperimentConfig,
    max_cases: int | None = None,
    names: Collection[str] | None = None,
) -> ValidationReport:
    """Check a dataset against the config before training (and before ``kmunet evaluate``).

    Checks, per case: the image can be read (a ``.nii.gz`` to the end of its gzip stream, so a
    corrupted or truncated file is caught); its channel count equals ``network.in_channels`` and
    its spatial rank ``network.spatial_dims``; no NaN/inf; image and label spatial shapes are equal
    and their affines agree within ``data.label_tolerance``; label values are integers in
    ``0..len(class_names) - 1`` (DRIVE: 0/255); the DRIVE field-of-view mask exists and matches.
    Images without a label (left out of training and evaluation), empty labels (background only) and
    label files no image uses are warnings; a dataset without any labelled case, and everything
    else, is fatal.

    Args:
        root: dataset folder (``None`` = ``config.data.root``).
        config: experiment config.
        max_cases: check only the first ``max_cases`` cases (by name); ``None`` checks all.
        names: check only the cases with these names (e.g. the validation split ``kmunet evaluate``
            scores); label files no image uses are then not reported. ``None`` checks all.

    Returns:
        The :class:`ValidationReport` (never raises for problems in the data itself).

    Raises:
        ValueError: ``max_cases`` < 1.
    """
    if max_cases is not None and max_cases < 1:
        raise ValueError(f"max_cases must be >= 1 or None, got {max_cases}")
    d, dims = config.data, config.network.spatial_dims
    report = ValidationReport(root=str(root if root is not None else d.root), layout=d.layout)
    try:
        path = resolve_root(d, root)
        report.root = str(path)
        layout = detect_layout(path) if d.layout == "auto" else d.layout
        report.layout = layout
        cases = discover_cases(d, path)
    except (ValueError, FileNotFoundError, OSError) as err:
        report.add("fatal", *_split_file(str(err), report.root))
        return report
    if not any(c.get("label") for c in cases):
        report.add("fatal", report.root, f"no labelled case among {len(cases)} image(s): nothing to train on")
    if names is None:
        for orphan in unpaired_labels(cases, path, layout):
            report.add("warning", orphan, "label without an image (no case uses it)")
    else:
        wanted = set(names)
        cases = [c for c in cases if c["name"] in wanted]
    if max_cases is not None:
        cases = cases[:max_cases]
    report.n_cases = len(cases)
    drive = layout == "drive"
    allowed = {0, 255} if drive else set(range(len(d.class_names)))
    spacings: Counter = Counter()
    orientations: Counter = Counter()
    shapes: Counter = Counter()
    channels: Counter = Counter()
    label_values: Counter = Counter()
    empty: list[str] = []
    lo, hi = np.inf, -np.inf
    n_labelled = 0
    for case in cases:
        image_path = Path(case["image"])
        if not image_path.exists():
            report.add("fatal", image_path, "image file not found")
            continue
        try:
            img, affine, n_ch = load_array(image_path)
        except Exception as err:  # noqa: BLE001 - any unreadable file is a finding, not a crash
            report.add("fatal", image_path, f"cannot read image: {error_reason(err, image_path)}")
            continue
        spatial = tuple(int(s) for s in img.shape[1:])
        channels[n_ch] += 1
        shapes[spatial] += 1
        if len(spatial) != dims:
            report.add("fatal", image_path, f"{len(spatial)} spatial dims, network.spatial_dims is {dims}")
            if not report.hints:
                other = 2 if dims == 3 else 3
                example = "configs/drive_2d.yaml" if other == 2 else "configs/hippocampus_3d.yaml"
                report.hints.append(f"these images are {other}D but the config is for {dims}D networks: "
                                    f"pass a {other}D --config (e.g. {example})")
        if n_ch != config.network.in_channels:
            report.add("fatal", image_path, f"{n_ch} channel(s), network.in_channels is {config.network.in_channels}")
        sdims = min(len(spatial), 3)
        spacings[_spacing(affine, sdims)] += 1
        orientations[_axcodes(affine, sdims)] += 1
        if np.issubdtype(img.dtype, np.floating):
            finite = np.isfinite(img)
            if not finite.all():
                n_bad = int((~finite).sum())
                report.add("fatal", image_path, f"{n_bad} NaN/inf voxel(s)")
                img = img[finite]
        if img.size:
            lo, hi = min(lo, float(img.min())), max(hi, float(img.max()))
        label = case.get("label")
        if not label:
            report.add("warning", image_path, "no label found for this image (left out of training and evaluation)")
            continue
        label_path = Path(label)
        if not label_path.exists():
            report.add("fatal", label_path, f"label file not found (image {image_path.name})")
            continue
        try:
            lab, lab_affine, lab_ch = load_array(label_path)
        except Exception as err:  # noqa: BLE001
            report.add("fatal", label_path, f"cannot read label: {error_reason(err, label_path)}")
            continue
        n_labelled += 1
        if lab_ch != 1:
            report.add("fatal", label_path, f"label has {lab_ch} channels, expected 1")
        if tuple(lab.shape[1:]) != spatial:
            report.add("fatal", label_path, f"label shape {tuple(lab.shape[1:])} != image shape {spatial}")
        elif not np.allclose(lab_affine, affine, atol=d.label_tolerance, rtol=0.0):
            diff = float(np.abs(lab_affine - affine).max())
            report.add(
                "fatal", label_path, f"label affine differs from the image affine by {diff:.4g} (> {d.label_tolerance})"
            )
        values, counts = np.unique(lab, return_counts=True)
        if np.issubdtype(values.dtype, np.floating):
            if not np.isfinite(values).all():
                report.add("fatal", label_path, "NaN/inf in label")
                values, counts = values[np.isfinite(values)], counts[np.isfinite(values)]
            if not np.all(values == np.round(values)):
                report.add("fatal", label_path, "non-integer label values")
        ivalues = [int(v) for v in values]
        for v, c in zip(ivalues, counts):
            label_values[v] += int(c)
        bad = sorted(set(ivalues) - allowed)
        if bad:
            report.add("fatal", label_path, f"label values {bad} not in {sorted(allowed)} (classes {list(d.class_names)})")
        if all(v == 0 for v in ivalues):
            empty.append(case["name"])
            report.add("warning", label_path, "label is empty (background only)")
        if drive:
            fov = case.get("fov")
            if not fov or not Path(fov).exists():
                report.add("warning", image_path, "no field-of-view mask (mask/*_mask.gif)")
            else:
                try:
                    fov_arr, _, _ = load_array(fov)
                    if tuple(fov_arr.shape[1:]) != spatial:
                        report.add("fatal", fov, f"FOV mask shape {tuple(fov_arr.shape[1:])} != image shape {spatial}")
                except Exception as err:  # noqa: BLE001
                    report.add("fatal", fov, f"cannot read FOV mask: {error_reason(err, fov)}")
    shape_min, shape_max = _per_axis_range(list(shapes))  # per-axis range over the distinct values
    spacing_min, spacing_max = _per_axis_range(list(spacings))
    report.summary = {
        "n_labelled": n_labelled,
        "channels": dict(channels),
        "spacings": {str(k): v for k, v in spacings.most_common()},
        "orientations": dict(orientations.most_common()),
        "shape_min": shape_min,
        "shape_max": shape_max,
        "shapes": {str(k): v for k, v in shapes.most_common(10)},
        "spacing_min": spacing_min,
        "spacing_max": spacing_max,
        "label_values": dict(sorted(label_values.items())),
        "empty_labels": empty,
        "intensity_min": lo if np.isfinite(lo) else None,
        "intensity_max": hi if np.isfinite(hi) else None,
    }
    return report
