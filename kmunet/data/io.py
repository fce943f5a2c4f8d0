"""Image reading: NIfTI (nibabel), DICOM series folders (SimpleITK) and 2D raster images (pillow).

:class:`KmunetImageReader` is a MONAI ``ImageReader`` used by ``LoadImaged`` in every pipeline of
:mod:`kmunet.data.transforms`, so training, validation and inference read files identically and the
loaded ``MetaTensor`` carries the affine that ``Orientationd``/``Spacingd``/``Invertd`` need.

Conventions:
    * NIfTI: as MONAI's ``NibabelReader`` (array in file order, RAS affine from the header).
    * DICOM series (a folder): read with ``SimpleITK.ImageSeriesReader``; the array is transposed to
      ``(x, y, z)`` and the LPS affine of ITK is converted to RAS (as MONAI's ``ITKReader`` does).
    * 2D raster (PNG/TIF/GIF/JPG/BMP): array ``(H, W)`` or ``(H, W, C)`` in row-major order (rows
      first, *not* transposed as MONAI's ``PILReader`` does), identity affine. Palette images with a
      grey palette (GIF masks) give their grey values, coloured palettes keep their indices; RGBA
      drops alpha, 1-bit images become 0/255.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from monai.data import ImageReader

#: File suffixes read as 2D raster images with pillow.
RASTER_SUFFIXES: tuple[str, ...] = (".png", ".tif", ".tiff", ".gif", ".jpg", ".jpeg", ".bmp")
#: File suffixes read as NIfTI with nibabel.
NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")


def image_kind(path: str | Path) -> str:
    """Kind of an image path: ``"nifti"``, ``"raster"`` or ``"dicom"`` (a folder).

    Raises:
        ValueError: an unsupported file type (the message lists the supported suffixes).
    """
    p = Path(path)
    if p.is_dir():
        return "dicom"
    name = p.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(RASTER_SUFFIXES):
        return "raster"
    if name.endswith(".dcm"):
        return "dicom"
    raise ValueError(
        f"{path}: unsupported image file; supported: NIfTI {list(NIFTI_SUFFIXES)}, "
        f"2D raster {list(RASTER_SUFFIXES)} or a DICOM series folder"
    )


def path_stem(path: str | Path) -> str:
    """File name without its (possibly double, ``.nii.gz``) suffix; folder names unchanged."""
    p = Path(path)
    name = p.name
    lower = name.lower()
    for suffix in (".nii.gz",) + NIFTI_SUFFIXES + RASTER_SUFFIXES + (".dcm",):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_dicom_series_dir(path: str | Path) -> bool:
    """True if ``path`` is a folder holding at least one DICOM series (checked with SimpleITK/GDCM)."""
    p = Path(path)
    if not p.is_dir() or not any(f.is_file() for f in p.iterdir()):
        return False
    import SimpleITK as sitk

    return len(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(p)) or ()) > 0


def _read_raster(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        if im.mode == "P":
            # grey palettes (e.g. GIF masks written from 0/255 images) -> their grey values;
            # coloured palettes (class-indexed label images) keep their indices.
            used = np.unique(np.asarray(im))
            pal = np.asarray(im.getpalette() or [], dtype=np.int64).reshape(-1, 3)
            if pal.size and used.max() < len(pal) and np.all(pal[used, 0] == pal[used, 1]) and np.all(
                pal[used, 1] == pal[used, 2]
            ):
                im = im.convert("L")
            else:
                return np.array(im)
        if im.mode == "1":
            im = im.convert("L")
        elif im.mode in ("RGBA", "LA", "CMYK", "YCbCr"):
            im = im.convert("RGB" if im.mode != "LA" else "L")
        arr = np.array(im)
    return arr


def sitk_affine_ras(image: Any) -> np.ndarray:
    """4x4 RAS affine of a SimpleITK image (ITK uses LPS)."""
    dim = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    affine = np.eye(4)
    affine[:dim, :dim] = direction * spacing[None, :]
    affine[:dim, 3] = origin
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    return lps_to_ras @ affine


@contextlib.contextmanager
def itk_warnings_off() -> Iterator[None]:
    """Silence ITK's multi-line ``WARNING: In ...`` blocks (e.g. "No Series were found") for the body."""
    import SimpleITK as sitk

    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def read_series(files: Sequence[str | Path]) -> Any:
    """Read DICOM files (already in slice order) with SimpleITK's ``ImageSeriesReader``."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in files])
    return reader.Execute()


def read_dicom_series(folder: str | Path, series_id: str | None = None) -> Any:
    """Read one DICOM series of ``folder`` as a ``SimpleITK.Image``.

    Args:
        folder: folder with the series' files.
        series_id: series instance UID; ``None`` takes the series with the most files.

    Raises:
        ValueError: the folder holds no DICOM series, or ``series_id`` is not in it.
    """
    import SimpleITK as sitk

    ids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ())
    if not ids:
        raise ValueError(f"{folder}: no DICOM series found")
    if series_id is None:
        series_id = max(ids, key=lambda s: len(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), s)))
    elif series_id not in ids:
        raise ValueError(f"{folder}: series {series_id!r} not found; available: {ids}")
    return read_series(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_id))


#: ``sizeof_hdr`` of a NIfTI-1 / NIfTI-2 header (first 4 bytes, either byte order).
_NIFTI_HEADER_SIZES: dict[int, str] = {348: "Nifti1Image", 540: "Nifti2Image"}


def read_nifti(path: Path) -> tuple[Any, np.ndarray]:
    """Read a NIfTI file as ``(nibabel image, array)``; a ``.gz`` file is read to its end.

    nibabel stops reading a gzip stream once it has the voxels, before the gzip trailer, so a
    corrupted ``.nii.gz`` would load as garbage voxel values. Here the stream is read through
    :class:`gzip.GzipFile` to its end, which verifies the CRC-32 and length of the trailer: one
    decompression, no copy of the file in memory.

    Raises:
        ValueError: corrupt or truncated gzip stream, or not a NIfTI-1/2 header (the message names
            the file).
    """
    import gzip
    import zlib

    import nibabel as nib

    if not path.name.lower().endswith(".gz"):
        img = nib.load(str(path))
        return img, np.asanyarray(img.dataobj)
    try:
        with gzip.open(path, "rb") as stream:
            head = stream.read(4)
            sizes = [int.from_bytes(head, order) for order in ("little", "big")] if len(head) == 4 else [0]
            size = next((n for n in sizes if n in _NIFTI_HEADER_SIZES), sizes[0])
            if size not in _NIFTI_HEADER_SIZES:
                raise ValueError(f"{path}: not a NIfTI file (header size {size}, expected 348 or 540)")
            stream.seek(0)
            img = getattr(nib, _NIFTI_HEADER_SIZES[size]).from_stream(stream)
            data = np.asanyarray(img.dataobj)
            while stream.read(1 << 20):  # to the trailer: GzipFile checks its CRC-32 and length there
                pass
        img = type(img)(data, img.affine, img.header)  # voxels in memory: the stream is closed below
    except gzip.BadGzipFile as err:
        reason = "CRC check failed" if "CRC" in str(err) else str(err)
        raise ValueError(f"{path}: corrupt gzip stream ({reason})") from None
    except EOFError:
        raise ValueError(f"{path}: truncated gzip stream (the file ends before its end-of-stream marker)") from None
    except zlib.error as err:
        raise ValueError(f"{path}: corrupt gzip stream ({err})") from None
    return img, data


def load_array(path: str | Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Load an image as ``(array, affine, channels)`` with the channel axis (if any) first.

    Used by :func:`kmunet.data.validation.validate_dataset` (no MONAI pipeline needed there). A
    ``.nii.gz`` is read to the end of its gzip stream, so a corrupted file (CRC mismatch) or a
    truncated one is an error rather than garbage voxel values.

    Returns:
        array of shape ``(C, *spatial)``, the 4x4 RAS affine (identity for raster images) and the
        number of channels ``C``.

    Raises:
        ValueError: an unsupported file type, or a corrupt or truncated ``.nii.gz`` (the message names
            the file).
    """
    kind = image_kind(path)
    if kind == "nifti":
        img, data = read_nifti(Path(path))
        ndim_spatial = min(int(img.header["dim"][0]), 3) if data.ndim > 3 else data.ndim
        arr = data[None] if data.ndim == ndim_spatial else np.moveaxis(data.reshape(*data.shape[:3], -1), -1, 0)
        return arr, np.asarray(img.affine, dtype=np.float64), arr.shape[0]
    if kind == "raster":
        data = _read_raster(Path(path))
        arr = data[None] if data.ndim == 2 else np.moveaxis(data, -1, 0)
        return arr, np.eye(4), arr.shape[0]
    import SimpleITK as sitk

    image = read_dicom_series(path) if Path(path).is_dir() else sitk.ReadImage(str(path))
    data = sitk.GetArrayFromImage(image)  # (z, y, x[, c])
    dim = image.GetDimension()
    if image.GetNumberOfComponentsPerPixel() > 1:
        data = np.moveaxis(data, -1, 0)
        arr = np.moveaxis(data, list(range(1, dim + 1)), list(range(dim, 0, -1)))
    else:
        arr = data.transpose(tuple(range(dim - 1, -1, -1)))[None]
    return arr, sitk_affine_ras(image), arr.shape[0]


class KmunetImageReader(ImageReader):
    """MONAI-compatible image reader for NIfTI files, DICOM series folders and 2D raster images.

    Pass an instance as ``LoadImaged(keys, reader=KmunetImageReader())``. It implements MONAI's
    ``ImageReader`` interface (``verify_suffix``, ``read``, ``get_data``); NIfTI files are delegated to
    MONAI's ``NibabelReader``.
    """

    def __init__(self) -> None:
        from monai.data import NibabelReader

        super().__init__()
        self._nibabel = NibabelReader()

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        """True when every file name is a supported kind (see :func:`image_kind`)."""
        names = [filename] if isinstance(filename, (str, Path)) else list(filename)
        try:
            for name in names:
                image_kind(name)
        except ValueError:
            return False
        return True

    def read(self, data: Sequence[str | Path] | str | Path, **kwargs: Any) -> Any:
        """Read one file (a sequence must hold exactly one path); returns an opaque handle."""
        names = [data] if isinstance(data, (str, Path)) else list(data)
        if len(names) != 1:
            raise ValueError(f"KmunetImageReader reads one file per key, got {names}")
        path = Path(names[0])
        kind = image_kind(path)
        if kind == "nifti":
            return ("nifti", self._nibabel.read(str(path)))
        if kind == "raster":
            return ("raster", _read_raster(path))
        import SimpleITK as sitk

        image = read_dicom_series(path) if path.is_dir() else sitk.ReadImage(str(path))
        return ("dicom", image)

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """Array and MONAI metadata (``affine``, ``original_affine``, ``spatial_shape``, ...)."""
        kind, obj = img
        if kind == "nifti":
            return self._nibabel.get_data(obj)
        from monai.utils import MetaKeys, SpaceKeys

        if kind == "raster":
            arr = obj
            spatial = arr.shape[:2]
            affine = np.eye(4)
            channel_dim: float | int = float("nan") if arr.ndim == 2 else -1
        else:
            import SimpleITK as sitk

            data = sitk.GetArrayFromImage(obj)
            dim = obj.GetDimension()
            if obj.GetNumberOfComponentsPerPixel() > 1:
                arr = np.moveaxis(data, list(range(dim)), list(range(dim - 1, -1, -1)))
                channel_dim = -1
            else:
                arr = data.transpose(tuple(range(dim - 1, -1, -1)))
                channel_dim = float("nan")
            spatial = arr.shape[:dim]
            affine = sitk_affine_ras(obj)
        meta = {
            MetaKeys.AFFINE: affine,
            MetaKeys.ORIGINAL_AFFINE: affine.copy(),
            MetaKeys.SPATIAL_SHAPE: np.asarray(spatial),
            MetaKeys.ORIGINAL_CHANNEL_DIM: channel_dim,
            MetaKeys.SPACE: SpaceKeys.RAS,
        }
        return np.ascontiguousarray(arr), meta
