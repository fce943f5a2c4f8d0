"""Atomic writers: masks and probability maps as NIfTI with the input's exact geometry, PNG overlays.

Every file is written to a hidden temporary name in the destination folder and then renamed with
``os.replace``, so a crash or an error never leaves a partial output file behind.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from kmunet.inference.cases import LoadedImage


def check_output_file(path: str | Path) -> Path:
    """Check early (before any work) that ``path`` can be written as a file.

    Raises:
        ValueError: ``path`` is an existing folder.
        FileNotFoundError: its folder does not exist.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; give a file name")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: folder does not exist (for {path.name})")
    return path


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final`` (same suffixes); rename it to ``final`` on success.

    The temporary file is removed if the body raises.

    Raises:
        ValueError, FileNotFoundError: see :func:`check_output_file` (before the body runs).
    """
    final = check_output_file(final)
    name = final.name
    suffix = ".nii.gz" if name.lower().endswith(".nii.gz") else final.suffix
    tmp = final.with_name(f".{name[: len(name) - len(suffix)]}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_like_input(
    path: str | Path, data: np.ndarray, reference: LoadedImage, dtype: Any = np.uint8,
    num_classes: int | None = None,
) -> Path:
    """Write ``data`` (``(x, y, z)`` or ``(x, y, z, C)``) as NIfTI on the input's exact grid.

    NIfTI inputs: the input header is copied (affine, sform/qform and their codes, pixdim, units);
    only data type and scaling change. DICOM inputs: written by SimpleITK with the origin, spacing
    and direction of the series as read by ``ImageSeriesReader``. Raster inputs: a label image
    ``(rows, columns)`` becomes a PNG of the same size, 0 / 255 when ``num_classes == 2`` (the model
    is binary), class indices otherwise; other arrays a NIfTI on the pixel grid.
    """
    path = Path(path)
    data = np.asarray(data).astype(dtype, copy=False)
    if tuple(data.shape[: len(reference.spatial_shape)]) != tuple(reference.spatial_shape):
        raise ValueError(f"{path.name}: array shape {list(data.shape)} differs from input {list(reference.spatial_shape)}")
    if reference.raster and data.ndim == 2:
        return _write_raster_mask(path, data, binary=num_classes == 2)
    with atomic_path(path) as tmp:
        if reference.raster:  # probabilities of a raster input: NIfTI on its pixel grid (identity affine)
            import nibabel as nib

            nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp))
        elif reference.nifti is not None:
            import nibabel as nib

            src = reference.nifti
            if data.shape == tuple(reference.spatial_shape) and len(src.shape) > data.ndim:
                data = data.reshape(src.shape)  # an (x, y, z, 1) input gets an (x, y, z, 1) mask
            header = src.header.copy()
            header.set_data_dtype(dtype)
            out = type(src)(data, None, header=header)
            sform, scode = src.header.get_sform(coded=True)
            qform, qcode = src.header.get_qform(coded=True)
            out.set_sform(sform if sform is not None else src.affine, int(scode))
            out.set_qform(qform if qform is not None else src.affine, int(qcode))
            out.header.set_slope_inter(1.0, 0.0)
            if data.ndim > len(reference.spatial_shape):
                out.header.set_intent("vector")
            nib.save(out, str(tmp))
        else:
            import SimpleITK as sitk

            ref = reference.sitk_image
            if data.ndim == 3:
                img = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
            else:
                img = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0, 3)), isVector=True)
            img.CopyInformation(ref)
            sitk.WriteImage(img, str(tmp), useCompression=True)
    return path


def _write_raster_mask(path: Path, mask: np.ndarray, binary: bool) -> Path:
    """A label image of a raster input as an 8-bit PNG of the same size (binary: 0 / 255, else indices)."""
    from PIL import Image

    labels = np.asarray(mask).astype(np.uint8)
    if binary:
        labels = labels * np.uint8(255)  # like DRIVE's own 0/255 vessel masks: viewable as is
    with atomic_path(path) as tmp:
        Image.fromarray(labels).save(str(tmp), format="PNG")
    return path


def write_overlay_png(path: str | Path, image: np.ndarray, mask: np.ndarray, title: str = "",
                      spacing: Sequence[float] | None = None, raster: bool = False) -> Path:
    """Save mask contours over ``image`` as a PNG.

    A volume (``(x, y, z)`` arrays) is drawn as its three mid-planes; a 2D ``mask`` as one panel over
    ``image`` (``(x, y)`` for NIfTI planes, or with ``raster=True`` a ``(rows, cols)`` or RGB
    ``(rows, cols, 3)`` picture drawn as it is displayed). ``spacing`` (voxel size per array axis, mm)
    gives each plane its true aspect ratio (6 mm slices are drawn 6 times as tall as 1 mm pixels);
    None draws square pixels.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if mask.ndim == 2:
        return _write_overlay_2d(path, image, mask, title, spacing, raster)
    labels = [int(v) for v in np.unique(mask) if v != 0]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    planes: list[tuple[str, Callable[[np.ndarray], np.ndarray]]] = [
        ("first axis, mid-plane", lambda a: a[a.shape[0] // 2, :, :]),
        ("second axis, mid-plane", lambda a: a[:, a.shape[1] // 2, :]),
        ("third axis, mid-plane", lambda a: a[:, :, a.shape[2] // 2]),
    ]
    sp = [1.0, 1.0, 1.0] if spacing is None else [float(s) for s in spacing]
    for k, (ax, (label, take)) in enumerate(zip(axes, planes)):
        img2d, m2d = take(image).T, take(mask).T
        cols, rows = [a for a in range(3) if a != k]  # after .T: rows follow the later array axis
        ax.imshow(img2d, cmap="gray", origin="lower", interpolation="nearest", aspect=sp[rows] / sp[cols])
        _contours(ax, m2d, labels)
        ax.set_title(label)
        ax.axis("off")
    return _save_figure(fig, path, title)


def _contours(ax: Any, mask2d: np.ndarray, labels: Sequence[int]) -> None:
    """One contour colour per label (tab10) of a 2D mask."""
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10")
    for i, lab in enumerate(labels):
        sel = (mask2d == lab).astype(np.float32)
        if sel.any() and min(sel.shape) > 1:
            ax.contour(sel, levels=[0.5], colors=[cmap(i % 10)], linewidths=1.0)


def _save_figure(fig: Any, path: str | Path, title: str) -> Path:
    """Title, lay out and atomically write ``fig`` as a PNG, then close it."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), format="png", dpi=80)
    plt.close(fig)
    return Path(path)


def _write_overlay_2d(path: str | Path, image: np.ndarray, mask: np.ndarray, title: str,
                      spacing: Sequence[float] | None, raster: bool) -> Path:
    """One panel of :func:`write_overlay_png` for a 2D mask."""
    import matplotlib.pyplot as plt

    img = np.asarray(image, dtype=np.float64)
    if img.shape[:2] != mask.shape or img.ndim not in (2, 3):
        raise ValueError(f"overlay image shape {list(img.shape)} does not match the mask {list(mask.shape)}")
    if not raster:  # NIfTI (x, y): x to the right, y up, as the 3D planes are drawn
        img, mask = np.swapaxes(img, 0, 1), mask.T
    if img.ndim == 3:  # RGB: scale to [0, 1] for imshow
        lo, hi = float(img.min()), float(img.max())
        img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    sp = [1.0, 1.0] if spacing is None else [float(v) for v in spacing]
    aspect = sp[0] / sp[1] if raster else sp[1] / sp[0]
    height = min(max(6 * mask.shape[0] * aspect / max(mask.shape[1], 1), 1.5), 12.0)  # inches, bounded
    fig, ax = plt.subplots(1, 1, figsize=(6, height + 0.4))
    ax.imshow(img, cmap=None if img.ndim == 3 else "gray", origin="upper" if raster else "lower",
              interpolation="nearest", aspect=aspect)
    _contours(ax, mask, [int(v) for v in np.unique(mask) if v != 0])
    ax.axis("off")
    return _save_figure(fig, path, title)
