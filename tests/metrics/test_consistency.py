"""Coherence metrics: per-plane PSNR/SSIM, z-gradient error/ratio, z profile."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from lift3d.metrics import consistency as cons

SHAPE = (12, 14, 10)  # RAS order: R, A, S


def smooth_volume(seed=0):
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(*[np.arange(s, dtype=float) for s in SHAPE], indexing="ij")
    return np.sin(i / 3) + np.cos(j / 4) + 0.3 * k / SHAPE[2] + 0.05 * rng.random(SHAPE)


def test_identical_volumes_are_perfect():
    t = smooth_volume()
    mask = np.ones(SHAPE, bool)
    metrics, profile = cons.coherence_metrics(t, t, mask, data_range=4.0)
    assert metrics["zgrad_error"] == 0.0
    assert metrics["zgrad_ratio"] == pytest.approx(1.0)
    for plane in ("axial", "coronal", "sagittal"):
        assert metrics[f"psnr_{plane}"] == float("inf")
        assert metrics[f"ssim_{plane}"] == pytest.approx(1.0)
    np.testing.assert_array_equal(profile, np.zeros(SHAPE[2]))


def test_slice_flicker_known_values():
    t = smooth_volume() + 3.0  # away from 0, so SSIM's luminance term barely sees the offsets
    d = 0.1
    offsets = d * (-1.0) ** np.arange(SHAPE[2])  # +d, -d, +d ... along S
    flicker = t + offsets[None, None, :]
    mask = np.ones(SHAPE, bool)
    z = cons.zgrad_metrics(flicker, t, mask)
    assert z["zgrad_error"] == pytest.approx(2 * d)  # every neighbour difference is off by 2d
    assert z["zgrad_ratio"] > 1.5
    # a constant offset adds no flicker
    shifted = cons.zgrad_metrics(t + d, t, mask)
    assert shifted["zgrad_error"] == pytest.approx(0.0, abs=1e-12)
    assert shifted["zgrad_ratio"] == pytest.approx(1.0)
    # every slice has MSE d^2 in every plane: PSNR = 20 log10(R / d)
    metrics = cons.plane_metrics(flicker, t, mask, data_range=1.0)
    for plane in ("axial", "coronal", "sagittal"):
        assert metrics[f"psnr_{plane}"] == pytest.approx(20.0, abs=1e-9)
    # an axial slice is only offset (luminance term); the reformats also lose structure
    assert metrics["ssim_axial"] > 0.99
    assert metrics["ssim_coronal"] < metrics["ssim_axial"] - 0.02
    assert metrics["ssim_sagittal"] < metrics["ssim_axial"] - 0.02


def test_z_profile_and_slice_skipping():
    t = smooth_volume()
    err = np.arange(SHAPE[2], dtype=float) * 0.01  # slice k off by 0.01 k
    pred = t + err[None, None, :]
    mask = np.zeros(SHAPE, bool)
    mask[2:10, 3:11, 2:7] = True  # axial slices 2..6 only
    profile = cons.z_error_profile(pred, t, mask)
    assert np.isnan(profile[:2]).all() and np.isnan(profile[7:]).all()
    np.testing.assert_allclose(profile[2:7], err[2:7], atol=1e-12)
    # axial PSNR averages the slice PSNRs of slices 2..6 only
    expected = np.mean([20 * np.log10(1.0 / e) for e in err[2:7]])
    assert cons.plane_psnr(pred, t, mask, 1.0, axis=2) == pytest.approx(expected)
    # a z difference counts only when both voxels are in the mask: slices 2..6 -> 4 pairs of 0.01
    assert cons.zgrad_metrics(pred, t, mask)["zgrad_error"] == pytest.approx(0.01)


def test_plane_ssim_matches_skimage_slices():
    rng = np.random.default_rng(1)
    t = smooth_volume()
    p = t + 0.2 * rng.random(SHAPE)
    mask = np.zeros(SHAPE, bool)
    mask[1:11, 2:13, 3:9] = True
    for axis in (0, 1, 2):
        values = []
        for k in range(SHAPE[axis]):
            m2 = np.take(mask, k, axis=axis)
            if not m2.any():
                continue
            _, smap = structural_similarity(
                np.take(t, k, axis=axis), np.take(p, k, axis=axis), data_range=2.0, full=True
            )
            values.append(smap[m2].mean())
        got = cons.plane_ssim(p, t, mask, 2.0, axis=axis)
        assert got == pytest.approx(np.mean(values), abs=1e-9)


def test_empty_mask_gives_nan():
    t = smooth_volume()
    mask = np.zeros(SHAPE, bool)
    metrics, profile = cons.coherence_metrics(t, t + 1, mask, 1.0)
    assert all(np.isnan(v) for v in metrics.values())
    assert np.isnan(profile).all()


def test_dz_metrics_known_answers():
    """Δz MAE / correlation on hand-computable arrays (slice axis 2, the RAS axial axis)."""
    # one voxel column along S: target 0 1 3 6 (dz 1 2 3), prediction 0 2 2 5 (dz 2 0 3)
    t = np.array([0.0, 1.0, 3.0, 6.0])[None, None, :]
    p = np.array([0.0, 2.0, 2.0, 5.0])[None, None, :]
    mask = np.ones_like(t, bool)
    dz = cons.dz_metrics(p, t, mask)
    assert dz["dz_mae"] == pytest.approx((1 + 2 + 0) / 3)
    # dz_p - mean = (1/3, -5/3, 4/3), dz_t - mean = (-1, 0, 1): r = 1 / sqrt(42/9 * 2)
    assert dz["dz_corr"] == pytest.approx(1 / np.sqrt(42 / 9 * 2))
    assert dz["dz_corr"] == pytest.approx(np.corrcoef([2, 0, 3], [1, 2, 3])[0, 1])
    # a difference counts only where both voxels are inside: slice 3 out drops the last pair
    mask[..., 3] = False
    dz = cons.dz_metrics(p, t, mask)
    assert dz["dz_mae"] == pytest.approx(1.5)
    assert dz["dz_corr"] == pytest.approx(-1.0)  # dz_p (2, 0) vs dz_t (1, 2)
    # a constant offset and a scaled copy keep correlation 1; the offset has Δz MAE 0
    t3 = smooth_volume()
    full = np.ones(SHAPE, bool)
    assert cons.dz_metrics(t3 + 5.0, t3, full) == pytest.approx({"dz_mae": 0.0, "dz_corr": 1.0})
    scaled = cons.dz_metrics(2 * t3, t3, full)
    assert scaled["dz_corr"] == pytest.approx(1.0)
    assert scaled["dz_mae"] == pytest.approx(np.abs(np.diff(t3, axis=2)).mean())
    # Δz MAE is the z-gradient error under the paper's name; both come with coherence_metrics
    metrics, _ = cons.coherence_metrics(t3 + 0.1 * smooth_volume(1), t3, full, data_range=4.0)
    assert metrics["dz_mae"] == pytest.approx(metrics["zgrad_error"])
    assert 0 < metrics["dz_corr"] < 1


def test_dz_metrics_undefined_cases():
    t = np.array([0.0, 1.0, 2.0])[None, None, :]
    mask = np.ones_like(t, bool)
    flat = cons.dz_metrics(np.zeros_like(t), t, mask)  # prediction has no slice changes
    assert flat["dz_mae"] == pytest.approx(1.0) and np.isnan(flat["dz_corr"])
    mask[..., 1] = False  # no pair with both voxels inside
    empty = cons.dz_metrics(t, t, mask)
    assert np.isnan(empty["dz_mae"]) and np.isnan(empty["dz_corr"])
