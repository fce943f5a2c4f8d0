"""``export-nifti``: DICOM image series, DICOM-SEG objects and NumPy label arrays to NIfTI."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from kmunet.inference.cases import Case, LoadedImage, discover_cases, load_case, read_series, safe_name
from kmunet.inference.dicom_seg import is_dicom_seg, read_dicom_seg
from kmunet.inference.writers import atomic_path, write_like_input
from kmunet.runtime import new_folder


@dataclass
class ExportReport:
    """Result of :func:`export_nifti`: ``(input, output)`` written and ``(input, reason)`` failed."""

    written: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """1 when anything failed or nothing was written, else 0."""
        return 1 if self.failed or not self.written else 0


def _reference_image(reference: str | Path) -> tuple[LoadedImage, list[Path]]:
    cases, _ = discover_cases(reference)
    cases = [c for c in cases if not c.error]
    if len(cases) != 1:
        raise ValueError(f"reference {reference} must hold exactly one NIfTI image or DICOM series, found {len(cases)}")
    return load_case(cases[0]), list(cases[0].files)


def _write_affine_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.set_sform(affine, 1)
    img.set_qform(affine, 1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def _write_series(case: Case, target: Path) -> None:
    import SimpleITK as sitk

    if case.error:
        raise ValueError(case.error)
    image = read_series(case.files)
    with atomic_path(target) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)


def export_nifti(
    input_path: str | Path,
    output_dir: str | Path,
    reference: str | Path | None = None,
    *,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> ExportReport:
    """Convert DICOM series, DICOM-SEG files or ``.npy`` label arrays to NIfTI with correct geometry.

    Args:
        input_path: a DICOM series folder (several series allowed), a DICOM file, a DICOM-SEG file or
            a ``.npy`` array (``(x, y, z)``, the reference's array order).
        output_dir: output folder (``<name>.nii.gz`` per converted object).
        reference: geometry source for ``.npy`` (required) and DICOM-SEG (optional: the source series,
            for a voxel-exact layout on its grid): a NIfTI file or DICOM series folder.
        overwrite: replace existing files.
        log: where one-line errors go (default stderr).

    Returns:
        An :class:`ExportReport`.

    Raises:
        FileNotFoundError: missing input or reference.
        ValueError: ``.npy`` without reference.
    """
    emit = log or (lambda line: print(line, file=sys.stderr, flush=True))
    src, out = Path(input_path), Path(output_dir)
    if not src.exists():
        raise FileNotFoundError(f"{src}: input not found")
    if reference is not None and not Path(reference).exists():
        raise FileNotFoundError(f"{reference}: reference not found")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: output exists and is not a folder")
    with new_folder(out):  # a run that wrote nothing leaves no empty folder behind
        return _export(src, out, reference, overwrite, emit)


def _export(src: Path, out: Path, reference: str | Path | None, overwrite: bool,
            emit: Callable[[str], None]) -> ExportReport:
    """The body of :func:`export_nifti` once its arguments are checked and ``out`` exists."""
    report = ExportReport()

    def do(name: str, item: str, fn: Callable[[Path], None]) -> None:
        target = out / f"{safe_name(name)}.nii.gz"
        if target.exists() and not overwrite:
            report.failed.append((item, f"{target} exists (use --overwrite)"))
            emit(f"error: {item}: {target} exists (use --overwrite)")
            return
        try:
            fn(target)
            report.written.append((item, str(target)))
        except (ValueError, RuntimeError, OSError, KeyError, AttributeError) as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            report.failed.append((item, reason))
            emit(f"error: {item}: {reason}")

    if src.is_file() and src.suffix.lower() == ".npy":
        if reference is None:
            raise ValueError(f"{src}: a NumPy array needs --reference (NIfTI file or DICOM series) for its geometry")

        def npy(target: Path) -> None:
            ref, _ = _reference_image(reference)
            arr = np.load(src, allow_pickle=False)
            if tuple(arr.shape) != tuple(ref.spatial_shape):
                raise ValueError(f"array shape {list(arr.shape)} differs from reference shape {list(ref.spatial_shape)}")
            dtype = np.uint8 if np.issubdtype(arr.dtype, np.integer) and arr.min() >= 0 and arr.max() < 256 else arr.dtype
            if arr.dtype == bool:
                dtype = np.uint8
            write_like_input(target, arr, ref, dtype)

        do(src.name[:-4], str(src), npy)
        return report

    seg_files = [src] if src.is_file() and is_dicom_seg(src) else []
    cases: list[Case] = []
    if not seg_files:
        cases, skipped = discover_cases(src)
        for f, reason in skipped:
            if "Modality SEG" in reason:
                seg_files.append(Path(f))
            else:
                report.skipped.append((str(f), reason))
    ref_files = _reference_image(reference)[1] or None if reference is not None and seg_files else None
    for seg in seg_files:

        def conv(target: Path, seg: Path = seg) -> None:
            mask, affine = read_dicom_seg(seg, ref_files)
            _write_affine_nifti(target, mask, affine)

        do(seg.name[:-4] if seg.name.lower().endswith(".dcm") else seg.name, str(seg), conv)
    for case in cases:
        if case.kind == "nifti":
            report.skipped.append((str(case.path), "already NIfTI"))
            continue
        do(case.name, str(case.path), lambda target, case=case: _write_series(case, target))
    if not report.written and not report.failed:
        emit(f"error: {src}: nothing to convert (no DICOM series, DICOM-SEG or .npy found)")
    return report
