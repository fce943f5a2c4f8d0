"""ProbabilityEnsemble: the mean of the members' softmax, returned as log-probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from kmunet.networks import KMUNet, ProbabilityEnsemble


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("spatial", [(5, 6), (3, 4, 5)])
def test_softmax_of_output_is_mean_of_member_softmaxes(spatial: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(0)
    dims = len(spatial)
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    members = [conv(2, 3, 1).double() for _ in range(3)]
    for m in members:
        with torch.no_grad():
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen, dtype=torch.float64) * 20)  # peaked softmaxes
    x = torch.randn(2, 2, *spatial, generator=gen, dtype=torch.float64)
    out = ProbabilityEnsemble(members)(x)
    assert out.shape == (2, 3, *spatial) and out.dtype == torch.float32 and torch.isfinite(out).all()
    expected = np.mean([_softmax(m(x).detach().numpy()) for m in members], axis=0)
    np.testing.assert_allclose(torch.softmax(out.double(), 1).detach().numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(torch.logsumexp(out, 1).detach().numpy(), 0.0, atol=1e-5)  # already normalised


def test_one_member_is_its_log_softmax_and_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    net = KMUNet(spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,))
    x = torch.randn(1, 1, 16, 16)
    torch.testing.assert_close(ProbabilityEnsemble([net])(x), torch.log_softmax(net(x), 1))
    pair = ProbabilityEnsemble([net, KMUNet(spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,))])
    pair(x)[:, 1].mean().backward()
    missing = [n for n, p in pair.named_parameters() if p.grad is None]
    assert not missing


def test_bad_members_raise() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ProbabilityEnsemble([])
    with pytest.raises(TypeError, match="member 1 must be an nn.Module"):
        ProbabilityEnsemble([nn.Identity(), lambda x: x])  # type: ignore[list-item]
    mixed = ProbabilityEnsemble([nn.Conv2d(1, 2, 1), nn.Conv2d(1, 3, 1)])
    with pytest.raises(ValueError, match="different output shapes"):
        mixed(torch.zeros(1, 1, 4, 4))


def test_bad_windows_raise() -> None:
    members = [nn.Conv2d(1, 2, 1), nn.Conv2d(1, 2, 1)]
    assert ProbabilityEnsemble(members, windows=[(8, 8), [16, 16]]).windows == [(8, 8), (16, 16)]
    for bad in ([(8, 8)], [(8, 8), (8,)], [(8, 8), (0, 8)]):
        with pytest.raises(ValueError, match="one positive size per member"):
            ProbabilityEnsemble(members, windows=bad)
