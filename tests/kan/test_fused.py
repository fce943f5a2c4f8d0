"""The fused Numba feature kernels against the pure-PyTorch closed form and the Cox-de Boor reference."""

from __future__ import annotations

import pytest
import torch

from kmunet.kan import KANConv
from kmunet.kan.basis import kan_features, make_grid
from kmunet.kan.fused import FUSED_ENV, fused_available

pytestmark = pytest.mark.skipif(not fused_available(), reason="numba not installed")


def _inputs(dtype: torch.dtype, shape=(2, 3, 5, 6, 4)) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen, dtype=dtype) * 1.5  # many values in the extension and beyond
    x.view(-1)[:4] = torch.tensor([-1.0, 1.0, -2.2, 2.2], dtype=dtype)  # knots and the extended-grid ends
    return x


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_equals_torch_path_forward_and_backward(dtype: torch.dtype, tol: float, channels_last: bool) -> None:
    grid = make_grid((-1.0, 1.0), 5, 3, 3, dtype=dtype)
    x = _inputs(dtype)
    xf, xt = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    yf = kan_features(xf, grid, 3, uniform=True, channels_last=channels_last, fused=True)
    yt = kan_features(xt, grid, 3, uniform=True, channels_last=channels_last, fused=False)
    assert yf.shape == yt.shape == (2, 3, 9, 5, 6, 4)
    assert yf.stride() == yt.stride()  # same memory layout, so the convolution sees the same tensor
    torch.testing.assert_close(yf, yt, atol=tol, rtol=0)
    reference = kan_features(x, grid, 3, uniform=False)  # Cox-de Boor recursion
    torch.testing.assert_close(yf, reference, atol=max(tol, 1e-6), rtol=0)
    g = torch.randn(yt.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    (yf * g).sum().backward()
    (yt * g).sum().backward()
    torch.testing.assert_close(xf.grad, xt.grad, atol=50 * tol, rtol=0)


def test_fused_gradcheck_float64() -> None:
    grid = make_grid((-1.0, 1.0), 4, 3, 2, dtype=torch.float64)
    x = (torch.rand(2, 2, 7, dtype=torch.float64) * 4 - 2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: kan_features(t, grid, 3, uniform=True, fused=True), (x,))


def test_fused_layer_matches_torch_layer() -> None:
    conv = KANConv(3, 4, 5, kernel_size=3, stride=2, padding=1, grid_size=4, dtype=torch.float64)
    x = _inputs(torch.float64, (1, 4, 7, 6, 5))
    y_fused = conv(x)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(FUSED_ENV, "0")
        assert not fused_available(x)
        y_torch = conv(x)
    torch.testing.assert_close(y_fused, y_torch, atol=1e-12, rtol=0)


def test_fused_rejects_what_it_cannot_do() -> None:
    grid = make_grid((-1.0, 1.0), 5, 2, 3)
    with pytest.raises(RuntimeError, match="spline_order 3"):
        kan_features(torch.zeros(1, 3, 4), grid, 2, uniform=True, fused=True)
    with pytest.raises(RuntimeError, match="bfloat16"):
        kan_features(torch.zeros(1, 3, 4, dtype=torch.bfloat16), make_grid((-1.0, 1.0), 5, 3, 3), 3, uniform=True, fused=True)
    with pytest.raises(RuntimeError, match="uniform"):
        kan_features(torch.zeros(1, 3, 4), make_grid((-1.0, 1.0), 5, 3, 3), 3, uniform=False, fused=True)
    # bfloat16 (CPU autocast) falls back to the PyTorch path by default.
    y = kan_features(torch.zeros(1, 3, 4, dtype=torch.bfloat16), make_grid((-1.0, 1.0), 5, 3, 3, dtype=torch.bfloat16), 3)
    assert y.dtype == torch.bfloat16 and y.shape == (1, 3, 9, 4)


def test_fused_kernels_keep_torch_thread_count() -> None:
    """Numba's OpenMP pool start-up must not change PyTorch's intra-op thread count."""
    before = torch.get_num_threads()
    conv = KANConv(2, 2, 2, kernel_size=3, padding=1)
    conv(torch.randn(1, 2, 6, 6, requires_grad=True)).sum().backward()
    assert torch.get_num_threads() == before
