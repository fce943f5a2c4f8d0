"""Mirroring test-time augmentation around MONAI sliding-window inference (2D and 3D)."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import sliding_window_inference

from kmunet.inference.tta import mirror_subsets, sliding_window_probabilities


class RampNet(torch.nn.Module):
    """Not flip-equivariant: the logits get a ramp along every spatial axis of the window."""

    def __init__(self, spatial_dims: int) -> None:
        super().__init__()
        conv = (torch.nn.Conv2d, torch.nn.Conv3d)[spatial_dims - 2]
        self.conv = conv(1, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = sum(torch.linspace(-1.0, 1.0, n).view([n if i == d else 1 for i in range(x.ndim - 2)])
                   for d, n in enumerate(x.shape[2:]))
        return self.conv(x) + ramp


def test_mirror_subsets_lists_every_combination_once() -> None:
    assert mirror_subsets((), 3) == [()]
    assert mirror_subsets((0,), 3) == [(), (0,)]
    assert mirror_subsets((1, 0), 2) == [(), (0,), (1,), (0, 1)]
    for bad in ((3,), (0, 0), (-1,)):
        with pytest.raises(ValueError, match="mirror axes"):
            mirror_subsets(bad, 3)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_no_mirroring_is_softmax_of_sliding_window(spatial_dims: int) -> None:
    torch.manual_seed(0)
    net = RampNet(spatial_dims).eval()
    x = torch.randn(1, 1, *([12] * spatial_dims))
    roi = [8] * spatial_dims
    with torch.no_grad():
        expected = torch.softmax(sliding_window_inference(x, roi, 2, net, overlap=0.25), dim=1)
        got = sliding_window_probabilities(x, roi, 2, net, overlap=0.25)
    assert got.shape == (1, 3, *([12] * spatial_dims))
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("spatial_dims,axes", [(2, (0, 1)), (3, (0,)), (3, (0, 2))])
def test_mirroring_averages_flipped_predictions(spatial_dims: int, axes: tuple[int, ...]) -> None:
    torch.manual_seed(1)
    net = RampNet(spatial_dims).eval()
    x = torch.randn(2, 1, *([10] * spatial_dims))
    roi = [8] * spatial_dims
    with torch.no_grad():
        got = sliding_window_probabilities(x, roi, 4, net, overlap=0.5, mirror_axes=axes)
        # Direct reference: flip the input, predict, flip back, average the softmax.
        refs = []
        for subset in mirror_subsets(axes, spatial_dims):
            dims = [2 + a for a in subset]
            xi = x.flip(dims) if dims else x
            p = torch.softmax(sliding_window_inference(xi, roi, 4, net, overlap=0.5), dim=1)
            refs.append(p.flip(dims) if dims else p)
        expected = torch.stack(refs).mean(0)
        plain = sliding_window_probabilities(x, roi, 4, net, overlap=0.5)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got.sum(1), torch.ones_like(got[:, 0]))
    assert not torch.allclose(got, plain)  # the ramp makes mirroring matter


def test_mirroring_an_equivariant_network_changes_nothing() -> None:
    net = torch.nn.Conv3d(1, 2, 1).eval()  # pointwise: commutes with every flip
    x = torch.randn(1, 1, 9, 10, 11)
    with torch.no_grad():
        plain = sliding_window_probabilities(x, [8, 8, 8], 2, net)
        mirrored = sliding_window_probabilities(x, [8, 8, 8], 2, net, mirror_axes=(0, 1, 2))
    torch.testing.assert_close(mirrored, plain, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_members_with_their_own_windows_are_averaged_window_by_member(spatial_dims: int) -> None:
    from kmunet.networks import ProbabilityEnsemble

    torch.manual_seed(0)
    members = [RampNet(spatial_dims).eval() for _ in range(2)]
    x = torch.randn(1, 1, *([12] * spatial_dims))
    windows = [[8] * spatial_dims, [12] * spatial_dims]
    ensemble = ProbabilityEnsemble(members, windows=windows)
    assert ensemble.mixed_windows
    with torch.no_grad():
        got = sliding_window_probabilities(x, [4] * spatial_dims, 2, ensemble, mirror_axes=(0,))  # roi ignored
        expected = [sliding_window_probabilities(x, w, 2, m, mirror_axes=(0,)) for m, w in zip(members, windows)]
    torch.testing.assert_close(got, (expected[0] + expected[1]) / 2)
    # The ramp depends on the window: running both members in one window gives another answer.
    with torch.no_grad():
        shared = sliding_window_probabilities(x, windows[0], 2, ProbabilityEnsemble(members), mirror_axes=(0,))
    assert (got - shared).abs().max() > 1e-3

    same = ProbabilityEnsemble(members, windows=[windows[0]] * 2)
    assert not same.mixed_windows  # equal windows: the members are averaged inside each window, as before
    with torch.no_grad():
        torch.testing.assert_close(sliding_window_probabilities(x, windows[0], 2, same),
                                   sliding_window_probabilities(x, windows[0], 2, ProbabilityEnsemble(members)))
