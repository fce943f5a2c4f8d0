"""A learned resampling prior: a local implicit function conditioned on a 3-D conv encoder.

In the spirit of LIIF (Chen et al. 2021, "Learning Continuous Image Representation with Local Implicit
Image Function", CVPR) and ArSSR (Wu et al. 2022, "An Arbitrary Scale Super-Resolution Approach for
3D MR Images via Implicit Neural Representation", IEEE JBHI):

* an encoder (3-D convolutions with residual blocks) maps the low-resolution volume, plus three constant
  channels holding ``log2`` of the upsampling factor per axis, to a feature volume on the input grid;
* a decoder MLP maps ``(feature trilinearly sampled at the query, offset of the query from its nearest
  input voxel, cell size)`` to a correction added to the trilinear interpolation of the input intensity.

Coordinates are continuous voxel indices of the input volume. :func:`train_resampler` trains it on random
crops of a folder of NIfTI volumes whose slices are dropped along a random axis (keep every 2nd or 4th
slice); the checkpoint ``{"state_dict": ..., "config": {...}}`` loads with ``torch.load(weights_only=True)``.
Intensities are divided by the 99th percentile of the input volume and restored afterwards. At
inference the prediction is averaged over the 8 mirror images of the input (flips along each axis).

The network works in voxel space: it knows the upsampling factor, not the voxel size. The checkpoint
config therefore records the training volumes' voxel sizes (``"spacing"``: per-axis ``median``, ``min``
and ``max`` in mm) beside the trained ``"factors"``, and :func:`prior_domain_warning` says when an input
lies outside them (checkpoints written before the spacing was recorded are checked on factors only).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from kmunet.checks import check_int
from kmunet.inr.geometry import UPSAMPLED_EPS, antialias_sigma, three_positive

__all__ = [
    "CHECKPOINT_FORMAT",
    "SPACING_TOLERANCE",
    "ResamplerAugment",
    "ResamplerNet",
    "check_checkpoint_path",
    "holdout_split",
    "load_resampler",
    "prior_domain_warning",
    "prior_resample_array",
    "save_resampler",
    "train_resampler",
]

CHECKPOINT_FORMAT = "kmunet-resampler-v1"
#: :func:`prior_domain_warning` accepts voxel sizes up to this factor outside the training range.
SPACING_TOLERANCE: float = 1.25
#: A volume whose largest voxel size exceeds its smallest by more than this factor is anisotropic.
_ANISOTROPY = 1.1
#: Relative tolerance when matching a requested factor to a trained one.
_FACTOR_TOLERANCE = 0.01


class _ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class ResamplerNet(nn.Module):
    """Conv encoder + local implicit decoder.

    Args:
        features: encoder feature channels C.
        blocks: residual blocks in the encoder.
        hidden: decoder MLP width.
        decoder_layers: hidden layers of the decoder MLP.

    Shapes:
        ``encode``: ``(B, 1, X, Y, Z)`` volume and ``(B, 3)`` per-axis upsampling factors ->
        ``(B, C, X, Y, Z)`` features. ``decode``: features, volume, ``(B, N, 3)`` query indices (continuous
        voxel indices of the input), ``(B, 3)`` factors -> ``(B, N)`` intensities.
    """

    def __init__(self, features: int = 32, blocks: int = 3, hidden: int = 64, decoder_layers: int = 2) -> None:
        super().__init__()
        for name, value, minimum in (("features", features, 1), ("blocks", blocks, 0), ("hidden", hidden, 1),
                                     ("decoder_layers", decoder_layers, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        self.config = {"features": features, "blocks": blocks, "hidden": hidden, "decoder_layers": decoder_layers}
        self.head = nn.Conv3d(4, features, 3, padding=1)
        self.body = nn.Sequential(*[_ResBlock(features) for _ in range(blocks)])
        self.tail = nn.Conv3d(features, features, 3, padding=1)
        dims = [features + 6] + [hidden] * (decoder_layers + 1)
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], 1))
        self.decoder = nn.Sequential(*layers)
        nn.init.zeros_(self.decoder[-1].weight)  # start as trilinear interpolation
        nn.init.zeros_(self.decoder[-1].bias)

    def encode(self, volume: Tensor, factors: Tensor) -> Tensor:
        cond = torch.log2(factors.to(volume.dtype)).view(-1, 3, 1, 1, 1).expand(-1, 3, *volume.shape[2:])
        h = F.relu(self.head(torch.cat([volume, cond], dim=1)))
        return self.tail(self.body(h)) + h

    @staticmethod
    def _grid(index: Tensor, size: Sequence[int]) -> Tensor:
        """Continuous indices ``(B, N, 3)`` -> grid_sample coordinates ``(B, N, 1, 1, 3)`` (align_corners)."""
        denom = torch.tensor([max(int(s) - 1, 1) for s in size], dtype=index.dtype, device=index.device)
        unit = 2.0 * index / denom - 1.0
        return unit.flip(-1).view(index.shape[0], -1, 1, 1, 3)  # grid_sample wants (z, y, x) for (X, Y, Z) input

    def decode(self, feats: Tensor, volume: Tensor, index: Tensor, factors: Tensor) -> Tensor:
        grid = self._grid(index, volume.shape[2:])
        f = F.grid_sample(feats, grid, mode="bilinear", padding_mode="border", align_corners=True)
        base = F.grid_sample(volume, grid, mode="bilinear", padding_mode="border", align_corners=True)
        f = f.view(feats.shape[0], feats.shape[1], -1).transpose(1, 2)  # (B, N, C)
        base = base.view(volume.shape[0], -1)
        offset = index - torch.round(index)
        cell = (1.0 / factors.to(index.dtype)).unsqueeze(1).expand(-1, index.shape[1], 3)
        return base + self.decoder(torch.cat([f, offset, cell], dim=-1)).squeeze(-1)

    def forward(self, volume: Tensor, index: Tensor, factors: Tensor) -> Tensor:
        return self.decode(self.encode(volume, factors), volume, index, factors)


# ------------------------------------------------------------------------------------------- checkpoints
def check_checkpoint_path(path: str | Path) -> Path:
    """A checkpoint output path, checked before any work: it must end in ``.pt`` (any case).

    Raises:
        ValueError: another suffix, or an existing folder.
        FileNotFoundError: its folder does not exist.
    """
    from kmunet.inference.writers import check_output_file

    path = check_output_file(path)
    if not path.name.lower().endswith(".pt"):
        raise ValueError(f"{path}: the resampler checkpoint must end in .pt")
    return path


def save_resampler(model: ResamplerNet, path: str | Path, **extra) -> Path:
    """Save ``{"state_dict", "config"}`` atomically; ``extra`` (plain values) goes into the config."""
    from kmunet.inference.writers import atomic_path

    config = {"format": CHECKPOINT_FORMAT, **model.config, **extra}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "config": config}, tmp)
    return path


def load_resampler(path: str | Path, device: str | torch.device = "cpu") -> ResamplerNet:
    """Load a checkpoint written by :func:`save_resampler` (``torch.load(weights_only=True)``).

    Raises:
        FileNotFoundError: missing file.
        ValueError: not a resampler checkpoint.
    """
    from kmunet.training.checkpoint import load_torch_file

    path = Path(path)
    ckpt = load_torch_file(path, "cpu", "prior model")
    if not isinstance(ckpt, dict) or ckpt.get("config", {}).get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a kmunet resampler checkpoint (format {CHECKPOINT_FORMAT})")
    cfg = ckpt["config"]
    model = ResamplerNet(**{k: cfg[k] for k in ("features", "blocks", "hidden", "decoder_layers")})
    model.load_state_dict(ckpt["state_dict"])
    model.train_config = dict(cfg)  # type: ignore[attr-defined]
    return model.to(device).eval()


def _fmt(values: Sequence[float]) -> str:
    return " x ".join(f"{float(v):.3g}" for v in values)


def prior_domain_warning(
    config: dict,
    spacing: Sequence[float],
    factors: Sequence[float],
    name: str = "the prior",
) -> str | None:
    """A one-line warning when a prior is used outside what it was trained on, else ``None``.

    Outside means: an upsampled axis (factor > 1) whose factor is none of the trained ``config["factors"]``
    (within 1 %), more than one upsampled axis (training drops slices along one axis at a time), or --
    when the checkpoint records ``config["spacing"]`` -- a voxel size the prior never saw: training
    crops had the training volumes' voxel size along kept axes and that size times the factor along
    the dropped one, so ``spacing / factors`` per axis is compared with the training range (smallest
    ``min`` to largest ``max`` over the axes, widened by :data:`SPACING_TOLERANCE` either way).

    Args:
        config: the checkpoint config (``load_resampler(path).train_config``).
        spacing: the input's voxel size per voxel axis (mm).
        factors: upsampling factor per voxel axis (input voxel size / output voxel size, at least 1).
        name: how the message names the prior (its file).

    Raises:
        ValueError: ``spacing`` or ``factors`` not three positive finite numbers.
    """
    sp = three_positive("spacing", spacing)
    fac = three_positive("factors", np.maximum(np.asarray(factors, dtype=np.float64), 1.0))
    problems = []
    trained = [float(f) for f in config.get("factors", []) or []]
    up = [float(f) for f in fac if f > 1.0 + UPSAMPLED_EPS]
    if trained and up:
        off = [f for f in up if not any(abs(f - t) <= _FACTOR_TOLERANCE * t for t in trained)]
        if off or len(up) > 1:
            problems.append(f"factors {_fmt(fac)} (trained: {', '.join(f'{t:g}' for t in trained)} along one axis "
                            "at a time)")
    recorded = config.get("spacing")
    if isinstance(recorded, dict) and recorded.get("min") and recorded.get("max"):
        lo, hi = min(float(v) for v in recorded["min"]), max(float(v) for v in recorded["max"])
        seen = sp / fac
        if np.any(seen < lo / SPACING_TOLERANCE) or np.any(seen > hi * SPACING_TOLERANCE):
            median = recorded.get("median") or []
            problems.append(f"voxel size {_fmt(sp)} mm ({_fmt(seen)} mm at full resolution; trained on "
                            f"{lo:.3g}-{hi:.3g} mm{f', median {_fmt(median)} mm' if median else ''})")
    if not problems:
        return None
    return f"{name} was not trained for {' or '.join(problems)}; its output may be unreliable"


# ------------------------------------------------------------------------------------------- inference
def intensity_scale(volume: np.ndarray) -> float:
    """Normalisation constant: 99th percentile of the volume (1 when it is not positive)."""
    p = float(np.percentile(volume, 99)) if volume.size else 1.0
    return p if p > 0 else (float(np.abs(volume).max()) or 1.0)


def prior_resample_array(
    model: ResamplerNet,
    volume: np.ndarray,
    query_index: np.ndarray,
    factors: Sequence[float],
    chunk_size: int = 131072,
    flips: bool = True,
) -> np.ndarray:
    """Evaluate the prior at continuous voxel indices of ``volume``.

    Args:
        model: a trained :class:`ResamplerNet` (its device is used).
        volume: ``(X, Y, Z)`` input intensities (any scale; normalised internally and restored).
        query_index: ``(N, 3)`` continuous voxel indices of ``volume`` to evaluate.
        factors: upsampling factor per axis (input voxel size / output voxel size).
        chunk_size: queries per decoder pass.
        flips: average over the 8 mirror images of the volume (test-time augmentation matching the
            random flips of training; 8 times the cost).

    Returns:
        ``(N,)`` float32 intensities.
    """
    device = next(model.parameters()).device
    scale = intensity_scale(volume)
    vol = torch.as_tensor(np.ascontiguousarray(volume, dtype=np.float32) / scale, device=device)[None, None]
    fac = torch.as_tensor(np.asarray(factors, dtype=np.float32), device=device).clamp_min(1.0)[None]
    q = torch.as_tensor(np.asarray(query_index, dtype=np.float32), device=device)
    size = torch.tensor(vol.shape[2:], dtype=torch.float32, device=device) - 1
    variants = [(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)] if flips else [(0, 0, 0)]
    total = torch.zeros(q.shape[0], dtype=torch.float32)
    with torch.no_grad():
        for flip in variants:
            dims = [2 + i for i in range(3) if flip[i]]
            v = torch.flip(vol, dims) if dims else vol
            sign = torch.tensor([-1.0 if f else 1.0 for f in flip], device=device)
            shift = torch.tensor([1.0 if f else 0.0 for f in flip], device=device) * size
            feats = model.encode(v, fac)
            for start in range(0, q.shape[0], chunk_size):
                qq = q[start:start + chunk_size] * sign + shift  # mirrored query positions
                total[start:start + chunk_size] += model.decode(feats, v, qq[None], fac)[0].cpu()
    return (total.numpy() / len(variants) * scale).astype(np.float32)


# ------------------------------------------------------------------------------------------- training
def list_volumes(data_dir: str | Path) -> list[Path]:
    """Sorted NIfTI files (``*.nii``, ``*.nii.gz``, any case) in a folder (not hidden ones)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data folder not found: {data_dir}")
    files = sorted(p for p in data_dir.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith((".nii", ".nii.gz")))
    if not files:
        raise ValueError(f"no NIfTI volumes (*.nii, *.nii.gz) in {data_dir}")
    return files


def holdout_split(files: Sequence[Path], holdout: int, seed: int = 0) -> tuple[list[Path], list[Path]]:
    """Deterministic split by ``seed``: ``(train, held_out)`` with ``holdout`` held-out files.

    The permutation comes from a seeded ``torch.Generator`` over the sorted file names, so the same folder
    and seed always give the same split.
    """
    files = sorted(files, key=lambda p: Path(p).name)
    if isinstance(holdout, bool) or not isinstance(holdout, int) or holdout < 0 or (holdout > 0 and holdout >= len(files)):
        raise ValueError(f"holdout must leave at least one training volume, got {holdout} of {len(files)}")
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(files), generator=gen).tolist()
    held = sorted((files[i] for i in order[:holdout]), key=lambda p: Path(p).name)
    train = sorted((files[i] for i in order[holdout:]), key=lambda p: Path(p).name)
    return train, held


@dataclasses.dataclass(frozen=True)
class ResamplerAugment:
    """Domain randomisation of the training crops of :func:`train_resampler` (all off by default).

    Attributes:
        zoom: ``(low, high)`` range of an isotropic down-scaling factor: a crop ``s`` times larger is cut
            and resampled (Gaussian anti-aliasing, linear interpolation) to the crop size, so structures
            look ``s`` times smaller in voxels (coarser scans than the training data). ``(1, 1)``: off.
        slice_blur: largest Gaussian sigma (voxels) of a slice-profile blur along the slice-dropping axis,
            applied to the high-resolution crop before slices are dropped (thick-slice acquisitions); the
            sigma is drawn uniformly from ``[0, slice_blur]``. 0: off.
        contrast: probability of a random intensity remapping (a piecewise-linear look-up table with
            random values at ``CONTRAST_KNOTS``; 0 stays 0), which teaches contrasts other than the
            training data's (T2 from T1, say), in the spirit of SynthSR/SynthSeg (Iglesias et al. 2023).
    """

    zoom: tuple[float, float] = (1.0, 1.0)
    slice_blur: float = 0.0
    contrast: float = 0.0

    def __post_init__(self) -> None:
        lo, hi = (float(v) for v in self.zoom)
        if not (1.0 <= lo <= hi) or not math.isfinite(hi):
            raise ValueError(f"zoom must be a range (low, high) with 1 <= low <= high, got {self.zoom!r}")
        if not (math.isfinite(self.slice_blur) and self.slice_blur >= 0):
            raise ValueError(f"slice_blur must be >= 0, got {self.slice_blur!r}")
        if not 0.0 <= self.contrast <= 1.0:
            raise ValueError(f"contrast must be a probability in [0, 1], got {self.contrast!r}")


#: Knots (normalised intensities) of the random contrast look-up table of :class:`ResamplerAugment`.
CONTRAST_KNOTS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)


def _random_contrast(hr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Piecewise-linear remapping through random values at :data:`CONTRAST_KNOTS` (0 -> 0, rescaled so
    the 99th percentile stays 1); intensities above the last knot map to its value."""
    values = np.concatenate([[0.0], rng.uniform(0.05, 1.0, len(CONTRAST_KNOTS) - 1)])
    out = np.interp(hr, CONTRAST_KNOTS, values).astype(np.float32)
    return out / intensity_scale(out)


def _crop_with_pad(vol: np.ndarray, size: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """A random ``size`` crop of ``vol`` (reflect-padded first when ``vol`` is smaller)."""
    pad = [(0, max(0, s - n)) for s, n in zip(size, vol.shape)]
    if any(p[1] for p in pad):
        vol = np.pad(vol, pad, mode="reflect" if all(n > 1 for n in vol.shape) else "edge")
    start = [int(rng.integers(n - s + 1)) for n, s in zip(vol.shape, size)]
    return vol[start[0]:start[0] + size[0], start[1]:start[1] + size[1], start[2]:start[2] + size[2]]


def _make_batch(volumes: list[np.ndarray], rng: np.random.Generator, batch: int, crop: int,
                factors: Sequence[int], augment: ResamplerAugment = ResamplerAugment()
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Random crops with slices dropped along a random axis.

    Returns:
        ``(lr (B,1,...), query index (B,N,3), target (B,N), factors (B,3))``; targets are the dropped
        slices' voxels (normalised intensities).
    """
    from scipy import ndimage

    r = int(rng.choice(factors))
    axis = int(rng.integers(3))
    m = (crop - 1) // r + 1  # kept slices
    length = (m - 1) * r + 1
    size = [crop, crop, crop]
    size[axis] = length
    lrs, targets = [], []
    for _ in range(batch):
        vol = volumes[int(rng.integers(len(volumes)))]
        scale = float(rng.uniform(*augment.zoom)) if augment.zoom[1] > 1 else 1.0
        if scale > 1.0:
            src = _crop_with_pad(vol, [int(math.ceil(s * scale)) for s in size], rng)
            src = ndimage.gaussian_filter(src, sigma=float(antialias_sigma(scale)))  # anti-aliasing
            hr = ndimage.zoom(src, [s / n for s, n in zip(size, src.shape)], order=1, grid_mode=True, mode="nearest")
        else:
            hr = _crop_with_pad(vol, size, rng)
        if augment.slice_blur > 0:
            hr = ndimage.gaussian_filter1d(hr, float(rng.uniform(0.0, augment.slice_blur)), axis=axis, mode="nearest")
        if augment.contrast > 0 and rng.random() < augment.contrast:
            hr = _random_contrast(hr, rng)
        for ax in range(3):
            if rng.random() < 0.5:
                hr = np.flip(hr, ax)
        hr = hr * float(rng.uniform(0.8, 1.2))
        sl = [slice(None)] * 3
        sl[axis] = slice(None, None, r)
        lrs.append(np.ascontiguousarray(hr[tuple(sl)]))
        targets.append(np.ascontiguousarray(hr))
    lr = torch.from_numpy(np.stack(lrs)).float()[:, None]
    hr = torch.from_numpy(np.stack(targets)).float()
    # Query indices of the dropped slices (positions not on multiples of r along the axis).
    idx = [torch.arange(s, dtype=torch.float32) for s in size]
    grid = torch.stack(torch.meshgrid(*idx, indexing="ij"), dim=-1)  # (X, Y, Z, 3)
    keep = (torch.arange(size[axis]) % r) != 0
    sel = [slice(None)] * 3
    sel[axis] = keep
    q = grid[tuple(sel)].reshape(-1, 3).clone()
    q[:, axis] = q[:, axis] / r
    target = hr[(slice(None),) + tuple(sel)].reshape(batch, -1)
    fac = torch.ones(batch, 3)
    fac[:, axis] = float(r)
    return lr, q.unsqueeze(0).expand(batch, -1, -1).contiguous(), target, fac


def _spacing_summary(spacings: Sequence[Sequence[float]]) -> dict[str, list[float]]:
    """Per-axis ``median``, ``min`` and ``max`` (mm) of the training volumes' voxel sizes (plain floats)."""
    arr = np.asarray(spacings, dtype=np.float64).reshape(-1, 3)
    return {"median": [float(v) for v in np.median(arr, axis=0)], "min": [float(v) for v in arr.min(axis=0)],
            "max": [float(v) for v in arr.max(axis=0)]}


def train_resampler(
    data_dir: str | Path,
    output: str | Path,
    epochs: int = 50,
    *,
    batch_size: int = 4,
    crop: int = 24,
    factors: Sequence[int] = (2, 4),
    lr: float = 1e-3,
    holdout: int = 20,
    seed: int = 0,
    device: str = "auto",
    time_limit: float | None = None,
    features: int = 32,
    blocks: int = 3,
    hidden: int = 64,
    decoder_layers: int = 2,
    augment: ResamplerAugment | None = None,
    progress: bool = False,
    log_every: int = 0,
) -> dict:
    """Train a :class:`ResamplerNet` on a folder of NIfTI volumes and save it.

    An epoch is ``ceil(n_train / batch_size)`` steps of ``batch_size`` random crops (``crop`` voxels per
    side; smaller volumes are reflect-padded). Each step drops slices along a random axis with a random
    factor from ``factors`` and fits the dropped slices (MSE on intensities divided by each volume's 99th
    percentile). ``holdout`` volumes (deterministic split by ``seed``) are never used; their names are
    stored in the checkpoint config for benchmarks, with the trained ``factors`` and the training
    volumes' voxel sizes (``spacing``: per-axis ``median``, ``min``, ``max`` in mm; see
    :func:`prior_domain_warning`). Training is in voxel space: a note is printed when training volumes
    have anisotropic voxels, whose slices are dropped along voxel axes regardless of their size. Adam
    with cosine learning-rate decay to 5 % over the epochs, or over ``time_limit`` when that ends first.

    Args:
        data_dir: folder of ``*.nii.gz`` volumes.
        output: checkpoint path (must end in ``.pt``; checked before training).
        epochs: training epochs.
        time_limit: stop (and save) after this many seconds even if epochs remain.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        augment: domain randomisation of the crops (:class:`ResamplerAugment`; default: none).

    Returns:
        Summary dict (``steps``, ``seconds``, ``final_loss``, ``factors``, ``spacing``, ``train``,
        ``holdout`` names).

    Raises:
        ValueError: bad settings, an output not ending in ``.pt``, unreadable or non-3-D volumes.
        FileNotFoundError: missing data folder or output folder.
    """
    from tqdm.auto import tqdm

    from kmunet.data.io import read_nifti
    from kmunet.runtime import resolve_device

    output = check_checkpoint_path(output)
    epochs = check_int("epochs", epochs)
    if not factors or any(int(f) < 2 for f in factors):
        raise ValueError(f"factors must be integers >= 2, got {list(factors)!r}")
    batch_size = check_int("batch_size", batch_size)
    if crop < 2 * max(factors) + 1:
        raise ValueError(f"crop {crop} too small for factor {max(factors)}")
    augment = ResamplerAugment() if augment is None else augment
    if not isinstance(augment, ResamplerAugment):
        raise TypeError(f"augment must be a ResamplerAugment, got {type(augment).__name__}")
    dev = resolve_device(device)
    files = list_volumes(data_dir)
    if holdout >= len(files):
        asked, holdout = holdout, 0 if len(files) < 2 else min(holdout, len(files) - 1)
        print(f"note: holdout {asked} reduced to {holdout}: {data_dir} has only {len(files)} volume(s) and at "
              "least one must be left to train on", flush=True)
    train_files, held = holdout_split(files, holdout, seed)
    volumes, spacings = [], []
    for f in train_files:
        try:
            img, raw = read_nifti(Path(f))  # a .nii.gz is read to its end: its gzip CRC is checked
            data = np.asarray(raw, dtype=np.float32)
            zooms = [float(z) for z in img.header.get_zooms()]
        except Exception as err:  # noqa: BLE001
            raise ValueError(f"cannot read {f}: {err}") from None
        kept = [z for n, z in zip(data.shape, zooms) if n != 1]  # the axes np.squeeze keeps
        data = np.squeeze(data)
        if data.ndim != 3:
            raise ValueError(f"{f} is not a 3-D volume (shape {data.shape})")
        volumes.append(data / intensity_scale(data))
        spacings.append(kept if len(kept) == 3 else zooms[:3])
    spacing = _spacing_summary(spacings)
    aniso = [(f, s) for f, s in zip(train_files, spacings) if max(s) > _ANISOTROPY * min(s)]
    if aniso:
        print(f"note: {len(aniso)} of {len(train_files)} training volumes have anisotropic voxels (e.g. "
              f"{aniso[0][0].name}: {_fmt(aniso[0][1])} mm); the prior is trained in voxel space (slices dropped "
              "along voxel axes whatever their size); the voxel sizes are recorded in the checkpoint", flush=True)
    largest = max(max(v.shape) for v in volumes)
    if crop > largest:
        raise ValueError(f"crop {crop} is larger than every training volume (largest side {largest} voxels): "
                         f"choose --crop <= {largest}")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ResamplerNet(features=features, blocks=blocks, hidden=hidden, decoder_layers=decoder_layers)
    model.to(dev).train()
    rng = np.random.default_rng(seed)
    steps_per_epoch = math.ceil(len(volumes) / batch_size)
    total = epochs * steps_per_epoch
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    start = time.perf_counter()
    losses: list[float] = []
    step = 0
    bar = tqdm(total=total, desc="train-resampler", disable=not progress)
    stopped_early = False
    for _ in range(epochs):
        for _ in range(steps_per_epoch):
            # Cosine decay to 5% over the run; progress counts steps or, with time_limit, elapsed time.
            progress_frac = step / total
            if time_limit:
                progress_frac = max(progress_frac, (time.perf_counter() - start) / time_limit)
            for group in opt.param_groups:
                group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress_frac, 1.0))))
            lr_vol, q, target, fac = _make_batch(volumes, rng, batch_size, crop, factors, augment)
            pred = model(lr_vol.to(dev), q.to(dev), fac.to(dev))
            loss = F.mse_loss(pred, target.to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
            bar.update(1)
            if log_every and step % log_every == 0:
                recent = float(np.mean(losses[-log_every:]))
                print(f"step {step}/{total} loss {recent:.5f} ({time.perf_counter() - start:.0f} s)", flush=True)
            if time_limit is not None and time.perf_counter() - start > time_limit:
                stopped_early = True
                break
        if stopped_early:
            break
    bar.close()
    seconds = time.perf_counter() - start
    final = float(np.mean(losses[-max(1, min(50, len(losses))):]))
    summary = {
        "steps": step,
        "seconds": round(seconds, 1),
        "final_loss": final,
        "epochs": epochs,
        "stopped_early": stopped_early,
        "factors": [int(f) for f in factors],
        "spacing": spacing,
        "crop": crop,
        "augment": {"zoom": [float(v) for v in augment.zoom], "slice_blur": float(augment.slice_blur),
                    "contrast": float(augment.contrast)},
        "seed": seed,
        "data": Path(data_dir).name,
        "train": [p.name for p in train_files],
        "holdout": [p.name for p in held],
    }
    save_resampler(model.cpu(), output, **summary)
    return summary
