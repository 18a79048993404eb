"""Distribution maths: known values of FID / KID / MMD / histogram distance, and parity of
MONAI's FIDMetric and MMDMetric (behind fid_from_features / mmd_from_features) with
independent formulas."""

from __future__ import annotations

import numpy as np
import pytest

from lift3d.metrics.distribution import (
    fid_from_features,
    frechet_distance,
    histogram_distance,
    kid_from_features,
    mmd_from_features,
    zgrad_ratio_sets,
)


def eigh_fid(x: np.ndarray, y: np.ndarray) -> float:
    """Independent FID: Tr((S1 S2)^(1/2)) from the eigenvalues of the symmetric PSD matrix
    S1^(1/2) S2 S1^(1/2) (numpy eigh; the formula lift3d used before MONAI's FIDMetric)."""
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    vals, vecs = np.linalg.eigh(s1)
    root1 = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    inner = root1 @ s2 @ root1
    tr = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    diff = x.mean(0) - y.mean(0)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr)


def linear_mmd(x: np.ndarray, y: np.ndarray) -> float:
    """Independent unbiased MMD^2 with the linear kernel k(a, b) = a.b (Gretton et al. 2012)."""
    n, m = len(x), len(y)
    kxx, kyy = x @ x.T, y @ y.T
    return float(
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        - 2 * (x @ y.T).mean()
    )


def test_frechet_distance_known_gaussians():
    # 1D: (mu1 - mu2)^2 + (s1 - s2)^2.
    assert frechet_distance(
        np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[1.0]])
    ) == pytest.approx(4 + 1)
    # Diagonal covariances: sum over dimensions.
    fd = frechet_distance(np.zeros(2), np.diag([1.0, 9.0]), np.ones(2), np.diag([4.0, 1.0]))
    assert fd == pytest.approx(2 + 1 + 4)
    assert frechet_distance(np.ones(3), np.eye(3), np.ones(3), np.eye(3)) == pytest.approx(
        0, abs=1e-8
    )


def test_fid_matches_eigenvalue_formula():
    """Independent route: Tr((S1 S2)^(1/2)) = sum of sqrt(eigenvalues of S1 S2)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5))
    y = rng.normal(loc=0.5, scale=1.5, size=(50, 5))
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)).sum()
    diff = x.mean(0) - y.mean(0)
    expected = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert fid_from_features(x, y) == pytest.approx(expected, rel=1e-6)


def test_kid_known_value_and_zero_for_same_distribution():
    # Features {0, 0} vs {1, 1} in 1D: k = (xy + 1)^3 -> MMD^2 = 1 + 8 - 2 * 1 = 7.
    mean, std = kid_from_features(np.zeros((2, 1)), np.ones((2, 1)), subsets=3, subset_size=2)
    assert mean == pytest.approx(7.0) and std == pytest.approx(0.0)
    rng = np.random.default_rng(0)
    same, _ = kid_from_features(
        rng.normal(size=(300, 4)), rng.normal(size=(300, 4)), subsets=5, subset_size=300
    )
    shifted, _ = kid_from_features(
        rng.normal(size=(300, 4)), rng.normal(1, 1, size=(300, 4)), subsets=5, subset_size=300
    )
    assert abs(same) < 0.05 * shifted
    with pytest.raises(ValueError):
        kid_from_features(np.zeros((1, 2)), np.zeros((5, 2)))


def test_kid_by_volume_is_not_biased_by_coherent_volumes():
    """Slices of one volume are not independent. With every volume made of near-copies of one
    draw (a perfectly coherent volume) the textbook estimator reports a large distance between
    two sets from the same distribution; leaving same-volume pairs out removes that bias, and a
    real difference is still seen."""
    rng = np.random.default_rng(0)
    vols, per = 40, 8

    def coherent(loc: float) -> np.ndarray:
        draws = rng.normal(loc, 1, size=(vols, 1, 4))
        return (draws + 0.01 * rng.normal(size=(vols, per, 4))).reshape(-1, 4)

    groups = np.repeat(np.arange(vols), per)
    x, y, shifted = coherent(0.0), rng.normal(size=(vols * per, 4)), coherent(0.25)
    y_groups = np.arange(vols * per)  # independent samples: one per "volume"
    kw = {"subsets": 10, "subset_size": 200}
    plain, _ = kid_from_features(x, y, **kw)
    by_volume, _ = kid_from_features(x, y, **kw, x_groups=groups, y_groups=y_groups)
    moved, _ = kid_from_features(shifted, y, **kw, x_groups=groups, y_groups=y_groups)
    assert plain > 0.5 * moved  # the bias is as large as a real shift
    assert abs(by_volume) < 0.1 * moved
    # Without repeated groups the two estimators agree exactly.
    ind = np.arange(vols * per)
    assert kid_from_features(y, x, **kw, x_groups=ind, y_groups=ind)[0] == pytest.approx(
        kid_from_features(y, x, **kw)[0]
    )


def test_histogram_distance_known_value():
    gen = [np.full((4, 4, 4), 0.25)]
    ref = [np.full((4, 4, 4), 0.75)]
    assert histogram_distance(gen, ref) == pytest.approx(0.5)
    assert histogram_distance(gen, gen) == pytest.approx(0.0)


@pytest.mark.parametrize("n, m, f", [(120, 80, 6), (60, 40, 48), (12, 9, 300)])
def test_monai_fid_parity_with_eigh_formula(n, m, f):
    """Full rank, rank-deficient, and fewer samples than features (the span basis)."""
    rng = np.random.default_rng(f)
    mix = rng.normal(size=(f, f)) / np.sqrt(f)
    x = rng.normal(size=(n, f)) @ mix
    y = 1.3 * rng.normal(size=(m, f)) @ mix + 0.2
    assert fid_from_features(x, y) == pytest.approx(eigh_fid(x, y), rel=1e-6)


@pytest.mark.parametrize("n, f", [(200, 5), (10, 64)])
def test_fid_of_a_set_with_itself_is_zero_and_shifted_sets_match_the_closed_form(n, f):
    """y = a x + d: means differ by (1 - a) mu - d, covariance a^2 S, so
    FID = ||(1 - a) mu - d||^2 + (1 - a)^2 Tr(S) exactly; a = 1 is a shifted copy, ||d||^2."""
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, f)) * rng.uniform(0.5, 2.0, f) + rng.normal(size=f)
    d = rng.normal(size=f)
    assert fid_from_features(x, x) == pytest.approx(0.0, abs=1e-6 * f)
    assert fid_from_features(x, x + d) == pytest.approx(d @ d, rel=1e-6)
    a = 0.6
    diff = (1 - a) * x.mean(0) - d
    expected = diff @ diff + (1 - a) ** 2 * np.trace(np.cov(x, rowvar=False))
    assert fid_from_features(x, a * x + d) == pytest.approx(expected, rel=1e-6)
    # Two Gaussians given by their parameters: ||mu1 - mu2||^2 + sum (s1 - s2)^2 (diagonal).
    s1, s2 = rng.uniform(0.5, 2, f), rng.uniform(0.5, 2, f)
    mu = rng.normal(size=f)
    closed = mu @ mu + ((s1 - s2) ** 2).sum()
    fd = frechet_distance(np.zeros(f), np.diag(s1**2), mu, np.diag(s2**2))
    assert fd == pytest.approx(closed, rel=1e-6)


def test_fid_rejects_mismatched_features():
    with pytest.raises(ValueError):
        fid_from_features(np.zeros((4, 3)), np.zeros((4, 2)))


def test_monai_mmd_parity_with_linear_kernel_formula():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 5)), rng.normal(0.5, 1.0, size=(30, 5))
    mean, std = mmd_from_features(x, y, subsets=7)
    assert mean == pytest.approx(linear_mmd(x, y), rel=1e-9) and std == 0.0  # equal sizes
    # Unequal sizes: equal-size subsets of the larger set, each the formula's value.
    big = rng.normal(0.5, 1.0, size=(90, 5))
    mean, std = mmd_from_features(big, y, subsets=5, seed=3)
    pick = np.random.default_rng(3)
    expected = []
    for _ in range(5):
        ix = np.sort(pick.choice(90, 30, replace=False))
        iy = np.sort(pick.choice(30, 30, replace=False))
        expected.append(linear_mmd(big[ix], y[iy]))
    assert mean == pytest.approx(np.mean(expected), rel=1e-9)
    assert std == pytest.approx(np.std(expected), rel=1e-9)
    # Unbiased: ||mu_x - mu_y||^2 on average; near 0 for one distribution.
    shifted = mmd_from_features(rng.normal(size=(400, 4)), rng.normal(1, 1, size=(400, 4)))[0]
    same = mmd_from_features(rng.normal(size=(400, 4)), rng.normal(size=(400, 4)))[0]
    assert shifted == pytest.approx(4.0, rel=0.15) and abs(same) < 0.05
    with pytest.raises(ValueError):
        mmd_from_features(np.zeros((1, 3)), np.zeros((5, 3)))


def test_fid_with_a_scipy_whose_sqrtm_has_no_disp(monkeypatch):
    """SciPy 1.18 removed ``sqrtm(disp=...)``, which MONAI 1.6's FID passes: with such a SciPy
    the distance is the same as with the original ``sqrtm``."""
    import scipy.linalg

    from lift3d.metrics import distribution

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(40, 6)), rng.normal(0.5, 1.2, size=(30, 6))
    expected = distribution.fid_from_features(x, y)
    original = distribution._SCIPY_SQRTM

    def sqrtm_without_disp(a, blocksize=64):
        return original(a)

    monkeypatch.setattr(scipy.linalg, "sqrtm", sqrtm_without_disp)
    monkeypatch.setattr(distribution, "_SCIPY_SQRTM", sqrtm_without_disp)
    monkeypatch.setattr(distribution, "SQRTM_HAS_DISP", False)
    with pytest.raises(TypeError):
        sqrtm_without_disp(np.eye(2), disp=False)
    assert distribution.fid_from_features(x, y) == pytest.approx(expected, rel=1e-9)
    assert scipy.linalg.sqrtm is sqrtm_without_disp  # restored after the call


def test_zgrad_ratio_sets_known_values():
    """A volume whose slices alternate 0.4 / 0.6 changes by 0.2 per slice; one that ramps by
    0.1 per slice changes half as much; background differences do not count."""
    d = 8
    flicker = np.zeros((d, 4, 4), np.float32)
    flicker[:, 1:3, 1:3] = np.where(np.arange(d) % 2 == 0, 0.4, 0.6)[:, None, None]
    ramp = np.zeros((d, 4, 4), np.float32)
    ramp[:, 1:3, 1:3] = (0.1 + 0.1 * np.arange(d))[:, None, None] / 1.0
    ramp = np.clip(ramp, 0, 1)
    assert zgrad_ratio_sets([flicker], [flicker]) == pytest.approx(1.0)
    assert zgrad_ratio_sets([ramp], [flicker]) == pytest.approx(0.5, rel=1e-5)
    assert zgrad_ratio_sets([flicker, flicker], [ramp]) == pytest.approx(2.0, rel=1e-5)
    assert np.isnan(zgrad_ratio_sets([flicker], [np.zeros((d, 4, 4), np.float32)]))
