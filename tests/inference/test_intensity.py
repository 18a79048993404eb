"""Intensity map: G's foreground histogram matched to the data's (lift3d.inference.intensity)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from lift3d.inference import intensity
from lift3d.metrics.distribution import histogram_distance


def _head(rng: np.random.Generator, n: int = 32) -> np.ndarray:
    """Skull-stripped-like volume: a textured positive ball on an exact-zero background."""
    z, y, x = np.mgrid[:n, :n, :n] / (n - 1) - 0.5
    inside = (x**2 + y**2 + z**2) < 0.16
    field = gaussian_filter(rng.standard_normal((n, n, n)), 2)
    field = (field - field.min()) / (field.max() - field.min())
    return np.where(inside, 50 + 900 * field, 0).astype(np.float32)


def _normalised(vols):
    out = []
    for v in vols:
        x, low, high = intensity.normalised_foreground(v)
        w = np.zeros_like(v, dtype=np.float64)
        w[v != 0] = np.maximum(x, 0.03)  # keep every foreground voxel above the metric's 0.02
        out.append(w)
    return out


def test_map_puts_a_compressed_histogram_back_on_the_data_and_keeps_the_background():
    rng = np.random.default_rng(0)
    real = [_head(rng) for _ in range(4)]
    # G's samples: the same kind of volume with contrast squeezed toward the middle (a monotone
    # distortion, as blur does to a histogram), at another scale.
    raw = [_head(rng) for _ in range(4)]

    def squeeze(v):
        fg = v != 0
        t = (v - 50) / 900
        return np.where(fg, 3 * (300 + 400 * np.sqrt(np.clip(t, 0, 1))), 0).astype(np.float32)

    gen = [squeeze(v) for v in raw]
    record = intensity.calibrate_intensity_map(real, gen[:2])
    # the same map from the volumes' pooled values (how the calibration streams many samples)
    values = [intensity.foreground_values(v) for v in gen[:2]]
    assert intensity.calibrate_intensity_map(real, values) == record
    assert record["levels"] == intensity.MAP_LEVELS == len(record["real"])
    assert np.all(np.diff(record["generated"]) >= 0) and np.all(np.diff(record["real"]) >= 0)
    before = histogram_distance(_normalised(gen[2:]), _normalised(real))
    mapped = [intensity.apply_intensity_map(v, record) for v in gen[2:]]
    after = histogram_distance(_normalised(mapped), _normalised(real))
    floor = histogram_distance(_normalised(raw[2:]), _normalised(real))  # unsqueezed samples
    assert after < 0.4 * before and after < 2 * floor, (before, after, floor)
    for v, m in zip(gen[2:], mapped):
        assert m.dtype == v.dtype and m.shape == v.shape
        assert np.array_equal(m == 0, v == 0)  # background exactly 0, foreground stays > 0
        fg = v != 0
        # monotone: the order of intensities inside a sample is kept
        order = np.argsort(v[fg], kind="stable")
        assert np.all(np.diff(m[fg][order]) >= -1e-3)
        # the sample's own window is kept (only the shape of the histogram changes)
        lo, hi = np.percentile(v[fg], intensity.WINDOW_PERCENTILES)
        lo2, hi2 = np.percentile(m[fg], intensity.WINDOW_PERCENTILES)
        assert lo2 == pytest.approx(lo, rel=0.02) and hi2 == pytest.approx(hi, rel=0.02)


def test_identity_calibration_changes_little_and_integers_stay_integers():
    rng = np.random.default_rng(1)
    vols = [_head(rng) for _ in range(3)]
    record = intensity.calibrate_intensity_map(vols, vols)
    out = intensity.apply_intensity_map(vols[0], record)
    fg = vols[0] != 0
    assert np.abs(out[fg] - vols[0][fg]).max() < 0.02 * np.ptp(vols[0][fg])
    ints = vols[0].astype(np.int16)
    out_int = intensity.apply_intensity_map(ints, record)
    assert out_int.dtype == np.int16 and np.array_equal(out_int == 0, ints == 0)


def test_empty_or_flat_foreground_is_left_alone_and_calibration_needs_data():
    record = intensity.calibrate_intensity_map(
        [_head(np.random.default_rng(2))], [_head(np.random.default_rng(3))]
    )
    zeros = np.zeros((8, 8, 8), np.float32)
    assert np.array_equal(intensity.apply_intensity_map(zeros, record), zeros)
    flat = np.where(np.arange(512).reshape(8, 8, 8) % 2 == 0, 7.0, 0.0).astype(np.float32)
    assert np.array_equal(intensity.apply_intensity_map(flat, record), flat)
    with pytest.raises(ValueError):
        intensity.calibrate_intensity_map([], [zeros])
    with pytest.raises(ValueError, match="no foreground"):
        intensity.calibrate_intensity_map([zeros], [zeros])
