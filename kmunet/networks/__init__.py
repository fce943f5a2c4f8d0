"""Segmentation networks: KM-UNet and, for comparison, MONAI's UNet built from the same config."""

from __future__ import annotations

import torch.nn as nn

from kmunet.config import NetworkConfig
from kmunet.networks.ensemble import ProbabilityEnsemble
from kmunet.networks.kmunet import KANResBlock, KMUNet

__all__ = ["KMUNet", "KANResBlock", "ProbabilityEnsemble", "build_network", "count_parameters", "NETWORKS"]

#: Valid ``network.name`` values.
NETWORKS = ("kmunet", "unet")


def build_network(config: NetworkConfig) -> nn.Module:
    """KM-UNet (``name="kmunet"``) or MONAI's ``UNet`` baseline (``name="unet"``) from one config.

    Both map ``(B, in_channels, *spatial)`` to logits ``(B, out_channels, *spatial)``. KM-UNet takes any
    spatial size (it pads to a multiple of its total stride and crops back); MONAI's ``UNet`` needs each
    size divisible by the product of ``strides`` (sliding-window inference with the training patch size
    guarantees it in kmunet's pipelines).

    Raises:
        TypeError: ``config`` is not a :class:`NetworkConfig`.
        ValueError: unknown name, or ``spatial_dims`` / ``strides`` the network cannot use.
    """
    if not isinstance(config, NetworkConfig):
        raise TypeError(f"build_network expects a NetworkConfig, got {type(config).__name__}")
    if config.spatial_dims not in (1, 2, 3):
        raise ValueError(f"network.spatial_dims must be 1, 2 or 3, got {config.spatial_dims!r}")
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
            norm=config.norm,
            dropout=config.dropout,
        )
    raise ValueError(f"unknown network name {config.name!r}; valid: {list(NETWORKS)}")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
