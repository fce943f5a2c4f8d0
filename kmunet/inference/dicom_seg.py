"""DICOM Segmentation objects (highdicom): write a label mask referencing its source series, read back."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from kmunet import __version__
from kmunet.inference.writers import atomic_path

#: Type-2 patient/study attributes a SEG copies from its source (empty when the source lacks them).
_TYPE2_PATIENT_STUDY: tuple[str, ...] = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber",
)


def write_dicom_seg(
    path: str | Path,
    mask: np.ndarray,
    source_files: Sequence[str | Path],
    class_names: Sequence[str],
    *,
    series_number: int = 900,
) -> Path:
    """Write a ``uint8`` label mask as a BINARY DICOM-SEG referencing its source series (atomic).

    Args:
        path: output ``.dcm`` file.
        mask: ``(x, y, z)`` labels on the grid of the series as read by
            :func:`kmunet.inference.cases.read_series` (slice ``k`` = ``source_files[k]``).
        source_files: the series' files in slice order.
        class_names: one name per label value (index 0 = background, not stored).
        series_number: ``SeriesNumber`` of the new series.

    Raises:
        ValueError: mask shape inconsistent with the source series.
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    sources = [pydicom.dcmread(str(f)) for f in source_files]
    for ds in sources:  # anonymised series often drop type-2 attributes highdicom copies (in memory only)
        for keyword in _TYPE2_PATIENT_STUDY:
            if keyword not in ds:
                setattr(ds, keyword, "")
    mask = np.asarray(mask)
    rows, cols = int(sources[0].Rows), int(sources[0].Columns)
    if mask.ndim != 3 or mask.shape != (cols, rows, len(sources)):
        raise ValueError(f"mask shape {list(mask.shape)} does not match the series ({cols} x {rows} x {len(sources)})")
    frames = np.ascontiguousarray(mask.transpose(2, 1, 0)).astype(np.uint8)  # (slices, rows, cols)
    n_labels = max(int(frames.max()), len(class_names) - 1, 1)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="kmunet", version=__version__, family=codes.cid7162.ArtificialIntelligence
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=k,
            segment_label=(str(class_names[k]) if k < len(class_names) else f"class_{k}")[:64],
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for k in range(1, n_labels + 1)
    ]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="kmunet",
        manufacturer_model_name="kmunet predict",
        software_versions=__version__,
        device_serial_number="0",
        omit_empty_frames=False,
    )
    path = Path(path)
    with atomic_path(path) as tmp:
        seg.save_as(str(tmp))
    return path


def read_dicom_seg(path: str | Path, reference_files: Sequence[str | Path] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a DICOM-SEG as a label mask and RAS affine.

    Args:
        path: the SEG file.
        reference_files: the source series in slice order; when given, the mask is laid out exactly
            on that series' grid (as :func:`write_dicom_seg` expects), else on the SEG's own volume
            geometry.

    Returns:
        ``(mask (x, y, z) uint8, affine 4x4 RAS)``.

    Raises:
        ValueError: not a readable DICOM-SEG or overlapping segments.
    """
    import highdicom as hd

    try:
        seg = hd.seg.segread(str(path))
    except Exception as err:
        raise ValueError(f"{path}: not a readable DICOM-SEG ({' '.join(str(err).split())[:200]})") from None
    if reference_files is not None:
        import pydicom

        from kmunet.inference.cases import read_series, sitk_affine_ras

        uids = [str(pydicom.dcmread(str(f), stop_before_pixels=True).SOPInstanceUID) for f in reference_files]
        frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True)
        mask = np.asarray(frames).transpose(2, 1, 0).astype(np.uint8)
        return np.ascontiguousarray(mask), sitk_affine_ras(read_series(list(reference_files)))
    vol = seg.get_volume(combine_segments=True)
    array = np.asarray(vol.array)
    if array.ndim == 4:
        array = array[..., 0]
    affine_lps = np.asarray(vol.affine, dtype=np.float64)
    # highdicom volume axes are (slice, row, column); kmunet arrays are (column, row, slice).
    perm = np.eye(4)[:, [2, 1, 0, 3]]
    affine_lps = affine_lps @ perm
    mask = array.transpose(2, 1, 0)
    # ITK (and so kmunet for DICOM series) orders slices along row x column; do the same.
    normal = np.cross(affine_lps[:3, 0], affine_lps[:3, 1])
    if float(np.dot(normal, affine_lps[:3, 2])) < 0:
        mask = mask[:, :, ::-1]
        affine_lps[:3, 3] = affine_lps[:3, 3] + (mask.shape[2] - 1) * affine_lps[:3, 2]
        affine_lps[:3, 2] = -affine_lps[:3, 2]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps
    return np.ascontiguousarray(mask.astype(np.uint8)), affine


def is_dicom_seg(path: str | Path) -> bool:
    """True when ``path`` is a DICOM file with ``Modality`` SEG."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception:
        return False
    return str(getattr(ds, "Modality", "")) == "SEG"

