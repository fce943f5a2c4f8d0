"""Case discovery and loading for inference: NIfTI files and DICOM series.

A *case* is one image to segment: a NIfTI file (``.nii`` / ``.nii.gz``) or one DICOM series
(all files sharing a ``SeriesInstanceUID``, possibly several series per folder, ordered by slice
position along the slice normal, never by file name).

Array convention (same as :mod:`kmunet.data.io`): spatial arrays are ``(x, y, z)``; the affine maps
voxel indices to RAS millimetres. For a DICOM series the geometry is SimpleITK's
``ImageSeriesReader`` geometry (LPS origin/spacing/direction) converted to RAS.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kmunet.data.io import read_series, sitk_affine_ras  # noqa: F401  (re-exported: kmunet.inference API)
from kmunet.checks import error_reason, first_line

#: Suffixes read as NIfTI.
NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")
#: Relative tolerance on slice spacing variations inside one DICOM series.
SPACING_RTOL = 0.05
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Case:
    """One image to segment.

    Attributes:
        name: output stem (filesystem-safe, unique within one discovery).
        kind: ``"nifti"``, ``"dicom"`` or ``"raster"`` (a 2D PNG/TIF/GIF/JPG image, for 2D models).
        path: the NIfTI or raster file, or the folder of the DICOM series' first file.
        files: DICOM files sorted by slice position (empty for NIfTI).
        series_uid: ``SeriesInstanceUID`` (DICOM only).
        error: a problem found during discovery (the case is reported as failed, not read).
    """

    name: str
    kind: str
    path: Path
    files: tuple[Path, ...] = ()
    series_uid: str = ""
    error: str = ""


@dataclass
class LoadedImage:
    """An image read for inference.

    Attributes:
        array: ``(C, x, y, z)`` float32 (channel first).
        affine: 4x4 RAS affine of the input grid.
        spatial_shape: input spatial shape.
        nifti: the ``nibabel`` image (NIfTI inputs; header kept for writing).
        sitk_image: the SimpleITK image (DICOM inputs; geometry kept for writing).
        raster: a 2D raster input (``array`` is ``(C, rows, columns)``, the affine the identity); its
            mask is written as a PNG of the same size.
    """

    array: np.ndarray
    affine: np.ndarray
    spatial_shape: tuple[int, ...]
    nifti: Any = None
    sitk_image: Any = None
    raster: bool = False


def safe_name(text: str, max_len: int = 100) -> str:
    """A filesystem-safe file stem: only ``[A-Za-z0-9._-]``, no leading dot, never empty.

    Path separators, ``..`` and any other character are replaced by ``_`` so a name built from
    DICOM tags can never leave the output folder.
    """
    name = _UNSAFE.sub("_", str(text)).strip("._-")
    name = re.sub(r"\.{2,}", "_", name)[:max_len].strip("._-")
    return name or "case"


def nifti_stem(path: str | Path) -> str:
    """File name without ``.nii`` / ``.nii.gz``."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_nifti(path: str | Path) -> bool:
    """True for a ``.nii`` / ``.nii.gz`` file name."""
    return Path(path).name.lower().endswith(NIFTI_SUFFIXES)


def _read_dicom_header(path: Path) -> Any:
    import pydicom

    return pydicom.dcmread(str(path), stop_before_pixels=True, force=False)


def _slice_normal(ds: Any) -> np.ndarray:
    iop = np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64)
    return np.cross(iop[:3], iop[3:])


def _dicom_series_name(ds: Any) -> str:
    patient = str(getattr(ds, "PatientID", "") or getattr(ds, "PatientName", "") or "patient")
    number = str(getattr(ds, "SeriesNumber", "") or "")
    description = str(getattr(ds, "SeriesDescription", "") or getattr(ds, "Modality", "") or "series")
    return safe_name("_".join(p for p in (patient, f"S{number}" if number else "", description) if p))


def check_dicom_series(headers: list[tuple[Path, Any]]) -> tuple[list[Path], str]:
    """Sort a series' files by slice position and check its geometry.

    Args:
        headers: ``(file, pydicom header)`` pairs of one series.

    Returns:
        ``(sorted files, error)`` where ``error`` is ``""`` for a consistent series, else a one-line
        reason (mixed orientations or matrix sizes, duplicate positions, missing slices, inconsistent
        spacing).
    """
    first = headers[0][1]
    try:
        normal = _slice_normal(first)
        iop0 = np.asarray([float(v) for v in first.ImageOrientationPatient])
    except (AttributeError, ValueError, TypeError):
        return [p for p, _ in headers], "no ImageOrientationPatient; not a volumetric image series"
    positions = []
    for path, ds in headers:
        try:
            iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
            ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
        except (AttributeError, ValueError, TypeError):
            return [p for p, _ in headers], f"{path.name}: missing ImagePositionPatient/ImageOrientationPatient"
        if not np.allclose(iop, iop0, atol=1e-4):
            return [p for p, _ in headers], "slices with different orientations"
        if (int(ds.Rows), int(ds.Columns)) != (int(first.Rows), int(first.Columns)):
            return [p for p, _ in headers], "slices with different matrix sizes"
        positions.append(float(np.dot(ipp, normal)))
    order = np.argsort(positions, kind="stable")
    files = [headers[i][0] for i in order]
    if len(files) < 2:
        return files, "a single slice, not a 3D series"
    pos = np.asarray(positions)[order]
    gaps = np.diff(pos)
    if np.any(gaps < 1e-4):
        return files, "several slices at the same position"
    median = float(np.median(gaps))
    bad = np.abs(gaps - median) > SPACING_RTOL * median
    if np.any(bad):
        ratio = gaps[bad] / median
        if np.all(np.abs(ratio - np.round(ratio)) < SPACING_RTOL) and np.all(np.round(ratio) >= 2):
            missing = int(np.sum(np.round(ratio) - 1))
            return files, f"{missing} missing slice(s) (gap of {gaps[bad].max():.3g} mm, spacing {median:.3g} mm)"
        return files, (
            f"inconsistent slice spacing ({gaps.min():.3g} to {gaps.max():.3g} mm, median {median:.3g} mm)"
        )
    return files, ""


def is_raster(path: str | Path) -> bool:
    """Whether ``path`` names a 2D raster image (PNG, TIF, GIF, JPG, BMP)."""
    from kmunet.data.io import RASTER_SUFFIXES

    return Path(path).name.lower().endswith(RASTER_SUFFIXES)


def discover_cases(
    input_path: str | Path, exclude: str | Path | None = None, raster: bool = False
) -> tuple[list[Case], list[tuple[Path, str]]]:
    """Find NIfTI files and DICOM series under ``input_path`` (a file or a folder, recursive).

    Args:
        input_path: a NIfTI file, a DICOM file (its whole series is taken from its folder) or a folder.
        exclude: a folder not to search (the output folder when it lies inside the input).
        raster: also take 2D raster images (PNG/TIF/GIF/JPG/BMP) as cases, for 2D models; otherwise
            they are skipped like any other non-image file.

    Returns:
        ``(cases, skipped)``: cases sorted by name (names unique and filesystem-safe; cases whose
        files are unreadable or inconsistent carry ``error``) and ``(file, reason)`` for skipped files.

    Raises:
        FileNotFoundError: ``input_path`` does not exist.
    """
    from pydicom.errors import InvalidDicomError

    root = Path(input_path)
    if not root.exists():
        raise FileNotFoundError(f"{root}: input not found")
    excluded = Path(exclude).resolve() if exclude is not None else None
    if root.is_file():
        alone = is_nifti(root) or (raster and is_raster(root))
        candidates = [root] if alone else sorted(p for p in root.parent.iterdir() if p.is_file())
        single_dicom = not alone
    else:
        candidates = []
        for dirpath, dirnames, filenames in os.walk(root):
            d = Path(dirpath)
            dirnames[:] = sorted(n for n in dirnames if excluded is None or (d / n).resolve() != excluded)
            candidates.extend(d / f for f in sorted(filenames))
        single_dicom = False

    raw: list[Case] = []
    skipped: list[tuple[Path, str]] = []
    series: dict[str, list[tuple[Path, Any]]] = defaultdict(list)
    for path in candidates:
        if single_dicom and path != root and (is_nifti(path) or is_raster(path)):
            continue  # one DICOM file asked for: only its series, not the other images of its folder
        if path.name.startswith("."):
            skipped.append((path, "hidden file"))
            continue
        if is_nifti(path):
            raw.append(Case(name=safe_name(nifti_stem(path)), kind="nifti", path=path))
            continue
        if is_raster(path):
            if raster:
                raw.append(Case(name=safe_name(path.stem), kind="raster", path=path))
            else:
                skipped.append((path, "2D raster image (only 2D models segment those)"))
            continue
        try:
            ds = _read_dicom_header(path)
        except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError, EOFError) as err:
            if path.suffix.lower() == ".dcm" and not single_dicom:
                reason = first_line(err)
                raw.append(Case(name=safe_name(path.stem), kind="dicom", path=path, error=f"not a readable DICOM file ({reason})"))
            else:
                skipped.append((path, "not a NIfTI or DICOM file"))
            continue
        uid = str(getattr(ds, "SeriesInstanceUID", "") or "")
        if not uid or "ImagePositionPatient" not in ds or "Rows" not in ds:
            modality = str(getattr(ds, "Modality", "?"))
            skipped.append((path, f"DICOM object without image geometry (Modality {modality})"))
            continue
        series[uid].append((path, ds))

    if single_dicom:
        uid0 = next((u for u, items in series.items() if any(p == root for p, _ in items)), None)
        series = {uid0: series[uid0]} if uid0 is not None else {}
    for uid, headers in series.items():
        files, error = check_dicom_series(headers)
        raw.append(
            Case(
                name=_dicom_series_name(headers[0][1]),
                kind="dicom",
                path=files[0].parent,
                files=tuple(files),
                series_uid=uid,
                error=error,
            )
        )

    raw.sort(key=lambda c: (c.name, str(c.path), c.series_uid))
    cases = []
    for case, name in zip(raw, unique_names([c.name for c in raw])):
        cases.append(Case(name=name, kind=case.kind, path=case.path, files=case.files, series_uid=case.series_uid, error=case.error))
    return cases, skipped


def unique_names(names: Sequence[str]) -> list[str]:
    """``names`` made unique case-insensitively: the first of each name keeps it, later ones get ``_2``, ``_3``, ...

    A suffixed name never takes a name that another entry has of its own (``img``, ``img``, ``img_2``
    become ``img``, ``img_3``, ``img_2``), so no two cases share an output file.
    """
    taken = {n.lower() for n in names}
    used: set[str] = set()
    out = []
    for name in names:
        candidate, n = name, 1
        while candidate.lower() in used or (n > 1 and candidate.lower() in taken):
            n += 1
            candidate = f"{name}_{n}"
        used.add(candidate.lower())
        out.append(candidate)
    return out


def load_case(case: Case, spatial_dims: int = 3, in_channels: int = 1) -> LoadedImage:
    """Read a case into a channel-first float32 array plus its RAS affine.

    Raises:
        ValueError: unreadable file or an image that is not ``spatial_dims``-D with ``in_channels``
            channels (the message names the file and the shape).
    """
    if case.error:
        raise ValueError(case.error)
    if case.kind == "nifti":
        from kmunet.data.io import read_nifti

        try:
            img, raw = read_nifti(Path(case.path))  # a .nii.gz is read to its end: CRC checked
            data = np.asarray(raw, dtype=np.float32)
        except Exception as err:  # corrupt or truncated gzip, bad header, not an image at all
            reason = error_reason(err, case.path)
            raise ValueError(f"not a readable NIfTI image ({type(err).__name__}: {reason})") from None
        if data.ndim > spatial_dims and in_channels == 1 and all(n == 1 for n in data.shape[spatial_dims:]):
            data = data.reshape(data.shape[:spatial_dims])  # (x, y, z, 1) as some tools write 3D volumes
        if data.ndim == spatial_dims and in_channels == 1:
            array = data[None]
        elif data.ndim == spatial_dims + 1 and data.shape[-1] == in_channels and in_channels > 1:
            array = np.moveaxis(data, -1, 0)
        else:
            raise ValueError(
                f"{data.ndim}D image of shape {list(data.shape)}, expected a {spatial_dims}D image"
                + (f" with {in_channels} channels" if in_channels > 1 else "")
            )
        if not np.all(np.isfinite(array)):
            raise ValueError("image contains NaN or infinite values")
        return LoadedImage(np.ascontiguousarray(array), np.asarray(img.affine, dtype=np.float64), array.shape[1:], nifti=img)
    if case.kind == "raster":
        from kmunet.data.io import load_array

        try:
            array, affine, channels = load_array(case.path)  # (C, rows, columns), identity affine
        except Exception as err:  # noqa: BLE001 - pillow raises several types on corrupt files
            reason = first_line(err)
            raise ValueError(f"not a readable raster image ({type(err).__name__}: {reason})") from None
        if spatial_dims != 2 or channels != in_channels:
            raise ValueError(f"2D image with {channels} channel(s); the model expects {spatial_dims}D x {in_channels}")
        array = np.ascontiguousarray(array, dtype=np.float32)
        return LoadedImage(array, np.asarray(affine, dtype=np.float64), array.shape[1:], raster=True)
    if spatial_dims != 3 or in_channels != 1:
        raise ValueError(f"DICOM series give 3D single-channel images; the model expects {spatial_dims}D x {in_channels}")
    try:
        image = read_series(case.files)
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else "unreadable"
        raise ValueError(f"unreadable DICOM series ({reason})") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"DICOM series is not a single-channel 3D volume (size {list(image.GetSize())})")
    import SimpleITK as sitk

    data = sitk.GetArrayFromImage(image).astype(np.float32).transpose(2, 1, 0)  # (z,y,x) -> (x,y,z)
    return LoadedImage(np.ascontiguousarray(data[None]), sitk_affine_ras(image), data.shape, sitk_image=image)
