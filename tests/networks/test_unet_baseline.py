"""Regression tests: build_network's MONAI UNet baseline with group norm, and its argument checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from kmunet.config import NetworkConfig
from kmunet.networks import build_network


@pytest.mark.parametrize("channels,out_channels,num_res_units", [
    ((16, 32, 64), 3, 2),
    ((16, 32, 64), 3, 0),
    ((8, 16, 32), 2, 2),
    ((12, 24, 48), 4, 1),
])
def test_unet_with_group_norm_builds_and_runs(channels: tuple, out_channels: int, num_res_units: int) -> None:
    # MONAI's GroupNorm needs num_groups: norm="group" used to fail with a TypeError
    config = NetworkConfig(name="unet", spatial_dims=2, out_channels=out_channels, channels=channels, strides=(2, 2),
                           norm="group", num_res_units=num_res_units)
    model = build_network(config)
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and {m.num_channels for m in norms} >= set(channels[:-1])
    # each layer its own count, KM-UNet's rule gcd(8, C): 8 groups for 16 or 32 channels, not one shared count
    assert all(m.num_groups == math.gcd(8, m.num_channels) and m.affine for m in norms)
    assert any(m.num_groups == 8 for m in norms)
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, out_channels, 16, 16)


def test_unet_norm_names_other_than_group_pass_through() -> None:
    for norm, kind in (("instance", nn.InstanceNorm2d), ("batch", nn.BatchNorm2d)):
        model = build_network(NetworkConfig(name="unet", spatial_dims=2, channels=(4, 8), strides=(2,), norm=norm))
        assert any(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize("name", ["unet", "kmunet"])
@pytest.mark.parametrize("dims", [True, False, 4, 2.0])
def test_bool_and_bad_spatial_dims_are_refused(name: str, dims: object) -> None:
    with pytest.raises(ValueError, match="network.spatial_dims must be one of"):
        build_network(NetworkConfig(name=name, spatial_dims=dims, channels=(4, 8), strides=(2,)))  # type: ignore[arg-type]
