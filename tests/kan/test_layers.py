"""KANConv / KANLinear: exactness against a direct per-edge float64 reference, gradients, validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kmunet.kan import KANConv, KANLinear, extend_model_grids, grid_is_uniform, kan_layers, plot_edge_functions, update_model_grids
from tests.kan.reference import reference_conv, reference_linear, smooth_coefficients

F64 = torch.float64


def _input(shape: tuple[int, ...], seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64) * scale


CASES = [
    # spatial_dims, kwargs, input spatial size
    (1, dict(kernel_size=3, stride=2, padding=1), (11,)),
    (1, dict(kernel_size=5, padding="same", spline_order=2), (9,)),
    (2, dict(kernel_size=3, stride=2, padding=1), (9, 8)),
    (2, dict(kernel_size=3, dilation=2, padding=2), (9, 10)),
    (2, dict(kernel_size=(3, 1), groups=2, padding=(1, 0)), (6, 7)),
    (2, dict(kernel_size=2, padding="valid", spline_order=1, grid_size=3), (6, 5)),
    (3, dict(kernel_size=3, padding="same"), (5, 6, 4)),
    (3, dict(kernel_size=3, stride=2, dilation=2, groups=2, padding=1), (7, 6, 7)),
]


@pytest.mark.parametrize("dims,kwargs,spatial", CASES)
def test_kanconv_matches_direct_per_edge_reference(dims: int, kwargs: dict, spatial: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    layer = KANConv(dims, 4, 6, dtype=F64, grid_range=(-1.5, 1.5), **kwargs)
    x = _input((2, 4) + spatial, seed=dims, scale=1.2)  # some inputs fall outside the grid
    y = layer(x)
    expected = reference_conv(layer, x)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y.detach().numpy(), expected, atol=1e-10)


def test_kanconv_nonuniform_grid_after_update_matches_reference() -> None:
    torch.manual_seed(1)
    layer = KANConv(2, 3, 2, kernel_size=3, padding=1, dtype=F64)
    x = _input((2, 3, 6, 6), seed=3)
    layer.update_grid(x)
    assert not grid_is_uniform(layer.grid)
    np.testing.assert_allclose(layer(x).detach().numpy(), reference_conv(layer, x), atol=1e-10)


@pytest.mark.parametrize("channels_last", [True, False])
def test_kanconv_3d_memory_layouts_agree(channels_last: bool) -> None:
    torch.manual_seed(7)
    layer = KANConv(3, 4, 3, kernel_size=3, stride=2, groups=1, channels_last=channels_last, dtype=F64)
    x = _input((2, 4, 5, 6, 5), seed=11)
    np.testing.assert_allclose(layer(x).detach().numpy(), reference_conv(layer, x), atol=1e-10)


def test_output_equals_sum_of_edge_functions_over_receptive_field() -> None:
    torch.manual_seed(2)
    layer = KANConv(1, 3, 2, kernel_size=4, padding="valid", dtype=F64)
    x = _input((1, 3, 4), seed=4)  # one receptive field -> one output position
    values = x[0].reshape(-1)  # (3 * 4,), ordered (c, k)
    phi = layer.edge_functions(values)  # (out, in, k, n)
    assert phi.shape == (2, 3, 4, 12)
    c_idx, k_idx = torch.meshgrid(torch.arange(3), torch.arange(4), indexing="ij")
    n_idx = c_idx * 4 + k_idx
    expected = phi[:, c_idx, k_idx, n_idx].sum(dim=(1, 2))  # (out,)
    torch.testing.assert_close(layer(x)[0, :, 0], expected)


def test_kanlinear_matches_reference_and_shapes() -> None:
    torch.manual_seed(3)
    layer = KANLinear(5, 3, dtype=F64)
    x = _input((4, 2, 5), seed=5, scale=1.3)
    y = layer(x)
    assert y.shape == (4, 2, 3)
    np.testing.assert_allclose(y.detach().numpy(), reference_linear(layer, x), atol=1e-10)
    assert layer.edge_functions(torch.linspace(-1, 1, 7, dtype=F64)).shape == (3, 5, 7)


def test_gradcheck_layers_float64() -> None:
    torch.manual_seed(4)
    conv = KANConv(2, 2, 2, kernel_size=3, stride=2, padding=1, grid_size=3, dtype=F64)
    x = _input((1, 2, 5, 4), seed=6).requires_grad_(True)
    assert torch.autograd.gradcheck(conv, (x,))
    params = list(conv.parameters())
    assert torch.autograd.gradcheck(lambda *p: torch.func.functional_call(conv, dict(zip([n for n, _ in conv.named_parameters()], p)), (x,)), tuple(q.detach().requires_grad_(True) for q in params))
    lin = KANLinear(3, 2, grid_size=4, dtype=F64)
    assert torch.autograd.gradcheck(lin, (_input((4, 3), seed=7).requires_grad_(True),))


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_every_parameter_gets_a_gradient_and_no_nan(dims: int) -> None:
    layer = KANConv(dims, 3, 4, kernel_size=3, stride=2)
    x = torch.randn((2, 3) + (7,) * dims) * 3  # many inputs outside the grid
    y = layer(x)
    assert y.shape == (2, 4) + (4,) * dims
    (y.square().mean() + layer.regularization_loss()).backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert torch.isfinite(y).all()


def test_update_grid_keeps_smooth_functions() -> None:
    torch.manual_seed(5)
    layer = KANConv(2, 4, 6, kernel_size=3, padding=1, grid_range=(-2.0, 2.0), dtype=F64)
    smooth_coefficients(layer, seed=1)
    x = (_input((4, 4, 16, 16), seed=8) * 0.7).clamp(-2.0, 2.0)  # inside the old grid range
    before = layer(x)
    layer.update_grid(x)
    after = layer(x)
    assert ((after - before).norm() / before.norm()).item() < 1e-3
    assert layer.grid[:, 3].max() < -1.0 and layer.grid[:, -4].min() > 1.0  # adapted to the data range


def test_update_grid_refits_on_bounded_quantiles(monkeypatch: pytest.MonkeyPatch) -> None:
    import kmunet.kan.layers as layers

    def refit_after_update(points: int) -> tuple[torch.Tensor, torch.Tensor]:
        monkeypatch.setattr(layers, "REFIT_POINTS", points)
        torch.manual_seed(5)
        layer = KANConv(3, 2, 3, kernel_size=3, padding=1, grid_range=(-2.0, 2.0), dtype=F64)
        smooth_coefficients(layer, seed=1)
        x = (_input((2, 2, 12, 12, 12), seed=8) * 0.7).clamp(-2.0, 2.0)  # 3456 samples per channel
        layer.update_grid(x)
        return layer.grid.clone(), layer(x)

    grid_all, y_all = refit_after_update(10**9)  # every sample in the least squares
    grid_sub, y_sub = refit_after_update(256)  # 256 quantiles per channel
    torch.testing.assert_close(grid_sub, grid_all)  # the knots come from all samples either way
    assert ((y_sub - y_all).norm() / y_all.norm()).item() < 1e-3


def test_update_grid_is_robust_to_degenerate_inputs() -> None:
    layer = KANLinear(3, 2)
    x = torch.zeros(50, 3)
    x[:, 1] = 1.0  # constant channels: rank-deficient least squares
    x[:25, 2] = torch.linspace(0, 1, 25)
    layer.update_grid(x)
    assert torch.isfinite(layer.grid).all() and torch.isfinite(layer.spline_coef).all()
    assert torch.isfinite(layer(x)).all()
    with pytest.raises(ValueError, match="two finite"):
        layer.update_grid(torch.full((1, 3), float("nan")))


@pytest.mark.parametrize("new_size", [10, 7])
def test_extend_grid_keeps_functions(new_size: int) -> None:
    torch.manual_seed(6)
    layer = KANConv(2, 3, 4, kernel_size=3, padding=1, dtype=F64)
    smooth_coefficients(layer, seed=2)
    x = _input((2, 3, 9, 9), seed=9).clamp(-0.999, 0.999)
    before = layer(x)
    layer.extend_grid(new_size)
    assert layer.grid_size == new_size and layer.spline_coef.shape[-1] == new_size + 3
    assert grid_is_uniform(layer.grid)
    after = layer(x)
    assert ((after - before).norm() / before.norm()).item() < 1e-3


def test_extend_grid_nested_is_exact_for_random_functions() -> None:
    layer = KANLinear(4, 3, dtype=F64)
    x = torch.rand(64, 4, dtype=F64) * 2 - 1
    before = layer(x)
    layer.extend_grid(10)
    torch.testing.assert_close(layer(x), before, atol=1e-9, rtol=0)


def test_regularization_is_nonnegative_and_zero_only_for_zero_functions() -> None:
    layer = KANConv(2, 3, 4, kernel_size=3)
    layer(torch.randn(1, 3, 8, 8))
    reg = layer.regularization_loss(mu_1=1.0, mu_2=1.0)
    assert reg.item() > 0
    assert layer.regularization_loss(mu_1=1.0, mu_2=0.0).item() > 0 and layer.regularization_loss(0.0, 1.0).item() >= 0
    with torch.no_grad():
        layer.base_weight.zero_()
        layer.spline_coef.zero_()
    assert layer.regularization_loss().item() == 0.0
    with pytest.raises(RuntimeError, match="forward"):
        KANLinear(2, 2).regularization_loss()


def test_prune_disables_weak_edges() -> None:
    layer = KANLinear(4, 2, dtype=F64)
    with torch.no_grad():  # weak, not zero: the edges reading input 0 still change the output
        layer.base_weight[:, 0] *= 1e-4
        layer.spline_coef[:, 0] *= 1e-4
    x = torch.randn(32, 4, dtype=F64)
    moved = x.clone()
    moved[:, 0] += 0.5
    assert not torch.equal(layer(x), layer(moved))
    assert layer.prune(threshold=1e-2) == 2
    assert (layer.edge_mask[:, 0] == 0).all() and (layer.edge_mask[:, 1:] == 1).all()
    torch.testing.assert_close(layer(x), layer(moved), atol=0, rtol=0)  # input 0 no longer contributes
    torch.testing.assert_close(layer(x), torch.from_numpy(reference_linear(layer, x)), atol=1e-12, rtol=0)
    assert layer.prune(threshold=0.0) == 0  # nothing scores below zero


def test_regularization_matches_the_kan_paper_formula() -> None:
    """mu_1 sum_e mean_n |phi_e(x_n)| + mu_2 * entropy of the edges' shares (Liu et al. 2024, Eqs. 2.17-2.20),
    computed here with the numpy per-edge reference on the layer's recorded samples."""
    from tests.kan.reference import np_phi

    layer = KANConv(2, 3, 2, kernel_size=3, groups=1, dtype=F64)
    layer(_input((2, 3, 7, 7), seed=3))
    samples = layer._samples.numpy()  # (n, in): the inputs the regulariser is defined on
    w_b, w_s = layer.base_weight.detach().numpy(), layer.spline_scaler.detach().numpy()
    coef, grid = layer.spline_coef.detach().numpy(), layer.grid.numpy()
    l1 = np.zeros(w_b.shape)
    for e in np.ndindex(*w_b.shape):
        l1[e] = np.abs(np_phi(samples[:, e[1]], w_b[e], w_s[e], coef[e], grid[e[1]], 3)).mean()
    share = l1 / l1.sum()
    expected = 0.7 * l1.sum() + 0.3 * -(share * np.log(share)).sum()
    assert layer.regularization_loss(0.7, 0.3).item() == pytest.approx(expected, rel=1e-10)


def test_state_dict_round_trip_keeps_grid_and_mask(tmp_path) -> None:
    a = KANConv(2, 2, 3, kernel_size=3)
    a.update_grid(torch.randn(2, 2, 6, 6) * 2)
    a(torch.randn(1, 2, 6, 6))
    assert a.prune(threshold=0.5) > 0
    torch.save(a.state_dict(), tmp_path / "layer.pt")
    b = KANConv(2, 2, 3, kernel_size=3)
    b.load_state_dict(torch.load(tmp_path / "layer.pt", weights_only=True))
    assert torch.equal(b.edge_mask, a.edge_mask) and torch.equal(b.grid, a.grid)
    assert not grid_is_uniform(b.grid)  # the fresh layer's uniform grid was replaced in place
    x = torch.randn(1, 2, 6, 6)
    torch.testing.assert_close(a(x), b(x))
    assert "grid" in a.state_dict() and "edge_mask" in a.state_dict()


def test_uniform_flag_follows_every_grid_replacement() -> None:
    """The fast uniform path must never run on a non-uniform grid, even when a new grid tensor is
    allocated where the old one was freed (two grid changes with no forward pass between them)."""
    for seed in range(20):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(KANConv(2, 2, 3, 3, dtype=F64), torch.nn.InstanceNorm2d(3), KANConv(2, 3, 2, 3, dtype=F64))
        x = torch.randn(2, 2, 8, 8, dtype=F64)
        model(x)
        update_model_grids(model, 2 * x)
        extend_model_grids(model, 5)
        for layer in kan_layers(model):
            assert layer._is_uniform() == grid_is_uniform(layer.grid), seed
        last = model[2]
        h = model[1](model[0](x))
        np.testing.assert_allclose(last(h).detach().numpy(), reference_conv(last, h), atol=1e-10, rtol=0)
    lin = KANLinear(3, 2, dtype=F64)
    for _ in range(5):
        lin.update_grid(torch.randn(50, 3, dtype=F64) * 2)
        assert lin._is_uniform() == grid_is_uniform(lin.grid)


def test_nearly_uniform_grid_takes_the_exact_path() -> None:
    layer = KANConv(2, 3, 2, kernel_size=3, grid_eps=1 - 1e-6, dtype=F64)  # 1e-6 of quantile knots mixed in
    layer.update_grid(_input((2, 3, 9, 9), seed=4) * 2)
    assert not grid_is_uniform(layer.grid)
    x = _input((1, 3, 7, 7), seed=5) * 2
    np.testing.assert_allclose(layer(x).detach().numpy(), reference_conv(layer, x), atol=1e-12, rtol=0)
    # uniform grids, also far from zero and in float32, still count as uniform (fast path)
    from kmunet.kan import make_grid

    for dtype in (torch.float32, F64):
        assert grid_is_uniform(make_grid((-1.0, 1.0), 5, 3, 4, dtype=dtype))
    assert grid_is_uniform(make_grid((100.0, 101.0), 8, 3, 4, dtype=F64))
    far = make_grid((100.0, 100.04), 10, 3, 1, dtype=F64)  # knots near 100, spacing 0.004
    far[0, 5] += 2e-4  # a 5 % deviation is not rounding, however large the knots are
    assert not grid_is_uniform(far)
    near = make_grid((-1.0, 1.0), 5, 3, 1)
    near[0, 4] += 5e-6  # within float32's 64 units of rounding, but above 1e-5 of the 0.4 spacing
    assert not grid_is_uniform(near)


def test_activation_samples_cover_huge_inputs() -> None:
    layer = KANConv(1, 1, 1, kernel_size=1)
    x = torch.zeros(2, 1, 2**23 + 7)  # 2^24 + 14 positions: float32 indices would round past the end
    x[-1, 0, -1] = 7.0
    layer._record_samples(x)
    assert layer._samples.shape == (64, 1) and layer._samples[-1, 0].item() == 7.0


def test_device_and_dtype_arguments() -> None:
    layer = KANConv(3, 2, 2, device="cpu", dtype=F64)
    assert all(p.dtype == F64 for p in layer.parameters()) and layer.grid.dtype == F64


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(spatial_dims=4), "spatial_dims"),
        (dict(groups=3), "divisible"),
        (dict(stride=2, padding="same"), "same"),
        (dict(padding="full"), "padding"),
        (dict(grid_range=(1.0, -1.0)), "grid_range"),
        (dict(grid_eps=2.0), "grid_eps"),
        (dict(kernel_size=0), "kernel_size"),
        (dict(grid_size=0), "grid_size"),
        (dict(in_channels=0), "in_channels"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    args = dict(spatial_dims=2, in_channels=4, out_channels=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        KANConv(**args)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="expects"):
        KANConv(2, 3, 2)(torch.zeros(1, 2, 5, 5))
    with pytest.raises(ValueError, match="expects"):
        KANLinear(3, 2)(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="1-D"):
        KANLinear(3, 2).edge_functions(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="new_grid_size"):
        KANLinear(3, 2).extend_grid(0)


def test_plot_edge_functions_writes_png(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.axes

    layer = KANConv(2, 3, 2, kernel_size=3)
    path = plot_edge_functions(layer, tmp_path / "filters.png")
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp*"))
    with pytest.raises(TypeError):
        plot_edge_functions(torch.nn.Linear(2, 2), tmp_path / "x.png")
    grouped = KANConv(2, 4, 4, kernel_size=3, groups=2)
    grouped.update_grid(torch.randn(2, 4, 6, 6) * torch.tensor([1.0, 2.0, 5.0, 10.0]).view(1, 4, 1, 1))
    seen: list[tuple] = []
    real_plot = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot",
                        lambda ax, xs, *a, **k: seen.append((ax.get_title(), float(xs.min()), float(xs.max()))) or real_plot(ax, xs, *a, **k))
    plot_edge_functions(grouped, tmp_path / "grouped.png")
    k, g = grouped.spline_order, grouped.grid_size
    for title, lo, hi in seen:  # each panel spans the grid range of the input channel its title names
        ch = int(title.split()[1])
        assert lo < grouped.grid[ch, k].item() and hi > grouped.grid[ch, k + g].item()
        assert hi - lo < 2 * (grouped.grid[ch, k + g] - grouped.grid[ch, k]).item()
    assert {title for title, _, _ in seen} == {"in 0", "in 1", "in 2", "in 3"}  # out 2, 3 read inputs 2, 3


@pytest.mark.parametrize("fused", ["1", "0"])
def test_huge_inputs_stay_finite(fused: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KMUNET_FUSED_KAN", fused)
    conv = KANConv(2, 2, 3, kernel_size=3, padding=1)
    for value in (1e26, 1e30, -1e30):
        x = torch.full((1, 2, 4, 4), value, requires_grad=True)
        y = conv(x)
        y.sum().backward()
        assert torch.isfinite(y).all() and torch.isfinite(x.grad).all(), value
    # far outside the grid only the SiLU base path is left
    far = torch.full((1, 2, 4, 4), 1e6)
    base_only = KANConv(2, 2, 3, kernel_size=3, padding=1)
    base_only.load_state_dict(conv.state_dict())
    with torch.no_grad():
        base_only.spline_coef.zero_()
        torch.testing.assert_close(conv(far), base_only(far))


def test_float16_general_path_has_no_nan() -> None:
    from kmunet.kan import kan_features

    conv = KANConv(2, 2, 2, dtype=torch.float16)
    feats = kan_features(torch.full((1, 2, 4, 4), 3e4, dtype=torch.float16), conv.grid, 3, uniform=False)
    assert torch.isfinite(feats).all()


def test_empty_batch_gives_empty_output() -> None:
    x = torch.randn(0, 4, 5, 5, requires_grad=True)
    y = KANConv(2, 4, 6, kernel_size=3, padding=0)(x)
    assert y.shape == torch.nn.Conv2d(4, 6, 3)(x).shape == (0, 6, 3, 3)
    y.sum().backward()
    assert KANLinear(4, 3)(torch.randn(0, 4)).shape == (0, 3)


def test_more_bad_arguments_are_named() -> None:
    import numpy as np

    assert KANConv(2, 4, 4, np.int64(3), grid_size=np.int64(5))(torch.randn(1, 4, 6, 6)).shape == (1, 4, 6, 6)
    with pytest.raises(ValueError, match="kernel_size .* got 3.0"):
        KANConv(2, 4, 4, kernel_size=3.0)
    with pytest.raises(ValueError, match="grid_range must be finite"):
        KANConv(2, 4, 4, grid_range=(-float("inf"), 1.0))
    with pytest.raises(ValueError, match=r"KANLinear expects \(\.\.\., 4\)"):
        KANLinear(4, 3)(torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"KANConv\(2D\) expects"):
        KANConv(2, 4, 4).update_grid(torch.randn(2, 4, 5))  # wrong rank, right channel count
    with pytest.raises(ValueError, match="writes PNG files"):
        plot_edge_functions(KANLinear(2, 2), "filters.jpg")
    for kwargs, match in [
        (dict(scale_spline=float("nan")), "scale_spline must be a finite number"),
        (dict(scale_base=float("inf")), "scale_base must be a finite number"),
        (dict(scale_noise=float("nan")), "scale_noise must be a finite number >= 0"),
        (dict(grid_eps="0.1"), "grid_eps must be a finite number in"),
        (dict(grid_range=5), "grid_range must be finite"),
        (dict(grid_range=("a", 1)), "grid_range must be finite"),
        (dict(spatial_dims=True), "spatial_dims must be one of"),
    ]:
        with pytest.raises(ValueError, match=match):
            KANConv(**{"spatial_dims": 2, "in_channels": 2, "out_channels": 2, **kwargs})
    with pytest.raises(TypeError, match="dtype must be a floating-point"):
        KANLinear(2, 2, dtype=torch.int64)
    layer = KANLinear(2, 2)
    layer(torch.randn(4, 2))
    for call, match in [
        (lambda: layer.update_grid(torch.randn(8, 2), margin=-1), "margin must be a finite number >= 0"),
        (lambda: layer.extend_grid(8, points_per_interval=0), "points_per_interval must be an integer >= 2"),
        (lambda: layer.prune(threshold="0.1"), "threshold must be a finite number >= 0"),
    ]:
        with pytest.raises(ValueError, match=match):
            call()


def test_extend_grid_keeps_functions_on_the_grid_range_only() -> None:
    torch.manual_seed(0)
    conv = KANConv(2, 4, 4, 3, dtype=F64)
    with torch.no_grad():
        conv.spline_coef.normal_()
    inside = torch.rand(2, 4, 8, 8, dtype=F64) * 2 - 1  # the grid range (-1, 1)
    band = torch.full((1, 4, 3, 3), -1.6, dtype=F64)  # on the old extension band only
    before_inside, before_band = conv(inside), conv(band)
    conv.extend_grid(10)
    torch.testing.assert_close(conv(inside), before_inside, atol=1e-9, rtol=0)  # as documented
    assert (conv(band) - before_band).abs().max() > 1e-3  # the band is documented to change
