"""Domain randomisation of the learned prior's training crops (``kmunet.inr.prior.ResamplerAugment``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kmunet.inr.prior import CONTRAST_KNOTS, ResamplerAugment, _make_batch, _random_contrast, train_resampler


def _volumes(n: int = 3, shape: tuple[int, int, int] = (20, 18, 16)) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    return [(1.0 + 0.3 * np.sin(3 * x + i) * np.cos(2 * y) + 0.1 * z + 0.02 * rng.standard_normal(shape)).astype(np.float32)
            for i in range(n)]


@pytest.mark.parametrize("augment", [ResamplerAugment(), ResamplerAugment(zoom=(1.0, 1.5), slice_blur=1.0, contrast=1.0)])
def test_batch_shapes_and_targets(augment: ResamplerAugment) -> None:
    rng = np.random.default_rng(1)
    for _ in range(4):  # several random axes / factors
        lr, q, target, fac = _make_batch(_volumes(), rng, 2, 13, (2, 4), augment)
        axis = int(torch.argmax(fac[0]))
        r = int(fac[0, axis])
        kept = (13 - 1) // r + 1
        assert lr.shape[0] == 2 and lr.shape[1] == 1 and lr.shape[2 + axis] == kept
        assert q.shape == (2, target.shape[1], 3) and torch.isfinite(target).all() and torch.isfinite(lr).all()
        assert float(q[0, :, axis].max()) < kept - 1 and float(q[0, :, axis].min()) > 0  # strictly between kept slices


def test_default_augment_draws_the_same_crops_as_none() -> None:
    a = _make_batch(_volumes(), np.random.default_rng(5), 2, 9, (2,))
    b = _make_batch(_volumes(), np.random.default_rng(5), 2, 9, (2,), ResamplerAugment())
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)


def test_zoom_without_blur_keeps_a_linear_ramp_linear() -> None:
    # Down-scaling a linear ramp (anti-aliasing and linear interpolation) gives a linear ramp again.
    ramp = np.broadcast_to(np.arange(40, dtype=np.float32)[:, None, None], (40, 40, 40)).copy()
    lr = _make_batch([ramp], np.random.default_rng(2), 1, 12, (2,), ResamplerAugment(zoom=(1.4, 1.4)))[0]
    steps = np.diff(lr[0, 0].numpy(), axis=0)  # constant along the ramp's axis, whether or not it was decimated
    assert np.ptp(steps[1:-1]) < 1e-3 * max(1.0, float(np.abs(steps).max()))


def test_random_contrast_keeps_zero_and_normalises() -> None:
    rng = np.random.default_rng(3)
    hr = np.linspace(0.0, 2.0, 101, dtype=np.float32)
    out = _random_contrast(hr, rng)
    assert out[0] == 0.0 and np.isfinite(out).all()
    assert np.percentile(out, 99) == pytest.approx(1.0, rel=1e-5)
    # Piecewise linear between the knots: the second differences vanish away from them.
    inside = (hr > 0.27) & (hr < 0.48)
    assert np.allclose(np.diff(out[inside], 2), 0.0, atol=1e-5)
    assert len(CONTRAST_KNOTS) >= 3


@pytest.mark.parametrize("kwargs, match", [({"zoom": (0.5, 1.0)}, "zoom"), ({"zoom": (2.0, 1.5)}, "zoom"),
                                           ({"slice_blur": -1.0}, "slice_blur"), ({"contrast": 1.5}, "contrast")])
def test_augment_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ResamplerAugment(**kwargs)


def test_train_resampler_rejects_wrong_augment_type(tmp_path) -> None:
    with pytest.raises(TypeError, match="ResamplerAugment"):
        train_resampler(tmp_path, tmp_path / "m.pt", augment={"zoom": (1, 2)})  # type: ignore[arg-type]
