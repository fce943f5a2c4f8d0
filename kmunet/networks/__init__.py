"""Segmentation networks: KM-UNet and, for comparison, MONAI's UNet built from the same config."""

from __future__ import annotations

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
    guarantees it in kmunet's pipelines). ``norm="group"`` gives every layer MONAI normalises KM-UNet's
    group count for its own channels (:func:`make_norm`).

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
            deep_supervision=config.deep_supervision,
        )
    if config.name == "unet":
        from monai.networks.nets import UNet

        if config.deep_supervision:
            raise ValueError(f"deep_supervision={config.deep_supervision!r} needs name='kmunet' (MONAI's UNet has "
                             "no auxiliary outputs)")
        if len(config.strides) != len(config.channels) - 1:
            raise ValueError(f"strides must have len(channels) - 1 entries, got {config.strides!r}")
        unet = UNet(
            spatial_dims=config.spatial_dims,
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            channels=config.channels,
            strides=config.strides,
            kernel_size=config.kernel_size,
            num_res_units=config.num_res_units,
            # MONAI's GroupNorm takes one num_groups for every layer; 1 always divides, and each layer then
            # gets KM-UNet's own group count for its channels (_regroup)
            norm=("group", {"num_groups": 1}) if config.norm == "group" else config.norm,
            dropout=config.dropout,
        )
        if config.norm == "group":
            _regroup(unet, config.spatial_dims)
        return unet
    raise ValueError(f"unknown network name {config.name!r}; valid: {list(NETWORKS)}")


def _regroup(model: nn.Module, spatial_dims: int) -> None:
    """Replace every ``nn.GroupNorm`` of ``model`` (in place) by :func:`~kmunet.networks.kmunet.make_norm`'s
    group norm for its channel count, as KM-UNet normalises (``gcd(8, channels)`` groups, affine)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.GroupNorm):
                setattr(parent, name, make_norm("group", spatial_dims, child.num_channels))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
