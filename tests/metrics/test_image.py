"""SynthRAD2023 and BraSyn metrics: parity with scikit-image reference computations, known values."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from lift3d.metrics import image

SHAPE = (20, 22, 18)


def ellipsoid(shape, radii_frac=(0.4, 0.35, 0.4)):
    grids = np.meshgrid(*[np.linspace(-0.5, 0.5, s) for s in shape], indexing="ij")
    return sum((g / r) ** 2 for g, r in zip(grids, radii_frac)) <= 1.0


def ct_pair(seed=0):
    rng = np.random.default_rng(seed)
    body = ellipsoid(SHAPE)
    ct = np.where(body, rng.normal(40, 300, SHAPE), -1000.0)
    ct[2:5, 5:9, 4:8] = 3400.0  # beyond the HU window: clipping matters
    ct[6:8, 3:6, 2:5] = -1200.0
    ct = ct.round().astype(np.int16)
    sct = ct + rng.normal(0, 80, SHAPE)
    sct[body & (rng.random(SHAPE) < 0.05)] = 3600.0
    return sct.astype(np.float32), ct, body.astype(np.uint8)


def synthrad_reference(ct, sct, mask):
    """SynthRAD2023 task-1 metrics written directly from the challenge definitions."""
    ct = ct.astype(np.float64)
    sct = sct.astype(np.float64)
    m = mask > 0
    mae = np.sum(np.abs(ct * m - sct * m)) / m.sum()
    ct_c = np.clip(ct, -1024, 3000)
    sct_c = np.clip(sct, -1024, 3000)
    psnr = peak_signal_noise_ratio(ct_c[m], sct_c[m], data_range=4024)
    ct_s = np.where(m, ct_c, -1024) + 1024
    sct_s = np.where(m, sct_c, -1024) + 1024
    _, smap = structural_similarity(ct_s, sct_s, data_range=4024, full=True)
    inner = (slice(3, -3),) * 3
    ssim = smap[inner][m[inner]].sum() / m[inner].sum()
    return {"mae": mae, "psnr": psnr, "ssim": ssim}


@pytest.mark.parametrize("seed", [0, 1])
def test_synthrad_matches_skimage_reference(seed):
    sct, ct, mask = ct_pair(seed)
    got = image.synthrad_metrics(sct, ct, mask)
    ref = synthrad_reference(ct, sct, mask)
    for key in ("mae", "psnr", "ssim"):
        assert got[key] == pytest.approx(ref[key], abs=1e-6), key
    assert 0 < got["ssim"] < 1


def test_ssim_map_matches_skimage_full_map():
    rng = np.random.default_rng(3)
    x = rng.random((9, 11, 8))
    y = x + 0.1 * rng.random((9, 11, 8))
    _, ref = structural_similarity(x, y, data_range=1.0, full=True)
    np.testing.assert_allclose(image.ssim_map(x, y, 1.0), ref, atol=1e-10)
    # window over two axes = the 2D SSIM map of every slice along the third
    maps2d = image.ssim_map(x, y, 1.0, axes=(0, 1))
    for k in range(x.shape[2]):
        _, ref2d = structural_similarity(x[:, :, k], y[:, :, k], data_range=1.0, full=True)
        np.testing.assert_allclose(maps2d[:, :, k], ref2d, atol=1e-10)


def test_synthrad_known_values():
    _, ct, mask = ct_pair(0)
    ct = np.clip(ct.astype(np.float64), -900, 2500)  # inside the window: no clipping effects
    sct = ct + 40.24  # MSE = 40.24^2 -> PSNR = 20 log10(4024 / 40.24) = 40 dB
    got = image.synthrad_metrics(sct, ct, mask)
    assert got["mae"] == pytest.approx(40.24, abs=1e-9)
    assert got["psnr"] == pytest.approx(40.0, abs=1e-9)
    same = image.synthrad_metrics(ct, ct, mask)
    assert same["mae"] == 0 and same["psnr"] == float("inf") and same["ssim"] == pytest.approx(1.0)


def test_synthrad_ignores_voxels_outside_mask():
    sct, ct, mask = ct_pair(0)
    before = image.synthrad_metrics(sct, ct, mask)
    wild = sct.copy()
    wild[mask == 0] = 2000.0
    after = image.synthrad_metrics(wild, ct, mask)
    for key in before:
        assert after[key] == pytest.approx(before[key], abs=1e-12)


def test_synthrad_psnr_clips_to_hu_window():
    ct = np.full((8, 8, 8), 3000.0)
    sct = np.full((8, 8, 8), 9000.0)  # clipped to 3000: identical after clipping
    assert image.synthrad_psnr(sct, ct, None) == float("inf")
    assert image.synthrad_mae(sct, ct, None) == pytest.approx(6000.0)  # MAE is not clipped


def test_psnr_from_mse_known_value():
    assert image.psnr_from_mse(0.01, 1.0) == pytest.approx(20.0)
    assert image.psnr_from_mse(0.0, 1.0) == float("inf")


def mr_pair(seed=0):
    rng = np.random.default_rng(seed)
    brain = ellipsoid(SHAPE)
    mr = np.where(brain, rng.gamma(4.0, 200.0, SHAPE), 0.0)
    pred = np.where(brain, mr * 1.3 + rng.normal(0, 150, SHAPE) + 50, rng.random(SHAPE) * 5)
    return pred, mr, brain


def brasyn_reference(pred, ref):
    """BraSyn-style metrics from the definition: own-percentile normalisation over the brain."""
    brain = ref != 0

    def norm(img):
        lo, hi = np.percentile(img[brain], [0.5, 99.5])
        return np.where(brain, (np.clip(img, lo, hi) - lo) / (hi - lo), 0.0)

    p, t = norm(pred), norm(ref)
    mse = np.mean((p[brain] - t[brain]) ** 2)
    psnr = peak_signal_noise_ratio(t[brain], p[brain], data_range=1.0)
    _, smap = structural_similarity(t, p, data_range=1.0, full=True)
    return {"mse": mse, "psnr": psnr, "ssim": smap[brain].mean()}


@pytest.mark.parametrize("seed", [0, 1])
def test_brasyn_matches_skimage_reference(seed):
    pred, mr, _ = mr_pair(seed)
    got = image.brasyn_metrics(pred, mr)
    ref = brasyn_reference(pred, mr)
    for key in ("mse", "psnr", "ssim"):
        assert got[key] == pytest.approx(ref[key], abs=1e-6), key
    assert 0 < got["mse"] < 1 and 0 < got["ssim"] < 1


def test_brasyn_normalisation_is_per_image():
    _, mr, brain = mr_pair(0)
    # a prediction right up to a positive linear intensity change scores perfect
    got = image.brasyn_metrics(mr * 2.5 + 100 * brain, mr)
    assert got["mse"] == pytest.approx(0.0, abs=1e-20)
    assert got["psnr"] > 150  # exact up to float rounding
    assert got["ssim"] == pytest.approx(1.0)
    norm = image.normalise_mr(mr, brain)
    lo, hi = np.percentile(mr[brain], [0.5, 99.5])
    assert norm.min() == 0.0 and norm.max() == 1.0
    inside = brain & (mr > lo) & (mr < hi)
    np.testing.assert_allclose(norm[inside], (mr[inside] - lo) / (hi - lo))


def plateau_mr():
    """Brain intensities on the levels 100, 200, ..., 1000: percentiles 0.5 / 99.5 hit 100 / 1000."""
    rng = np.random.default_rng(4)
    brain = ellipsoid(SHAPE)
    levels = rng.integers(1, 11, SHAPE) * 100.0
    return np.where(brain, levels, 0.0), brain


def test_brasyn_known_mse():
    mr, brain = plateau_mr()
    rng = np.random.default_rng(5)
    inner = brain & (mr >= 300) & (mr <= 800)
    pred = mr + np.where(inner, rng.choice([-45.0, 45.0], size=SHAPE), 0.0)
    # both own windows are [100, 1000], so the shift is 45 / 900 = 0.05 on the [0, 1] scale
    got = image.brasyn_metrics(pred, mr)
    expected_mse = 0.05**2 * inner.sum() / brain.sum()
    assert got["mse"] == pytest.approx(expected_mse, rel=1e-9)
    assert got["psnr"] == pytest.approx(10 * np.log10(1 / expected_mse), rel=1e-9)
    # background values of the prediction outside the brain do not count
    noisy = pred + np.where(brain, 0.0, 500.0)
    assert image.brasyn_metrics(noisy, mr)["mse"] == pytest.approx(expected_mse, rel=1e-9)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        image.synthrad_mae(np.zeros((8, 8, 8)), np.zeros((8, 8, 9)), None)
