"""B-spline bases: Cox-de Boor vs a direct recursive reference, closed form vs general, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kmunet.kan.basis import bspline_basis, grid_is_uniform, kan_features, make_grid, uniform_local_basis


def reference_basis(x: float, knots: np.ndarray, i: int, k: int) -> float:
    """Textbook recursive Cox-de Boor definition of B_{i,k}(x) (de Boor 1972), scalar float64."""
    if k == 0:
        return 1.0 if knots[i] <= x < knots[i + 1] else 0.0
    out = 0.0
    if knots[i + k] > knots[i]:
        out += (x - knots[i]) / (knots[i + k] - knots[i]) * reference_basis(x, knots, i, k - 1)
    if knots[i + k + 1] > knots[i + 1]:
        out += (knots[i + k + 1] - x) / (knots[i + k + 1] - knots[i + 1]) * reference_basis(x, knots, i + 1, k - 1)
    return out


def random_grid(channels: int, grid_size: int, order: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    steps = rng.uniform(0.2, 1.0, size=(channels, grid_size + 2 * order))
    knots = np.concatenate([np.zeros((channels, 1)), np.cumsum(steps, axis=1)], axis=1) - 3.0
    return torch.from_numpy(knots)


@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_cox_de_boor_matches_recursive_reference_on_nonuniform_grids(order: int) -> None:
    grid = random_grid(channels=3, grid_size=4, order=order, seed=order)
    rng = np.random.default_rng(10 + order)
    x = torch.from_numpy(rng.uniform(-4.0, 6.0, size=(25, 3)))
    basis = bspline_basis(x, grid, order)
    assert basis.shape == (25, 3, 4 + order)
    expected = np.array(
        [[[reference_basis(x[n, c].item(), grid[c].numpy(), i, order) for i in range(4 + order)] for c in range(3)] for n in range(25)]
    )
    np.testing.assert_allclose(basis.numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
def test_uniform_closed_form_matches_general_recursion(order: int, dtype: torch.dtype, atol: float) -> None:
    grid = make_grid((-1.0, 1.0), 5, order, 4, dtype=dtype)
    gen = torch.Generator().manual_seed(order)
    x = (torch.randn(3, 4, 7, 5, generator=gen) * 2.0).to(dtype)  # includes inputs outside the grid
    fast = kan_features(x, grid, order, uniform=True)
    general = kan_features(x, grid, order, uniform=False)
    assert fast.shape == (3, 4, 1 + 5 + order, 7, 5)
    torch.testing.assert_close(fast, general, atol=atol, rtol=0)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_partition_of_unity_inside_grid_range_and_zero_outside_extended_grid(order: int) -> None:
    grid = make_grid((-1.0, 1.0), 6, order, 2, dtype=torch.float64)
    inside = torch.linspace(-1.0, 0.999999, 101, dtype=torch.float64).unsqueeze(1).repeat(1, 2)
    torch.testing.assert_close(bspline_basis(inside, grid, order).sum(-1), torch.ones(101, 2, dtype=torch.float64))
    outside = torch.tensor([[-5.0, 7.0], [10.0, -3.0]], dtype=torch.float64)
    assert torch.count_nonzero(bspline_basis(outside, grid, order)) == 0
    feats = kan_features(outside.unsqueeze(-1), grid, order, uniform=True)  # (2, 2, 1 + G + k, 1)
    assert torch.count_nonzero(feats[:, :, 1:]) == 0
    torch.testing.assert_close(feats[:, :, 0, 0], torch.nn.functional.silu(outside))


def test_uniform_local_basis_sums_to_one() -> None:
    f = torch.rand(100, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for order in range(5):
        torch.testing.assert_close(torch.stack(uniform_local_basis(f, order)).sum(0), torch.ones_like(f))


@pytest.mark.parametrize("uniform", [True, False])
def test_channels_last_layout_gives_identical_features_and_gradients(uniform: bool) -> None:
    grid = make_grid((-1.0, 1.0), 4, 3, 3, dtype=torch.float64)
    x = (torch.randn(2, 3, 4, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 1.5)
    x.requires_grad_(True)
    cl = kan_features(x, grid, 3, uniform=uniform, channels_last=True)
    cf = kan_features(x, grid, 3, uniform=uniform, channels_last=False)
    torch.testing.assert_close(cl, cf)
    assert cl.flatten(1, 2).is_contiguous(memory_format=torch.channels_last_3d)
    assert cf.flatten(1, 2).is_contiguous()
    if uniform:
        assert torch.autograd.gradcheck(lambda t: kan_features(t, grid, 3, uniform=True, channels_last=True), (x,))


def test_gradcheck_basis_and_features() -> None:
    grid = random_grid(channels=2, grid_size=3, order=3, seed=5)
    x = (torch.rand(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 4 - 2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: bspline_basis(t, grid, 3), (x,))
    ugrid = make_grid((-1.0, 1.0), 4, 3, 3, dtype=torch.float64)
    xu = (torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 1.5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: kan_features(t, ugrid, 3, uniform=True), (xu,))
    ngrid = random_grid(channels=3, grid_size=3, order=2, seed=3)
    assert torch.autograd.gradcheck(lambda t: kan_features(t, ngrid, 2, uniform=False), (xu,))


def test_grid_helpers_validate() -> None:
    assert grid_is_uniform(make_grid((-1, 1), 5, 3, 2))
    assert not grid_is_uniform(random_grid(2, 5, 3, 0))
    with pytest.raises(ValueError, match="grid_range"):
        make_grid((1.0, -1.0), 5, 3, 2)
    with pytest.raises(ValueError, match="grid"):
        bspline_basis(torch.zeros(3, 2), make_grid((-1, 1), 5, 3, 4), 3)
    with pytest.raises(ValueError, match="x must be"):
        kan_features(torch.zeros(2, 3, 4), make_grid((-1, 1), 5, 3, 2), 3)
