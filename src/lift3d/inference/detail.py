"""Output detail: fine-scale noise, calibrated on the training data, added to generated volumes.

G models slices on the (coarser) model grid and its slices carry no voxel-scale texture; written
back on the reference grid they are smoother than any scan. The difference is measured by the
*high-pass energy*: the standard deviation, over the foreground, of ``v - gaussian(v, s)``
(``s`` = ``filter_sigma`` voxels on the reference grid). At the end of ``lift3d train generate``
it is measured on training volumes and on G's samples (no mapper, so the mapper cannot move it),
both relative to their intensity window, and the missing part becomes the standard deviation of
white Gaussian noise:

    sigma_rel = sqrt(max(hp_real^2 - hp_gen^2, 0)) / gain(s)

where ``gain(s)`` is the high-pass gain of unit white noise. ``lift3d generate`` adds
``sigma_rel x`` (the reference window width) of such noise to the foreground of every sample
(``--no-detail`` leaves it out). The noise is drawn from its own stream, seeded by the
generation seed and the sample index, so LiFT and the ``--no-mapper`` ablation of the same seed
get the very same noise: the comparison between them stays fair. White noise is the same in
every plane, so it adds no through-plane structure of its own.

BENCHMARKS.md (Generation, third and fourth sessions) has the measurements behind it: without
it the per-plane KID of both arms is dominated by the missing texture.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DEFAULT_FILTER_SIGMA = 1.0


def highpass_gain(filter_sigma: float = DEFAULT_FILTER_SIGMA) -> float:
    """Standard deviation of ``w - gaussian(w, filter_sigma)`` for unit white noise ``w`` (3D)."""
    from scipy.ndimage import gaussian_filter

    radius = int(np.ceil(4 * filter_sigma)) + 1
    impulse = np.zeros((2 * radius + 1,) * 3)
    impulse[radius, radius, radius] = 1.0
    kernel = gaussian_filter(impulse, filter_sigma)
    return float(np.sqrt(1.0 - 2.0 * kernel[radius, radius, radius] + np.square(kernel).sum()))


def highpass_std(
    array: np.ndarray,
    foreground: np.ndarray | None = None,
    filter_sigma: float = DEFAULT_FILTER_SIGMA,
) -> float:
    """Standard deviation of ``array - gaussian(array, filter_sigma)`` over the foreground.

    Args:
        array: a 3D volume.
        foreground: boolean mask of the same shape (default: ``array != 0``).
        filter_sigma: Gaussian width in voxels.

    Returns:
        The high-pass standard deviation (0.0 for an empty foreground).
    """
    from scipy.ndimage import gaussian_filter

    values = np.asarray(array, dtype=np.float32)
    mask = values != 0 if foreground is None else np.asarray(foreground, dtype=bool)
    if not mask.any():
        return 0.0
    return float((values - gaussian_filter(values, filter_sigma))[mask].std())


def calibrate(
    real: list[tuple[np.ndarray, float]],
    generated: list[tuple[np.ndarray, float]],
    filter_sigma: float = DEFAULT_FILTER_SIGMA,
) -> dict[str, float]:
    """Noise level (relative to the intensity window) that gives G's samples the data's energy.

    Args:
        real: (volume on the reference grid, its intensity-window width) per training case.
        generated: (G's sample restored to the reference grid, the window width it was restored
            with) per sample.
        filter_sigma: high-pass width in voxels.

    Returns:
        ``{"sigma_rel", "hp_real_rel", "hp_generated_rel", "filter_sigma", "gain", "n_real",
        "n_generated"}`` (``hp_*_rel``: mean relative high-pass energy).
    """
    if not real or not generated:
        raise ValueError("calibrate needs at least one real and one generated volume")

    def mean_rel(items: list[tuple[np.ndarray, float]]) -> float:
        return float(
            np.mean([highpass_std(v, None, filter_sigma) / max(w, 1e-12) for v, w in items])
        )

    hp_real, hp_gen = mean_rel(real), mean_rel(generated)
    gain = highpass_gain(filter_sigma)
    sigma_rel = float(np.sqrt(max(hp_real**2 - hp_gen**2, 0.0)) / gain)
    return {
        "sigma_rel": sigma_rel,
        "hp_real_rel": hp_real,
        "hp_generated_rel": hp_gen,
        "filter_sigma": float(filter_sigma),
        "gain": gain,
        "n_real": len(real),
        "n_generated": len(generated),
    }


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The detail-noise stream of sample `index` under generation seed `seed` (arm-independent)."""
    return np.random.default_rng([int(seed), int(index), 0x11F7])


def add_detail(
    array: np.ndarray, sigma: float, rng: np.random.Generator, clip_min: float | None = 0.0
) -> np.ndarray:
    """`array` plus white Gaussian noise of std `sigma` on its foreground (``!= 0``).

    Background stays exactly as it is; with `clip_min` the noisy foreground is clipped from
    below (MR intensities are not negative). Integer arrays are rounded back to their dtype.
    Noise is drawn for the whole array, so the stream does not depend on the foreground.
    """
    if sigma <= 0:
        return array
    noise = rng.standard_normal(array.shape, dtype=np.float32)
    values = array.astype(np.float32)
    foreground = values != 0
    noisy = values + np.float32(sigma) * noise
    if clip_min is not None:
        noisy = np.maximum(noisy, np.float32(clip_min))
    out = np.where(foreground, noisy, values)
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(array.dtype)
    return out.astype(array.dtype, copy=False)


def window_width(record_dict: dict[str, Any], modality: str) -> float:
    """Width (high - low) of `modality`'s intensity window in a preprocessing record (1 if none)."""
    window = record_dict["intensity"][modality].get("window")
    return 1.0 if window is None else float(window[1] - window[0])
