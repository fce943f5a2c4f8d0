"""KM-UNet and build_network: shapes in 2D/3D, odd sizes, gradients, overfitting, validation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from kmunet.config import KANConfig, NetworkConfig
from kmunet.kan import kan_layers
from kmunet.networks import KMUNet, build_network, count_parameters

SMALL_KAN = KANConfig(grid_size=3)


@pytest.mark.parametrize(
    "dims,spatial",
    [(2, (16, 16)), (2, (17, 23)), (3, (8, 8, 8)), (3, (9, 11, 7))],
)
def test_shapes_gradients_and_no_nan(dims: int, spatial: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    net = KMUNet(dims, in_channels=2, out_channels=3, channels=(4, 8, 8), strides=(2, 2), kan=SMALL_KAN)
    x = torch.randn((2, 2) + spatial)
    y = net(x)
    assert y.shape == (2, 3) + spatial
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"
    assert len(list(kan_layers(net))) == 2 * 5  # 5 blocks (3 encoder incl. bottleneck, 2 decoder) x 2 KAN convs


def test_tiny_overfit_loss_falls() -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 1, 12, 12, 12, generator=gen)
    zz, yy, xx = torch.meshgrid(*[torch.arange(12)] * 3, indexing="ij")
    label = ((zz - 6) ** 2 + (yy - 6) ** 2 + (xx - 5) ** 2 < 12).long() + (xx > 9).long()  # 3 classes
    x = x * 0.3 + label.float()
    net = KMUNet(3, 1, 3, channels=(4, 8), strides=(2,), kan=SMALL_KAN)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), label.unsqueeze(0))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_build_network_switches_between_kmunet_and_monai_unet() -> None:
    cfg = NetworkConfig(spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8, 16), strides=(2, 2), kan=SMALL_KAN)
    kmunet = build_network(cfg)
    unet = build_network(dataclasses.replace(cfg, name="unet"))
    from monai.networks.nets import UNet

    assert isinstance(kmunet, KMUNet) and isinstance(unet, UNet)
    x = torch.randn(1, 1, 16, 16)
    assert kmunet(x).shape == unet(x).shape == (1, 2, 16, 16)
    assert count_parameters(kmunet) > 0
    with pytest.raises(ValueError, match="valid"):
        build_network(dataclasses.replace(cfg, name="resnet"))
    with pytest.raises(TypeError):
        build_network({"name": "kmunet"})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(channels=(4,)), "channels"),
        (dict(strides=(2,)), "strides"),
        (dict(norm="layer"), "valid"),
        (dict(kernel_size=2), "kernel_size"),
        (dict(spatial_dims=4), "spatial_dims"),
        (dict(dropout=1.5), "dropout"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    args = dict(spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8, 8), strides=(2, 2))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        KMUNet(**args)


def test_wrong_input_rank_raises() -> None:
    with pytest.raises(ValueError, match="expects"):
        KMUNet(3, 1, 2, channels=(4, 8), strides=(2,))(torch.zeros(1, 1, 8, 8))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"in_channels": 0}, ValueError, "in_channels must be a positive integer"),
        ({"out_channels": 0}, ValueError, "out_channels must be a positive integer"),
        ({"kernel_size": (3, 3, 3)}, TypeError, "kernel_size must be one odd integer"),
        ({"strides": ((1, 2, 2), 2)}, TypeError, "strides must be one integer per level"),
        ({"kan": {"grid_size": 3}}, TypeError, "kan must be a kmunet.config.KANConfig"),
        ({"channels": (4, "8", 16)}, TypeError, "channels must be one integer per level"),
        ({"channels": (4.5, 8, 16)}, TypeError, "channels must be one integer per level"),
        ({"strides": 2}, TypeError, "strides must be one integer per level"),
        ({"spatial_dims": True}, ValueError, "spatial_dims must be one of"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict, error: type, match: str) -> None:
    args = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": (4, 8, 16), "strides": (2, 2)}
    with pytest.raises(error, match=match):
        KMUNet(**{**args, **kwargs})


def test_too_small_input_is_named() -> None:
    net = KMUNet(3, 1, 2, channels=(4, 8, 16, 32)).eval()  # total stride 8
    with pytest.raises(ValueError, match=r"input spatial shape \[8, 8, 8\] is too small"):
        net(torch.randn(1, 1, 8, 8, 8))
    assert net(torch.randn(1, 1, 9, 8, 8)).shape == (1, 2, 9, 8, 8)
    with pytest.raises(ValueError, match="network.spatial_dims must be one of"):
        build_network(NetworkConfig(name="unet", spatial_dims=4))


def test_numpy_integer_arguments_are_accepted() -> None:
    import numpy as np

    net = KMUNet(2, np.int64(1), np.int64(2), channels=(4, 8), strides=(np.int64(2),), kernel_size=np.int64(3))
    assert net(torch.randn(1, 1, 8, 8)).shape == (1, 2, 8, 8)


def test_res_block_needs_an_odd_kernel() -> None:
    from kmunet.networks.kmunet import KANResBlock

    with pytest.raises(ValueError, match="kernel_size must be a positive odd integer"):
        KANResBlock(2, 2, 2, kernel_size=2)


@pytest.mark.parametrize("dims,spatial", [(2, (16, 16)), (2, (17, 23)), (3, (8, 12, 8)), (3, (9, 11, 7))])
def test_deep_supervision_outputs_every_level_in_training_only(dims: int, spatial: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    net = KMUNet(dims, 1, 3, channels=(4, 8, 8, 8), strides=(2, 2, 2), kan=SMALL_KAN, deep_supervision=2)
    x = torch.randn((2, 1) + spatial)
    outputs = net(x)
    assert isinstance(outputs, list) and len(outputs) == 3
    for level, out in enumerate(outputs):  # level l: ceil(size / 2 ** l) per axis
        assert out.shape == (2, 3) + tuple(-(-n // 2**level) for n in spatial), level
        assert torch.isfinite(out).all()
    sum(out.square().mean() for out in outputs).backward()
    for name, p in net.named_parameters():  # the auxiliary heads train too
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    net.eval()
    with torch.no_grad():
        logits = net(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 3) + spatial
    # the heads do not change the main output: same weights without them give the same logits
    plain = KMUNet(dims, 1, 3, channels=(4, 8, 8, 8), strides=(2, 2, 2), kan=SMALL_KAN).eval()
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("aux_heads.")})
    with torch.no_grad():
        torch.testing.assert_close(plain(x), logits)


@pytest.mark.parametrize("value", [-1, 2, 1.5, "1"])
def test_deep_supervision_beyond_the_decoder_raises(value: object) -> None:
    with pytest.raises(ValueError, match=r"deep_supervision must be an integer in \[0, len\(strides\) - 1 = 1\]"):
        KMUNet(2, 1, 2, channels=(4, 8, 8), strides=(2, 2), deep_supervision=value)  # type: ignore[arg-type]


def test_deep_supervision_is_kmunet_only() -> None:
    from kmunet.config import ExperimentConfig, load_config

    cfg = NetworkConfig(name="unet", spatial_dims=2, channels=(4, 8), strides=(2,), deep_supervision=1)
    with pytest.raises(ValueError, match="deep_supervision=1 needs name='kmunet'"):
        build_network(cfg)
    with pytest.raises(ValueError, match="network.deep_supervision=1 needs network.name='kmunet'"):
        load_config(None, ["network.name=unet", "network.deep_supervision=1", "data.patch_size=[32, 32, 32]"])
    assert ExperimentConfig().network.deep_supervision == 0


@pytest.mark.parametrize("value,message", [(-1, "must be a non-negative integer"), (1.5, "expected an integer, got 1.5"),
                                           (3, "deep_supervision=3 is too large: the decoder has len")])
def test_deep_supervision_range_is_checked_with_the_config(value: object, message: str) -> None:
    from kmunet.config import load_config

    with pytest.raises(ValueError, match=message):  # a bad --set fails before any data is read
        load_config(None, [f"network.deep_supervision={value}", "network.strides=[2, 2, 2]"])
    for name in ("kmunet", "unet"):  # negatives are refused whatever the network
        with pytest.raises(ValueError, match="must be a non-negative integer"):
            load_config(None, [f"network.name={name}", "network.deep_supervision=-1", "data.patch_size=[32, 32, 32]"])
