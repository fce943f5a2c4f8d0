"""Centred FFTs and undersampling masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kmunet.mri import MASK_KINDS, fftnc, fftnc_torch, ifftnc, ifftnc_torch, make_mask


def _ref_fft(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    return np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(x, axes=axes), axes=axes, norm="ortho"), axes=axes)


@pytest.mark.parametrize("shape,axes", [((8, 9), (-2, -1)), ((3, 10, 7), (-2, -1)), ((4, 6, 5), (0,)), ((5, 6, 7), (0, 1, 2))])
def test_fft_matches_numpy_float64(shape: tuple[int, ...], axes: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    expected = _ref_fft(x, axes)
    np.testing.assert_allclose(fftnc(x, axes), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fftnc_torch(torch.from_numpy(x), axes).numpy(), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ifftnc(fftnc(x, axes), axes), x, atol=1e-12)
    np.testing.assert_allclose(ifftnc_torch(fftnc_torch(torch.from_numpy(x), axes), axes).numpy(), x, atol=1e-12)
    inv = np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(x, axes=axes), axes=axes, norm="ortho"), axes=axes)
    np.testing.assert_allclose(ifftnc(x, axes), inv, atol=1e-12)


def test_fft_dc_at_centre_and_unitary() -> None:
    x = np.ones((6, 7))
    k = fftnc(x)
    assert np.argmax(np.abs(k)) == np.ravel_multi_index((3, 3), k.shape)
    assert np.isclose(np.sum(np.abs(k) ** 2), np.sum(x**2))


def test_fft_bad_axis() -> None:
    with pytest.raises(ValueError, match="axis 3"):
        fftnc(np.zeros((4, 4)), axes=(3,))


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_mask_reproducible_and_rng_untouched(kind: str) -> None:
    np_state = np.random.get_state()
    torch_state = torch.random.get_rng_state()
    a = make_mask(kind, (64, 48), 4, 0.1, seed=3)
    b = make_mask(kind, (64, 48), 4, 0.1, seed=3)
    after_np = np.random.get_state()
    assert np.array_equal(a, b) and a.dtype == bool and a.shape == (64, 48)
    assert np_state[0] == after_np[0] and np.array_equal(np_state[1], after_np[1]) and np_state[2:] == after_np[2:]
    assert torch.equal(torch_state, torch.random.get_rng_state())
    if kind != "equispaced":
        assert not np.array_equal(a, make_mask(kind, (64, 48), 4, 0.1, seed=4))


@pytest.mark.parametrize("kind", ["random", "equispaced"])
@pytest.mark.parametrize("accel,cf", [(4, 0.08), (8, 0.04)])
def test_line_masks(kind: str, accel: float, cf: float) -> None:
    n = 320
    m = make_mask(kind, (n, 64), accel, cf, seed=1)
    lines = m[:, 0]
    assert (m == lines[:, None]).all()  # whole phase-encoding lines along axis -2
    low = round(n * cf)
    start = (n - low + 1) // 2
    assert lines[start:start + low].all()
    assert lines[n // 2]
    assert abs(n / lines.sum() - accel) / accel < 0.2
    cols = make_mask(kind, (64, n), accel, cf, seed=1, axis=-1)
    assert (cols == cols[0][None, :]).all() and cols[0].sum() == make_mask(kind, (n, 64), accel, cf, seed=1)[:, 0].sum()


def test_poisson_mask() -> None:
    m = make_mask("poisson", (64, 64), 4, 0.1, seed=0)
    assert m[30:34, 30:34].all()
    assert abs(m.size / m.sum() - 4) < 0.5


@pytest.mark.parametrize("kwargs,match", [
    (dict(kind="spiral"), "valid: \\['random'"),
    (dict(acceleration=0.5), "acceleration"),
    (dict(center_fraction=1.5), "center_fraction"),
    (dict(shape=(10,)), "shape"),
    (dict(axis=2), "axis"),
])
def test_mask_bad_args(kwargs: dict, match: str) -> None:
    args = dict(kind="random", shape=(32, 32), acceleration=4, center_fraction=0.1, seed=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        make_mask(**args)


def test_poisson_mask_limits_are_named() -> None:
    from kmunet.mri import make_mask

    with pytest.raises(ValueError, match="poisson masks need acceleration >= 1.5"):
        make_mask("poisson", (64, 64), 1.2, 0.08, seed=7)  # sigpy would loop: corners are never sampled
    with pytest.raises(ValueError, match="center_fraction 0.6 gives a 38 x 38 calibration block"):
        make_mask("poisson", (64, 64), 4.0, 0.6)
    assert make_mask("poisson", (64, 64), 1.0, 0.08).all()


def test_repeated_fft_axes_are_refused() -> None:
    from kmunet.mri.fft import fftnc, fftnc_torch

    with pytest.raises(ValueError, match="distinct"):
        fftnc(np.zeros((4, 4), complex), axes=(0, 0))
    with pytest.raises(ValueError, match="distinct"):
        fftnc_torch(torch.zeros(4, 4, dtype=torch.complex64), (0, -2))
