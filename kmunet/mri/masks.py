"""Retrospective k-space undersampling masks, each drawn from its own seeded generator.

Every mask uses ``numpy.random.default_rng(seed)`` (the Poisson-disc mask uses sigpy's own seeded sampler
with a bounded search, retried with seeds derived from ``seed`` when it misses the acceleration, and
restores NumPy's global state), so the same seed always gives the same mask and the global NumPy and
torch random states are never touched. Masks are boolean ``(H, W)`` arrays, True where sampled. The 1D
masks select whole phase-encoding lines along ``axis`` (default ``-2``) and are constant along the other
axis; their centre ``round(n * center_fraction)`` lines are always sampled.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from kmunet.checks import is_integer
from kmunet.mri import MASK_KINDS


def _check(shape: Sequence[int], acceleration: float, center_fraction: float, axis: int) -> tuple[tuple[int, int], int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"mask shape must be two positive sizes (H, W), got {list(shape)}")
    if not np.isfinite(acceleration) or acceleration < 1:
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")
    if not 0 <= center_fraction <= 1:
        raise ValueError(f"center_fraction must be in [0, 1], got {center_fraction}")
    if axis not in (-2, -1, 0, 1):
        raise ValueError(f"axis must be one of -2, -1, 0, 1 for a 2D mask, got {axis}")
    return shape, axis % 2


def _center_lines(n: int, center_fraction: float) -> tuple[int, int]:
    low = min(n, int(round(n * center_fraction)))
    start = (n - low + 1) // 2
    return start, low


def _expand(lines: np.ndarray, shape: tuple[int, int], axis: int) -> np.ndarray:
    if axis == 0:
        return np.repeat(lines[:, None], shape[1], axis=1)
    return np.repeat(lines[None, :], shape[0], axis=0)


def random_mask(
    shape: Sequence[int], acceleration: float, center_fraction: float, seed: int = 0, axis: int = -2
) -> np.ndarray:
    """1D random line mask with a fully sampled centre (as fastMRI ``RandomMaskFunc``).

    Each non-centre line is kept with probability ``(n / R - n_low) / (n - n_low)`` so the expected
    number of lines is ``n / R``.

    Args:
        shape: ``(H, W)`` of the k-space.
        acceleration: R >= 1.
        center_fraction: fraction of lines in the fully sampled centre band.
        seed: seed of ``numpy.random.default_rng``.
        axis: phase-encoding axis (-2 rows, -1 columns).

    Returns:
        Boolean ``(H, W)`` mask.
    """
    shape, ax = _check(shape, acceleration, center_fraction, axis)
    n = shape[ax]
    start, low = _center_lines(n, center_fraction)
    rng = np.random.default_rng(seed)
    prob = (n / acceleration - low) / max(n - low, 1)
    lines = rng.uniform(size=n) < prob
    lines[start:start + low] = True
    return _expand(lines, shape, ax)


def equispaced_mask(
    shape: Sequence[int], acceleration: float, center_fraction: float, seed: int = 0, axis: int = -2
) -> np.ndarray:
    """1D equispaced line mask with a fully sampled centre (as fastMRI ``EquispacedMaskFunc``).

    The spacing is adjusted so that centre plus equispaced lines total about ``n / R``; the seed only picks
    the offset of the first equispaced line. Arguments and return as :func:`random_mask`.
    """
    shape, ax = _check(shape, acceleration, center_fraction, axis)
    n = shape[ax]
    start, low = _center_lines(n, center_fraction)
    rng = np.random.default_rng(seed)
    lines = np.zeros(n, dtype=bool)
    lines[start:start + low] = True
    target = n / acceleration
    if target > low:
        step = max((n - low) / (target - low), 1.0)
        offset = int(rng.integers(0, max(int(round(step)), 1)))
        idx = np.round(np.arange(offset, n, step)).astype(int)
        lines[idx[idx < n]] = True
    return _expand(lines, shape, ax)


#: Smallest acceleration (other than 1) :func:`poisson_mask` accepts.
POISSON_MIN_ACCELERATION: float = 1.5
#: Derived seeds :func:`poisson_mask` tries, in order, after ``seed`` itself (see :func:`poisson_seeds`).
POISSON_SEED_RETRIES: int = 8


def poisson_seeds(seed: int, retries: int = POISSON_SEED_RETRIES) -> list[int]:
    """The seeds :func:`poisson_mask` tries in turn: ``seed``, then ``retries`` seeds derived from it.

    Derived seed ``i`` (1, 2, ...) is ``numpy.random.SeedSequence([seed, i]).generate_state(1)[0]``, so the
    sequence depends on ``seed`` only (no global random state is read or changed).

    Raises:
        ValueError: ``seed`` not an integer in ``[0, 2**32)`` (what sigpy's seeding accepts).
    """
    if not is_integer(seed) or not 0 <= int(seed) < 2**32:
        raise ValueError(f"Poisson mask seed must be an integer in [0, 2**32), got {seed!r}")
    seed = int(seed)
    return [seed] + [int(np.random.SeedSequence([seed, i]).generate_state(1)[0]) for i in range(1, retries + 1)]


#: Most bisection steps of :func:`sigpy_poisson`. sigpy's own loop stops only on success, so it never
#: returns when the acceleration is out of reach (it keeps redrawing one mask once the bisection interval
#: stops shrinking). Below a slope of ``2**-53`` every radius is exactly 1, so a search from a slope
#: ``max(shape) < 2**70`` that has not succeeded after this many steps never will: the bound changes no mask.
POISSON_MAX_STEPS: int = 128


class PoissonMiss(ValueError):
    """:func:`sigpy_poisson` found no mask within sigpy's tolerance.

    ``nearest`` is ``(below, above)``: the accelerations of the drawn masks closest to the target from
    below and from above (``-inf`` / ``inf`` when none was drawn on that side).
    """

    def __init__(self, message: str, nearest: tuple[float, float]) -> None:
        super().__init__(message)
        self.nearest = nearest


def sigpy_poisson(shape: tuple[int, int], accel: float, calib: tuple[int, int], seed: int,
                  max_attempts: int = 30, tol: float = 0.1) -> np.ndarray:
    """``sigpy.mri.poisson(shape, accel, calib, seed=seed, crop_corner=True) > 0`` with a bounded search.

    The same bisection over the density slope as sigpy 0.1.27 (same steps, same sampler
    ``sigpy.mri.samp._poisson``, hence the same mask whenever sigpy returns one), but it stops when the
    bisection interval no longer shrinks or after :data:`POISSON_MAX_STEPS` steps, where sigpy loops
    forever. NumPy's global random state is restored.

    Raises:
        PoissonMiss: no mask within ``tol`` of ``accel`` (with the nearest accelerations drawn).
    """
    from sigpy.mri.samp import _poisson

    ny, nx = shape
    y, x = np.mgrid[:ny, :nx]
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.maximum(abs(x - nx / 2) - calib[-1] / 2, 0)
        x /= x.max()
        y = np.maximum(abs(y - ny / 2) - calib[-2] / 2, 0)
        y /= y.max()
        r = np.sqrt(x**2 + y**2)
    outside = ~(r < 1)

    slope_max, slope_min = float(max(nx, ny)), 0.0
    below, above = -math.inf, math.inf
    state = np.random.get_state()
    try:
        for _ in range(POISSON_MAX_STEPS):
            if not slope_min < slope_max:
                break
            slope = (slope_max + slope_min) / 2
            radius_x = np.clip((1 + r * slope) * nx / max(nx, ny), 1, None)
            radius_y = np.clip((1 + r * slope) * ny / max(nx, ny), 1, None)
            mask = _poisson(nx, ny, max_attempts, radius_x, radius_y, calib, seed)
            mask[outside] = 0  # sigpy's crop_corner
            count = float(np.sum(mask))
            actual = nx * ny / count if count else math.inf
            if abs(actual - accel) < tol:
                return mask > 0
            below, above = (max(below, actual), above) if actual < accel else (below, min(above, actual))
            previous = (slope_min, slope_max)
            if actual < accel:
                slope_min = slope
            else:
                slope_max = slope
            if (slope_min, slope_max) == previous:  # sigpy would redraw this same mask forever
                break
    finally:
        np.random.set_state(state)
    raise PoissonMiss(f"Cannot generate mask to satisfy accel={accel}.", (below, above))


def poisson_mask(
    shape: Sequence[int], acceleration: float, center_fraction: float, seed: int = 0, axis: int = -2
) -> np.ndarray:
    """2D variable-density Poisson-disc mask (sigpy's sampler) with a square calibration region.

    The calibration region is ``round(size * center_fraction)`` points along each axis. ``axis`` is
    accepted for a uniform signature but has no effect (the mask is 2D). Arguments and return as
    :func:`random_mask`.

    ``acceleration`` must be exactly 1 (a full mask) or at least :data:`POISSON_MIN_ACCELERATION` (sigpy
    leaves the k-space corners out, so it cannot approach R = 1). The mask is ``sigpy.mri.poisson``'s,
    drawn by :func:`sigpy_poisson`, whose search always ends (sigpy's loops forever when the acceleration
    is out of reach, e.g. R = 30 on a 35 x 51 grid). For some seeds the sampler misses the acceleration
    (within its tolerance of 0.1); then the :data:`POISSON_SEED_RETRIES` derived seeds of
    :func:`poisson_seeds` are tried in order, so the same seed always gives the same mask. NumPy's
    global random state is restored afterwards.

    Raises:
        ValueError: bad arguments, a calibration block larger than ``1 / acceleration`` of k-space, or no
            seed of the sequence reaching the acceleration (one line naming acceleration, shape, seed and
            the largest acceleration the sparsest masks reached).
    """
    shape, _ = _check(shape, acceleration, center_fraction, axis)
    seeds = poisson_seeds(seed)
    if acceleration <= 1:
        return np.ones(shape, dtype=bool)
    if acceleration < POISSON_MIN_ACCELERATION:
        # sigpy leaves the k-space corners out (about 21 %), so it cannot reach R near 1 (it loops)
        raise ValueError(f"poisson masks need acceleration >= {POISSON_MIN_ACCELERATION:g} (or exactly 1), got "
                         f"{acceleration:g}; use the random or equispaced mask for milder undersampling")
    calib = tuple(max(int(round(s * center_fraction)), 0) for s in shape)
    if math.prod(calib) > math.prod(shape) / acceleration:
        raise ValueError(f"center_fraction {center_fraction:g} gives a {calib[0]} x {calib[1]} calibration block, more "
                         f"than the 1/{acceleration:g} of k-space that acceleration {acceleration:g} samples in all")
    below, above = -math.inf, math.inf
    for s in seeds:
        try:
            return sigpy_poisson(shape, float(acceleration), calib, s)
        except PoissonMiss as miss:
            below, above = max(below, miss.nearest[0]), min(above, miss.nearest[1])
    if math.isinf(above):
        why = f"at most {below:.3g} is reachable on this grid; use a smaller acceleration or a larger grid"
    elif math.isinf(below):
        why = f"at least {above:.3g} on this grid; use a larger acceleration"
    else:
        why = (f"the nearest masks drawn have accelerations {below:.3g} and {above:.3g} (sigpy's tolerance is 0.1); "
               f"try another --mask-seed or acceleration")
    raise ValueError(f"no Poisson-disc mask with acceleration {acceleration:g} for shape {shape[0]} x {shape[1]} "
                     f"(center_fraction {center_fraction:g}) from seed {seed} or its {len(seeds) - 1} derived seeds: "
                     f"{why}")


_MASKS = {"random": random_mask, "equispaced": equispaced_mask, "poisson": poisson_mask}


def make_mask(
    kind: str,
    shape: Sequence[int],
    acceleration: float,
    center_fraction: float,
    seed: int = 0,
    axis: int = -2,
) -> np.ndarray:
    """Dispatch to the mask of ``kind`` (one of :data:`kmunet.mri.MASK_KINDS`).

    Raises:
        ValueError: unknown kind (the message lists the valid ones) or bad arguments.
    """
    if kind not in _MASKS:
        raise ValueError(f"unknown mask kind {kind!r}; valid: {list(MASK_KINDS)}")
    return _MASKS[kind](shape, acceleration, center_fraction, seed=seed, axis=axis)
