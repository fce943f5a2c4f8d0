"""k-space and image readers returning one :class:`KSpaceData`.

Supported inputs:

* ``.npy`` / ``.npz`` complex arrays, ``(H, W)`` single coil, ``(C, H, W)`` or ``(slices, C, H, W)``
  (``.npz``: the array ``kspace``, else its only array besides ``mask``; optional boolean ``mask``
  ``(H, W)`` or ``(slices, H, W)``). A 3D array is always ``(C, H, W)``, never slices;
* BART ``.cfl`` + ``.hdr`` (:func:`read_cfl` / :func:`write_cfl`; either file or the base name): dims 0-2
  spatial, dim 3 coils, dim 4 maps (the first is used), dim 13 slices; 3D k-space is sliced along dim 2
  after an inverse FFT along it (:func:`bart_slices`);
* fastMRI-style ``.h5`` with a ``kspace`` dataset ``(slices, coils, H, W)``, ``(slices, H, W)`` or ``(H, W)``;
* Siemens twix ``.dat`` (twixtools): image scans, 2x readout oversampling removed -> ``(coils, PE, RO)``;
* images (NIfTI, DICOM series folder, ``.npy``) simulated as single-coil k-space by :func:`simulate_kspace`.

A slice index selects along the slice axis of the input (default the middle slice) and is recorded in
``KSpaceData.slice_index``; asking for a slice of an input without a slice axis is a ValueError.

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
#: BART's slice dimension (``SLICE_DIM``); dims 0-2 are spatial, 3 coils, 4 ESPIRiT map sets.
BART_SLICE_DIM: int = 13


def _cfl_base(path: str | Path) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix.lower() in (".cfl", ".hdr") else path


def _cfl_pair(path: str | Path) -> tuple[Path, Path]:
    """``(header, data)`` paths of the BART pair named by ``path`` (either file or the common base name)."""
    base = _cfl_base(path)
    return base.with_name(base.name + ".hdr"), base.with_name(base.name + ".cfl")


def is_cfl_base(path: str | Path) -> bool:
    """True when ``path`` is a BART base name: ``<path>.cfl`` and ``<path>.hdr`` both exist."""
    path = Path(path)
    return path.suffix.lower() not in (".cfl", ".hdr") and all(f.is_file() for f in _cfl_pair(path))


def read_cfl(path: str | Path) -> np.ndarray:
    """Read a BART ``.cfl``/``.hdr`` pair (either name or the common base) as complex64, Fortran order.

    Trailing singleton dimensions are dropped. Raises FileNotFoundError / ValueError naming the file.
    """
    hdr, cfl = _cfl_pair(path)
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
    hdr, cfl = _cfl_pair(path)
    arr = np.asarray(array, dtype=np.complex64)
    dims = list(arr.shape) + [1] * max(0, 16 - arr.ndim)
    hdr.write_text("# Dimensions\n" + " ".join(str(d) for d in dims) + " \n")
    arr.ravel(order="F").tofile(cfl)
    return _cfl_base(path)


def bart_slices(array: np.ndarray, source: str = "", kspace: bool = True) -> tuple[np.ndarray, str | None]:
    """BART array -> ``(S, C, H, W)`` stack of 2D slices (first ESPIRiT map set) and its slice axis.

    Layouts (BART dims: 0-2 spatial, 3 coils, 4 map sets, 13 slices):

    * two spatial dims > 1, dim 13 = 1: one 2D slice (``S = 1``, slice axis None);
    * two spatial dims > 1, dim 13 > 1: 2D multi-slice data, slices along dim 13;
    * three spatial dims > 1 (dim 13 = 1): a 3D volume, slices along dim 2. For k-space (``kspace=True``)
      the data is 3D k-space, so it is inverse-FFT'd (centred) along dim 2 first: slice ``z`` of the
      result is the 2D k-space of image slice ``z``. That needs dim 2 fully sampled wherever a
      ``(dim 0, dim 1)`` point is sampled at all; otherwise a ValueError says so.

    Args:
        array: the BART array (:func:`read_cfl`).
        source: file name for error messages.
        kspace: the array is k-space (else image space: no FFT along dim 2).

    Returns:
        ``(stack, axis)``: complex ``(S, C, H, W)`` and ``"dim 13"``, ``"dim 2"`` or None (a single slice).

    Raises:
        ValueError: unsupported dims (beyond coils, maps and slices), fewer than two spatial dims > 1,
            3D data with slices in dim 13 too, or 3D k-space undersampled along dim 2.
    """
    a = np.asarray(array)
    if a.ndim > 16:
        raise ValueError(f"{source}: BART arrays have at most 16 dims, got shape {list(a.shape)}")
    a = a.reshape(a.shape + (1,) * (16 - a.ndim))
    extra = [d for d in range(5, 16) if d != BART_SLICE_DIM and a.shape[d] > 1]
    if extra:
        raise ValueError(f"{source}: BART dims {extra} (beyond coils 3, maps 4 and slices {BART_SLICE_DIM}) are not "
                         f"supported, got dims {list(a.shape[:max(extra) + 1])}")
    a = a[(slice(None),) * 4 + (0,) * 9 + (slice(None),) + (0, 0)]  # (X, Y, Z, C, S), first map set
    spatial = [d for d in range(3) if a.shape[d] > 1]
    if len(spatial) < 2:
        raise ValueError(f"{source}: expected a 2D slice or 3D volume (at least two spatial dims > 1), got dims "
                         f"{list(a.shape[:3])}")
    if len(spatial) == 3:
        if a.shape[4] > 1:
            raise ValueError(f"{source}: 3D data (dims 0-2 all > 1) with slices in dim {BART_SLICE_DIM} too is not "
                             f"supported, got dims {list(a.shape[:3])} and {a.shape[4]} slices")
        a = a[..., 0]  # (X, Y, Z, C)
        if kspace:
            sampled = np.any(a != 0, axis=3)
            if np.any(sampled.any(axis=2) & ~sampled.all(axis=2)):
                raise ValueError(f"{source}: 3D k-space undersampled along dim 2: its slices are not 2D k-space; "
                                 f"reconstruct it in 3D (e.g. bart pics) or give k-space fully sampled along dim 2")
            a = ifftnc(a, axes=(2,))
        return np.transpose(a, (2, 3, 0, 1)), "dim 2"
    a = a.reshape([a.shape[d] for d in spatial] + list(a.shape[3:]))  # (H, W, C, S): drop the size-1 dim
    return np.transpose(a, (3, 2, 0, 1)), (f"dim {BART_SLICE_DIM}" if a.shape[3] > 1 else None)


def load_bart_image(path: str | Path, slice_index: int | None = None, slice_optional: bool = False) -> np.ndarray:
    """Complex ``(H, W)`` image of a BART image-space file (first map set, first channel of dim 3).

    Args:
        path: ``.cfl``/``.hdr`` or the base name.
        slice_index: slice of a multi-slice (dim 13) or 3D (dim 2) image; default the middle one.
        slice_optional: a 2D image ignores ``slice_index`` instead of raising.

    Raises:
        FileNotFoundError, ValueError: as :func:`read_cfl` and :func:`bart_slices`, or a ``slice_index``
            out of range or given for a 2D image (without ``slice_optional``).
    """
    stack, axis = bart_slices(read_cfl(path), str(path), kspace=False)
    if axis is None:
        if not slice_optional:
            _no_slice_axis(slice_index, path, f"a 2D BART image {list(stack.shape[2:])}")
        return stack[0, 0]
    return stack[_pick_slice(stack.shape[0], slice_index, f"{path} (slices along BART {axis})"), 0]


def bart_to_coil_first(array: np.ndarray, source: str = "") -> np.ndarray:
    """BART array of one 2D slice (dims 0-2 spatial, 3 coils, 4 maps) -> ``(C, H, W)`` (first map set).

    Multi-slice and 3D arrays raise ValueError: select a slice with :func:`bart_slices` or
    :func:`load_kspace`'s ``slice_index``.
    """
    stack, axis = bart_slices(array, source, kspace=False)
    if axis is not None:
        raise ValueError(f"{source}: expected a 2D slice, got {stack.shape[0]} slices along {axis}; select one "
                         f"(--slice / slice_index)")
    return stack[0]


# --------------------------------------------------------------------------------------------- readers
def _read_numpy(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``(array, mask or None)`` of a ``.npy`` file or a ``.npz`` archive (see :func:`npz_kspace_key`)."""
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as z:
                key = npz_kspace_key(z.files, path)
                mask = z["mask"] if "mask" in z.files else None
                return np.asarray(z[key]), None if mask is None else np.asarray(mask, dtype=bool)
        return np.load(path, allow_pickle=False), None
    except (OSError, EOFError) as err:
        raise ValueError(f"{path}: not a readable NumPy file ({err})") from None
    except ValueError as err:
        if str(err).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not a readable NumPy file ({err})") from None


def npz_kspace_key(keys: list[str], source: str | Path = "") -> str:
    """The k-space array of a ``.npz`` archive: ``kspace`` if present, else its only array besides ``mask``.

    Raises:
        ValueError: no ``kspace`` key and not exactly one other array (the message lists the keys).
    """
    if "kspace" in keys:
        return "kspace"
    candidates = [k for k in keys if k != "mask"]
    if len(candidates) == 1:
        return candidates[0]
    if not keys:
        raise ValueError(f"{source}: empty .npz archive (no k-space array)")
    raise ValueError(f"{source}: no 'kspace' array and {len(candidates)} other arrays to choose from "
                     f"(keys {list(keys)}); name the k-space array 'kspace'")


def _pick_slice(n: int, index: int | None, source: Path | str) -> int:
    idx = n // 2 if index is None else int(index)
    if not 0 <= idx < n:
        raise ValueError(f"{source}: slice {idx} out of range [0, {n - 1}]")
    return idx


def _no_slice_axis(index: int | None, source: Path | str, what: str, hint: str = "") -> None:
    """Raise when a slice was asked of an input that has no slice axis (``what`` describes it)."""
    if index is not None:
        raise ValueError(f"{source}: --slice {index} does not apply: {what} has no slice axis"
                         + (f"; {hint}" if hint else ""))


def _read_h5(path: Path, slice_index: int | None) -> tuple[np.ndarray, int | None]:
    """``(k-space (H, W) or (C, H, W), slice taken or None)`` of a fastMRI-style ``.h5`` file."""
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
            _no_slice_axis(slice_index, path, f"2D 'kspace' {list(ds.shape)}")
            return np.asarray(ds[()]), None
        if ds.ndim not in (3, 4):
            raise ValueError(f"{path}: 'kspace' must be (slices, [coils,] H, W), got shape {list(ds.shape)}")
        idx = _pick_slice(ds.shape[0], slice_index, path)
        return np.asarray(ds[idx]), idx


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


def _read_twix(path: Path, slice_index: int | None
               ) -> tuple[np.ndarray, tuple[float, float] | None, float | None, int]:
    """``(kspace (C, PE, RO), (dy, dx) spacing or None, slice thickness or None, slice index)`` of one twix slice.

    The slice index counts the measured slices (``cSlc`` values) in increasing order.
    """
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
    slice_taken = _pick_slice(len(slices), slice_index, path)
    slc = slices[slice_taken]
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
    return k, spacing, thickness, slice_taken


def load_kspace(path: str | Path, slice_index: int | None = None) -> KSpaceData:
    """Read k-space from ``.npy``/``.npz``/BART/``.h5``/twix ``.dat`` (see module docstring).

    Args:
        path: the file (a BART pair also by its base name, without ``.cfl``/``.hdr``).
        slice_index: slice of a multi-slice input (default the middle one): axis 0 of a 3D/4D ``.h5``
            ``kspace`` dataset and of a 4D ``(slices, coils, H, W)`` ``.npy``/``.npz`` array, BART dim 13
            (or dim 2 of 3D BART k-space, see :func:`bart_slices`), the twix slice counter. Inputs without
            a slice axis (``(H, W)`` and ``(coils, H, W)`` arrays, a 2D BART slice or ``.h5`` dataset)
            raise ValueError when it is given.

    Raises:
        FileNotFoundError: missing file.
        ValueError: unknown format, malformed or all-zero content, or a ``slice_index`` that is out of
            range or does not apply (the message names the file).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    bart_base = suffix not in KSPACE_SUFFIXES and is_cfl_base(path)
    if suffix not in KSPACE_SUFFIXES and not bart_base:
        hint = ""
        if _is_nifti(path) or suffix in IMAGE_SUFFIXES:
            hint = " (an image: simulate k-space from it with --image / simulate_kspace)"
        raise ValueError(f"{path}: unknown k-space format {suffix!r}; valid: {list(KSPACE_SUFFIXES)} or a BART base "
                         f"name with <name>.cfl and <name>.hdr beside it{hint}")
    spacing = thickness = None
    mask = None
    taken: int | None = None
    along = ""
    if bart_base or suffix in (".cfl", ".hdr"):
        stack, axis = bart_slices(read_cfl(path), str(path))
        if axis is None:
            _no_slice_axis(slice_index, path, f"a 2D BART slice {list(stack.shape[2:])}")
            k = stack[0]
        else:
            taken = _pick_slice(stack.shape[0], slice_index, f"{path} (slices along BART {axis})")
            k = stack[taken]
            along = f" along BART {axis}" + (", after the inverse FFT along it" if axis == "dim 2" else "")
    else:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: file not found")
        if suffix in (".npy", ".npz"):
            k, mask = _read_numpy(path)
            k = np.asarray(k)
            if k.ndim == 4:
                slices = k.shape[0]
                taken = _pick_slice(slices, slice_index, path)
                k = k[taken]
                if mask is not None and mask.ndim == 3:  # one (H, W) mask per slice
                    if mask.shape[0] != slices:
                        raise ValueError(f"{path}: mask shape {list(mask.shape)} has {mask.shape[0]} slices, k-space "
                                         f"has {slices}")
                    mask = mask[taken]
            elif k.ndim in (2, 3):
                layout = "(H, W)" if k.ndim == 2 else "(coils, H, W)"
                _no_slice_axis(slice_index, path, f"{layout} k-space {list(k.shape)}",
                               "a 3D array is (coils, H, W); store slices as 4D (slices, coils, H, W)")
        elif suffix in (".h5", ".hdf5"):
            k, taken = _read_h5(path, slice_index)
        else:
            k, spacing, thickness, taken = _read_twix(path, slice_index)
    k = np.asarray(k)
    if k.ndim not in (2, 3) or k.size == 0:
        raise ValueError(f"{path}: k-space must be (H, W), (C, H, W) or, for .npy/.npz, (slices, C, H, W); got "
                         f"shape {list(k.shape)}")
    if not np.iscomplexobj(k):
        raise ValueError(f"{path}: k-space must be complex, got dtype {k.dtype}")
    if not np.all(np.isfinite(k)):
        raise ValueError(f"{path}: k-space contains NaN or infinite values")
    if not np.any(k):
        raise ValueError(f"{path}: k-space is all zero" + ("" if taken is None else f" (slice {taken}{along})"))
    return _finish(k, mask, spacing, path, thickness, taken)


def _finish(k: np.ndarray, mask: np.ndarray | None, spacing: tuple[float, float] | None, path: Path,
            thickness: float | None = None, slice_index: int | None = None) -> KSpaceData:
    """``KSpaceData`` with a diagonal affine from the pixel spacing (and slice thickness) when known."""
    k = k[None] if k.ndim == 2 else k
    if mask is None:
        mask = sampled_mask(k)
    affine = None
    if spacing is not None:
        slab = thickness if thickness is not None and thickness > 0 else 1.0
        affine = np.diag([spacing[0], spacing[1], slab, 1.0])
    return KSpaceData(kspace=k, mask=mask, affine=affine, spacing=spacing, source=str(path), slice_index=slice_index)


# --------------------------------------------------------------------------------------------- images
def _is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _read_dicom(path: Path) -> tuple[np.ndarray, np.ndarray, int | None]:
    """``(array (x, y, z), RAS affine, z index of ``path`` when it is one file of the series, else None)``.

    ITK's own warnings (printed to stderr, several lines each) are silenced; problems raise ValueError.
    """
    from kmunet.data.io import itk_warnings_off

    with itk_warnings_off():
        return _read_dicom_quiet(path)


def _read_dicom_quiet(path: Path) -> tuple[np.ndarray, np.ndarray, int | None]:
    """:func:`_read_dicom` without the warning guard."""
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


def load_image(path: str | Path, slice_index: int | None = None, slice_optional: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
    """Read a 2D slice of an image: NIfTI, DICOM series (folder or one file of it) or ``.npy``.

    Args:
        path: the image. One file of a DICOM series selects that file's slice unless ``slice_index``
            is given.
        slice_index: index along the third voxel axis of a 3D volume (default the middle slice, or the
            given DICOM file's). A 2D image has no slice axis: giving it raises ValueError.
        slice_optional: a 2D image ignores ``slice_index`` instead (for a reference that may be one
            slice or the whole volume).

    Returns:
        ``(image, affine)``: float64 ``(H, W)`` slice (voxel axes 0 and 1) and the 4x4 RAS affine of the
        ``(H, W, 1)`` grid holding it (identity for ``.npy``).
    """
    image, affine, _ = load_slice(path, slice_index, slice_optional)
    return image, affine


def load_slice(path: str | Path, slice_index: int | None = None, slice_optional: bool = False
               ) -> tuple[np.ndarray, np.ndarray, int | None]:
    """:func:`load_image` that also returns the slice index taken (None for a 2D image)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    if _is_nifti(path):
        from kmunet.checks import error_reason
        from kmunet.data.io import read_nifti

        try:
            nii, raw = read_nifti(path)  # a .nii.gz is read to its end: its gzip CRC is checked
            arr = np.asarray(raw, dtype=np.float64)
        except Exception as err:  # nibabel raises several types on corrupt files
            reason = error_reason(err, path)
            raise ValueError(f"{path}: not a readable NIfTI file ({type(err).__name__}: {reason})") from None
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
    if arr.ndim == 2 and not slice_optional:
        _no_slice_axis(slice_index, path, f"a 2D image {list(arr.shape)}")
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
    spacing = None  # a .npy image has no geometry: its identity affine is in voxels, not mm
    if Path(path).suffix.lower() != ".npy":
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
