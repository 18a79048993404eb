"""Image-fidelity metrics for paired synthesis: SynthRAD2023 task 1 (MR -> CT) and BraSyn-style MR.

SynthRAD2023 (Huijben et al., "Generating synthetic computed tomography for radiotherapy:
SynthRAD2023 challenge report", MedIA 2024), reproduced exactly as its evaluation code defines them:

- MAE: mean |ct - sct| over mask voxels, in HU (no clipping).
- PSNR: both images clipped to [-1024, 3000] HU, data range 4024, over mask voxels.
- SSIM: both clipped, voxels outside the mask set to -1024, both shifted by +1024, 3D SSIM map
  with scikit-image defaults (7^3 uniform window, sample covariance, K1 = 0.01, K2 = 0.03,
  reflect padding, data range 4024), averaged over mask voxels after cropping 3 voxels from every
  border.

BraSyn (BraTS 2023 missing-MRI synthesis; the convention cWDM reports): each image is clipped to
the 0.5 / 99.5 percentiles of its own intensities and scaled to [0, 1]; the metrics are computed on
that scale over the brain region. See :func:`normalise_mr` and :func:`brasyn_metrics` for the
exact choices.

The SSIM map is computed here with SciPy's ``uniform_filter`` (the same operations, in float64, as
``skimage.metrics.structural_similarity``); the tests check parity with scikit-image to 1e-6.
Our own, not MONAI's ``SSIMMetric``: that one averages over valid window positions only, with
population variances, so it cannot give the challenges' reflect-padded, sample-covariance map
averaged over a mask (MONAI's metric serves the diversity score, :mod:`lift3d.metrics.diversity`).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter

from lift3d.constants import HU_MAX, HU_MIN, MR_PERCENTILES

HU_RANGE = HU_MAX - HU_MIN  # 4024, the SynthRAD data range
SSIM_WIN = 7  # scikit-image default window
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SYNTHRAD_SSIM_CROP = 3  # voxels cropped from every border before averaging (SynthRAD)


def _as_mask(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise ValueError(f"mask shape {mask.shape} differs from image shape {tuple(shape)}")
    return mask > 0


def _check_pair(pred: np.ndarray, target: np.ndarray) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference {target.shape}")


def ssim_map(
    x: np.ndarray,
    y: np.ndarray,
    data_range: float,
    axes: tuple[int, ...] | None = None,
) -> np.ndarray:
    """SSIM map with scikit-image's default settings, over the given axes.

    With ``axes=None`` this equals ``structural_similarity(x, y, data_range=..., full=True)[1]``
    for an N-D array. With a subset of axes the window spans only those axes (size 1 along the
    others), so e.g. ``axes=(0, 1)`` gives the 2D SSIM map of every slice ``x[:, :, k]`` at once.

    Args:
        x: image, any shape; each windowed axis must be at least 7 long.
        y: image of the same shape.
        data_range: intensity range R (C1 = (0.01 R)^2, C2 = (0.03 R)^2).
        axes: axes the 7-voxel uniform window spans; default all.

    Returns:
        float64 array of x's shape: the local SSIM at every voxel.
    """
    _check_pair(x, y)
    axes = tuple(range(x.ndim)) if axes is None else tuple(a % x.ndim for a in axes)
    for a in axes:
        if x.shape[a] < SSIM_WIN:
            raise ValueError(f"SSIM needs >= {SSIM_WIN} voxels along axis {a}, got {x.shape[a]}")
    size = tuple(SSIM_WIN if a in axes else 1 for a in range(x.ndim))
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    num = SSIM_WIN ** len(axes)
    cov_norm = num / (num - 1)  # sample covariance, as scikit-image's default

    def filt(a: np.ndarray) -> np.ndarray:
        return uniform_filter(a, size=size, mode="reflect")

    ux, uy = filt(x), filt(y)
    vx = cov_norm * (filt(x * x) - ux * ux)
    vy = cov_norm * (filt(y * y) - uy * uy)
    vxy = cov_norm * (filt(x * y) - ux * uy)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))


def psnr_from_mse(mse: float, data_range: float) -> float:
    """PSNR in dB for a mean squared error: ``10 log10(R^2 / mse)``; inf when mse is 0."""
    if mse <= 0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))


# --- SynthRAD2023 task 1 -------------------------------------------------------------------------


def synthrad_mae(pred_hu: np.ndarray, target_hu: np.ndarray, mask: np.ndarray | None) -> float:
    """SynthRAD MAE: mean |target - pred| over mask voxels, in HU (no clipping).

    Args:
        pred_hu: (I, J, K) synthetic CT in HU.
        target_hu: (I, J, K) reference CT in HU.
        mask: (I, J, K) body mask (non-zero = inside); None for the whole volume.
    """
    _check_pair(pred_hu, target_hu)
    m = _as_mask(mask, target_hu.shape)
    diff = target_hu[m].astype(np.float64) - pred_hu[m].astype(np.float64)
    return float(np.abs(diff).mean())


def synthrad_psnr(pred_hu: np.ndarray, target_hu: np.ndarray, mask: np.ndarray | None) -> float:
    """SynthRAD PSNR in dB: both clipped to [-1024, 3000] HU, data range 4024, over mask voxels."""
    _check_pair(pred_hu, target_hu)
    m = _as_mask(mask, target_hu.shape)
    p = np.clip(pred_hu[m].astype(np.float64), HU_MIN, HU_MAX)
    t = np.clip(target_hu[m].astype(np.float64), HU_MIN, HU_MAX)
    return psnr_from_mse(float(np.mean((t - p) ** 2)), HU_RANGE)


def synthrad_prepare(
    pred_hu: np.ndarray, target_hu: np.ndarray, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The SynthRAD SSIM input: clip to [-1024, 3000], outside mask -> -1024, shift by +1024.

    Returns:
        (pred, target) float64 arrays in [0, 4024].
    """
    _check_pair(pred_hu, target_hu)
    m = _as_mask(mask, target_hu.shape)
    out = []
    for a in (pred_hu, target_hu):
        a = np.clip(np.asarray(a, dtype=np.float64), HU_MIN, HU_MAX)
        a = np.where(m, a, HU_MIN)
        out.append(a - HU_MIN)
    return out[0], out[1]


def synthrad_ssim(pred_hu: np.ndarray, target_hu: np.ndarray, mask: np.ndarray | None) -> float:
    """SynthRAD SSIM: 3D SSIM map of the prepared images averaged over the border-cropped mask."""
    p, t = synthrad_prepare(pred_hu, target_hu, mask)
    smap = ssim_map(p, t, HU_RANGE)
    m = _as_mask(mask, target_hu.shape)
    c = SYNTHRAD_SSIM_CROP
    inner = (slice(c, -c),) * smap.ndim
    m_in = m[inner]
    if not m_in.any():
        return float("nan")
    return float(smap[inner][m_in].sum() / m_in.sum())


def synthrad_metrics(
    pred_hu: np.ndarray, target_hu: np.ndarray, mask: np.ndarray | None
) -> dict[str, float]:
    """All three SynthRAD2023 task-1 metrics: ``{"mae", "psnr", "ssim"}``."""
    return {
        "mae": synthrad_mae(pred_hu, target_hu, mask),
        "psnr": synthrad_psnr(pred_hu, target_hu, mask),
        "ssim": synthrad_ssim(pred_hu, target_hu, mask),
    }


# --- BraSyn-style MR metrics ---------------------------------------------------------------------


def brain_mask(reference: np.ndarray) -> np.ndarray:
    """The brain region of a skull-stripped BraTS image: its non-zero voxels."""
    return np.asarray(reference) != 0


def normalise_mr(
    image: np.ndarray,
    region: np.ndarray,
    percentiles: tuple[float, float] = MR_PERCENTILES,
) -> np.ndarray:
    """Clip to the given percentiles of the image's own voxels in `region`, scale to [0, 1].

    Args:
        image: (I, J, K) MR intensities.
        region: (I, J, K) bool, the voxels whose percentiles set the window (the brain).
        percentiles: lower and upper percentile.

    Returns:
        float64 array in [0, 1]; a constant image maps to 0.
    """
    image = np.asarray(image, dtype=np.float64)
    values = image[region]
    if values.size == 0:
        return np.zeros_like(image)
    lo, hi = np.percentile(values, percentiles)
    if hi <= lo:
        return np.zeros_like(image)
    return (np.clip(image, lo, hi) - lo) / (hi - lo)


def brasyn_prepare(
    pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalise a BraSyn pair and zero everything outside the brain.

    Convention (the BraSyn evaluation normalises reference and prediction *individually*, each by
    its own 0.5 / 99.5 percentiles; DATA.md restricts the percentiles to brain voxels): the
    reference is normalised by the percentiles of its non-zero (brain) voxels; the prediction by
    the percentiles of its own voxels inside that same brain region. A prediction that is right up
    to a positive linear intensity change therefore scores as right, as in the challenge.

    Args:
        pred: (I, J, K) synthesised MR, any intensity scale.
        target: (I, J, K) reference MR (skull-stripped, background 0).
        mask: optional scoring region (e.g. a tumour mask); default the brain. Normalisation
            always uses the brain.

    Returns:
        (pred01, target01, region): normalised images (0 outside the brain) and the bool scoring
        region.
    """
    _check_pair(pred, target)
    brain = brain_mask(target)
    region = brain if mask is None else _as_mask(mask, target.shape)
    p = np.where(brain, normalise_mr(pred, brain), 0.0)
    t = np.where(brain, normalise_mr(target, brain), 0.0)
    return p, t, region


def brasyn_metrics(
    pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None
) -> dict[str, float]:
    """BraSyn-style ``{"psnr", "ssim", "mse"}`` on the [0, 1] scale over the brain region.

    MSE and PSNR (data range 1) use the brain voxels of the normalised images (see
    :func:`brasyn_prepare`). SSIM: 3D SSIM map (scikit-image defaults, data range 1) of the
    normalised images with the outside of the brain set to 0, averaged over brain voxels (no
    border crop; BraTS brains do not touch the volume border). The challenge's own script uses
    torchmetrics' 11-voxel Gaussian window, so absolute SSIM values can differ slightly from it.

    Args:
        pred: (I, J, K) synthesised MR.
        target: (I, J, K) reference MR, background 0.
        mask: optional scoring region; default the non-zero reference voxels (the brain).
    """
    p, t, brain = brasyn_prepare(pred, target, mask)
    if not brain.any():
        nan = float("nan")
        return {"psnr": nan, "ssim": nan, "mse": nan}
    mse = float(np.mean((p[brain] - t[brain]) ** 2))
    smap = ssim_map(p, t, 1.0)
    return {"psnr": psnr_from_mse(mse, 1.0), "ssim": float(smap[brain].mean()), "mse": mse}
