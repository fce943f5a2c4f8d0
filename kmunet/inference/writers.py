"""Atomic writers: masks and probability maps as NIfTI with the input's exact geometry, PNG overlays.

Every file is written to a hidden temporary name in the destination folder and then renamed with
``os.replace``, so a crash or an error never leaves a partial output file behind. Several files that
belong together (a case's mask, probabilities and overlay) are staged with :func:`staged_outputs` and
renamed together once all are written.
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
    tmp = _temp_beside(final)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def _temp_beside(final: Path) -> Path:
    """A hidden, unique temporary name beside ``final`` with the same suffixes (``.nii.gz`` kept whole)."""
    name = final.name
    suffix = ".nii.gz" if name.lower().endswith(".nii.gz") else final.suffix
    return final.with_name(f".{name[: len(name) - len(suffix)]}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


class StagedOutputs:
    """Several output files written to temporary names and renamed into place together.

    :meth:`temp` hands out a hidden temporary path beside each final name; :meth:`commit` renames
    them all (in the order they were asked for) once every one of them has been written. Until then
    the final names are untouched, so an earlier complete set of outputs stays as it is when writing
    the new set fails or is interrupted. Use it through :func:`staged_outputs`, which removes the
    temporary files on any exception (``KeyboardInterrupt`` included).
    """

    def __init__(self) -> None:
        self._pairs: list[tuple[Path, Path]] = []

    def temp(self, final: str | Path) -> Path:
        """A temporary path to write instead of ``final`` (checked with :func:`check_output_file`)."""
        final = check_output_file(final)
        tmp = _temp_beside(final)
        self._pairs.append((tmp, final))
        return tmp

    def commit(self) -> list[Path]:
        """Rename every temporary file to its final name.

        Existing files of those names are first moved aside (to hidden names beside them), then the new
        files are renamed into place, then the old ones are removed. If any rename fails, the new files
        already in place are removed and the old ones moved back, so the set is either all new or all
        as it was.

        Raises:
            FileNotFoundError: a temporary file was never written (nothing is renamed then).
            OSError: a rename failed (the earlier files are back in place).
        """
        missing = [final.name for tmp, final in self._pairs if not tmp.is_file()]
        if missing:
            raise FileNotFoundError(f"{missing[0]}: was not written")
        aside: list[tuple[Path, Path]] = []  # (backup, final) of files that existed before
        done: list[Path] = []
        try:
            for _, final in self._pairs:
                if final.exists():
                    backup = _temp_beside(final)
                    os.replace(final, backup)
                    aside.append((backup, final))
            for tmp, final in self._pairs:
                os.replace(tmp, final)
                done.append(final)
        except BaseException:
            for final in done:
                with contextlib.suppress(OSError):
                    final.unlink()
            for backup, final in aside:
                with contextlib.suppress(OSError):
                    os.replace(backup, final)
            raise
        for backup, _ in aside:
            with contextlib.suppress(OSError):
                backup.unlink()
        self._pairs = []
        return done

    def discard(self) -> None:
        """Remove the temporary files not yet renamed."""
        for tmp, _ in self._pairs:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        self._pairs = []


@contextlib.contextmanager
def staged_outputs() -> Iterator[StagedOutputs]:
    """A :class:`StagedOutputs` committed when the body succeeds; its temporary files are removed
    whatever happens (an exception, ``KeyboardInterrupt`` included, propagates)."""
    stage = StagedOutputs()
    try:
        yield stage
        stage.commit()
    finally:
        stage.discard()


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

    NIfTI inputs: the input header is copied (sform/qform, their codes, quaternion, srow and pixdim
    byte for byte, units); only data type, scaling and the data shape change. An input with trailing
    singleton axes (``(x, y, z, 1)``) gets a mask of that shape; any other extra axes (a multi-channel
    ``(x, y, z, C)`` input) a mask of the spatial shape. DICOM inputs: written by SimpleITK with the origin, spacing
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
            extra = tuple(src.shape[data.ndim:])
            padded = bool(extra) and tuple(src.shape[: data.ndim]) == data.shape and all(n == 1 for n in extra)
            if padded:
                data = data.reshape(src.shape)  # an (x, y, z, 1) input gets an (x, y, z, 1) mask
            # Any other source shape (e.g. a multi-channel (x, y, z, C) input): the array keeps its own shape.
            header = src.header.copy()
            header.set_data_dtype(dtype)
            out = type(src)(data, None, header=header)  # affine None: nibabel keeps the header's geometry
            _copy_geometry(src.header, out.header)
            out.header.set_slope_inter(1.0, 0.0)
            if data.ndim > len(reference.spatial_shape) and not padded:
                out.header.set_intent("vector")
            elif out.header.get_intent()[0] == "vector":  # the mask of a vector (multi-channel) input
                out.header.set_intent("none")
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


#: NIfTI header fields that define the grid; copied verbatim from the input's header.
_GEOMETRY_FIELDS: tuple[str, ...] = (
    "pixdim", "qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d",
    "qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z",
)


def _copy_geometry(src_header: Any, dst_header: Any) -> None:
    """Copy the qform/sform codes, quaternion, offsets, srow and pixdim exactly (no recomputation from
    an affine, which would rewrite a code-0 form or the pixdim of an sform-only file), so any reader
    (nibabel, ITK/SimpleITK) sees the same spacing, origin and direction for the output as for the input."""
    for key in _GEOMETRY_FIELDS:
        dst_header[key] = src_header[key]


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
    try:
        return _draw_planes(fig, axes, path, image, mask, labels, title, spacing)
    finally:
        plt.close(fig)  # also when drawing or saving raises: no figure is ever leaked


def _draw_planes(fig: Any, axes: Any, path: str | Path, image: np.ndarray, mask: np.ndarray, labels: Sequence[int],
                 title: str, spacing: Sequence[float] | None) -> Path:
    """The three mid-planes of :func:`write_overlay_png`, saved."""
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
    """Title, lay out and atomically write ``fig`` as a PNG, then close it (also when that raises)."""
    import matplotlib.pyplot as plt

    try:
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(str(tmp), format="png", dpi=80)
    finally:
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
    try:
        ax.imshow(img, cmap=None if img.ndim == 3 else "gray", origin="upper" if raster else "lower",
                  interpolation="nearest", aspect=aspect)
        _contours(ax, mask, [int(v) for v in np.unique(mask) if v != 0])
        ax.axis("off")
    except BaseException:
        plt.close(fig)
        raise
    return _save_figure(fig, path, title)
