"""kmunet.inr models: shapes, dtypes, gradients, seeding, validation, fitting and chunked evaluation."""

from __future__ import annotations

import math

import pytest
import torch

from kmunet.inr import INR_MODELS, build_inr, evaluate
from kmunet.inr.fit import fit_coordinates

SMALL = {"hidden_features": 32, "hidden_layers": 1}


@pytest.mark.parametrize("name", INR_MODELS)
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("complex_output", [False, True])
def test_shapes_dtypes_gradients(name: str, dim: int, complex_output: bool) -> None:
    model = build_inr(name, dim, 3, complex_output=complex_output, seed=0, **SMALL)
    coords = torch.rand(4, 5, dim) * 2 - 1
    out = model(coords)
    assert out.shape == (4, 5, 3)
    assert out.is_complex() == complex_output
    if complex_output:
        assert out.dtype == torch.complex64
    else:
        assert out.dtype == torch.float32
    assert torch.isfinite(torch.view_as_real(out) if out.is_complex() else out).all()
    loss = out.abs().square().mean()
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: {pname} has no gradient"
        assert torch.isfinite(torch.view_as_real(p.grad) if p.grad.is_complex() else p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{name}: {pname} has a zero gradient"


@pytest.mark.parametrize("name", INR_MODELS)
def test_seeded_init_is_reproducible_and_leaves_global_rng_alone(name: str) -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = build_inr(name, 2, 1, seed=7, **SMALL)
    b = build_inr(name, 2, 1, seed=7, **SMALL)
    c = build_inr(name, 2, 1, seed=8, **SMALL)
    assert torch.equal(torch.get_rng_state(), state), "model construction consumed the global RNG"
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point() or sa[k].is_complex())


@pytest.mark.parametrize("name", INR_MODELS)
def test_float64(name: str) -> None:
    model = build_inr(name, 3, 1, seed=0, dtype=torch.float64, complex_output=True, **SMALL)
    out = model(torch.zeros(2, 3, dtype=torch.float64))
    assert out.dtype == torch.complex128
    assert evaluate(model, torch.zeros(4, 3)).dtype == torch.complex128  # float32 coords are cast


def test_fourier_features_are_a_buffer() -> None:
    model = build_inr("fourier", 2, 1, seed=0, sigma=2.0, num_frequencies=16, **SMALL)
    assert "B" in dict(model.named_buffers()) and "B" not in dict(model.named_parameters())
    assert model.B.shape == (16, 2)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (("nope", 2, 1), {}, "valid"),
        (("siren", 0, 1), {}, "in_features"),
        (("siren", 2, -1), {}, "out_features"),
        (("siren", 2, 1), {"hidden_features": 0}, "hidden_features"),
        (("fourier", 2, 1), {"hidden_layers": -1}, "hidden_layers"),
        (("siren", 2, 1), {"omega_0": -3.0}, "omega_0"),
        (("fourier", 2, 1), {"sigma": 0.0}, "sigma"),
        (("wire", 2, 1), {"scale_0": float("nan")}, "scale_0"),
        (("kan", 2, 1), {"grid_size": 0}, "grid_size"),
        (("siren", 2, 1), {"not_an_option": 1}, "not_an_option"),
        (("siren", 2, 1), {"dtype": torch.float16}, "dtype"),
        (("siren", 2, 1), {"seed": "x"}, "seed"),
    ],
)
def test_bad_arguments(args, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        build_inr(*args, **kwargs)


def test_wrong_coordinate_dimension() -> None:
    model = build_inr("siren", 3, 1, seed=0, **SMALL)
    with pytest.raises(ValueError, match="coordinates"):
        model(torch.zeros(4, 2))


@pytest.mark.parametrize("name", INR_MODELS)
def test_evaluate_chunks_match_direct(name: str) -> None:
    model = build_inr(name, 3, 2, seed=0, **SMALL)
    coords = torch.rand(3, 37, 3) * 2 - 1
    with torch.no_grad():
        direct = model(coords)
    chunked = evaluate(model, coords, chunk_size=10)
    assert chunked.shape == direct.shape and not chunked.requires_grad
    torch.testing.assert_close(chunked, direct, atol=1e-5, rtol=1e-5)
    assert evaluate(model, torch.zeros(0, 3)).shape == (0, 2)


def _phantom(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.linspace(-1, 1, n)
    yy, xx = torch.meshgrid(g, g, indexing="ij")
    img = 0.5 + 0.3 * torch.sin(3 * xx) * torch.cos(2 * yy) + 0.2 * ((xx**2 + yy**2) < 0.3).float()
    return torch.stack([xx, yy], -1).reshape(-1, 2), img.reshape(-1, 1)


@pytest.mark.parametrize(
    "name, kwargs, lr, iterations, threshold",
    [
        ("siren", {"hidden_features": 64, "hidden_layers": 2}, 1e-3, 200, 40.0),
        ("fourier", {"hidden_features": 64, "hidden_layers": 2}, 1e-3, 200, 40.0),
        ("wire", {"hidden_features": 64, "hidden_layers": 2}, 1e-2, 250, 27.0),
        ("kan", {"hidden_features": 32, "hidden_layers": 1}, 1e-2, 200, 30.0),
    ],
)
def test_fits_a_small_image(name, kwargs, lr, iterations, threshold) -> None:
    coords, values = _phantom()
    model = build_inr(name, 2, 1, seed=0, **kwargs)
    result = fit_coordinates(model, coords, values, iterations=iterations, lr=lr, batch_size=None)
    assert len(result.losses) == iterations and result.losses[-1] < result.losses[0]
    mse = float(((evaluate(model, coords) - values) ** 2).mean())
    psnr = 10 * math.log10(1.0 / mse)
    assert psnr > threshold, f"{name}: PSNR {psnr:.1f} dB"


def test_fit_complex_model_to_complex_values() -> None:
    coords, values = _phantom(16)
    target = torch.complex(values, 1 - values)
    model = build_inr("siren", 2, 1, complex_output=True, seed=0, hidden_features=32, hidden_layers=1)
    result = fit_coordinates(model, coords, target, iterations=150, lr=2e-3, batch_size=128, seed=1)
    assert result.losses[-1] < 0.2 * result.losses[0]


def test_fit_rejects_bad_shapes() -> None:
    model = build_inr("siren", 2, 1, seed=0, **SMALL)
    with pytest.raises(ValueError, match="values"):
        fit_coordinates(model, torch.zeros(5, 2), torch.zeros(4, 1), iterations=1)
    with pytest.raises(ValueError, match="iterations"):
        fit_coordinates(model, torch.zeros(5, 2), torch.zeros(5, 1), iterations=-1)


def test_kan_options() -> None:
    for kwargs in ({"fourier_first": False}, {"layer_norm": True}):
        model = build_inr("kan", 3, 1, seed=0, **SMALL, **kwargs)
        model(torch.rand(6, 3) * 2 - 1).sum().backward()
        assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="layer_norm"):
        build_inr("kan", 3, 1, layer_norm="yes")


@pytest.mark.parametrize("name", ["siren", "fourier", "wire", "kan"])
def test_coordinates_of_another_float_dtype_are_cast(name: str) -> None:
    model = build_inr(name, 2, 1, hidden_features=8, hidden_layers=1, seed=0)  # float32 weights
    coords = torch.rand(5, 2, dtype=torch.float64) * 2 - 1
    torch.testing.assert_close(model(coords), model(coords.float()))
    wide = build_inr(name, 2, 1, hidden_features=8, hidden_layers=1, seed=0, dtype=torch.float64)
    assert wide(coords.float()).dtype == torch.float64


def test_complex_coordinates_are_refused() -> None:
    model = build_inr("siren", 2, 1, hidden_features=8, hidden_layers=1, seed=0)
    with pytest.raises(TypeError, match="real coordinates"):
        model(torch.zeros(3, 2, dtype=torch.complex64))
