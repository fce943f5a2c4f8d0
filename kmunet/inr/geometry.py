"""Voxel grids in world space: resampled grids, world coordinates and their [-1, 1] normalisation.

Conventions: a :class:`Grid` is ``shape`` ``(nx, ny, nz)`` plus a NIfTI-style 4x4 ``affine`` mapping voxel
indices ``(i, j, k, 1)`` to world millimetres (nibabel's RAS+ frame; any frame works because nothing here
depends on the handedness). Voxel ``(0, 0, 0)`` is the first voxel *centre*.

A resampled grid keeps the input's direction (orientation) and origin (the first voxel centre, as
SimpleITK's resampling does) and covers the input's extent: along each axis
``n_new = floor((n - 1) * old_spacing / new_spacing) + 1`` and the affine is ``[direction * new_spacing | origin]``.
The floor forgives a shortfall of up to :data:`COUNT_TOLERANCE` of a new step (see :func:`sample_count`), so
that a spacing stored in float32 (0.42969999 for 0.4297 mm) does not lose the last sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from kmunet.checks import check_positive

__all__ = [
    "Grid",
    "Normalization",
    "grid_from_image",
    "resampled_grid",
    "new_spacing",
    "normalization_for",
    "sample_count",
]

#: Tolerance, in new steps, when counting samples: ``(n - 1) * old / new`` within this fraction of a step
#: below an integer counts as that integer. A voxel size stored as float32 is exact to about 6e-8
#: relative (0.42969999 for 0.4297 mm), which leaves ``(n - 1) * old / new`` short of the integer by up to
#: about 1e-7 of it; 1e-4 of a step covers axes of up to ~1000 samples, and :data:`COUNT_RELATIVE_TOLERANCE`
#: longer ones. The extra sample is then at most 1e-4 of a step beyond the last input voxel centre.
COUNT_TOLERANCE: float = 1e-4
#: Tolerance relative to ``(n - 1) * old / new`` (about 16 float32 rounding steps), for very long axes.
COUNT_RELATIVE_TOLERANCE: float = 1e-6
#: Largest output grid :func:`resampled_grid` / :func:`check_grid_size` accept (4 GiB as float32).
MAX_GRID_VOXELS: int = 2**30
#: A per-axis factor above ``1 + UPSAMPLED_EPS`` counts as upsampling that axis.
UPSAMPLED_EPS = 1e-6


@dataclass(frozen=True)
class Grid:
    """A regular 3-D voxel grid in world space.

    Attributes:
        shape: number of voxels ``(nx, ny, nz)``.
        affine: ``(4, 4)`` voxel index -> world (mm) transform.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray

    def __post_init__(self) -> None:
        affine = np.asarray(self.affine, dtype=np.float64)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise ValueError(f"affine must be a finite 4x4 matrix, got {affine!r}")
        if len(self.shape) != 3 or any(int(n) < 1 for n in self.shape):
            raise ValueError(f"shape must be three positive sizes, got {self.shape!r}")
        if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise ValueError("affine is singular (zero voxel size or degenerate directions)")
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        object.__setattr__(self, "affine", affine)

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along each voxel axis (column norms of the affine), ``(3,)``."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def direction(self) -> np.ndarray:
        """Unit direction of each voxel axis as columns, ``(3, 3)``."""
        return self.affine[:3, :3] / self.spacing

    @property
    def origin(self) -> np.ndarray:
        """World position of the first voxel centre, ``(3,)``."""
        return self.affine[:3, 3].copy()

    @property
    def num_voxels(self) -> int:
        return int(np.prod(self.shape))

    def index_to_world(self, index: np.ndarray) -> np.ndarray:
        """``(N, 3)`` (fractional) voxel indices -> ``(N, 3)`` world points."""
        index = np.asarray(index, dtype=np.float64)
        return index @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_index(self, points: np.ndarray) -> np.ndarray:
        """``(N, 3)`` world points -> ``(N, 3)`` fractional voxel indices."""
        points = np.asarray(points, dtype=np.float64)
        return (points - self.affine[:3, 3]) @ np.linalg.inv(self.affine[:3, :3]).T

    def voxel_indices(self) -> np.ndarray:
        """All voxel indices in C order over ``(x, y, z)``, ``(N, 3)`` float64."""
        axes = [np.arange(n, dtype=np.float64) for n in self.shape]
        return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)

    def world_points(self) -> np.ndarray:
        """World positions of all voxel centres in C order, ``(N, 3)``; reshape to ``shape + (3,)``."""
        return self.index_to_world(self.voxel_indices())

    def corners_world(self) -> np.ndarray:
        """World positions of the 8 corner voxel centres, ``(8, 3)``."""
        ext = [(0.0, float(n - 1)) for n in self.shape]
        corners = np.array([[a, b, c] for a in ext[0] for b in ext[1] for c in ext[2]])
        return self.index_to_world(corners)


@dataclass(frozen=True)
class Normalization:
    """Linear map of world coordinates to the unit box: ``unit = matrix @ (world - center) / scale``.

    Built by :func:`normalization_for` from the input's voxel centres: ``center`` is the centre of their
    world bounding box and ``scale`` their largest coordinate after ``matrix``, so every input voxel lies
    in ``[-1, 1]^3``. With the default identity ``matrix`` the physical metric is preserved (one scale
    for all axes); otherwise ``matrix`` compresses world space along chosen voxel-axis directions.
    """

    center: np.ndarray
    scale: float
    matrix: np.ndarray = field(default_factory=lambda: np.eye(3))

    def to_unit(self, world: np.ndarray) -> np.ndarray:
        return (np.asarray(world, dtype=np.float64) - self.center) @ np.asarray(self.matrix).T / self.scale

    def to_world(self, unit: np.ndarray) -> np.ndarray:
        return np.asarray(unit, dtype=np.float64) * self.scale @ np.linalg.inv(self.matrix).T + self.center

    def as_dict(self) -> dict:
        return {"center": [float(c) for c in self.center], "scale": float(self.scale),
                "matrix": np.asarray(self.matrix, dtype=float).tolist()}


def normalization_for(grid: Grid, compression: Sequence[float] | None = None) -> Normalization:
    """The :class:`Normalization` of ``grid``'s voxel centres.

    Args:
        grid: the input grid.
        compression: optional ``(3,)`` factors ``c_i >= 1``: world space is shrunk by ``c_i`` along the
            direction of voxel axis ``i`` before normalising (``matrix = D diag(1 / c) D^-1`` with ``D``
            the grid's unit directions), which lowers a coordinate network's bandwidth along that axis by
            ``c_i`` relative to the others. ``None`` (or all ones): isotropic, metric-preserving.

    Raises:
        ValueError: ``compression`` not three finite values >= 1.
    """
    matrix = np.eye(3)
    if compression is not None:
        c = np.asarray(compression, dtype=np.float64).reshape(-1)
        if c.shape != (3,) or not np.all(np.isfinite(c)) or np.any(c < 1.0):
            raise ValueError(f"compression must be three finite factors >= 1, got {compression!r}")
        d = grid.direction
        matrix = d @ np.diag(1.0 / c) @ np.linalg.inv(d)
    corners = grid.corners_world()
    center = (corners.min(axis=0) + corners.max(axis=0)) / 2.0
    half = float(np.abs((corners - center) @ matrix.T).max())
    return Normalization(center=center, scale=half if half > 0 else 1.0, matrix=matrix)


def grid_from_image(image) -> Grid:
    """The :class:`Grid` of a nibabel image (its best affine and first three dimensions)."""
    shape = tuple(int(n) for n in image.shape[:3])
    if len(image.shape) < 3:
        raise ValueError(f"expected a 3-D image, got shape {tuple(image.shape)}")
    return Grid(shape=shape, affine=np.asarray(image.affine, dtype=np.float64))


def new_spacing(
    spacing_in: Sequence[float],
    spacing: Sequence[float] | None = None,
    factor: float | None = None,
    axis: int | None = None,
) -> np.ndarray:
    """Target voxel size from exactly one of ``spacing`` (mm per voxel axis) or ``factor``.

    ``factor`` multiplies the number of samples along ``axis`` (0, 1 or 2), or along all axes when
    ``axis`` is ``None``: the voxel size there is divided by ``factor``.

    Raises:
        ValueError: both or neither of ``spacing``/``factor``, non-positive values, bad axis.
    """
    old = np.asarray(spacing_in, dtype=np.float64)
    if (spacing is None) == (factor is None):
        raise ValueError("give exactly one of spacing or factor")
    if spacing is not None:
        if axis is not None:
            raise ValueError("axis applies to factor only, not to spacing")
        new = np.asarray([float(s) for s in spacing], dtype=np.float64)
        if new.shape != (3,) or not np.all(np.isfinite(new)) or np.any(new <= 0):
            raise ValueError(f"spacing must be three positive numbers, got {list(spacing)!r}")
        return new
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor) or factor <= 0:
        raise ValueError(f"factor must be a positive number, got {factor!r}")
    new = old.copy()
    if axis is None:
        return new / float(factor)
    if isinstance(axis, bool) or axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
    new[axis] = old[axis] / float(factor)
    return new


def three_positive(name: str, values: Sequence[float] | np.ndarray) -> np.ndarray:
    """``values`` as a float64 ``(3,)`` array when they are three positive finite numbers (``ValueError``)."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name} must be three positive numbers, got {arr.tolist()!r}")
    return arr


def antialias_sigma(ratio: float | np.ndarray) -> float | np.ndarray:
    """Gaussian sigma (in input voxels) that anti-aliases a ``ratio``-times coarser sampling: ``sqrt(r^2 - 1) / 2``."""
    return 0.5 * np.sqrt(np.maximum(np.asarray(ratio, dtype=np.float64) ** 2 - 1.0, 0.0))


def check_grid_size(shape: Sequence[int]) -> None:
    """Raise ``ValueError`` before allocating a grid of more than :data:`MAX_GRID_VOXELS` voxels."""
    n = math.prod(int(s) for s in shape)
    if n > MAX_GRID_VOXELS:
        raise ValueError(f"the new grid would have {n:,} voxels (shape {[int(s) for s in shape]}), more than "
                         f"{MAX_GRID_VOXELS:,}: choose a larger voxel size or a smaller factor")


def sample_count(n: int, old: float, new: float) -> int:
    """Samples of spacing ``new`` covering ``n`` samples of spacing ``old``: ``floor((n - 1) * old / new) + 1``.

    The floor tolerates float32 rounding of either spacing: a quotient within
    ``max(COUNT_TOLERANCE, COUNT_RELATIVE_TOLERANCE * quotient)`` below an integer counts as that integer.

    Raises:
        ValueError: ``n < 1`` or a spacing that is not a positive finite number.
    """
    if int(n) < 1:
        raise ValueError(f"sample count n must be >= 1, got {n!r}")
    for name, value in (("old", old), ("new", new)):
        check_positive(f"{name} spacing", value)
    steps = (int(n) - 1) * float(old) / float(new)
    return int(math.floor(steps + max(COUNT_TOLERANCE, COUNT_RELATIVE_TOLERANCE * steps))) + 1


def resampled_grid(
    grid: Grid,
    spacing: Sequence[float] | None = None,
    factor: float | None = None,
    axis: int | None = None,
) -> Grid:
    """The grid with a new voxel size covering ``grid``'s extent, same origin and direction.

    Args:
        grid: input grid.
        spacing: new voxel size per voxel axis (mm), or
        factor: sample-count multiplier along ``axis`` (all axes when ``axis`` is ``None``).
        axis: voxel axis for ``factor``.

    Returns:
        Grid with ``n_new = floor((n - 1) * old / new) + 1`` (:func:`sample_count`, tolerant of float32
        spacings) and affine ``[direction * new | origin]``.

    Raises:
        ValueError: bad ``spacing``/``factor``/``axis`` (:func:`new_spacing`) or a grid over
            :data:`MAX_GRID_VOXELS` voxels.
    """
    new = new_spacing(grid.spacing, spacing=spacing, factor=factor, axis=axis)
    old = grid.spacing
    shape = tuple(sample_count(n, o, s) for n, o, s in zip(grid.shape, old, new))
    check_grid_size(shape)
    affine = np.eye(4)
    affine[:3, :3] = grid.direction * new
    affine[:3, 3] = grid.origin
    return Grid(shape=shape, affine=affine)
