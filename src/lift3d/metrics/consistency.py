"""Through-plane coherence metrics: what LiFT's z-mixer / trajectory mapper must improve.

A 2D slice model can match every axial slice and still flicker from slice to slice; that shows in
the coronal and sagittal reformats and in the slice-to-slice differences. Definitions (DATA.md):

- Slice axis: the volume's axial world axis. The arrays are RAS-ordered (callers reorient
  them first, losslessly, e.g. :func:`lift3d.evaluation.paired.ras_coherence_metrics`), so array
  axis 0 = R (sagittal slices), 1 = A (coronal slices), 2 = S (axial slices).
- Per-plane PSNR / SSIM: for each plane, the mean over the 2D slices along that plane's axis of
  the slice-wise PSNR / SSIM inside the mask; slices with no mask voxels are skipped. Slice PSNR
  uses the MSE over the slice's mask voxels; slice SSIM is the 2D SSIM map (scikit-image defaults,
  7x7 window) averaged over the slice's mask voxels, optionally excluding `crop` pixels at the
  in-plane borders (3 for SynthRAD, as the 3D definition does).
- z-gradient error: mean |dz(pred) - dz(target)| over voxel pairs whose both voxels are in the
  mask, dz = difference of neighbouring axial slices. z-gradient ratio: mean |dz(pred)| / mean
  |dz(target)| over the same pairs (1.0 = no added flicker, > 1 = flicker, < 1 = over-smoothed).
- Δz MAE (the LiFT paper's name for the same quantity as the z-gradient error): mean
  |dz(pred) - dz(target)| over the voxel pairs whose both voxels are in the mask, in the target's
  units per slice. Δz correlation: Pearson correlation of dz(pred) and dz(target) over those pairs
  (1 = the prediction's slice-to-slice changes follow the reference's; NaN when either difference
  is constant there or fewer than two pairs count).
- z error profile: mean |pred - target| inside the mask of each axial slice (NaN where a slice has
  no mask voxels), for plots.

All functions take the *prepared* pair of the task (SynthRAD: HU clipped to [-1024, 3000] with the
outside of the mask at -1024, data range 4024; BraSyn: [0, 1] after normalisation, data range 1),
so the numbers are on the same scale as the task's volume metrics.
"""

from __future__ import annotations

import numpy as np

from lift3d.constants import RAS_PLANE_AXIS
from lift3d.metrics.image import psnr_from_mse, ssim_map

AXIAL_AXIS = RAS_PLANE_AXIS["axial"]  # the slice axis of a RAS-ordered array


def _per_slice_mean(values: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    """Mean of `values` over `weights` (bool) within each slice along `axis`; NaN if empty."""
    other = tuple(a for a in range(values.ndim) if a != axis)
    count = weights.sum(axis=other)
    total = np.where(weights, values, 0.0).sum(axis=other)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def plane_psnr(
    pred: np.ndarray, target: np.ndarray, mask: np.ndarray, data_range: float, axis: int
) -> float:
    """Mean over slices along `axis` of the slice PSNR (MSE over the slice's mask voxels).

    Returns inf if some slice is reproduced exactly, NaN if no slice has mask voxels.
    """
    mask = mask > 0
    sq = (np.asarray(pred, dtype=np.float64) - np.asarray(target, dtype=np.float64)) ** 2
    mse = _per_slice_mean(sq, mask, axis)
    psnrs = [psnr_from_mse(float(m), data_range) for m in mse if not np.isnan(m)]
    return float(np.mean(psnrs)) if psnrs else float("nan")


def plane_ssim(
    pred: np.ndarray,
    target: np.ndarray,
    mask: np.ndarray,
    data_range: float,
    axis: int,
    crop: int = 0,
) -> float:
    """Mean over slices along `axis` of the 2D SSIM map averaged over the slice's mask pixels.

    Args:
        pred, target: (I, J, K) prepared images.
        mask: (I, J, K) region.
        data_range: SSIM data range.
        axis: the slice axis (0, 1 or 2).
        crop: pixels excluded at each in-plane border.
    """
    inplane = tuple(a for a in range(3) if a != axis)
    smap = ssim_map(pred, target, data_range, axes=inplane)
    region = mask > 0
    if crop > 0:
        inner = np.zeros_like(region)
        idx = [slice(None)] * 3
        for a in inplane:
            idx[a] = slice(crop, -crop)
        inner[tuple(idx)] = True
        region = region & inner
    return _nanmean(_per_slice_mean(smap, region, axis))


def plane_metrics(
    pred: np.ndarray,
    target: np.ndarray,
    mask: np.ndarray,
    data_range: float,
    crop: int = 0,
) -> dict[str, float]:
    """``psnr_<plane>`` and ``ssim_<plane>`` for axial, coronal, sagittal (RAS-ordered arrays)."""
    out: dict[str, float] = {}
    for plane, axis in RAS_PLANE_AXIS.items():
        out[f"psnr_{plane}"] = plane_psnr(pred, target, mask, data_range, axis)
    for plane, axis in RAS_PLANE_AXIS.items():
        out[f"ssim_{plane}"] = plane_ssim(pred, target, mask, data_range, axis, crop)
    return out


def zgrad_metrics(
    pred: np.ndarray, target: np.ndarray, mask: np.ndarray, axis: int = AXIAL_AXIS
) -> dict[str, float]:
    """``zgrad_error`` (image units per slice) and ``zgrad_ratio`` along the slice `axis`.

    A difference between slices k and k+1 counts when both of its voxels are in the mask.
    """
    dp, dt = z_differences(pred, target, mask, axis)
    if not dp.size:
        return {"zgrad_error": float("nan"), "zgrad_ratio": float("nan")}
    err = float(np.abs(dp - dt).mean())
    mag_t = float(np.abs(dt).mean())
    mag_p = float(np.abs(dp).mean())
    ratio = mag_p / mag_t if mag_t > 0 else float("nan")
    return {"zgrad_error": err, "zgrad_ratio": ratio}


def z_differences(
    pred: np.ndarray, target: np.ndarray, mask: np.ndarray, axis: int = AXIAL_AXIS
) -> tuple[np.ndarray, np.ndarray]:
    """First differences along the slice `axis` of pred and target where both voxels are masked.

    Args:
        pred, target: (I, J, K) images (any units).
        mask: (I, J, K) region (nonzero = inside).
        axis: the slice axis.

    Returns:
        (dz_pred, dz_target): (P,) float64 slice-to-slice differences (slice k+1 minus slice k)
        at the P voxel pairs whose both voxels are in the mask, in the same order.
    """
    m = np.asarray(mask) > 0
    dp = np.diff(np.asarray(pred, dtype=np.float64), axis=axis)
    dt = np.diff(np.asarray(target, dtype=np.float64), axis=axis)
    n = m.shape[axis]
    pair = np.take(m, range(n - 1), axis=axis) & np.take(m, range(1, n), axis=axis)
    return dp[pair], dt[pair]


def dz_metrics(
    pred: np.ndarray, target: np.ndarray, mask: np.ndarray, axis: int = AXIAL_AXIS
) -> dict[str, float]:
    """The LiFT paper's through-plane coherence: ``dz_mae`` and ``dz_corr`` along `axis`.

    Args:
        pred, target: (I, J, K) images in the target's units (HU for CT).
        mask: (I, J, K) region; a first difference counts where both of its voxels are inside.
        axis: the slice axis.

    Returns:
        ``dz_mae``: mean |dz(pred) - dz(target)| (target units per slice; lower is better);
        ``dz_corr``: Pearson correlation of dz(pred) and dz(target) (higher is better; NaN if
        either is constant or fewer than two pairs count). Both NaN without pairs.
    """
    dp, dt = z_differences(pred, target, mask, axis)
    if not dp.size:
        return {"dz_mae": float("nan"), "dz_corr": float("nan")}
    mae = float(np.abs(dp - dt).mean())
    cp, ct = dp - dp.mean(), dt - dt.mean()
    denom = float(np.sqrt((cp * cp).sum() * (ct * ct).sum()))
    corr = float((cp * ct).sum() / denom) if dp.size > 1 and denom > 0 else float("nan")
    return {"dz_mae": mae, "dz_corr": corr}


def z_error_profile(
    pred: np.ndarray, target: np.ndarray, mask: np.ndarray, axis: int = AXIAL_AXIS
) -> np.ndarray:
    """(K,) mean |pred - target| inside the mask of each slice along `axis`; NaN if none."""
    err = np.abs(np.asarray(pred, dtype=np.float64) - np.asarray(target, dtype=np.float64))
    return _per_slice_mean(err, np.asarray(mask) > 0, axis)


def coherence_metrics(
    pred: np.ndarray,
    target: np.ndarray,
    mask: np.ndarray,
    data_range: float,
    *,
    crop: int = 0,
) -> tuple[dict[str, float], np.ndarray]:
    """All coherence metrics of one prepared pair, plus the axial error profile.

    Args:
        pred, target: (R, A, S) prepared images, RAS-ordered.
        mask: (R, A, S) region.
        data_range: intensity range for PSNR / SSIM.
        crop: in-plane border crop for the per-slice SSIM.

    Returns:
        (metrics, profile): the 6 ``psnr_/ssim_<plane>``, ``zgrad_error``, ``zgrad_ratio``,
        ``dz_mae``, ``dz_corr`` values and the (K,) per-axial-slice mean absolute error,
        inferior to superior.
    """
    metrics = plane_metrics(pred, target, mask, data_range, crop)
    metrics.update(zgrad_metrics(pred, target, mask, AXIAL_AXIS))
    metrics.update(dz_metrics(pred, target, mask, AXIAL_AXIS))
    return metrics, z_error_profile(pred, target, mask, AXIAL_AXIS)
