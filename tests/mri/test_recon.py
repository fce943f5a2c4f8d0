"""Reconstruction methods on a tiny phantom."""

from __future__ import annotations

import numpy as np
import pytest

from kmunet.mri import make_mask
from kmunet.mri.cs import tune_lambda
from kmunet.mri.io import kspace_from_image
from kmunet.mri.metrics import psnr
from kmunet.mri.recon import data_consistency, inr_reconstruct, reconstruct, tune_inr


def phantom(n: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n] / n - 0.5
    img = 0.3 * ((xx**2 + yy**2) < 0.16)
    img += 0.5 * ((np.abs(xx - 0.05) < 0.1) & (np.abs(yy + 0.1) < 0.05))
    img += 0.4 * (((xx + 0.15) ** 2 + (yy - 0.15) ** 2) < 0.01)
    return img


@pytest.fixture(scope="module")
def case() -> tuple:
    data = kspace_from_image(phantom())
    mask = make_mask("random", data.shape, 4, 0.16, seed=0)
    zf = reconstruct(data, mask, method="zero-filled")
    return data, mask, psnr(data.reference, zf.image)


def test_inr_beats_zero_filled(case: tuple) -> None:
    data, mask, zf_psnr = case
    res = reconstruct(data, mask, method="inr", inr="siren", iterations=300, device="cpu", seed=0, tv_weight=0.1,
                      hidden_features=64, hidden_layers=2)
    assert res.image.shape == (32, 32) and res.image.dtype == np.complex64
    assert psnr(data.reference, res.image) > zf_psnr + 1.0
    assert res.info["data_consistency"] == "replace" and res.seconds > 0
    # measured samples are kept exactly
    from kmunet.mri.fft import fftnc

    np.testing.assert_allclose(fftnc(res.image)[mask], data.kspace[0][mask], atol=1e-4)


def test_inr_multicoil_runs() -> None:
    img = phantom(24)
    yy, xx = np.mgrid[:24, :24] / 24
    maps = np.stack([np.exp(-((xx - 0.2) ** 2)), 1j * np.exp(-((yy - 0.8) ** 2))]).astype(np.complex64)
    maps /= np.sqrt(np.sum(np.abs(maps) ** 2, 0))
    from kmunet.mri.fft import fftnc

    k = fftnc(maps * img)
    mask = make_mask("random", (24, 24), 2, 0.25, seed=1)
    res = reconstruct(k, mask, method="inr", inr="fourier", iterations=20, sens=maps, device="cpu",
                      hidden_features=32, hidden_layers=1)
    assert res.info["data_consistency"].startswith("cg")
    assert np.isfinite(res.image).all()


def _two_coil_case(n: int = 24) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(image, kspace, mask, maps)`` of the phantom seen by two smooth, normalised coils."""
    from kmunet.mri.fft import fftnc

    img = phantom(n)
    yy, xx = np.mgrid[:n, :n] / n
    maps = np.stack([np.exp(-((xx - 0.2) ** 2)), 1j * np.exp(-((yy - 0.8) ** 2))]).astype(np.complex64)
    maps /= np.sqrt(np.sum(np.abs(maps) ** 2, 0))
    return img, fftnc(maps * img), make_mask("random", (n, n), 2, 0.25, seed=1), maps


def test_data_consistency_multicoil_against_direct_solve() -> None:
    """The CG step equals the direct solution of (A^H A + mu I) x = A^H y + mu x0 (float64 numpy)."""
    from kmunet.mri.fft import fftnc

    img, k, mask, maps = _two_coil_case(12)
    rng = np.random.default_rng(0)
    x0 = (img + 0.1 * rng.standard_normal(img.shape) + 0.1j * rng.standard_normal(img.shape)).astype(np.complex64)
    n = img.size
    basis = np.eye(n).reshape(n, *img.shape)
    # Columns of A (C*H*W x H*W): the masked coil k-spaces of every unit image.
    a = np.stack([(fftnc(maps * b) * mask).ravel() for b in basis], axis=1)
    mu = 0.3
    lhs = a.conj().T @ a + mu * np.eye(n)
    rhs = a.conj().T @ (k * mask).ravel() + mu * x0.ravel()
    direct = np.linalg.solve(lhs, rhs).reshape(img.shape)
    out, dc = data_consistency(x0, k, mask, maps, mu=mu, iterations=60)
    assert dc == "cg60(mu=0.3)" and out.dtype == np.complex64
    np.testing.assert_allclose(out, direct, atol=1e-4)
    # A weaker estimate weight (smaller mu) moves the image closer to the samples.
    res = [np.linalg.norm((fftnc(maps * data_consistency(x0, k, mask, maps, mu=m)[0]) - k) * mask) for m in (1.0, 0.05)]
    assert res[1] < res[0]


def test_data_consistency_single_coil_keeps_the_samples(case: tuple) -> None:
    from kmunet.mri.fft import fftnc

    data, mask, _ = case
    x0 = np.zeros(data.shape, np.complex64)
    out, dc = data_consistency(x0, data.kspace, mask, np.ones_like(data.kspace))
    assert dc == "replace"
    np.testing.assert_allclose(fftnc(out)[mask], data.kspace[0][mask], atol=1e-5)
    np.testing.assert_allclose(fftnc(out)[~mask], 0, atol=1e-5)


def test_final_dc_off_then_data_consistency_is_the_default_fit() -> None:
    _, k, mask, maps = _two_coil_case()
    opts = dict(inr="siren", iterations=15, hidden_features=16, hidden_layers=1, seed=3)
    full, info = inr_reconstruct(k, mask, maps, dc_mu=0.2, **opts)
    raw, raw_info = inr_reconstruct(k, mask, maps, final_dc=False, **opts)
    assert info["data_consistency"] == "cg10(mu=0.2)" and raw_info["data_consistency"] == "none"
    again, _ = data_consistency(raw, k, mask, maps, mu=0.2)
    np.testing.assert_allclose(again, full, rtol=1e-4, atol=1e-4 * np.abs(full).max())
    assert not np.allclose(raw, full)


def test_data_consistency_bad_args() -> None:
    img, k, mask, maps = _two_coil_case(8)
    for bad in (0.0, float("inf"), float("nan"), "0.5", True):
        with pytest.raises(ValueError, match=f"data-consistency mu must be a positive finite number, got {bad!r}"):
            data_consistency(img, k, mask, maps, mu=bad)
    with pytest.raises(ValueError, match="iterations must be a positive integer, got 0"):
        data_consistency(img, k, mask, maps, iterations=0)
    with pytest.raises(ValueError, match=r"got image \[4, 4\]"):
        data_consistency(img[:4, :4], k, mask, maps)
    with pytest.raises(ValueError, match="dc_mu must be a positive finite number, got -1.0"):
        inr_reconstruct(k, mask, maps, dc_mu=-1.0)


@pytest.mark.parametrize("method", ["cs-tv", "cs-l1"])
def test_cs_baselines(case: tuple, method: str) -> None:
    data, mask, zf_psnr = case
    res = reconstruct(data, mask, method=method, lam=1e-3, iterations=30)
    assert res.image.shape == (32, 32) and np.isfinite(res.image).all()
    assert psnr(data.reference, res.image) > zf_psnr - 1.0
    lam, img, scores = tune_lambda(data.kspace, mask, data.reference, method=method, grid=(1e-3, 1e-2), iterations=20)
    assert lam in (1e-3, 1e-2) and scores[lam] == max(scores.values())


def test_reconstruct_bad_args(case: tuple) -> None:
    data, mask, _ = case
    with pytest.raises(ValueError, match="unknown method 'magic'"):
        reconstruct(data, mask, method="magic")
    with pytest.raises(ValueError, match="unknown INR 'mlp'"):
        reconstruct(data, mask, method="inr", inr="mlp")
    with pytest.raises(ValueError, match="mask shape"):
        reconstruct(data, np.ones((4, 4), bool), method="zero-filled")
    with pytest.raises(ValueError, match="lam must be > 0"):
        reconstruct(data, mask, method="cs-tv", lam=-1.0)


def test_tune_lambda_fit_scale(case: tuple) -> None:
    from kmunet.mri.cs import fit_intensity

    data, mask, _ = case
    grid = (1e-3, 1e-1)
    lam, _, scores = tune_lambda(data.kspace, mask, data.reference, method="cs-tv", grid=grid, iterations=20,
                                 fit_scale=True)
    lam5, _, scores5 = tune_lambda(data.kspace, mask, 5 * data.reference, method="cs-tv", grid=grid, iterations=20,
                                   fit_scale=True)
    assert lam5 == lam and all(abs(scores5[k] - scores[k]) < 0.05 for k in grid)  # intensity-scale invariant (sigpy power-iteration noise)
    assert min(scores.values()) > 15
    np.testing.assert_allclose(fit_intensity(4 * data.reference, 2 * data.reference), 4 * data.reference, rtol=1e-5)


def test_tune_inr_keeps_the_best_fit(case: tuple) -> None:
    data, mask, _ = case
    sens = np.ones_like(data.kspace)
    kwargs = {"iterations": 30, "hidden_features": 32, "hidden_layers": 1, "seed": 0}
    best, image, scores = tune_inr(data.kspace, mask, data.reference, sens, "siren", tv_grid=(1e-3, 0.1),
                                   omega_grid=(15.0, 30.0), **kwargs)
    assert list(scores) == [(1e-3, 15.0), (1e-3, 30.0), (0.1, 15.0), (0.1, 30.0)]
    assert scores[best] == max(scores.values())
    tv, omega = best
    again, _ = inr_reconstruct(data.kspace, mask, sens, "siren", tv_weight=tv, model_kwargs={"omega_0": omega}, **kwargs)
    np.testing.assert_allclose(image, again, atol=1e-5)  # seeded: reproducible
    assert psnr(data.reference, image) == pytest.approx(scores[best])
    assert len(set(scores.values())) == 4  # omega_0 reaches the network

    kan_best, _, kan_scores = tune_inr(data.kspace, mask, data.reference, sens, "kan", tv_grid=(0.1,), omega_grid=None,
                                       **{**kwargs, "iterations": 5})
    assert kan_best == (0.1, None) and list(kan_scores) == [(0.1, None)]
    with pytest.raises(ValueError, match="empty grid"):
        tune_inr(data.kspace, mask, data.reference, sens, tv_grid=(), **kwargs)
    with pytest.raises(ValueError, match="tv_weight"):
        tune_inr(data.kspace, mask, data.reference, sens, tv_weight=0.1, **kwargs)
    with pytest.raises(ValueError, match="SIREN only.*'wire'"):
        tune_inr(data.kspace, mask, data.reference, sens, "wire", **kwargs)


def test_best_on_grid_picks_the_highest_score_first_on_ties() -> None:
    from kmunet.mri.metrics import best_on_grid

    value, image, scores = best_on_grid((3.0, 1.0, 2.0, 1.0), lambda v: np.full(2, v), lambda img: -abs(img[0] - 1.5))
    assert value == 1.0 and scores == {3.0: -1.5, 1.0: -0.5, 2.0: -0.5}
    np.testing.assert_array_equal(image, [1.0, 1.0])
    with pytest.raises(ValueError, match="lambda grid is empty"):
        best_on_grid((), lambda v: np.zeros(1), float, name="lambda")


def test_log_total_variation_against_numpy_and_its_tv_limit() -> None:
    import torch

    from kmunet.mri.recon import image_prior, log_total_variation, total_variation

    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 9)) + 1j * rng.normal(size=(7, 9))
    eps = 0.3
    dh, dw = np.abs(np.diff(x, axis=0)), np.abs(np.diff(x, axis=1))
    want = np.mean(eps * np.log1p(dh / eps)) + np.mean(eps * np.log1p(dw / eps))
    xt = torch.from_numpy(x)  # complex128
    np.testing.assert_allclose(float(log_total_variation(xt, eps)), want, rtol=1e-12)
    assert float(image_prior(xt, "log-tv", eps)) == float(log_total_variation(xt, eps))
    # below TV everywhere (log1p(t) < t), and TV itself as eps grows
    assert float(log_total_variation(xt, eps)) < float(total_variation(xt))
    np.testing.assert_allclose(float(log_total_variation(xt, 1e6)), float(total_variation(xt)), rtol=1e-5)
    # a step edge costs less, relative to TV, than the same total variation spread over a ramp
    step, ramp = np.zeros((4, 11)), np.tile(np.linspace(0, 1, 11), (4, 1))
    step[:, 6:] = 1.0
    ratio = lambda img: float(log_total_variation(torch.from_numpy(img), 0.1) / total_variation(torch.from_numpy(img)))  # noqa: E731
    assert ratio(step) < ratio(ramp)


def test_log_tv_prior_reconstructs_and_is_validated(case: tuple) -> None:
    data, mask, zf_psnr = case
    opts = dict(method="inr", inr="siren", iterations=200, device="cpu", seed=0, tv_weight=0.1, hidden_features=64,
                hidden_layers=2)
    log_tv = reconstruct(data, mask, prior="log-tv", **opts)
    assert log_tv.info["prior"] == "log-tv" and log_tv.info["prior_eps"] > 0
    assert psnr(data.reference, log_tv.image) > zf_psnr + 1.0
    tv = reconstruct(data, mask, **opts)
    assert tv.info["prior"] == "tv" and not np.allclose(tv.image, log_tv.image)
    with pytest.raises(ValueError, match=r"unknown prior 'l0'; valid: \['tv', 'log-tv'\]"):
        reconstruct(data, mask, prior="l0", **opts)
    with pytest.raises(ValueError, match="prior_eps must be a positive finite number"):
        reconstruct(data, mask, prior="log-tv", prior_eps=0.0, **opts)
