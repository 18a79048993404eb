"""MS-SSIM / SSIM diversity: known values, the scales that fit a grid, the pair cap, and parity
of MONAI's MultiScaleSSIMMetric and SSIMMetric with independent implementations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.metrics import MultiScaleSSIMMetric, SSIMMetric
from scipy.ndimage import correlate1d
from skimage.metrics import structural_similarity

from lift3d.metrics.diversity import (
    MSSSIM_WEIGHTS,
    diversity,
    msssim_weights,
    pairwise_similarity,
    sample_pairs,
)

C1, C2 = 0.01**2, 0.03**2  # data range 1


def gaussian(size: int, sigma: float) -> np.ndarray:
    x = np.arange(size) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_and_cs(x: np.ndarray, y: np.ndarray, size: int = 7, sigma: float = 1.5):
    """Independent SSIM and contrast-structure maps: separable Gaussian window (scipy), valid
    region only, population (weighted) variances."""
    g, r = gaussian(size, sigma), size // 2

    def filt(a: np.ndarray) -> np.ndarray:
        for axis in range(a.ndim):
            a = correlate1d(a, g, axis=axis, mode="constant")
        return a[(slice(r, -r),) * a.ndim]

    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    cs = (2 * cxy + C2) / (vx + vy + C2)
    return (2 * mx * my + C1) / (mx**2 + my**2 + C1) * cs, cs


def reference_msssim(x: np.ndarray, y: np.ndarray, weights, size: int = 7) -> float:
    """Wang et al.'s MS-SSIM: mean cs of every scale but the last, mean SSIM of the last,
    each clipped at 0, weighted geometric mean; 2x2x2 averaging between scales."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    value = 1.0
    for k, w in enumerate(weights):
        ssim, cs = ssim_and_cs(x, y, size)
        value *= max((ssim if k == len(weights) - 1 else cs).mean(), 0.0) ** w
        n = [s // 2 * 2 for s in x.shape]
        x = (
            x[: n[0], : n[1], : n[2]]
            .reshape(n[0] // 2, 2, n[1] // 2, 2, n[2] // 2, 2)
            .mean((1, 3, 5))
        )
        y = (
            y[: n[0], : n[1], : n[2]]
            .reshape(n[0] // 2, 2, n[1] // 2, 2, n[2] // 2, 2)
            .mean((1, 3, 5))
        )
    return value


def smooth(seed: int, size: int = 32) -> np.ndarray:
    """A smooth random volume in [0, 1] (structure at every scale MS-SSIM looks at)."""
    rng = np.random.default_rng(seed)
    v = rng.random((size, size, size))
    for axis in range(3):
        v = correlate1d(v, gaussian(9, 2.0), axis=axis, mode="wrap")
    return ((v - v.min()) / (v.max() - v.min())).astype(np.float32)


def test_scales_that_fit_the_grid():
    assert msssim_weights((128, 128, 128)) == MSSSIM_WEIGHTS  # the full 5 from 112 voxels
    assert len(msssim_weights((64, 64, 64))) == 4
    assert len(msssim_weights((32, 48, 64))) == 3  # the smallest axis decides
    assert len(msssim_weights((16, 16, 16))) == 2 and msssim_weights((8, 8, 8)) == (1.0,)
    for shape in ((64,) * 3, (32,) * 3):
        w = msssim_weights(shape)
        assert sum(w) == pytest.approx(1.0)
        ratio = np.array(w) / np.array(MSSSIM_WEIGHTS[: len(w)])
        assert np.allclose(ratio, ratio[0])  # Wang's weights, renormalised
    with pytest.raises(ValueError):
        msssim_weights((6, 32, 32))


def test_monai_msssim_parity_with_independent_formula():
    x, y = smooth(0), smooth(1)
    noisy = np.clip(x + 0.1 * np.random.default_rng(2).normal(size=x.shape), 0, 1)
    for weights in (msssim_weights(x.shape), (0.3, 0.7)):
        metric = MultiScaleSSIMMetric(
            spatial_dims=3, data_range=1.0, kernel_size=7, kernel_sigma=1.5, weights=weights
        )
        for b in (y, noisy.astype(np.float32)):
            ours = float(metric(torch.from_numpy(x)[None, None], torch.from_numpy(b)[None, None]))
            assert ours == pytest.approx(reference_msssim(x, b, weights), abs=2e-5)


def test_monai_ssim_parity_with_scikit_image_and_the_formula():
    """scikit-image's Gaussian SSIM (sigma 1.5, truncate 3.5: an 11-voxel window, population
    covariance, border cropped) equals MONAI's valid-window mean; the 7-voxel window of the
    diversity score is checked against the independent formula."""
    x, y = smooth(3, 28), smooth(4, 28)
    tx, ty = torch.from_numpy(x)[None, None], torch.from_numpy(y)[None, None]
    monai11 = SSIMMetric(spatial_dims=3, data_range=1.0, win_size=11, kernel_sigma=1.5)
    expected = structural_similarity(
        x.astype(np.float64),
        y.astype(np.float64),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
    )
    assert float(monai11(tx, ty)) == pytest.approx(expected, abs=2e-5)
    monai7 = SSIMMetric(spatial_dims=3, data_range=1.0, win_size=7, kernel_sigma=1.5)
    assert float(monai7(tx, ty)) == pytest.approx(ssim_and_cs(x, y)[0].mean(), abs=2e-5)


def test_identical_volumes_score_one():
    v = smooth(5)
    result = diversity([v, v.copy(), v.copy()])
    assert result["msssim"] == pytest.approx(1.0, abs=1e-6)
    assert result["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert result["pairs"] == result["pairs_total"] == 3 and result["scales"] == 3


def test_independent_noise_scores_its_known_value():
    """Independent uniform noise (variance 1/12): the means match (luminance ~ 1) and the
    covariance vanishes on average, so scale s contributes cs_s = C2 / (2 var_s (1 - sum w^2)
    + C2), with var_s = (1/12) / 8^s after s 2x2x2 averagings and (1 - sum w^2) the bias of
    the window-weighted variance; MS-SSIM = prod cs_s^(w_s), about 0.154 for 4 scales on 64^3.
    One pair scatters by about 20% around it (the sample covariance of the coarse scales, 8^3
    voxels at the last), and the mean over pairs sits a few percent below it (x^w is concave):
    45 pairs give 0.147 +- 0.005, these 3 pairs 0.140."""
    rng = np.random.default_rng(0)
    vols = [rng.random((64, 64, 64), dtype=np.float32) for _ in range(3)]
    weights = msssim_weights(vols[0].shape)
    sum_w2 = (gaussian(7, 1.5) ** 2).sum() ** 3
    var = (1 / 12) / 8.0 ** np.arange(len(weights))
    expected = float(np.prod((C2 / (2 * var * (1 - sum_w2) + C2)) ** np.array(weights)))
    assert expected == pytest.approx(0.154, abs=1e-3)
    result = diversity(vols)
    assert result["msssim"] == pytest.approx(expected, rel=0.2)
    assert result["ssim"] < 0.02  # one scale: about C2 / (2 var) = 0.0054 for noise


def test_pairs_are_capped_seeded_and_recorded():
    pairs = sample_pairs(10, 12, seed=1)
    assert len(pairs) == 12 == len(set(pairs)) and all(i < j < 10 for i, j in pairs)
    assert pairs == sample_pairs(10, 12, seed=1) and pairs != sample_pairs(10, 12, seed=2)
    assert len(sample_pairs(4, 100)) == 6
    vols = [smooth(s, 16) for s in range(6)]
    capped = diversity(vols, max_pairs=4, seed=1)
    assert capped["pairs"] == 4 and capped["pairs_total"] == 15
    ms, _ = pairwise_similarity(vols, sample_pairs(6, 4, seed=1))
    assert capped["msssim"] == pytest.approx(ms.mean())
    with pytest.raises(ValueError):
        diversity(vols[:1])
    with pytest.raises(ValueError):
        diversity([vols[0], vols[1][:8]])


@pytest.mark.parametrize("shape", [(32, 32, 32), (64, 48, 40)])
def test_one_pass_equals_monai_msssim_and_ssim(shape):
    """pairwise_similarity computes both scores in one pass over the scales: equal to MONAI's
    MultiScaleSSIMMetric and SSIMMetric run separately."""
    rng = np.random.default_rng(3)
    base = rng.random(shape, dtype=np.float32)
    vols = [np.clip(base + 0.2 * rng.standard_normal(shape), 0, 1) for _ in range(4)]
    pairs = sample_pairs(4, 6)
    weights = msssim_weights(shape)
    ms, ss = pairwise_similarity(vols, pairs, weights=weights)
    a = torch.stack([torch.from_numpy(vols[i].astype(np.float32)) for i, _ in pairs])[:, None]
    b = torch.stack([torch.from_numpy(vols[j].astype(np.float32)) for _, j in pairs])[:, None]
    kw = dict(spatial_dims=3, data_range=1.0, kernel_sigma=1.5, reduction="none")
    want_ms = MultiScaleSSIMMetric(kernel_size=7, weights=weights, **kw)(a, b).reshape(-1)
    want_ss = SSIMMetric(win_size=7, **kw)(a, b).reshape(-1)
    # float32 rounding only: MONAI's 343-term window sums are ~1.6e-5 from a float64
    # evaluation on these volumes, the separable passes ~1.7e-6
    np.testing.assert_allclose(ms, want_ms.double().numpy(), rtol=0, atol=5e-5)
    np.testing.assert_allclose(ss, want_ss.double().numpy(), rtol=0, atol=5e-5)
    assert len(set(np.round(ms, 6))) > 1  # distinct pairs, distinct scores


def test_separable_window_equals_monai_full_kernel_in_float64():
    """The three 1D Gaussian passes compute exactly MONAI's 3D-kernel SSIM and contrast maps
    (MONAI's kernel and formula, evaluated here in float64 so that rounding does not hide a
    difference)."""
    from monai.metrics.regression import _gaussian_kernel

    from lift3d.metrics.diversity import _ssim_and_cs

    rng = np.random.default_rng(5)
    a = torch.from_numpy(rng.random((2, 1, 20, 17, 15)))
    b = (a + 0.3 * torch.from_numpy(rng.standard_normal(a.shape))).clamp(0, 1)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # both windows built in float64
    try:
        ssim, cs = _ssim_and_cs(a, b, 7, 1.5, 1.0)
        k = _gaussian_kernel(3, 1, (7, 7, 7), (1.5, 1.5, 1.5))
    finally:
        torch.set_default_dtype(old)
    assert k.dtype == torch.float64
    mu = [F.conv3d(t, k) for t in (a, b, a * a, b * b, a * b)]
    sx, sy, sxy = mu[2] - mu[0] ** 2, mu[3] - mu[1] ** 2, mu[4] - mu[0] * mu[1]
    want_cs = (2 * sxy + 0.03**2) / (sx + sy + 0.03**2)
    want_ssim = (2 * mu[0] * mu[1] + 0.01**2) / (mu[0] ** 2 + mu[1] ** 2 + 0.01**2) * want_cs
    want_ssim, want_cs = want_ssim[:, 0], want_cs[:, 0]  # one channel: (B, D', H', W') maps
    assert ssim.shape == want_ssim.shape == (2, 14, 11, 9)
    torch.testing.assert_close(ssim, want_ssim, rtol=0, atol=1e-12)
    torch.testing.assert_close(cs, want_cs, rtol=0, atol=1e-12)
