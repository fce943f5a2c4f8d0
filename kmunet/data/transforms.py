"""MONAI dictionary transforms built from the config.

Three pipelines share one deterministic prefix, :func:`build_preprocessing`:

* training (:func:`build_train_transforms`): preprocessing, pad to ``patch_size``,
  ``RandCropByPosNegLabeld`` (``samples_per_image`` patches), spatial augmentation (3D: MONAI
  ``RandFlipd`` on ``flip_axes`` only + ``RandAffined``; 2D: albumentations flips on ``flip_axes``,
  affine and elastic via :class:`AlbumentationsD`), intensity augmentation (MONAI, N-D: scale,
  shift, noise, smoothing, and optionally nnU-Net's low-resolution simulation and gamma), then
  ``image`` float32 and ``label`` int64 plain tensors;
* validation (:func:`build_val_transforms`): preprocessing on full images (plus the DRIVE ``fov``);
* inference: ``build_preprocessing(params, keys=("image",))`` where ``params`` comes from
  :func:`preprocessing_params` stored in the checkpoint; its geometric steps (``Orientationd``,
  ``Spacingd``) are tracked in the ``MetaTensor`` so MONAI ``Invertd`` maps predictions back.

Array conventions after ``EnsureChannelFirstd``: ``image`` ``(C, *spatial)``, ``label`` ``(1, *spatial)``.
Spatial axis ``i`` of the config (``flip_axes``) is array axis ``i + 1``. 3D images are reoriented to
``data.orientation`` (RAS by default: axis 0 = left->right, 1 = posterior->anterior, 2 =
inferior->superior); 2D raster images keep the row-major ``(H, W)`` order (axis 0 = rows).
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    CastToTyped,
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandAdjustContrastd,
    RandAffined,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    Randomizable,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSimulateLowResolutiond,
    ScaleIntensityd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)

from kmunet.config import DataConfig, ExperimentConfig
from kmunet.data.io import KmunetImageReader

#: Valid values of ``DataConfig.normalization``.
NORMALIZATIONS: tuple[str, ...] = ("zscore", "ct", "minmax", "none")
#: Version of the dict returned by :func:`preprocessing_params` (bump when its meaning changes).
PARAMS_VERSION = 1
#: Keys interpolated with nearest neighbour (segmentations and masks).
MASK_KEYS: tuple[str, ...] = ("label", "fov")
#: CLAHE settings of ``data.clahe`` (the OpenCV defaults albumentations uses, as in most DRIVE papers).
CLAHE_CLIP_LIMIT: float = 2.0
CLAHE_TILES: tuple[int, int] = (8, 8)
#: Gamma range of ``data.gamma_prob`` and zoom range of ``data.lowres_prob`` (nnU-Net's values,
#: Isensee et al. 2021).
GAMMA_RANGE: tuple[float, float] = (0.7, 1.5)
LOWRES_ZOOM_RANGE: tuple[float, float] = (0.5, 1.0)


def _layout_of(data_cfg: DataConfig) -> str:
    """Configured layout, or the detected one when ``auto`` and the root exists (else ``auto``)."""
    if data_cfg.layout != "auto":
        return data_cfg.layout
    root = Path(data_cfg.root) if data_cfg.root else None
    if root is not None and root.is_dir():
        from kmunet.data.discovery import detect_layout

        try:
            return detect_layout(root)
        except ValueError:
            return "auto"
    return "auto"


def check_data_config(config: ExperimentConfig) -> None:
    """Validate the data settings against the network settings.

    Raises:
        ValueError: a value out of range or inconsistent with ``network.spatial_dims`` (the message
            names the field and the valid values).
    """
    d, dims = config.data, config.network.spatial_dims
    if dims not in (2, 3):
        raise ValueError(f"network.spatial_dims must be 2 or 3, got {dims}")
    if d.normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown data.normalization {d.normalization!r}; valid: {list(NORMALIZATIONS)}")
    if len(d.patch_size) != dims or any(p < 1 for p in d.patch_size):
        raise ValueError(f"data.patch_size must be {dims} positive integers, got {list(d.patch_size)}")
    if d.target_spacing is not None and (len(d.target_spacing) != dims or any(s <= 0 for s in d.target_spacing)):
        raise ValueError(f"data.target_spacing must be None or {dims} positive numbers, got {d.target_spacing}")
    bad_axes = [a for a in d.flip_axes if not 0 <= a < dims]
    if bad_axes:
        raise ValueError(f"data.flip_axes {list(d.flip_axes)}: axes {bad_axes} not in 0..{dims - 1}")
    probabilities = ("pos_fraction", "flip_prob", "affine_prob", "intensity_prob", "noise_prob", "smooth_prob", "gamma_prob", "lowres_prob", "elastic_prob")
    for name in probabilities:
        value = getattr(d, name)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"data.{name} must be in [0, 1], got {value}")
    if d.samples_per_image < 1:
        raise ValueError(f"data.samples_per_image must be >= 1, got {d.samples_per_image}")
    if len(d.class_names) < 2:
        raise ValueError(f"data.class_names needs background and at least one class, got {list(d.class_names)}")
    if d.ct_window[0] >= d.ct_window[1]:
        raise ValueError(f"data.ct_window must be (low, high) with low < high, got {list(d.ct_window)}")
    if not isinstance(d.clahe, bool):
        raise TypeError(f"data.clahe must be true or false, got {d.clahe!r}")
    if d.clahe and _layout_of(d) != "drive":
        raise ValueError(f"data.clahe needs 8-bit raster images (layout 'drive'), got layout {_layout_of(d)!r}")
    if d.clahe and d.image_key_channels not in (1, 3):
        raise ValueError(f"data.clahe needs 1 or 3 image channels, got data.image_key_channels={d.image_key_channels}")
    if d.image_key_channels != config.network.in_channels:
        raise ValueError(
            f"data.image_key_channels={d.image_key_channels} differs from network.in_channels="
            f"{config.network.in_channels}; set both to the number of image channels"
        )
    if dims == 3 and (len(d.orientation) != 3
                      or sorted({"L": 0, "R": 0, "A": 1, "P": 1, "S": 2, "I": 2}.get(c, -1) for c in str(d.orientation))
                      != [0, 1, 2]):
        raise ValueError(f"data.orientation must be 3 upper-case axis codes, one of L/R, A/P and S/I each (such as 'RAS' "
                         f"or 'LPS'), got {d.orientation!r}")


def preprocessing_params(config: ExperimentConfig) -> dict[str, Any]:
    """Everything inference needs to preprocess exactly as in training, as a JSON-able dict.

    Keys: ``version``, ``spatial_dims``, ``in_channels``, ``num_classes``, ``class_names``,
    ``layout``, ``orientation`` (``None`` in 2D), ``target_spacing`` (list or ``None``),
    ``normalization``, ``ct_window``, ``clahe``, ``raster_scale`` (divide raster images by this, DRIVE: 255, else
    ``None``), ``binarize_masks`` (DRIVE 0/255 masks -> 0/1), ``patch_size``, ``mirror_axes`` (the axes training
    flipped: safe for mirroring test-time augmentation).

    Raises:
        ValueError: invalid data settings (see :func:`check_data_config`).
    """
    check_data_config(config)
    d, dims = config.data, config.network.spatial_dims
    layout = _layout_of(d)
    return {
        "version": PARAMS_VERSION,
        "spatial_dims": int(dims),
        "in_channels": int(config.network.in_channels),
        "num_classes": len(d.class_names),
        "class_names": list(d.class_names),
        "layout": layout,
        "orientation": d.orientation if dims == 3 else None,
        "target_spacing": [float(s) for s in d.target_spacing] if d.target_spacing is not None else None,
        "normalization": d.normalization,
        "ct_window": [float(v) for v in d.ct_window],
        "clahe": bool(d.clahe),
        "raster_scale": 255.0 if layout == "drive" else None,
        "binarize_masks": layout == "drive",
        "patch_size": [int(p) for p in d.patch_size],
        "mirror_axes": [int(a) for a in d.flip_axes],
    }


class CheckChannelsd(MapTransform):
    """Raise ``ValueError`` naming the file when a channel-first image has the wrong channel count."""

    def __init__(self, keys: Sequence[str] | str, channels: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.channels = int(channels)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if d[key].shape[0] != self.channels:
                source = getattr(d[key], "meta", {}).get("filename_or_obj", key)
                raise ValueError(
                    f"{source}: {d[key].shape[0]} image channel(s), expected {self.channels} "
                    "(network.in_channels / data.image_key_channels)"
                )
        return d


class Clahed(MapTransform):
    """Contrast-limited adaptive histogram equalisation of channel-first 2D images in [0, 1].

    albumentations ``CLAHE`` (OpenCV; on the L channel of Lab for 3-channel images) with
    :data:`CLAHE_CLIP_LIMIT` and :data:`CLAHE_TILES`, applied to every item: deterministic, so it
    belongs to the shared preprocessing. Metadata of ``MetaTensor`` inputs is kept.
    """

    def __init__(self, keys: Sequence[str] | str, allow_missing_keys: bool = False) -> None:
        import albumentations as A

        super().__init__(keys, allow_missing_keys)
        # A scalar clip_limit is an augmentation range to albumentations, (1, limit), sampled anew on
        # every call; the degenerate range pins it, so equal inputs give equal outputs.
        self.transform = A.CLAHE(clip_limit=(CLAHE_CLIP_LIMIT, CLAHE_CLIP_LIMIT), tile_grid_size=CLAHE_TILES, p=1.0)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if img.ndim != 3 or img.shape[0] not in (1, 3):
                source = getattr(img, "meta", {}).get("filename_or_obj", key)
                raise ValueError(f"{source}: CLAHE needs a (1 or 3, H, W) image, got shape {tuple(img.shape)}")
            hwc = np.ascontiguousarray(torch.as_tensor(img).detach().cpu().numpy().transpose(1, 2, 0), dtype=np.float32)
            out = self.transform(image=np.clip(hwc, 0.0, 1.0))["image"]
            out = torch.from_numpy(np.ascontiguousarray(out.reshape(hwc.shape).transpose(2, 0, 1)))  # (H, W, C) -> (C, H, W)
            d[key] = MetaTensor(out, meta=img.meta) if isinstance(img, MetaTensor) else out
        return d


class BinarizeMaskd(MapTransform):
    """Map a 0/255 (or any) mask to 0/1: ``x > threshold`` as ``uint8`` (DRIVE vessel/FOV masks)."""

    def __init__(self, keys: Sequence[str] | str, threshold: float = 127.0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.threshold = float(threshold)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = (d[key] > self.threshold).to(torch.uint8)
        return d


def _check_params(params: Mapping[str, Any]) -> None:
    missing = [k for k in ("spatial_dims", "normalization", "ct_window", "orientation", "target_spacing") if k not in params]
    if missing:
        raise ValueError(f"preprocessing params miss keys {missing}; build them with preprocessing_params(config)")
    if params["normalization"] not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {params['normalization']!r}; valid: {list(NORMALIZATIONS)}")
    if params["spatial_dims"] not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {params['spatial_dims']}")


def build_preprocessing(params: Mapping[str, Any], keys: Sequence[str] = ("image", "label")) -> Compose:
    """Deterministic preprocessing shared by training, validation and inference.

    Load (:class:`~kmunet.data.io.KmunetImageReader`), channel first, reorient (3D), resample to
    ``target_spacing`` (if set; nearest neighbour for ``label``/``fov``), binarise DRIVE masks, scale
    raster images to [0, 1], equalise them (:class:`Clahed`) when ``params["clahe"]``, then normalise
    ``image`` intensities: ``zscore`` on nonzero voxels per channel, ``ct`` (window then [0, 1]),
    ``minmax`` per channel, or ``none``.

    The result holds ``MetaTensor`` items; inference inverts the geometric steps with
    ``Invertd(keys="pred", transform=<this Compose>, orig_keys="image")``.

    Args:
        params: dict from :func:`preprocessing_params` (e.g. read back from a checkpoint).
        keys: keys holding file paths; ``"image"`` must be one of them; ``"label"`` and ``"fov"``
            are treated as masks. Keys missing from a data dict are skipped.

    Returns:
        A ``Compose`` mapping ``{"image": path, ...}`` to ``image`` float32 ``(C, *spatial)`` and masks
        ``(1, *spatial)``.

    Raises:
        ValueError: malformed ``params`` or no ``"image"`` key.
    """
    _check_params(params)
    keys = tuple(keys)
    if "image" not in keys:
        raise ValueError(f"keys must include 'image', got {list(keys)}")
    masks = tuple(k for k in keys if k in MASK_KEYS)
    modes = tuple("nearest" if k in MASK_KEYS else "bilinear" for k in keys)
    # LoadImaged also instantiates MONAI's default readers; silence their optional-plugin notices
    # (a warning and a log line about nvImageCodec) for the duration of the construction only.
    plugin_log = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
    previous_level = plugin_log.level
    plugin_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
            loader = LoadImaged(keys, reader=KmunetImageReader(), image_only=True, allow_missing_keys=True)
    finally:
        plugin_log.setLevel(previous_level)
    t: list[Any] = [
        loader,
        EnsureChannelFirstd(keys, allow_missing_keys=True),
    ]
    if params.get("in_channels"):
        t.append(CheckChannelsd("image", int(params["in_channels"])))
    if params["spatial_dims"] == 3 and params.get("orientation"):
        t.append(Orientationd(keys, axcodes=params["orientation"], labels=None, allow_missing_keys=True))
    if params.get("target_spacing"):
        t.append(Spacingd(keys, pixdim=list(params["target_spacing"]), mode=modes, allow_missing_keys=True))
    if params.get("binarize_masks") and masks:
        t.append(BinarizeMaskd(masks, threshold=127.0, allow_missing_keys=True))
    if params.get("raster_scale"):
        t.append(ScaleIntensityRanged("image", a_min=0.0, a_max=float(params["raster_scale"]), b_min=0.0, b_max=1.0))
    if params.get("clahe"):
        t.append(Clahed("image"))
    norm = params["normalization"]
    if norm == "zscore":
        t.append(NormalizeIntensityd("image", nonzero=True, channel_wise=True))
    elif norm == "ct":
        low, high = params["ct_window"]
        t.append(ScaleIntensityRanged("image", a_min=float(low), a_max=float(high), b_min=0.0, b_max=1.0, clip=True))
    elif norm == "minmax":
        t.append(ScaleIntensityd("image", minv=0.0, maxv=1.0, channel_wise=True))
    t.append(EnsureTyped("image", dtype=torch.float32))
    return Compose(t)


class AlbumentationsD(MapTransform, Randomizable):
    """Apply an albumentations pipeline to channel-first 2D dictionary items (MONAI-compatible).

    ``image`` ``(C, H, W)`` is passed as an ``(H, W, C)`` float32 array, mask keys ``(1, H, W)`` as
    integer masks (nearest-neighbour in geometric transforms). The albumentations ``Compose`` is
    re-seeded from this transform's own ``numpy`` generator on every call, so
    ``Compose.set_random_state(seed)`` of the enclosing MONAI pipeline makes it reproducible.

    Args:
        transform: an ``albumentations.Compose`` (or any callable accepting ``image=`` and ``masks=``
            and exposing ``set_random_seed``).
        image_key: key of the image.
        mask_keys: keys of the masks.
    """

    def __init__(self, transform: Any, image_key: str = "image", mask_keys: Sequence[str] = ("label",)) -> None:
        super().__init__([image_key, *mask_keys], allow_missing_keys=True)
        self.transform = transform
        self.image_key = image_key
        self.mask_keys = tuple(mask_keys)
        self._seed = 0

    def randomize(self, data: Any = None) -> None:
        self._seed = int(self.R.randint(0, 2**31 - 1))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(self._seed)
        img = d[self.image_key]
        if img.ndim != 3:
            raise ValueError(f"AlbumentationsD expects (C, H, W) images, got shape {tuple(img.shape)}")
        present = [k for k in self.mask_keys if k in d]
        img_np = np.ascontiguousarray(np.moveaxis(torch.as_tensor(img).detach().cpu().numpy().astype(np.float32), 0, -1))
        masks = [np.ascontiguousarray(torch.as_tensor(d[k]).detach().cpu().numpy()[0].astype(np.uint8)) for k in present]
        out = self.transform(image=img_np, masks=masks)
        d[self.image_key] = torch.from_numpy(np.ascontiguousarray(np.moveaxis(out["image"], -1, 0)))
        for key, mask in zip(present, out["masks"]):
            d[key] = torch.from_numpy(np.ascontiguousarray(np.asarray(mask)))[None]
        return d


def build_albumentations_2d(data_cfg: DataConfig) -> Any:
    """The 2D geometric augmentation (albumentations): flips on ``flip_axes``, affine, elastic.

    Axis 0 (rows) flips with ``VerticalFlip``, axis 1 (columns) with ``HorizontalFlip``. Intensity
    augmentation is done by the MONAI transforms shared with 3D (brightness = shift, contrast =
    scale), because albumentations clips float images to [0, 1].
    """
    import albumentations as A
    import cv2

    t: list[Any] = []
    if 0 in data_cfg.flip_axes:
        t.append(A.VerticalFlip(p=data_cfg.flip_prob))
    if 1 in data_cfg.flip_axes:
        t.append(A.HorizontalFlip(p=data_cfg.flip_prob))
    if data_cfg.affine_prob > 0:
        deg = math.degrees(data_cfg.rotate_range)
        t.append(
            A.Affine(
                rotate=(-deg, deg),
                scale=(1.0 - data_cfg.scale_range, 1.0 + data_cfg.scale_range),
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,
                p=data_cfg.affine_prob,
            )
        )
    if data_cfg.elastic_prob > 0:
        t.append(A.ElasticTransform(alpha=20.0, sigma=5.0, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=data_cfg.elastic_prob))
    return A.Compose(t, seed=0)


def _final_types(keys: Sequence[str], track_meta: bool) -> list[Any]:
    dtypes = {"image": torch.float32, "label": torch.int64, "fov": torch.uint8}
    return [
        CastToTyped(list(keys), dtype=[dtypes[k] for k in keys], allow_missing_keys=True),
        EnsureTyped(list(keys), track_meta=track_meta, allow_missing_keys=True),
    ]


def build_train_transforms(config: ExperimentConfig) -> Compose:
    """Training pipeline: preprocessing, pad, positive/negative patch sampling and augmentation.

    Each input dict ``{"image": path, "label": path}`` yields a *list* of ``samples_per_image``
    patches (collated by MONAI's ``list_data_collate``): ``image`` float32 ``(C, *patch_size)`` and
    ``label`` int64 ``(1, *patch_size)``. Random state: call ``.set_random_state(seed)`` (done by
    :func:`kmunet.data.loaders.build_dataloaders`).

    Raises:
        ValueError: invalid data settings.
    """
    params = preprocessing_params(config)
    d, dims = config.data, config.network.spatial_dims
    keys = ("image", "label")
    patch = list(d.patch_size)
    t: list[Any] = list(build_preprocessing(params, keys).transforms)
    t += [
        SpatialPadd(keys, spatial_size=patch),
        RandCropByPosNegLabeld(
            keys,
            label_key="label",
            spatial_size=patch,
            pos=d.pos_fraction,
            neg=1.0 - d.pos_fraction,
            num_samples=d.samples_per_image,
            image_key=None,
        ),
    ]
    if dims == 3:
        t += [RandFlipd(keys, prob=d.flip_prob, spatial_axis=axis) for axis in d.flip_axes]
        if d.affine_prob > 0:
            t.append(
                RandAffined(
                    keys,
                    prob=d.affine_prob,
                    rotate_range=(d.rotate_range,) * dims,
                    scale_range=(d.scale_range,) * dims,
                    mode=("bilinear", "nearest"),
                    padding_mode="zeros",
                )
            )
    else:
        t.append(AlbumentationsD(build_albumentations_2d(d), "image", ("label",)))
    if d.intensity_prob > 0:
        t += [
            RandScaleIntensityd("image", factors=0.1, prob=d.intensity_prob),
            RandShiftIntensityd("image", offsets=0.1, prob=d.intensity_prob),
        ]
    if d.noise_prob > 0:
        t.append(RandGaussianNoised("image", prob=d.noise_prob, mean=0.0, std=0.1))
    if d.smooth_prob > 0:
        sigma = (0.5, 1.0)
        t.append(RandGaussianSmoothd("image", sigma_x=sigma, sigma_y=sigma, sigma_z=sigma, prob=d.smooth_prob))
    if d.lowres_prob > 0:
        upsample = "bilinear" if dims == 2 else "trilinear"
        t.append(RandSimulateLowResolutiond("image", prob=d.lowres_prob, zoom_range=LOWRES_ZOOM_RANGE, upsample_mode=upsample))
    if d.gamma_prob > 0:
        t.append(RandAdjustContrastd("image", prob=d.gamma_prob, gamma=GAMMA_RANGE, retain_stats=True))
    t += _final_types(keys, track_meta=False)
    return Compose(t)


def build_val_transforms(config: ExperimentConfig, with_fov: bool | None = None) -> Compose:
    """Validation pipeline: preprocessing on full images, ``label`` int64, ``fov`` uint8 0/1.

    Args:
        config: the experiment config.
        with_fov: also load the ``"fov"`` key (DRIVE field of view); ``None`` = when the layout is
            DRIVE. Items without the key are passed through.

    Returns:
        A ``Compose`` producing ``image`` float32 ``(C, *spatial)`` and ``label`` ``(1, *spatial)``
        ``MetaTensor`` items (metadata kept for ``Invertd`` and saving).
    """
    params = preprocessing_params(config)
    if with_fov is None:
        with_fov = params["layout"] == "drive"
    keys = ("image", "label", "fov") if with_fov else ("image", "label")
    t = list(build_preprocessing(params, keys).transforms) + _final_types(keys, track_meta=True)
    return Compose(t)
