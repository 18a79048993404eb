"""Intensity map: G's foreground intensities put on the training data's distribution.

G's foreground histogram is not the data's: on the 64^3 phantom its first octile of normalised
foreground intensities sat at 0.06-0.09 against the data's 0.11 (three training seeds) and its
median above the data's (0.52 vs 0.49, one seed): more dark voxels (its stripes) and a brighter
middle. After ``lift3d train generate`` the calibration
(`lift3d.inference.detail.calibrate_model`, beside the noise level) measures the quantiles of
both distributions:

- each volume, real (as stored) or the arm's sample (restored to the reference grid), is
  normalised by the 0.5 / 99.5 percentiles of its own foreground (non-zero voxels), clipped to
  [0, 1], as preprocessing and the evaluation normalise;
- the pooled foreground values of each side give :data:`MAP_LEVELS` quantiles.

``lift3d generate --intensity-map`` then maps every sample's foreground through the monotone
piecewise-linear curve from the arm's quantiles to the data's (in the sample's own normalised
units, which are put back afterwards); the background stays 0. This is histogram matching to the training set, the
intensity standardisation MR pipelines apply to scans from different scanners (Nyul & Udupa
1999), learned once from training data and G's own samples: no held-out volume is involved,
and each arm (LiFT, ``--no-mapper``) gets a curve from its own samples (64 per arm), so neither
is fitted on the other's. One global monotone curve changes no shape and no order of
intensities within a sample; it cannot add a ventricle that G did not draw.

Applied by default for models whose config says so (``detail.sample_intensity_map``: the
shipped ``generate_demo`` and ``generate_brats``). Alone, on the phantom (three training seeds x
three held-out sets), it brings the histogram distance from 4-7x to 1.2-1.7x the real-vs-real
floor while per-plane FID follows G (lower for one seed, higher for one;
docs/journal/2026-11-28-intensity-map.md); followed by the output detail
(`lift3d.inference.detail`), every per-plane FID, the increments and the histogram distance are
lower than raw for all three seeds on two sets (docs/journal/2026-11-28-detail-and-map.md).

MR modalities only: CT intensities are absolute (HU) and their background is not zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# Quantile levels of the map (evenly spaced on [0, 1]).
MAP_LEVELS = 129
# Foreground voxels per volume that enter the pooled quantiles, at most (evenly strided).
MAX_VOXELS_PER_VOLUME = 200_000
# Percentiles of a volume's foreground that become 0 and 1 (as in preprocessing).
WINDOW_PERCENTILES = (0.5, 99.5)


def normalised_foreground(array: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The foreground (``!= 0``) values of `array` on its own window, and the window.

    Returns:
        (values (float64, flat, in voxel order; 0 and 1 at the window's ends, outside it below
        0 or above 1), low, high): ``low`` / ``high`` are the :data:`WINDOW_PERCENTILES` of the
        foreground. An empty or flat foreground gives an empty array and ``high == low``.
    """
    values = np.asarray(array, dtype=np.float64)
    fg = values[values != 0]
    if fg.size == 0:
        return fg, 0.0, 0.0
    low, high = (float(p) for p in np.percentile(fg, WINDOW_PERCENTILES))
    if high <= low:
        return np.empty(0), low, high
    return (fg - low) / (high - low), low, high


def foreground_values(array: np.ndarray) -> np.ndarray:
    """The values of one volume that enter the pooled quantiles: its normalised foreground
    clipped to [0, 1], at most :data:`MAX_VOXELS_PER_VOLUME` of them (evenly strided)."""
    values = np.clip(normalised_foreground(array)[0], 0.0, 1.0)
    step = max(1, values.size // MAX_VOXELS_PER_VOLUME)
    return values[::step]


def pooled_quantiles(parts: Sequence[np.ndarray], levels: int = MAP_LEVELS) -> np.ndarray:
    """(levels,) quantiles of the pooled :func:`foreground_values` of several volumes.

    Raises:
        ValueError: no volume has a foreground.
    """
    pooled = np.concatenate(list(parts)) if len(parts) else np.empty(0)
    if pooled.size == 0:
        raise ValueError("no foreground voxels to calibrate the intensity map on")
    return np.quantile(pooled, np.linspace(0.0, 1.0, levels))


def calibrate_intensity_map(
    real: Sequence[np.ndarray], generated: Sequence[np.ndarray], levels: int = MAP_LEVELS
) -> dict[str, Any]:
    """The map from G's foreground intensity distribution to the data's.

    Args:
        real: training volumes (any units; background 0), or their :func:`foreground_values`.
        generated: G's samples on the reference grid (background 0), or their
            :func:`foreground_values` (so many samples need not be held at once).
        levels: quantile levels.

    Returns:
        ``{"generated": [...], "real": [...], "levels", "n_real", "n_generated", "space"}``:
        the quantiles (normalised units) of both sides at the same levels.
    """
    if not len(real) or not len(generated):
        raise ValueError("the intensity map needs at least one real and one generated volume")

    def values(items: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [v if np.ndim(v) == 1 else foreground_values(v) for v in items]

    return {
        "generated": [float(q) for q in pooled_quantiles(values(generated), levels)],
        "real": [float(q) for q in pooled_quantiles(values(real), levels)],
        "levels": int(levels),
        "n_real": len(real),
        "n_generated": len(generated),
        "space": "foreground on its own 0.5 / 99.5 percentile window, clipped to [0, 1]",
    }


def apply_intensity_map(array: np.ndarray, record: dict[str, Any]) -> np.ndarray:
    """`array` with its foreground (``!= 0``) mapped through `record`'s curve.

    The foreground is normalised on its own window (:func:`normalised_foreground`), mapped from
    the generated quantiles to the real ones (piecewise linear, monotone; the 1 % of voxels
    outside the window keep their distance to its ends) and put back on the same window; the
    background stays exactly 0. A sample without a foreground window is
    returned as it is. Integer arrays are rounded back to their dtype.
    """
    values = np.asarray(array)
    x, low, high = normalised_foreground(values)
    if x.size == 0:
        return array
    src = np.asarray(record["generated"], dtype=np.float64)
    dst = np.asarray(record["real"], dtype=np.float64)
    # np.interp needs increasing sample points: ties (flat stretches of G's quantiles) are
    # separated by a negligible amount.
    src = np.maximum.accumulate(src + np.arange(src.size) * 1e-12)
    y = np.interp(x, src, dst)
    y = np.where(x < src[0], dst[0] + (x - src[0]), y)
    y = np.where(x > src[-1], dst[-1] + (x - src[-1]), y)
    mapped = low + y * (high - low)
    fg = values != 0
    out = values.copy()
    if np.issubdtype(values.dtype, np.integer):
        info = np.iinfo(values.dtype)
        # a mapped foreground voxel stays foreground (MR: the background is exactly 0)
        least = 1 if low > 0 else info.min
        out[fg] = np.clip(np.rint(mapped), least, info.max).astype(values.dtype)
        return out
    if low > 0:
        mapped = np.maximum(mapped, np.finfo(np.float32).tiny)
    out = out.astype(np.float32) if not np.issubdtype(values.dtype, np.floating) else out
    out[fg] = mapped
    return out
