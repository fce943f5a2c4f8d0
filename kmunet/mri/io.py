"""k-space and image readers returning one :class:`KSpaceData`.

Supported inputs:

* ``.npy`` / ``.npz`` complex arrays, ``(H, W)`` single coil or ``(C, H, W)`` (``.npz``: key ``kspace``,
  optional boolean ``mask``, else the first array);
* BART ``.cfl`` + ``.hdr`` (:func:`read_cfl` / :func:`write_cfl`); dims 0-2 spatial, dim 3 coils, dim 4 maps;
* fastMRI-style ``.h5`` with a ``kspace`` dataset ``(slices, coils, H, W)`` or ``(slices, H, W)``;
* Siemens twix ``.dat`` (twixtools): image scans, 2x readout oversampling removed -> ``(coils, PE, RO)``;
* images (NIfTI, DICOM series folder, ``.npy``) simulated as single-coil k-space by :func:`simulate_kspace`.

Zero k-space points across all coils are taken as not sampled: ``mask`` is the boolean ``(H, W)`` sampling
pattern of already undersampled data and None for fully sampled data.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from kmunet.mri.fft import fftnc, ifftnc

KSPACE_SUFFIXES: tuple[str, ...] = (".npy", ".npz", ".cfl", ".hdr", ".h5", ".hdf5", ".dat")
IMAGE_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz", ".npy", ".dcm", "<DICOM folder>")


@dataclasses.dataclass
class KSpaceData:
    """One 2D (multi-coil) k-space slice.

    Attributes:
        kspace: complex64 ``(C, H, W)`` (C = 1 for single coil), centred (DC at ``(H // 2, W // 2)``).
        mask: boolean ``(H, W)`` sampled points when the data is undersampled, None when fully sampled.
        affine: 4x4 voxel-to-world (RAS) affine of the ``(H, W, 1)`` output grid when known, else None.
        spacing: ``(dy, dx)`` pixel spacing in mm when known, else None.
        source: path the data came from.
        reference: ground-truth ``(H, W)`` image for simulated k-space, else None.
        slice_index: slice of a multi-slice source this slice is, when known.
    """

    kspace: np.ndarray
    mask: np.ndarray | None = None
    affine: np.ndarray | None = None
    spacing: tuple[float, float] | None = None
    source: str = ""
    reference: np.ndarray | None = None
    slice_index: int | None = None

    def __post_init__(self) -> None:
        k = np.asarray(self.kspace)
        if k.ndim == 2:
            k = k[None]
        if k.ndim != 3:
            raise ValueError(f"{self.source or 'k-space'}: expected (H, W) or (C, H, W) k-space, got shape {list(k.shape)}")
        self.kspace = np.ascontiguousarray(k, dtype=np.complex64)
        if self.mask is not None:
            m = np.asarray(self.mask, dtype=bool)
            if m.shape != self.kspace.shape[-2:]:
                raise ValueError(f"{self.source or 'k-space'}: mask shape {list(m.shape)} differs from k-space {list(self.kspace.shape[-2:])}")
            self.mask = m

    @property
    def shape(self) -> tuple[int, int]:
        """Image shape ``(H, W)``."""
        return tuple(self.kspace.shape[-2:])  # type: ignore[return-value]

    @property
    def num_coils(self) -> int:
        """Number of coils C."""
        return int(self.kspace.shape[0])

    @property
    def is_undersampled(self) -> bool:
        """True when ``mask`` marks unsampled points."""
        return self.mask is not None and not bool(self.mask.all())


def sampled_mask(kspace: np.ndarray) -> np.ndarray | None:
    """Boolean ``(H, W)`` mask of points nonzero in any coil of ``(C, H, W)`` k-space; None if all are."""
    k = np.asarray(kspace)
    m = np.any(k != 0, axis=0) if k.ndim == 3 else k != 0
    return None if m.all() else m


# --------------------------------------------------------------------------------------------- BART
def _cfl_base(path: str | Path) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".cfl", ".hdr") else path


def read_cfl(path: str | Path) -> np.ndarray:
    """Read a BART ``.cfl``/``.hdr`` pair (either name or the common base) as complex64, Fortran order.

    Trailing singleton dimensions are dropped. Raises FileNotFoundError / ValueError naming the file.
    """
    base = _cfl_base(path)
    hdr, cfl = base.with_suffix(".hdr"), base.with_suffix(".cfl")
    for f in (hdr, cfl):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: BART file not found")
    dims = None
    lines = hdr.read_text(errors="replace").splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("# Dimensions") and i + 1 < len(lines):
            try:
                dims = [int(v) for v in lines[i + 1].split()]
            except ValueError:
                dims = None
            break
    if not dims or min(dims) < 1:
        raise ValueError(f"{hdr}: no valid '# Dimensions' line")
    n = int(np.prod(dims))
    data = np.fromfile(cfl, dtype=np.complex64)
    if data.size != n:
        raise ValueError(f"{cfl}: holds {data.size} complex values, header dims {dims} need {n}")
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    return data.reshape(dims, order="F")


def write_cfl(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` as a BART ``.cfl``/``.hdr`` pair (complex64, Fortran order); returns the base path."""
    base = _cfl_base(path)
    arr = np.asarray(array, dtype=np.complex64)
    dims = list(arr.shape) + [1] * max(0, 16 - arr.ndim)
    base.with_suffix(".hdr").write_text("# Dimensions\n" + " ".join(str(d) for d in dims) + " \n")
    arr.ravel(order="F").tofile(base.with_suffix(".cfl"))
    return base


def bart_to_coil_first(array: np.ndarray, source: str = "") -> np.ndarray:
    """BART array (dims 0-2 spatial, 3 coils, 4 maps) -> ``(C, H, W)`` (first map set, 2D slice)."""
    a = np.asarray(array)
    a = a.reshape(a.shape + (1,) * max(0, 5 - a.ndim))
    if a.ndim > 5 and np.prod(a.shape[5:]) > 1:
        raise ValueError(f"{source}: BART dims beyond maps are not supported, got shape {list(a.shape)}")
    a = a.reshape(a.shape[:5])[..., 0]  # first ESPIRiT map set
    spatial = [s for s in a.shape[:3] if s > 1]
    if len(spatial) != 2:
        raise ValueError(f"{source}: expected a 2D slice (two spatial dims > 1), got dims {list(a.shape[:3])}")
    return np.moveaxis(a.reshape(spatial + [a.shape[3]]), -1, 0)


# --------------------------------------------------------------------------------------------- readers
def _read_numpy(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if not z.files:
                    raise ValueError(f"{path}: empty .npz archive")
                k = z["kspace"] if "kspace" in z.files else z[z.files[0]]
                mask = z["mask"] if "mask" in z.files else None
                return np.asarray(k), None if mask is None else np.asarray(mask, dtype=bool)
        return np.load(path, allow_pickle=False), None
    except (OSError, EOFError, ValueError) as err:
        raise ValueError(f"{path}: not a readable NumPy file ({err})") from None


def _pick_slice(n: int, index: int | None, source: Path) -> int:
    idx = n // 2 if index is None else int(index)
    if not 0 <= idx < n:
        raise ValueError(f"{source}: slice {idx} out of range [0, {n - 1}]")
    return idx


def _read_h5(path: Path, slice_index: int | None) -> np.ndarray:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path}: not a readable HDF5 file ({err})") from None
    with f:
        if "kspace" not in f:
            raise ValueError(f"{path}: no 'kspace' dataset (has {list(f.keys())})")
        ds = f["kspace"]
        if ds.ndim == 2:
            return np.asarray(ds[()])
        if ds.ndim not in (3, 4):
            raise ValueError(f"{path}: 'kspace' must be (slices, [coils,] H, W), got shape {list(ds.shape)}")
        return np.asarray(ds[_pick_slice(ds.shape[0], slice_index, path)])


def remove_readout_oversampling(kspace: np.ndarray, factor: int = 2) -> np.ndarray:
    """Crop the centre ``1/factor`` of the readout FOV: iFFT along readout, crop, FFT back.

    Args:
        kspace: ``(..., RO)`` k-space with the readout last.
    """
    n = kspace.shape[-1]
    keep = n // factor
    img = ifftnc(kspace, axes=(-1,))
    start = (n - keep) // 2
    return fftnc(img[..., start:start + keep], axes=(-1,))


def _read_twix(path: Path, slice_index: int | None) -> tuple[np.ndarray, tuple[float, float] | None, float | None]:
    """``(kspace (C, PE, RO), (dy, dx) pixel spacing or None, slice thickness or None)`` of one twix slice."""
    import twixtools

    try:
        scans = twixtools.read_twix(str(path), verbose=False)
    except Exception as err:  # twixtools raises assorted errors on non-twix input
        raise ValueError(f"{path}: not a readable Siemens twix file ({type(err).__name__}: {err})") from None
    if not scans:
        raise ValueError(f"{path}: no measurement in twix file")
    scan = scans[-1]
    mdbs = [m for m in scan["mdb"] if m.is_image_scan()]
    if not mdbs:
        raise ValueError(f"{path}: no image scans in twix file")
    slices = sorted({int(m.cSlc) for m in mdbs})
    slc = slices[_pick_slice(len(slices), slice_index, path)]
    mdbs = [m for m in mdbs if int(m.cSlc) == slc]
    ncoil, nro = mdbs[0].data.shape
    nlin = max(int(m.cLin) for m in mdbs) + 1
    try:
        nlin = max(nlin, int(scan["hdr"]["MeasYaps"]["sKSpace"]["lPhaseEncodingLines"]))
    except (KeyError, TypeError, ValueError):
        pass
    k = np.zeros((ncoil, nlin, nro), dtype=np.complex128)
    counts = np.zeros(nlin)
    for m in mdbs:
        data = np.asarray(m.data)
        if data.shape != (ncoil, nro):
            raise ValueError(f"{path}: inconsistent readout shape {list(data.shape)} vs {[ncoil, nro]}")
        if m.is_flag_set("REFLECT"):
            data = data[:, ::-1]
        k[:, int(m.cLin)] += data
        counts[int(m.cLin)] += 1
    k[:, counts > 0] /= counts[counts > 0][None, :, None]  # average repeated lines
    k = remove_readout_oversampling(k, 2)
    spacing, thickness = None, None
    try:
        sl = scan["hdr"]["MeasYaps"]["sSliceArray"]["asSlice"][0]
        spacing = (float(sl["dPhaseFOV"]) / k.shape[1], float(sl["dReadoutFOV"]) / k.shape[2])
        thickness = float(sl["dThickness"])
    except (KeyError, TypeError, ValueError, IndexError):
        pass
    return k, spacing, thickness


def load_kspace(path: str | Path, slice_index: int | None = None) -> KSpaceData:
    """Read k-space from ``.npy``/``.npz``/BART/``.h5``/twix ``.dat`` (see module docstring).

    Args:
        path: the file.
        slice_index: slice of multi-slice ``.h5``/twix data (default the middle one).

    Raises:
        FileNotFoundError: missing file.
        ValueError: unknown format or malformed content (the message names the file).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in KSPACE_SUFFIXES:
        hint = ""
        if _is_nifti(path) or suffix in IMAGE_SUFFIXES:
            hint = " (an image: simulate k-space from it with --image / simulate_kspace)"
        raise ValueError(f"{path}: unknown k-space format {suffix!r}; valid: {list(KSPACE_SUFFIXES)}{hint}")
    if suffix in (".cfl", ".hdr"):
        k = bart_to_coil_first(read_cfl(path), str(path))
        return _finish(k, None, None, path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    spacing = thickness = None
    mask = None
    if suffix in (".npy", ".npz"):
        k, mask = _read_numpy(path)
    elif suffix in (".h5", ".hdf5"):
        k = _read_h5(path, slice_index)
    else:
        k, spacing, thickness = _read_twix(path, slice_index)
    k = np.asarray(k)
    if k.ndim not in (2, 3) or k.size == 0:
        raise ValueError(f"{path}: k-space must be (H, W) or (C, H, W), got shape {list(k.shape)}")
    if not np.iscomplexobj(k):
        raise ValueError(f"{path}: k-space must be complex, got dtype {k.dtype}")
    if not np.all(np.isfinite(k)):
        raise ValueError(f"{path}: k-space contains NaN or infinite values")
    return _finish(k, mask, spacing, path, thickness)


def _finish(k: np.ndarray, mask: np.ndarray | None, spacing: tuple[float, float] | None, path: Path,
            thickness: float | None = None) -> KSpaceData:
    """``KSpaceData`` with a diagonal affine from the pixel spacing (and slice thickness) when known."""
    k = k[None] if k.ndim == 2 else k
    if mask is None:
        mask = sampled_mask(k)
    affine = None
    if spacing is not None:
        slab = thickness if thickness is not None and thickness > 0 else 1.0
        affine = np.diag([spacing[0], spacing[1], slab, 1.0])
    return KSpaceData(kspace=k, mask=mask, affine=affine, spacing=spacing, source=str(path))


# --------------------------------------------------------------------------------------------- images
def _is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _read_dicom(path: Path) -> tuple[np.ndarray, np.ndarray, int | None]:
    """``(array (x, y, z), RAS affine, z index of ``path`` when it is one file of the series, else None)``."""
    import SimpleITK as sitk

    from kmunet.data.io import read_series, sitk_affine_ras

    folder = path if path.is_dir() else path.parent
    ids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ())
    if not ids:
        raise ValueError(f"{path}: no DICOM series found")
    if len(ids) > 1:
        raise ValueError(f"{path}: {len(ids)} DICOM series in the folder; pass one series folder")
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), ids[0]))
    index = None
    if not path.is_dir():
        # the reader stacks the files in this (position-sorted) order, so a file's rank is its z index
        resolved = [Path(f).resolve() for f in files]
        if path.resolve() not in resolved:
            raise ValueError(f"{path}: not a file of the DICOM series in {folder}")
        index = resolved.index(path.resolve())
    try:
        img = read_series(files)
    except RuntimeError as err:
        raise ValueError(f"{path}: unreadable DICOM series ({err})") from None
    arr = sitk.GetArrayFromImage(img)  # (z, y, x)
    arr = np.transpose(arr, (2, 1, 0)) if arr.ndim == 3 else arr.T
    return arr, sitk_affine_ras(img), index


def load_image(path: str | Path, slice_index: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a 2D slice of an image: NIfTI, DICOM series (folder or one file of it) or ``.npy``.

    Args:
        path: the image. One file of a DICOM series selects that file's slice unless ``slice_index``
            is given.
        slice_index: index along the third voxel axis of a 3D volume (default the middle slice, or the
            given DICOM file's).

    Returns:
        ``(image, affine)``: float64 ``(H, W)`` slice (voxel axes 0 and 1) and the 4x4 RAS affine of the
        ``(H, W, 1)`` grid holding it (identity for ``.npy``).
    """
    image, affine, _ = load_slice(path, slice_index)
    return image, affine


def load_slice(path: str | Path, slice_index: int | None = None) -> tuple[np.ndarray, np.ndarray, int | None]:
    """:func:`load_image` that also returns the slice index taken (None for a 2D image)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    if _is_nifti(path):
        import nibabel as nib

        try:
            nii = nib.load(str(path))
            arr = np.asarray(nii.dataobj, dtype=np.float64)
        except Exception as err:  # nibabel raises several types on corrupt files
            raise ValueError(f"{path}: not a readable NIfTI file ({type(err).__name__}: {err})") from None
        affine = np.asarray(nii.affine, dtype=float)
    elif path.suffix.lower() == ".npy":
        arr, _ = _read_numpy(path)
        affine = np.eye(4)
    elif path.is_dir() or path.suffix.lower() in (".dcm", ""):
        arr, affine, file_index = _read_dicom(path)
        if slice_index is None:
            slice_index = file_index
    else:
        raise ValueError(f"{path}: unknown image format; valid: {list(IMAGE_SUFFIXES)}")
    arr = np.asarray(arr)
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    k = None
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr, k = arr[..., 0], 0
    if arr.ndim == 3:
        k = _pick_slice(arr.shape[2], slice_index, path)
        arr = arr[:, :, k]
        affine = affine.copy()
        affine[:, 3] = affine @ np.array([0.0, 0.0, float(k), 1.0])
    if arr.ndim != 2 or min(arr.shape) < 2:
        raise ValueError(f"{path}: expected a 2D image or 3D volume, got shape {list(arr.shape)}")
    if np.iscomplexobj(arr):
        arr = np.abs(arr)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{path}: image contains NaN or infinite values")
    return arr.astype(np.float64), affine, k


def simulate_kspace(path: str | Path, slice_index: int | None = None) -> KSpaceData:
    """Simulated fully sampled single-coil k-space of an image slice (magnitude normalised to max 1).

    ``kspace = fftnc(image)``; ``reference`` holds the normalised image.
    """
    image, affine, index = load_slice(path, slice_index)
    image = np.abs(image)
    peak = image.max()
    if peak <= 0:
        raise ValueError(f"{path}: image slice is all zero")
    image = image / peak
    spacing = (float(np.linalg.norm(affine[:3, 0])), float(np.linalg.norm(affine[:3, 1])))
    return KSpaceData(kspace=fftnc(image)[None], mask=None, affine=affine, spacing=spacing,
                      source=str(path), reference=image.astype(np.float32), slice_index=index)


def kspace_from_image(image: np.ndarray, source: str = "<array>") -> KSpaceData:
    """Simulated single-coil k-space of an in-memory ``(H, W)`` image (magnitude normalised to max 1)."""
    image = np.abs(np.asarray(image, dtype=np.complex128 if np.iscomplexobj(image) else np.float64))
    if image.ndim != 2:
        raise ValueError(f"{source}: image must be (H, W), got shape {list(image.shape)}")
    image = image / max(image.max(), np.finfo(float).tiny)
    return KSpaceData(kspace=fftnc(image)[None], source=source, reference=image.astype(np.float32))


def describe(data: KSpaceData) -> dict[str, Any]:
    """Small JSON-friendly summary of ``data``."""
    return {
        "source": data.source,
        "slice": data.slice_index,
        "coils": data.num_coils,
        "shape": list(data.shape),
        "undersampled": data.is_undersampled,
        "sampled_fraction": float(data.mask.mean()) if data.mask is not None else 1.0,
    }
