"""Coil tools, SENSE operators and metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kmunet.mri import estimate_sensitivities, nmse, psnr, rss, sense_adjoint, sense_forward, ssim
from kmunet.mri.coils import calibration_size
from kmunet.mri.fft import fftnc


def test_sense_dot_product_complex128() -> None:
    g = torch.Generator().manual_seed(0)
    c, h, w = 4, 12, 10
    sens = torch.randn(c, h, w, dtype=torch.complex128, generator=g)
    mask = torch.rand(h, w, generator=g) > 0.5
    x = torch.randn(h, w, dtype=torch.complex128, generator=g)
    y = torch.randn(c, h, w, dtype=torch.complex128, generator=g)
    lhs = torch.vdot(sense_forward(x, sens, mask).flatten(), y.flatten())
    rhs = torch.vdot(x.flatten(), sense_adjoint(y, sens, mask).flatten())
    assert abs(lhs - rhs) < 1e-10 * abs(lhs)
    assert sense_forward(x, sens, mask).shape == (c, h, w)
    assert (sense_forward(x, sens, mask)[:, ~mask] == 0).all()


def test_sense_shape_errors() -> None:
    with pytest.raises(ValueError, match="do not match"):
        sense_forward(torch.zeros(4, 4, dtype=torch.complex64), torch.ones(2, 5, 5, dtype=torch.complex64))


def test_rss() -> None:
    x = np.array([[[3.0]], [[4j]]])
    assert np.allclose(rss(x), 5.0)
    assert torch.allclose(rss(torch.from_numpy(x)), torch.tensor([[5.0]], dtype=torch.float64))


def _coil_data(method: str) -> tuple[np.ndarray, np.ndarray]:
    h = w = 48
    yy, xx = np.mgrid[:h, :w] / h
    img = ((xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.15).astype(float)
    true = np.stack([np.exp(-((xx - 0.2) ** 2 + (yy - 0.3) ** 2)), np.exp(-((xx - 0.8) ** 2 + (yy - 0.7) ** 2)) * 1j])
    true /= rss(true)
    return fftnc(true * img), img


@pytest.mark.parametrize("method", ["lowres", "espirit"])
def test_sensitivities_combine_to_image(method: str) -> None:
    k, img = _coil_data(method)
    sens = estimate_sensitivities(k, method=method)
    assert sens.shape == k.shape and sens.dtype == np.complex64
    combined = sense_adjoint(torch.from_numpy(k.astype(np.complex64)), sens).abs().numpy()
    inside = img > 0
    np.testing.assert_allclose(combined[inside], img[inside], atol=0.1)
    assert np.allclose(estimate_sensitivities(k[:1]), 1)
    with pytest.raises(ValueError, match="unknown sensitivity method"):
        estimate_sensitivities(k, method="magic")


def test_calibration_size() -> None:
    m = np.zeros((40, 30), bool)
    m[16:24] = True
    assert calibration_size(m) == (8, 24)


def test_metrics_against_skimage_and_formula() -> None:
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    ref = rng.random((40, 50))
    img = np.abs(ref + 0.05 * rng.standard_normal(ref.shape))
    expected = skm.structural_similarity(ref, img, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=ref.max())
    assert abs(ssim(ref, img) - expected) < 1e-6
    assert abs(psnr(ref, img) - skm.peak_signal_noise_ratio(ref, img, data_range=ref.max())) < 1e-6
    assert np.isclose(nmse(ref, img), np.sum((ref - img) ** 2) / np.sum(ref**2))
    mask = np.zeros_like(ref, bool)
    mask[5:20, 5:30] = True
    assert np.isclose(nmse(ref, img, mask), np.sum((ref - img)[mask] ** 2) / np.sum(ref[mask] ** 2))
    assert np.isclose(psnr(ref, img, mask), 10 * np.log10(ref[mask].max() ** 2 / np.mean((ref - img)[mask] ** 2)))
    assert -1 <= ssim(ref, img, mask) <= 1
    assert psnr(ref, ref) == float("inf") and ssim(ref, ref) == pytest.approx(1.0)
    assert psnr(ref, img * np.exp(1j)) == pytest.approx(psnr(ref, img))  # magnitudes


def test_metrics_bad_args() -> None:
    with pytest.raises(ValueError, match="differs"):
        psnr(np.ones((4, 4)), np.ones((4, 5)))
    with pytest.raises(ValueError, match="no pixels"):
        ssim(np.ones((16, 16)), np.ones((16, 16)), mask=np.zeros((16, 16), bool))


def test_sense_operators_check_masks_and_take_numpy() -> None:
    from kmunet.mri.coils import sense_adjoint, sense_forward

    rng = np.random.default_rng(0)
    sens = (rng.standard_normal((2, 8, 8)) + 1j * rng.standard_normal((2, 8, 8))).astype(np.complex64)
    with pytest.raises(ValueError, match=r"mask shape \[8, 9\] does not match the image grid \[8, 8\]"):
        sense_forward(torch.ones(8, 8, dtype=torch.complex64), sens, np.ones((8, 9), bool))
    k = (rng.standard_normal((2, 8, 8)) + 1j * rng.standard_normal((2, 8, 8))).astype(np.complex64)
    np.testing.assert_allclose(sense_adjoint(k, sens).numpy(), sense_adjoint(torch.from_numpy(k), sens).numpy())
    with pytest.raises(ValueError, match="mask shape"):
        sense_adjoint(k, sens, np.ones((9, 8), bool))


def test_all_zero_kspace_is_named() -> None:
    from kmunet.mri.recon import reconstruct

    mask = np.zeros((16, 16), bool)
    mask[6:10] = True
    with pytest.raises(ValueError, match="k-space is all zero"):
        reconstruct(np.zeros((2, 16, 16), np.complex64), mask, method="zero-filled")
    with pytest.raises(ValueError, match="all zero: nothing for an INR to fit"):
        reconstruct(np.zeros((16, 16), np.complex64), mask, method="inr", iterations=2, device="cpu")
