"""Distribution distances between feature sets: Frechet distance, KID, MMD, increments, histograms.

Pure maths on arrays (LiFT, arXiv 2605.19060; DATA.md); the features come from the evaluation
encoder of :mod:`lift3d.evaluation.encoder` or the pretrained networks of
:mod:`lift3d.evaluation.extractors`, the volumes from :mod:`lift3d.evaluation.generation`.
All distances are lower-is-better.

- Frechet distance between Gaussian fits of two feature sets (Heusel et al. 2017): MONAI's
  ``FIDMetric`` (tests: parity with an eigenvalue formula to 1e-6, closed forms of shifted and
  scaled sets); with fewer samples than features both sets are first written in an orthonormal
  basis of their span, which leaves the distance unchanged and keeps ``sqrtm`` small.
- MMD: MONAI's ``MMDMetric`` (unbiased, linear kernel; it needs sets of equal size), averaged
  over seeded random subsets of ``min(N, M)`` samples of each set.
- KID: unbiased MMD^2 with the cubic polynomial kernel ``k(x, y) = (x.y / F + 1)^3`` averaged
  over random subsets (Binkowski et al. 2018); optionally leaving out pairs from one volume.
  Our own: MONAI has no KID (its MMDMetric has a fixed linear kernel and no grouping).
- Increment distance: Frechet distance between the distributions of feature increments
  ``f(slice m+1) - f(slice m)``, divided by the trace of the reference increments' covariance
  (scale-free). Stacked independent slices have much larger increments than real anatomy.
- Histogram distance: Wasserstein-1 distance between foreground intensity histograms
  (64 bins on [0, 1]).

Feature scale (:func:`reference_scaled`): features are centred on the reference mean and divided
by ONE global scale (the RMS of the centred reference features), so the polynomial kernel sees
O(1) values whatever the encoder's magnitude while the encoder's own weighting of feature
dimensions is kept; z-scoring every dimension instead lets low-variance dimensions' sampling noise
dominate KID (docs/journal/2026-11-25-generation-32-evaluator.md).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import scipy.linalg
import torch
from monai.metrics import FIDMetric, MMDMetric
from monai.metrics.fid import compute_frechet_distance
from scipy.linalg import LinAlgWarning

from lift3d.constants import FOREGROUND_LEVEL

# ------------------------------------------------------------------ distances on features


def _sqrtm_with_disp(a: Any, disp: bool = True, blocksize: int = 64) -> Any:
    """``scipy.linalg.sqrtm`` as SciPy < 1.18 had it: ``disp=False`` also returns the relative
    Frobenius error of the root. MONAI 1.6's FID passes ``disp=False``, which SciPy 1.18
    removed."""
    root = _SCIPY_SQRTM(a)
    if disp:
        return root
    a = np.asarray(a)
    return root, float(np.linalg.norm(root @ root - a) / max(np.linalg.norm(a), 1e-300))


_SCIPY_SQRTM = scipy.linalg.sqrtm
SQRTM_HAS_DISP = "disp" in inspect.signature(_SCIPY_SQRTM).parameters


@contextmanager
def _quiet_sqrtm() -> Iterator[None]:
    """Silence SciPy's sqrtm notes inside MONAI's FID: singular products are expected with
    fewer samples than features (the result is checked against the eigenvalue formula), and
    the ``disp`` deprecation is MONAI's call. With a SciPy whose ``sqrtm`` has no ``disp``,
    MONAI's call goes to `_sqrtm_with_disp` for the duration."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=LinAlgWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*disp.*")
        warnings.filterwarnings("ignore", category=RuntimeWarning, message="invalid value")
        if SQRTM_HAS_DISP:
            yield
            return
        scipy.linalg.sqrtm = _sqrtm_with_disp
        try:
            yield
        finally:
            scipy.linalg.sqrtm = _SCIPY_SQRTM


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`` between two Gaussians (MONAI's
    ``compute_frechet_distance``, float64), clipped at 0 against round-off.

    Args:
        mu1, mu2: (F,) means.
        sigma1, sigma2: (F, F) covariances.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape[0] == 1:  # SciPy's sqrtm returns a 1x1 root without the tuple MONAI unpacks
        mu1, mu2 = np.pad(mu1, (0, 1)), np.pad(mu2, (0, 1))
        s1, s2 = np.pad(s1, ((0, 1), (0, 1))), np.pad(s2, ((0, 1), (0, 1)))
    with _quiet_sqrtm():
        value = compute_frechet_distance(*(torch.from_numpy(a) for a in (mu1, s1, mu2, s2)))
    return float(max(float(value), 0.0))


def _span_basis(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`x`, `y` centred on y's mean and written in an orthonormal basis of their span.

    Both covariances and the mean difference lie in the span of ``{x_i - mean(y), y_j -
    mean(y)}``, so the Frechet distance is the same in these N + M coordinates as in the F
    original ones; it only pays when N + M < F (2048 pretrained features, a few volumes).
    """
    c = y.mean(0)
    q, _ = np.linalg.qr(np.concatenate([x - c, y - c]).T)  # (F, N + M), orthonormal columns
    return (x - c) @ q, (y - c) @ q


def fid_from_features(x: np.ndarray, y: np.ndarray) -> float:
    """Frechet distance between feature sets (N, F) and (M, F) with MONAI's ``FIDMetric``
    (sample covariances, ddof=1), clipped at 0 against round-off."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"FID needs (N, F) and (M, F) features, got {x.shape} and {y.shape}")
    if x.shape[0] + y.shape[0] < x.shape[1]:
        x, y = _span_basis(x, y)
    if x.shape[1] == 1:  # FIDMetric squeezes a 1x1 covariance to a scalar; a zero column is free
        x, y = np.pad(x, ((0, 0), (0, 1))), np.pad(y, ((0, 0), (0, 1)))
    with _quiet_sqrtm():
        value = FIDMetric()(torch.from_numpy(x), torch.from_numpy(y))
    return float(max(float(value), 0.0))


def mmd_from_features(
    x: np.ndarray, y: np.ndarray, subsets: int = 20, seed: int = 0
) -> tuple[float, float]:
    """Unbiased linear-kernel MMD with MONAI's ``MMDMetric`` over random equal-size subsets.

    ``MMDMetric`` takes two sets of the same size; each subset draws ``min(N, M)`` samples
    without replacement from each set (all of the smaller one).

    Args:
        x: (N, F) generated features.
        y: (M, F) reference features.
        subsets: number of random subsets (one when N == M: they would all be equal).
        seed: subset RNG seed.

    Returns:
        (mean, std) over subsets.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    size = min(x.shape[0], y.shape[0])
    if size < 2:
        raise ValueError("MMD needs at least 2 samples in each set")
    metric = MMDMetric()
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(1 if x.shape[0] == y.shape[0] else subsets):
        ix = np.sort(rng.choice(x.shape[0], size, replace=False))
        iy = np.sort(rng.choice(y.shape[0], size, replace=False))
        values.append(float(metric(torch.from_numpy(y[iy]), torch.from_numpy(x[ix]))))
    return float(np.mean(values)), float(np.std(values))


def _poly_mmd2(
    x: np.ndarray,
    y: np.ndarray,
    gx: np.ndarray | None = None,
    gy: np.ndarray | None = None,
) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / F + 1)^3.

    `gx` / `gy` give each sample's group (its volume). The within-set means then leave out
    every pair from the same group, not only i = j: slices of one volume are not independent
    draws (neighbouring cuts of a coherent volume are alike), and counting their pairs would
    bias MMD^2 upward the more coherent the volumes are and the fewer volumes there are.
    """
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3

    def within(k: np.ndarray, g: np.ndarray | None) -> float:
        n = k.shape[0]
        if g is None:
            return float((k.sum() - np.trace(k)) / (n * (n - 1)))
        keep = g[:, None] != g[None, :]
        if not keep.any():
            raise ValueError("KID by volume needs samples from at least 2 volumes per set")
        return float(k[keep].mean())

    return float(within(kxx, gx) + within(kyy, gy) - 2 * kxy.mean())


def kid_from_features(
    x: np.ndarray,
    y: np.ndarray,
    subsets: int = 20,
    subset_size: int = 200,
    seed: int = 0,
    x_groups: np.ndarray | None = None,
    y_groups: np.ndarray | None = None,
) -> tuple[float, float]:
    """Kernel inception distance: mean and std of the unbiased polynomial MMD^2 over subsets.

    Args:
        x: (N, F) generated features.
        y: (M, F) reference features.
        subsets: number of random subsets.
        subset_size: samples per subset (capped at min(N, M)).
        seed: subset RNG seed.
        x_groups, y_groups: (N,), (M,) volume index of each sample, or None (independent
            samples); with groups, pairs from one volume are left out of the within-set terms
            (:func:`_poly_mmd2`).

    Returns:
        (mean, std) over subsets.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    size = min(subset_size, x.shape[0], y.shape[0])
    if size < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        ix = rng.choice(x.shape[0], size, replace=False)
        iy = rng.choice(y.shape[0], size, replace=False)
        values.append(
            _poly_mmd2(
                x[ix],
                y[iy],
                None if x_groups is None else np.asarray(x_groups)[ix],
                None if y_groups is None else np.asarray(y_groups)[iy],
            )
        )
    return float(np.mean(values)), float(np.std(values))


def histogram_distance(
    gen: Sequence[np.ndarray],
    ref: Sequence[np.ndarray],
    bins: int = 64,
    threshold: float = FOREGROUND_LEVEL,
) -> float:
    """Wasserstein-1 distance between foreground intensity histograms on [0, 1].

    Args:
        gen: volumes with values in [0, 1].
        ref: volumes with values in [0, 1].
        bins: histogram bins.
        threshold: voxels above it count as foreground.
    """

    def cdf(vols: Sequence[np.ndarray]) -> np.ndarray:
        hist = np.zeros(bins)
        for v in vols:
            values = v[v > threshold]
            hist += np.histogram(values, bins=bins, range=(0.0, 1.0))[0]
        return np.cumsum(hist) / max(hist.sum(), 1)

    return float(np.abs(cdf(gen) - cdf(ref)).sum() / bins)


def zgrad_ratio_sets(
    gen: Sequence[np.ndarray], ref: Sequence[np.ndarray], threshold: float = FOREGROUND_LEVEL
) -> float:
    """Through-plane gradient of a set of volumes relative to another (unpaired): the mean
    |v[k+1] - v[k]| along axis 0 over differences whose two voxels are both foreground (above
    `threshold`), pooled over each set's volumes, generated / reference. 1 = the generated
    volumes change from slice to slice as much as the references; above 1 they flicker, below
    they are smoother along depth.

    Args:
        gen: (D, H, W) volumes in [0, 1].
        ref: (D, H, W) volumes in [0, 1].
        threshold: voxels above it count as foreground.
    """

    def mean_dz(vols: Sequence[np.ndarray]) -> float:
        total, count = 0.0, 0
        for v in vols:
            v = np.asarray(v, dtype=np.float32)
            both = (v[1:] > threshold) & (v[:-1] > threshold)
            total += float(np.abs(np.diff(v, axis=0))[both].sum())
            count += int(both.sum())
        return total / max(count, 1)

    ref_dz = mean_dz(ref)
    return mean_dz(gen) / ref_dz if ref_dz > 0 else float("nan")


def volume_index(features: np.ndarray, n_volumes: int) -> np.ndarray:
    """(N,) volume index of each row of `features` (N, F), N = n_volumes * cuts per volume.

    Raises:
        ValueError: N is not a multiple of `n_volumes`.
    """
    per = features.shape[0] // n_volumes
    if per * n_volumes != features.shape[0]:
        raise ValueError("every volume must give the same number of cuts")
    return np.repeat(np.arange(n_volumes), per)


def increment_distance(gen_inc: np.ndarray, ref_inc: np.ndarray) -> float:
    """Frechet distance of increment distributions / trace of the reference covariance.

    Args:
        gen_inc: (N, F) generated feature increments.
        ref_inc: (M, F) reference feature increments.
    """
    ref_cov = np.cov(np.asarray(ref_inc, np.float64), rowvar=False)
    return fid_from_features(gen_inc, ref_inc) / max(float(np.trace(np.atleast_2d(ref_cov))), 1e-12)


def reference_scaled(ref: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """Centre features on the reference mean and divide by one global scale.

    Args:
        ref: (M, F) reference features.
        others: (N, F) feature sets to put on the same scale.

    Returns:
        (ref, *others) scaled; the scale is the RMS of the centred reference features.
    """
    mu = ref.mean(0)
    scale = float(np.sqrt(((ref - mu) ** 2).mean())) + 1e-12
    return tuple((f - mu) / scale for f in (ref, *others))


def plane_distances(
    gen_feats: np.ndarray,
    ref_feats: np.ndarray,
    gen_incs: np.ndarray,
    ref_incs: np.ndarray,
    *,
    n_gen: int,
    n_ref: int,
    rng: np.random.Generator,
    kid_subsets: int = 20,
    kid_subset_size: int = 200,
    bootstrap: int = 10,
    seed: int = 0,
    kid_by_volume: bool = True,
) -> dict[str, float]:
    """FID, KID and increment distance of one plane's slice features.

    Args:
        gen_feats: (n_gen * M, F) generated slice features, M cuts per volume, volume-major.
        ref_feats: (n_ref * M', F) reference slice features.
        gen_incs: (n_gen * M, F) generated feature increments along the plane's axis.
        ref_incs: (n_ref * M', F) reference increments.
        n_gen: number of generated volumes.
        n_ref: number of reference volumes.
        rng: draws the bootstrap resamples of the generated volumes.
        kid_subsets: KID subsets.
        kid_subset_size: samples per KID subset.
        bootstrap: bootstrap resamples for the FID spread (0: none).
        seed: KID subset seed.
        kid_by_volume: leave pairs from one volume out of KID's within-set terms; False gives the
            textbook estimator over all slice pairs.

    Returns:
        {"fid", "fid_std" (std over bootstrap resamples), "kid", "kid_std" (std over subsets),
        "increment_distance"}, on reference-scaled features (:func:`reference_scaled`).
    """
    rf, gf = reference_scaled(ref_feats, gen_feats)
    out = {"fid": fid_from_features(gf, rf)}
    per_vol = gf.reshape(n_gen, -1, gf.shape[1])
    boots = [
        fid_from_features(per_vol[rng.integers(0, n_gen, n_gen)].reshape(-1, gf.shape[1]), rf)
        for _ in range(bootstrap)
    ]
    out["fid_std"] = float(np.std(boots)) if boots else 0.0
    groups = (volume_index(gf, n_gen), volume_index(rf, n_ref)) if kid_by_volume else ()
    out["kid"], out["kid_std"] = kid_from_features(
        gf, rf, kid_subsets, kid_subset_size, seed, *groups
    )
    out["increment_distance"] = increment_distance(gen_incs, ref_incs)
    return out
