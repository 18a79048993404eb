"""Output detail: calibrated fine-scale noise (lift3d.inference.detail)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from lift3d.inference import detail


def _smooth_head(rng: np.random.Generator, n: int = 40) -> np.ndarray:
    """A smooth positive blob on a zero background (like a skull-stripped, blurry sample)."""
    z, y, x = np.mgrid[:n, :n, :n] / (n - 1) - 0.5
    inside = (x**2 + y**2 + z**2) < 0.16
    field = gaussian_filter(rng.standard_normal((n, n, n)), 4) * 40
    return np.where(inside, 500 + 100 * z + field, 0).astype(np.float32)


def test_calibrate_recovers_the_missing_noise_level():
    rng = np.random.default_rng(1)
    sigma, width = 30.0, 1000.0
    real, generated = [], []
    for _ in range(4):
        smooth = _smooth_head(rng)
        fg = smooth != 0
        real.append((np.where(fg, smooth + sigma * rng.standard_normal(smooth.shape), 0), width))
        generated.append((_smooth_head(rng), width))
    rec = detail.calibrate(real, generated)
    assert rec["estimator"] == "noise"
    assert rec["sigma_rel"] * width == pytest.approx(sigma, rel=0.05)
    assert rec["level_real_rel"] > rec["level_generated_rel"]
    # Nothing to add when the samples already carry the data's noise.
    assert detail.calibrate(real, real)["sigma_rel"] == 0.0
    # Window widths make the level relative: a case stored at twice the scale counts the same.
    doubled = [(2 * v, 2 * w) for v, w in real]
    again = detail.calibrate(doubled, generated)
    assert again["sigma_rel"] == pytest.approx(rec["sigma_rel"], rel=1e-5)
    with pytest.raises(ValueError):
        detail.calibrate([], generated)


def test_noise_sigma_measures_noise_not_edges():
    rng = np.random.default_rng(3)
    smooth = _smooth_head(rng, 48)
    fg = smooth != 0
    noisy = np.where(fg, smooth + 20.0 * rng.standard_normal(smooth.shape), 0)
    assert detail.noise_sigma(noisy) == pytest.approx(20.0, rel=0.05)
    # The smooth blob's sharp outer edge and slow gradients barely count.
    assert detail.noise_sigma(smooth) < 1.0
    assert detail.noise_sigma(np.zeros((8, 8, 8))) == 0.0
    with pytest.raises(ValueError):
        detail.noise_sigma(np.zeros((8, 8)))


def test_add_detail_touches_only_the_foreground_and_keeps_the_dtype():
    rng = np.random.default_rng(2)
    vol = _smooth_head(rng)
    out = detail.add_detail(vol, 25.0, detail.sample_rng(0, 0))
    fg = vol != 0
    assert out.dtype == vol.dtype and out.shape == vol.shape
    assert np.array_equal(out[~fg], vol[~fg])
    assert (out[fg] - vol[fg]).std() == pytest.approx(25.0, rel=0.05)
    assert out.min() >= 0
    ints = vol.astype(np.int16)
    out_int = detail.add_detail(ints, 25.0, detail.sample_rng(0, 0))
    assert out_int.dtype == np.int16 and np.array_equal(out_int[~fg], ints[~fg])
    # CT-like data: no clipping at 0.
    low = np.where(fg, 5.0, 0).astype(np.float32)
    assert detail.add_detail(low, 25.0, detail.sample_rng(0, 0), clip_min=None).min() < 0
    assert detail.add_detail(low, 25.0, detail.sample_rng(0, 0)).min() == 0
    # sigma 0: unchanged.
    assert np.array_equal(detail.add_detail(vol, 0.0, detail.sample_rng(0, 0)), vol)


def test_sample_streams_are_reproducible_and_distinct():
    a = detail.sample_rng(3, 5).standard_normal(8)
    assert np.array_equal(a, detail.sample_rng(3, 5).standard_normal(8))
    assert not np.array_equal(a, detail.sample_rng(3, 6).standard_normal(8))
    assert not np.array_equal(a, detail.sample_rng(4, 5).standard_normal(8))


def test_window_width():
    record = {"intensity": {"t1n": {"window": [10.0, 410.0]}, "seg": {"window": None}}}
    assert detail.window_width(record, "t1n") == 400.0
    assert detail.window_width(record, "seg") == 1.0
