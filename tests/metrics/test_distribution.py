"""Distribution maths: known values of FID / KID / histogram distance."""

from __future__ import annotations

import numpy as np
import pytest

from lift3d.metrics.distribution import (
    fid_from_features,
    frechet_distance,
    histogram_distance,
    kid_from_features,
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
