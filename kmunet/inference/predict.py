"""Folder prediction: preprocessing as in training, sliding-window inference, inverse mapping, reports.

Pipeline for each case (one at a time, so memory stays bounded by the largest case):

1. read the image (:func:`kmunet.inference.cases.load_case`: nibabel for NIfTI, SimpleITK's
   ``ImageSeriesReader`` for DICOM series) into a channel-first ``MetaTensor`` with its RAS affine;
2. run the checkpoint's preprocessing (:func:`kmunet.data.build_preprocessing` from the
   ``"preprocessing"`` dict stored in the checkpoint, without its file-loading steps);
3. ``monai.inferers.sliding_window_inference`` with the training patch size, softmax (averaged over
   mirror images with ``tta=True``: :func:`kmunet.inference.tta.sliding_window_probabilities`);
4. ``monai.transforms.Invertd`` maps the probabilities back to the input grid, argmax gives the
   ``uint8`` label mask, written with the input's geometry. All outputs of a case are written to
   temporary files and renamed into place together once every one of them is complete.

Under ``torchrun`` (``WORLD_SIZE`` > 1) each process takes every ``WORLD_SIZE``-th case and writes its
own ``predict_report.rank<R>.json``/``.csv``; rank 0 then merges them into ``predict_report.json``/``.csv``
(after a gloo barrier).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch

from kmunet.data.validation import domain_warning
from kmunet.inference.cases import Case, LoadedImage, discover_cases, load_case
from kmunet.runtime import resolve_device
from kmunet.inference.writers import staged_outputs, write_like_input, write_overlay_png, write_text_atomic

#: Default checkpoint: relative to the working directory, else to the kmunet source tree (see
#: :func:`resolve_checkpoint`).
DEFAULT_CHECKPOINT = Path("checkpoints") / "hippocampus_kmunet.pt"
#: The source tree holding ``kmunet/`` and ``checkpoints/`` (an editable install, as ``bootstrap.sh`` makes).
_SOURCE_ROOT = Path(__file__).resolve().parents[2]
#: Valid ``fmt`` values.
FORMATS: tuple[str, ...] = ("nifti", "dicom-seg")
#: The run settings that decide what a mask looks like (recorded per case as ``made_with``; ``format``
#: matters for DICOM inputs only, and the device and sliding-window batch size change no mask).
MASK_SETTINGS: tuple[str, ...] = ("kmunet_version", "checkpoints", "format", "overlap", "tta", "mirror_axes")

Predictor = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class CaseResult:
    """Outcome of one case (one row of ``predict_report.json`` / ``.csv``).

    Attributes:
        case: output stem.
        input: input file (NIfTI) or the folder of the DICOM series, as an absolute path with symlinks
            resolved (so a report reads the same from any working directory).
        output: written mask (NIfTI or DICOM-SEG; absolute), ``""`` when none (a failed ``overwrite`` redo
            names the earlier mask it left in place, and keeps that mask's shape, volumes and ``made_with``).
        status: ``"ok"``, ``"failed"`` or ``"exists"`` (output present, made from this same input as far as
            the earlier report knows, ``overwrite`` not set).
        error: one-line reason when failed (including a refused case: an output that would overwrite an
            input file, that two cases would both write, or that an earlier run made from another input).
        shape: input spatial shape.
        spacing: input voxel size in mm.
        volumes_mm3: predicted volume per class name (background excluded).
        seconds: wall time for the case.
        probabilities: written softmax map, if requested.
        png: written overlay, if requested.
        series_uid: ``SeriesInstanceUID`` for DICOM cases.
        warning: why the mask may be unreliable (input unlike the training data), ``""`` if none.
        made_with: the settings (:data:`MASK_SETTINGS`) of the run that wrote the mask; a mask kept from
            an earlier run keeps that run's.
        note: what else a reader of the report should know, ``""`` if nothing: a kept mask made with
            other settings than this run's, or an earlier output left in place when redoing a case failed.
    """

    case: str
    input: str
    output: str = ""
    status: str = "failed"
    error: str = ""
    shape: list[int] = field(default_factory=list)
    spacing: list[float] = field(default_factory=list)
    volumes_mm3: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    probabilities: str = ""
    png: str = ""
    series_uid: str = ""
    warning: str = ""
    made_with: dict[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass
class PredictReport:
    """Result of :func:`predict_folder`.

    Attributes:
        input: the input path (absolute).
        output_dir: the output folder (absolute).
        checkpoint: checkpoint used (the first member of an ensemble, all of them in
            ``settings["checkpoints"]``; ``""`` for an injected predictor).
        cases: one result per case handled by this process.
        skipped: ``(file, reason)`` for files that are not images.
        errors: batch-level problems (e.g. nothing to predict).
        report_json: path of the JSON report.
        report_csv: path of the CSV report.
        settings: how the masks were made (kmunet version, device, sliding window, TTA, format).

    ``predict_report.json`` also records ``cwd``, the working directory of the run (all its paths are
    absolute; reports of earlier kmunet versions held relative ones, read against that ``cwd`` or, when
    absent, the output folder's parent).
    """

    input: str
    output_dir: str
    checkpoint: str = ""
    cases: list[CaseResult] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    report_json: str = ""
    report_csv: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> list[CaseResult]:
        """Cases that failed."""
        return [c for c in self.cases if c.status == "failed"]

    @property
    def exit_code(self) -> int:
        """0 when every case succeeded (or already existed) and something was found, else 1."""
        return 1 if self.failed or self.errors else 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {
            "input": self.input,
            "output_dir": self.output_dir,
            "checkpoint": self.checkpoint,
            "settings": dict(self.settings),
            "n_cases": len(self.cases),
            "n_ok": sum(c.status == "ok" for c in self.cases),
            "n_existing": sum(c.status == "exists" for c in self.cases),
            "n_failed": len(self.failed),
            "errors": list(self.errors),
            "skipped": [{"file": f, "reason": r} for f, r in self.skipped],
            "cases": [asdict(c) for c in self.cases],
        }


@dataclass
class LoadedModel:
    """A network ready for inference plus what is needed to preprocess like training.

    Attributes:
        predictor: maps ``(B, C, *roi)`` to logits ``(B, K, *roi)``.
        preprocessing: the checkpoint's preprocessing params (see :func:`kmunet.data.preprocessing_params`).
        class_names: one name per output channel.
        sw_batch_size: sliding-window batch size (from the training config).
        overlap: sliding-window overlap (from the training config).
        data_summary: voxel size and shape range of the training data
            (:func:`kmunet.data.training_data_summary`), None for older checkpoints.
    """

    predictor: Predictor
    preprocessing: dict[str, Any]
    class_names: list[str]
    sw_batch_size: int = 4
    overlap: float = 0.25
    data_summary: dict[str, Any] | None = None


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """``checkpoint`` as given when it exists; a relative path missing from the working directory is
    looked up in the kmunet source tree (so the shipped ``checkpoints/*.pt`` work from any folder).

    Returns:
        The absolute path (which need not exist: :func:`load_model` reports a missing file).
    """
    path = Path(checkpoint)
    if not path.exists() and not path.is_absolute() and (_SOURCE_ROOT / path).exists():
        path = _SOURCE_ROOT / path
    return path.resolve()


def load_model(checkpoint: str | Path | Sequence[str | Path], device: str | torch.device = "cpu") -> LoadedModel:
    """Load a kmunet checkpoint safely (``torch.load(weights_only=True)``) and rebuild its network.

    Several checkpoints make an ensemble (:class:`~kmunet.networks.ProbabilityEnsemble`: their softmax
    probabilities averaged); they must share preprocessing and classes. The sliding-window settings and
    the training-data summary are the first one's.

    Raises:
        FileNotFoundError: no such checkpoint.
        ValueError: not a loadable kmunet checkpoint (e.g. a pickle that would run code), or ensemble
            members that disagree.
    """
    from kmunet.training.checkpoint import checkpoint_class_names, checkpoint_preprocessing, models_from_checkpoints

    dev = resolve_device(device)
    model, config, ckpts = models_from_checkpoints(checkpoint, device=dev)
    ckpt = ckpts[0]
    params = checkpoint_preprocessing(ckpt, config)
    names = checkpoint_class_names(ckpt, params)
    return LoadedModel(model, params, names, int(config.train.sw_batch_size), float(config.train.sw_overlap),
                       ckpt.get("data_summary"))


def inference_transforms(params: Mapping[str, Any]) -> Any:
    """The checkpoint's preprocessing ``Compose`` without its loading / channel-first steps.

    Images are read by :func:`kmunet.inference.cases.load_case` (so DICOM series can be chosen by
    UID and bad files give clear errors); everything after loading is exactly the training pipeline.
    """
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    from kmunet.data import build_preprocessing

    full = build_preprocessing(params, keys=("image",))
    return Compose([t for t in full.transforms if not isinstance(t, (LoadImaged, EnsureChannelFirstd))])


def _to_meta_tensor(image: LoadedImage) -> Any:
    """The channel-first ``MetaTensor`` that ``LoadImaged`` + ``EnsureChannelFirstd`` would give."""
    from monai.data import MetaTensor

    affine = torch.as_tensor(image.affine, dtype=torch.float64)
    meta = {
        "affine": affine.clone(),
        "original_affine": affine.clone(),
        "spatial_shape": np.asarray(image.spatial_shape),
        "original_channel_dim": 0,
        "filename_or_obj": "",
    }
    return MetaTensor(torch.from_numpy(image.array), meta=meta)


def predict_image(
    image: LoadedImage,
    predictor: Predictor,
    params: Mapping[str, Any],
    *,
    device: torch.device | str = "cpu",
    sw_batch_size: int = 4,
    overlap: float = 0.25,
    transforms: Any = None,
    mirror_axes: Sequence[int] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Predict one loaded image and map the result back onto its input grid.

    Args:
        image: from :func:`kmunet.inference.cases.load_case`.
        predictor: maps ``(B, C, *roi)`` to logits ``(B, K, *roi)``.
        params: preprocessing params (checkpoint ``"preprocessing"``); ``patch_size`` is the window.
        device: where the windows are evaluated.
        sw_batch_size: windows per forward pass.
        overlap: window overlap.
        transforms: precomputed :func:`inference_transforms` (built from ``params`` if ``None``).
        mirror_axes: spatial axes (of the preprocessed array) for mirroring test-time augmentation;
            ``()`` for none. See :func:`kmunet.inference.tta.sliding_window_probabilities`.

    Returns:
        ``(mask, probabilities)``: ``uint8`` labels of the input's spatial shape and float32 softmax
        maps ``(K, *spatial)`` on the same grid.
    """
    from monai.data import MetaTensor
    from monai.transforms import Invertd

    from kmunet.inference.tta import sliding_window_probabilities

    pre = transforms if transforms is not None else inference_transforms(params)
    data = pre({"image": _to_meta_tensor(image)})
    x = data["image"]
    roi = [int(p) for p in params.get("patch_size") or x.shape[1:]]
    dev = torch.device(device)
    with torch.inference_mode():
        batch = x.as_tensor()[None].to(dev, dtype=torch.float32)
        probs = sliding_window_probabilities(
            batch, roi, int(sw_batch_size), predictor, overlap=float(overlap), mirror_axes=mirror_axes,
            sw_device=dev, device=torch.device("cpu"),
        )[0].cpu()
    data["pred"] = MetaTensor(probs, meta=dict(x.meta))
    with warnings.catch_warnings():  # 2D pipelines have nothing to invert; MONAI warns about that
        warnings.filterwarnings("ignore", message="inverse has been called but no invertible transforms")
        inverted = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False, to_tensor=True)(data)
    back = torch.as_tensor(inverted["pred"]).float().numpy()
    if tuple(back.shape[1:]) != tuple(image.spatial_shape):
        raise RuntimeError(f"inverse transform gave shape {list(back.shape[1:])}, input is {list(image.spatial_shape)}")
    return back.argmax(0).astype(np.uint8), back.astype(np.float32)


def _shard(cases: Sequence[Case]) -> tuple[list[Case], int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = int(os.environ.get("RANK", "0") or 0)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad torchrun environment RANK={rank} WORLD_SIZE={world}")
    return list(cases[rank::world]), rank, world


def _input_warnings(image: LoadedImage) -> list[str]:
    """Why a readable image still cannot give a trustworthy mask (a constant image, non-mm NIfTI units)."""
    found = []
    if image.array.size:
        lo, hi = float(image.array.min()), float(image.array.max())
        if lo == hi:
            found.append(f"the image is constant ({lo:.6g} everywhere): the mask is meaningless")
    unit = image.nifti.header.get_xyzt_units()[0] if image.nifti is not None else "mm"
    if unit not in ("mm", "unknown"):  # nibabel (and kmunet) read NIfTI affines as mm
        found.append(f"the NIfTI header gives spatial units of {unit!r}, read here as mm "
                     "(voxel sizes and volumes are off by that factor)")
    return found


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def mask_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of a run's settings that decide what its masks look like.

    Args:
        settings: a :class:`PredictReport`'s ``settings`` (or those stored in a ``predict_report.json``).

    Returns:
        The :data:`MASK_SETTINGS` entries ``settings`` has.
    """
    return {k: settings[k] for k in MASK_SETTINGS if k in settings}


def _differences(made_with: Mapping[str, Any], now: Mapping[str, Any], dicom: bool) -> list[str]:
    """``"key old (this run: new)"`` for each mask setting an earlier run recorded and this run changed."""
    keys = [k for k in MASK_SETTINGS if k in made_with and (dicom or k != "format")]
    return [f"{k} {json.dumps(made_with[k])} (this run: {json.dumps(now.get(k))})" for k in keys
            if made_with[k] != now.get(k)]


#: Path fields of a report row (stored absolute; relative in reports of earlier kmunet versions).
_PATH_FIELDS: tuple[str, ...] = ("input", "output", "probabilities", "png")


def _path_key(path: str | Path) -> str:
    """A comparable form of ``path``: absolute, symlinks resolved, case-normalised where the OS is."""
    return os.path.normcase(str(Path(path).resolve()))


#: Key set on a row read from an old report whose relative ``input`` does not resolve to a file.
_UNPLACED = "_input_unplaced"


def _identity(row: Mapping[str, Any]) -> tuple[str, str]:
    """What a report row was made from: its input (path key) and DICOM series UID."""
    return (_path_key(row["input"]) if row.get("input") else "", str(row.get("series_uid") or ""))


def _same_input(row: Mapping[str, Any], res: CaseResult) -> bool:
    """Whether an earlier report ``row`` may describe ``res``'s input.

    A row whose input could not be placed (:data:`_UNPLACED`: a relative path in a report of an earlier
    kmunet that did not record its working directory) is taken to match, as earlier versions did.
    """
    if row.get(_UNPLACED):
        return True
    return _identity(row) == _identity({"input": res.input, "series_uid": res.series_uid})


#: What :func:`_read_earlier_report` returns: the earlier report's rows and mask settings, or None.
Earlier = Optional[tuple[list[dict[str, Any]], dict[str, Any]]]


def _read_earlier_report(out: Path) -> Earlier:
    """The case rows and mask settings of the ``predict_report.json`` in ``out``, None if absent or unreadable.

    Path fields are returned absolute. Reports of earlier kmunet versions stored them as given on the
    command line (relative to the working directory of that run); they are resolved against the
    report's ``cwd`` when it has one, else against the parent of the output folder (a run started
    beside it, as in ``kmunet predict --input scans --output masks``).
    """
    try:
        data = json.loads((out / "predict_report.json").read_text(encoding="utf-8"))
        rows = [dict(c) for c in data["cases"] if isinstance(c, dict) and "case" in c]
        settings = mask_settings(data.get("settings") or {})
        cwd = data.get("cwd")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    known = isinstance(cwd, str) and Path(cwd).is_absolute()
    base = Path(cwd) if known else out.resolve().parent
    for row in rows:
        row["case"] = str(row["case"])
        for key in _PATH_FIELDS:
            value = row.get(key)
            if isinstance(value, str) and value:
                row[key] = str((base / value).resolve())  # an absolute value stays itself
                if key == "input" and not known and not Path(value).is_absolute() and not Path(row[key]).exists():
                    row[_UNPLACED] = True  # the old run's working directory is unknown: not a foreign input
            elif key in row:
                row[key] = ""  # a damaged entry names no file
    return rows, settings


def _earlier_owners(earlier: Earlier) -> dict[str, dict[str, Any]]:
    """Path key of every output the earlier report (:func:`_read_earlier_report`) lists -> the row that made it."""
    owners: dict[str, dict[str, Any]] = {}
    for row in earlier[0] if earlier else []:
        for key in ("output", "probabilities", "png"):
            if isinstance(row.get(key), str) and row[key] and row.get("input"):
                owners[_path_key(row[key])] = row
    return owners


def _carry_over(report: PredictReport, earlier: Earlier, emit: Callable[[str], None]) -> list[CaseResult]:
    """Keep what the earlier ``predict_report.json`` (:func:`_read_earlier_report`) says about cases this run did not redo.

    A case of this run that was skipped because its output exists gets the earlier run's shape,
    spacing, volumes and ``made_with`` (with a ``note``, also emitted, when those settings differ from
    this run's); an earlier case this run did not see (another input, or the same name made from
    another input) is returned (unchanged) while its mask is still there and this run did not write
    over it. So re-running into a folder (a new scan added, a failed one retried) leaves one report
    describing every mask in it, each with the settings it was made with.

    Returns:
        The earlier cases to add to the written report (``report.cases`` itself stays this run's).
    """
    if earlier is None:
        return []
    rows, earlier_settings = earlier
    fields = set(CaseResult.__dataclass_fields__)
    now = mask_settings(report.settings)
    matched: set[int] = set()
    for res in report.cases:
        index = next((i for i, row in enumerate(rows) if row["case"] == res.case and _same_input(row, res)), None)
        if index is None:
            continue
        matched.add(index)  # this run's row replaces it
        old = rows[index]
        # The mask in the folder is the earlier run's: this run kept it, or failed (a refused case, or a
        # failed --overwrite redo) and so wrote none of its outputs.
        if res.status == "ok" or not (old.get("output") and Path(old["output"]).exists()):
            continue
        for key in ("shape", "spacing", "volumes_mm3", "output", "warning"):
            if key in old:
                setattr(res, key, old[key])
        for key in ("probabilities", "png"):  # extra outputs only while they are still there
            value = old.get(key)
            setattr(res, key, value if isinstance(value, str) and value and Path(value).exists() else "")
        if res.status == "exists":
            res.seconds = old.get("seconds", res.seconds)
        # Reports written before made_with existed: their run's settings made every mask in them.
        made_with = old["made_with"] if "made_with" in old else earlier_settings
        res.made_with = dict(made_with) if isinstance(made_with, dict) else {}
        diff = _differences(res.made_with, now, dicom=bool(res.series_uid))
        if diff and res.status == "exists":
            res.note = "kept from an earlier run with other settings: " + "; ".join(diff)
            emit(f"note: {res.output or res.case}: {res.note} (use --overwrite to redo it)")
    # Files this run wrote (or kept as its own): an earlier row naming one of them no longer describes it.
    claimed = {_path_key(p) for res in report.cases if res.status in ("ok", "exists")
               for p in (res.output, res.probabilities, res.png) if p}
    carried = []
    for i, old in enumerate(rows):
        output = old.get("output")
        if i in matched or not output or not Path(output).exists() or _path_key(output) in claimed:
            continue
        row = {"made_with": earlier_settings, **{k: v for k, v in old.items() if k in fields}}
        for key in ("probabilities", "png"):  # an extra output since written over by another case
            if row.get(key) and _path_key(row[key]) in claimed:
                row[key] = ""
        carried.append(CaseResult(**row))
    return carried


def _write_reports(report: PredictReport, out: Path, suffix: str, earlier: Earlier, emit: Callable[[str], None]) -> None:
    carried = [] if suffix else _carry_over(report, earlier, emit)
    full = replace(report, cases=report.cases + carried)
    report.report_json = str(out / f"predict_report{suffix}.json")
    report.report_csv = str(out / f"predict_report{suffix}.csv")
    data = {**full.to_dict(), "cwd": os.getcwd(), "n_from_earlier_runs": len(carried)}
    write_text_atomic(report.report_json, json.dumps(data, indent=2) + "\n")
    names = sorted({k for c in full.cases for k in c.volumes_mm3})
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["case", "input", "output", "status", "error", "shape", "spacing", "seconds", "series_uid",
                     "warning", "note"] + [f"volume_mm3_{n}" for n in names])
    for c in full.cases:
        writer.writerow([c.case, c.input, c.output, c.status, c.error, "x".join(map(str, c.shape)),
                         "x".join(f"{s:.6g}" for s in c.spacing), f"{c.seconds:.3f}", c.series_uid, c.warning, c.note]
                        + [f"{c.volumes_mm3[n]:.3f}" if n in c.volumes_mm3 else "" for n in names])
    for f, r in report.skipped:
        writer.writerow(["", f, "", "skipped", r, "", "", "", "", "", ""] + [""] * len(names))
    write_text_atomic(report.report_csv, buf.getvalue())


@dataclass(frozen=True)
class _Plan:
    """The outputs a case will write: its mask and, when asked for, probabilities and overlay."""

    mask: Path
    probabilities: Path | None = None
    overlay: Path | None = None

    @property
    def named(self) -> list[tuple[str, Path]]:
        """``(role, path)`` of every planned output, the mask first."""
        found = [("mask", self.mask), ("probability map", self.probabilities), ("--png overlay", self.overlay)]
        return [(role, path) for role, path in found if path is not None]

    @property
    def paths(self) -> list[Path]:
        """Every planned output, the mask first."""
        return [path for _, path in self.named]


def _plan_outputs(case: Case, out: Path, fmt: str, save_probabilities: bool, png: bool) -> _Plan:
    """Where ``case``'s outputs go (``<case>.nii.gz`` / ``<case>_seg.dcm`` / ``<case>.png`` and the extras)."""
    as_seg = fmt == "dicom-seg" and case.kind == "dicom"
    mask = out / (f"{case.name}_seg.dcm" if as_seg else f"{case.name}.png" if case.kind == "raster"
                  else f"{case.name}.nii.gz")
    # A raster case's mask is <case>.png already, so its overlay gets another name.
    overlay = out / (f"{case.name}_overlay.png" if case.kind == "raster" else f"{case.name}.png")
    return _Plan(mask, out / f"{case.name}_probabilities.nii.gz" if save_probabilities else None,
                 overlay if png else None)


def _input_files(case: Case) -> list[Path]:
    """The files ``case`` is read from (a DICOM series' slices, else its one file)."""
    return list(case.files) if case.files else [Path(case.path)]


def _refused_cases(cases: Sequence[Case], plans: Mapping[str, _Plan], others: Sequence[Path] = ()) -> dict[str, str]:
    """Case name -> why it must not be written, for cases whose planned outputs are unsafe.

    Checked over every case found (all ranks alike), before anything is written:

    * an output that is an input file of this run, or one of the ``others`` files of the input folder that
      are not cases (the skipped files), the same path once symlinks are resolved or an existing file that
      is the same file, e.g. with the output folder equal to the input folder;
    * an output path planned by two cases (compared case-insensitively, as case names are made
      unique), e.g. the mask of a scan named ``x_probabilities`` and the probability map of ``x``.

    Every case involved gets one reason (the first found).
    """
    inputs: dict[str, tuple[Case | None, Path]] = {}
    inodes: dict[tuple[int, int], tuple[Case | None, Path]] = {}
    owned: list[tuple[Case | None, Path]] = [(None, Path(f)) for f in others]
    owned += [(case, f) for case in cases for f in _input_files(case)]  # a case's own files win
    for owner, f in owned:
        inputs[_path_key(f)] = (owner, f)
        with contextlib.suppress(OSError):
            st = f.stat()
            inodes[(st.st_dev, st.st_ino)] = (owner, f)
    refused: dict[str, str] = {}
    planned: dict[str, list[tuple[Case, str, Path]]] = {}
    for case in cases:
        for role, path in plans[case.name].named:
            key = _path_key(path)
            hit = inputs.get(key)
            if hit is None:
                with contextlib.suppress(OSError):
                    st = path.stat()
                    hit = inodes.get((st.st_dev, st.st_ino))
            if hit is not None and case.name not in refused:
                whose = ("a file of the input folder that is not a case" if hit[0] is None else "its own input"
                         if hit[0].name == case.name else f"an input of case {hit[0].name}")
                refused[case.name] = (f"its {role} {path.name} would overwrite {whose}, {hit[1]}; "
                                      "write the outputs to another folder")
            planned.setdefault(key.lower(), []).append((case, role, path))
    for group in planned.values():
        if len({c.name for c, _, _ in group}) < 2:
            continue
        for case, role, path in group:
            other, other_role, _ = next(g for g in group if g[0].name != case.name)
            refused.setdefault(case.name, f"its {role} {path.name} would also be the {other_role} of case "
                                          f"{other.name} ({other.path}); rename one of the inputs")
    return refused


def _note_left(res: CaseResult, wanted: Sequence[Path], emit: Callable[[str], None], why: str) -> None:
    """Note on a failed case (``why`` it wrote nothing) which planned outputs of an earlier run are left in place."""
    left = [w.name for w in wanted if w.exists()]
    if left:
        res.note = f"{why}; the earlier output ({', '.join(left)}) was left in place"
        emit(f"note: {res.case}: {res.note}")


def _predict_case(case: Case, plan: _Plan, refused: str, owners: Mapping[str, Mapping[str, Any]], *, overwrite: bool,
                  fmt: str, dims: int, chans: int, loaded: LoadedModel, params: Mapping[str, Any], dev: torch.device,
                  sw: int, ov: float, transforms: Any, mirror_axes: Sequence[int], report: PredictReport,
                  emit: Callable[[str], None]) -> CaseResult:
    """Segment one case and write its outputs all at once (see :func:`predict_folder`).

    Every output is written to a temporary file first and all are renamed into place at the end, so
    an earlier complete set stays until the new one is complete, and a failure (or Ctrl-C, which
    propagates) leaves none of the new files.
    """
    start = time.perf_counter()
    res = CaseResult(case=case.name, input=str(Path(case.path).resolve()), series_uid=case.series_uid)
    if refused:
        res.error = refused
        emit(f"error: {case.path}: {res.error}")
        _note_left(res, plan.paths, emit, "it was refused")
        return res
    target, wanted = plan.mask, plan.paths
    try:
        if fmt == "dicom-seg" and case.kind != "dicom":
            emit(f"note: {case.path}: DICOM-SEG needs a DICOM series input; writing "
                 f"{'a PNG' if case.kind == 'raster' else 'NIfTI'}")
        present = [w for w in wanted if w.exists()]
        if present and not overwrite:
            foreign = [(w, owners[k]) for w in present if (k := _path_key(w)) in owners and not _same_input(owners[k], res)]
            if foreign:  # e.g. in/b/img.nii.gz made img.nii.gz; now in/a/img.nii.gz is case img
                w, old = foreign[0]
                uid = f" (series {old['series_uid']})" if old.get("series_uid") else ""
                res.error = (f"output {w.name} exists but was made from another input, {old['input']}{uid} "
                             f"(per predict_report.json), not from {res.input}; move it away, or use --overwrite "
                             "to replace it")
                emit(f"error: {case.path}: {res.error}")
                return res
            res.status, res.output = "exists", str(target) if target.exists() else ""
            res.error = f"output exists: {present[0].name} (use --overwrite to replace it)"
            emit(f"skip: {present[0]}: output exists (use --overwrite)")
            return res
        image = load_case(case, dims, chans)
        zooms = np.sqrt((image.affine[:3, :3] ** 2).sum(0))[: len(image.spatial_shape)]  # 2D: two axes
        res.shape = [int(s) for s in image.spatial_shape]
        res.spacing = [float(z) for z in zooms]
        res.warning = "; ".join(filter(None, [*_input_warnings(image),
                                               domain_warning(loaded.data_summary, res.spacing, res.shape)]))
        if res.warning:
            emit(f"warning: {case.path}: {res.warning}")
        mask, probs = predict_image(image, loaded.predictor, params, device=dev, sw_batch_size=sw,
                                    overlap=ov, transforms=transforms, mirror_axes=mirror_axes)
        names = loaded.class_names or [f"class_{k}" for k in range(probs.shape[0])]
        voxel = float(abs(np.linalg.det(image.affine[:3, :3])))
        res.volumes_mm3 = {
            (names[k] if k < len(names) else f"class_{k}"): float((mask == k).sum() * voxel)
            for k in range(1, probs.shape[0])
        }
        with staged_outputs() as stage:
            # Renamed in this order at the end: the mask last, so a mask in the folder means a complete set.
            tmp_probs = stage.temp(plan.probabilities) if plan.probabilities is not None else None
            tmp_overlay = stage.temp(plan.overlay) if plan.overlay is not None else None
            tmp_mask = stage.temp(target)
            if fmt == "dicom-seg" and case.kind == "dicom":
                from kmunet.inference.dicom_seg import write_dicom_seg

                write_dicom_seg(tmp_mask, mask, case.files, names)
            else:
                write_like_input(tmp_mask, mask, image, np.uint8, num_classes=probs.shape[0])
            if tmp_probs is not None:
                write_like_input(tmp_probs, np.moveaxis(probs, 0, -1), image, np.float32)
            if tmp_overlay is not None:
                rgb = case.kind == "raster" and image.array.shape[0] == 3
                shown = np.moveaxis(image.array, 0, -1) if rgb else image.array[0]  # (H, W, 3) or (*spatial)
                write_overlay_png(tmp_overlay, shown, mask, title=case.name, spacing=res.spacing,
                                  raster=case.kind == "raster")
        res.output = str(target)
        res.probabilities = str(plan.probabilities) if plan.probabilities is not None else ""
        res.png = str(plan.overlay) if plan.overlay is not None else ""
        res.status, res.made_with = "ok", mask_settings(report.settings)
        del image, mask, probs
    except Exception as err:  # noqa: BLE001 - one bad case must never take down the batch
        res.status, res.error = "failed", _one_line(err)
        res.output = res.probabilities = res.png = ""
        emit(f"error: {case.path}: {res.error}")
        _note_left(res, wanted, emit, "redoing it failed")
    res.seconds = round(time.perf_counter() - start, 4)
    return res


def predict_folder(
    input_path: str | Path,
    output_dir: str | Path,
    checkpoint: str | Path | Sequence[str | Path] | None = DEFAULT_CHECKPOINT,
    *,
    device: str | torch.device | None = "auto",
    fmt: str = "nifti",
    save_probabilities: bool = False,
    png: bool = False,
    overwrite: bool = False,
    allow_output_in_input: bool = False,
    predictor: Predictor | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    class_names: Sequence[str] | None = None,
    sw_batch_size: int | None = None,
    overlap: float | None = None,
    tta: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> PredictReport:
    """Segment every NIfTI file and DICOM series under ``input_path`` into ``output_dir``.

    Args:
        input_path: a NIfTI file, a DICOM file (its series) or a folder searched recursively.
        output_dir: where ``<case>.nii.gz`` (or ``<case>_seg.dcm``) and the reports go.
        checkpoint: kmunet checkpoint, or several to ensemble (softmax averaged; they must share
            preprocessing and classes); ignored when ``predictor`` is given.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        fmt: ``"nifti"`` or ``"dicom-seg"`` (DICOM inputs; NIfTI inputs still get NIfTI masks).
        save_probabilities: also write ``<case>_probabilities.nii.gz`` (softmax, ``(x, y, z, K)``).
        png: also write ``<case>.png`` (mask contours over the three mid-planes of a volume, or over a 2D
            image; ``<case>_overlay.png`` for PNG/TIF/GIF inputs, whose mask is ``<case>.png``).
        overwrite: replace existing outputs (otherwise such cases get status ``"exists"``, or fail when
            the earlier ``predict_report.json`` says another input made the output). A case's outputs are
            all written to temporary files and renamed into place together at the end, so a failed redo
            leaves the earlier set as it was.
        allow_output_in_input: permit ``output_dir`` inside ``input_path``. Even then a case whose output
            would be one of the input files (e.g. ``output_dir`` equal to the input folder) fails, as does
            every case of an output path two cases would write (e.g. scans ``x`` and
            ``x_probabilities`` with ``save_probabilities``); the other cases are segmented.
        predictor: inject a callable ``(B, C, *roi) -> logits`` instead of a checkpoint (tests, demos).
        preprocessing: preprocessing params for ``predictor`` (required with it).
        class_names: names for ``predictor``'s output channels (default: ``preprocessing["class_names"]``,
            else ``class_<k>``).
        sw_batch_size: windows per forward pass (default: the training config's).
        overlap: sliding-window overlap (default: the training config's).
        tta: mirroring test-time augmentation along the axes training flipped (the checkpoint's
            ``preprocessing["mirror_axes"]``, i.e. its ``data.flip_axes``), as nnU-Net does; costs
            ``2 ** len(axes)`` network passes per window.
        progress: show a tqdm bar on stderr.
        log: where one-line errors go (default: print to stderr).

    Returns:
        The :class:`PredictReport` (also written as ``predict_report.json`` and ``.csv``).

    Raises:
        ValueError: bad arguments (format, output inside input, unusable checkpoint).
        FileNotFoundError: missing input or checkpoint.
    """
    from tqdm import tqdm

    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid: {list(FORMATS)}")
    emit = log or (lambda line: print(line, file=sys.stderr, flush=True))
    src, out = Path(input_path), Path(output_dir)
    if not src.exists():
        raise FileNotFoundError(f"{src}: input not found")
    src_dir = (src if src.is_dir() else src.parent).resolve()
    out_res = out.resolve()
    if not allow_output_in_input and (out_res == src_dir or src_dir in out_res.parents):
        raise ValueError(f"output folder {out} is inside the input folder {src_dir}; choose another or allow it explicitly "
                         "(--allow-output-in-input; allow_output_in_input=True in Python)")
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} exists and is not a folder")

    if sw_batch_size is not None and (isinstance(sw_batch_size, bool) or int(sw_batch_size) != sw_batch_size
                                      or sw_batch_size < 1):
        raise ValueError(f"sw_batch_size must be an integer >= 1, got {sw_batch_size}")
    dev = resolve_device(device)
    if predictor is None:
        if checkpoint is None:
            raise ValueError("give a checkpoint or a predictor")
        from kmunet.training.checkpoint import checkpoint_paths

        members = [resolve_checkpoint(c) for c in checkpoint_paths(checkpoint)]
        loaded = load_model(members, dev)
    else:
        if preprocessing is None:
            raise ValueError("an injected predictor needs its preprocessing params")
        names = list(class_names if class_names is not None else preprocessing.get("class_names") or [])
        loaded = LoadedModel(predictor, dict(preprocessing), names)
    params = loaded.preprocessing
    sw = int(loaded.sw_batch_size if sw_batch_size is None else sw_batch_size)
    ov = float(loaded.overlap if overlap is None else overlap)
    if not 0.0 <= ov < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {ov}")
    transforms = inference_transforms(params)
    mirror_axes: list[int] = []
    if tta:
        if params.get("mirror_axes") is None:
            raise ValueError("tta needs the axes the model was trained to be flip-invariant to: "
                             "preprocessing['mirror_axes'] is missing")
        mirror_axes = [int(a) for a in params["mirror_axes"]]

    out.mkdir(parents=True, exist_ok=True)
    out = out_res  # every path the report stores is absolute (see CaseResult)
    dims, chans = int(params.get("spatial_dims", 3)), int(params.get("in_channels") or 1)
    all_cases, skipped = discover_cases(src, exclude=out, raster=dims == 2)
    plans = {c.name: _plan_outputs(c, out, fmt, save_probabilities, png) for c in all_cases}
    refused = _refused_cases(all_cases, plans, [Path(f) for f, _ in skipped])
    cases, rank, world = _shard(all_cases)
    earlier = _read_earlier_report(out)  # read once: this run writes the report only at its end
    owners = _earlier_owners(earlier)  # who made the outputs already in the folder, as the earlier report says
    from kmunet import __version__

    report = PredictReport(str(src.resolve()), str(out), "" if predictor is not None else str(members[0]),
                           skipped=[(str(Path(f).resolve()), r) for f, r in skipped],
                           settings={"kmunet_version": __version__, "device": str(dev), "format": fmt,
                                     "sw_batch_size": sw, "overlap": ov, "tta": bool(tta),
                                     "mirror_axes": mirror_axes, "overwrite": bool(overwrite)})
    if predictor is None:
        report.settings["checkpoints"] = [str(m) for m in members]
    if not all_cases:
        msg = f"{src}: no NIfTI files or DICOM series found" + (" (nor 2D raster images)" if dims == 2 else "")
        report.errors.append(msg)
        emit(f"error: {msg}")

    suffix = f".rank{rank}" if world > 1 else ""
    try:
        for case in tqdm(cases, desc="predict", unit="case", disable=not progress, file=sys.stderr):
            res = _predict_case(case, plans[case.name], refused.get(case.name, ""), owners, overwrite=overwrite,
                                fmt=fmt, dims=dims, chans=chans, loaded=loaded, params=params, dev=dev, sw=sw,
                                ov=ov, transforms=transforms, mirror_axes=mirror_axes, report=report, emit=emit)
            report.cases.append(res)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    except BaseException:  # Ctrl-C: the interrupted case left nothing (staged outputs); record the ones done
        with contextlib.suppress(Exception):
            _write_reports(report, out, suffix, earlier, emit)
        raise

    _write_reports(report, out, suffix, earlier, emit)
    if world > 1:
        _merge_rank_reports(report, out, rank, world, earlier, emit)
    return report


def _merge_rank_reports(report: PredictReport, out: Path, rank: int, world: int, earlier: Earlier,
                        emit: Callable[[str], None]) -> None:
    """Under torchrun: wait for every rank (gloo barrier), then rank 0 writes the merged report.

    Needs a process group (torchrun sets ``MASTER_ADDR``/``MASTER_PORT``); without one the per-rank
    reports are left as they are.
    """
    import torch.distributed as dist

    if not dist.is_available():
        return
    created = False
    if not dist.is_initialized():
        if not os.environ.get("MASTER_ADDR") or not os.environ.get("MASTER_PORT"):
            return
        dist.init_process_group("gloo", rank=rank, world_size=world)
        created = True
    try:
        dist.barrier()
        if rank == 0:
            merged = PredictReport(report.input, report.output_dir, report.checkpoint,
                                   skipped=list(report.skipped), errors=list(report.errors), settings=dict(report.settings))
            for r in range(world):
                data = json.loads((out / f"predict_report.rank{r}.json").read_text(encoding="utf-8"))
                merged.cases += [CaseResult(**c) for c in data["cases"]]
            merged.cases.sort(key=lambda c: c.case)
            _write_reports(merged, out, "", earlier, emit)
        dist.barrier()
    finally:
        if created:
            dist.destroy_process_group()
