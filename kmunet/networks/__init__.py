"""Segmentation networks: KM-UNet and, for comparison, MONAI's UNet built from the same config."""

from __future__ import annotations

import math

import torch.nn as nn

from kmunet.checks import check_dims
from kmunet.config import NetworkConfig
from kmunet.networks.ensemble import ProbabilityEnsemble
from kmunet.networks.kmunet import KANResBlock, KMUNet, make_norm

__all__ = ["KMUNet", "KANResBlock", "ProbabilityEnsemble", "build_network", "count_parameters", "NETWORKS"]

#: Valid ``network.name`` values.
NETWORKS = ("kmunet", "unet")


def build_network(config: NetworkConfig) -> nn.Module:
    """KM-UNet (``name="kmunet"``) or MONAI's ``UNet`` baseline (``name="unet"``) from one config.

    Both map ``(B, in_channels, *spatial)`` to logits ``(B, out_channels, *spatial)``. KM-UNet takes any
    spatial size (it pads to a multiple of its total stride and crops back); MONAI's ``UNet`` needs each
    size divisible by the product of ``strides`` (an :class:`~kmunet.config.ExperimentConfig` refuses a
    ``unet`` whose ``data.patch_size`` is not, and sliding-window inference with the training patch size
    guarantees it in kmunet's pipelines). ``norm="group"`` uses KM-UNet's group count (:func:`make_norm`)
    for every layer MONAI normalises, as MONAI's ``UNet`` takes one ``num_groups`` for all of them.

    Raises:
        TypeError: ``config`` is not a :class:`NetworkConfig`.
        ValueError: unknown name, or ``spatial_dims`` / ``strides`` the network cannot use.
    """
    if not isinstance(config, NetworkConfig):
        raise TypeError(f"build_network expects a NetworkConfig, got {type(config).__name__}")
    check_dims("network.spatial_dims", config.spatial_dims)  # a bool is not 1 (as in KMUNet)
    if config.name == "kmunet":
        return KMUNet(
            spatial_dims=config.spatial_dims,
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            channels=config.channels,
            strides=config.strides,
            kernel_size=config.kernel_size,
            norm=config.norm,
            dropout=config.dropout,
            kan=config.kan,
        )
    if config.name == "unet":
        from monai.networks.nets import UNet

        if len(config.strides) != len(config.channels) - 1:
            raise ValueError(f"strides must have len(channels) - 1 entries, got {config.strides!r}")
        return UNet(
            spatial_dims=config.spatial_dims,
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            channels=config.channels,
            strides=config.strides,
            kernel_size=config.kernel_size,
            num_res_units=config.num_res_units,
            norm=_unet_norm(config),
            dropout=config.dropout,
        )
    raise ValueError(f"unknown network name {config.name!r}; valid: {list(NETWORKS)}")


def _unet_norm(config: NetworkConfig) -> str | tuple[str, dict[str, int]]:
    """MONAI ``norm`` argument: the name, or ``("group", {"num_groups": n})`` (MONAI's GroupNorm needs n).

    MONAI's ``UNet`` normalises every level's channels, and with residual units also ``out_channels``
    (the top up-sampling convolution), all with one ``num_groups``: the greatest common divisor of the
    group counts :func:`~kmunet.networks.kmunet.make_norm` (KM-UNet's rule) gives each of them, so it
    divides every one (8 when all of them are multiples of 8).
    """
    if config.norm != "group":
        return config.norm
    counts = tuple(config.channels) + ((config.out_channels,) if config.num_res_units > 0 else ())
    return "group", {"num_groups": math.gcd(*(make_norm("group", config.spatial_dims, c).num_groups for c in counts))}


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
