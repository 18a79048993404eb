"""Output detail: scanner-like noise, calibrated on the training data, added to generated volumes.

G models slices on the (coarser) model grid; its samples, written back on the reference grid,
are smoother than any scan: they carry none of the acquisition noise that every training volume
has, and an evaluation encoder (or a reader) tells them apart by that alone. At the end of
``lift3d train generate`` the noise level of training volumes and of G's samples (no mapper, so
the mapper cannot move it) is estimated, both relative to their intensity window, and the
missing part becomes the standard deviation of white Gaussian noise that ``lift3d generate
--detail`` adds to the foreground of every sample:

    sigma_rel = sqrt(max(level_real^2 - level_generated^2, 0)) / gain

Estimators (``detail.estimator``):

- ``noise`` (default): the robust noise estimate of wavelet denoising (Donoho & Johnstone):
  median absolute value of the finest diagonal (HHH) Haar coefficients over blocks inside the
  foreground, / 0.6745. Edges are sparse there, so it measures noise, not structure (gain 1).
- ``highpass``: the standard deviation of ``v - gaussian(v, filter_sigma)`` over the
  foreground (gain: that of unit white noise). It counts edges and fine structure too, so it
  asks for more noise than the data has (phantom: ~40 vs a noise estimate of ~23 and a true
  Rician sigma of 20; BENCHMARKS.md, fourth session).

The noise is drawn from its own stream, seeded by the generation seed and the sample index, so
LiFT and the ``--no-mapper`` ablation of the same seed get the very same noise and the comparison
between them stays fair. White noise is the same in every plane: it adds no through-plane
structure of its own.

Off by default. On the phantom (BENCHMARKS.md, fourth session) it makes the mapper's gain on
reformatted-plane KID large and uniform across seeds, but it raises both arms' KID, FID and
histogram distance against held-out volumes: white noise is not the data's texture, and the
evaluation encoders tell the two apart. It is a way to compare arms at equal texture, not a way
to make samples more realistic.
"""

from __future__ import annotations

from functools import partial
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


def noise_sigma(array: np.ndarray) -> float:
    """Robust noise standard deviation of a 3D volume (0.0 when no block is inside).

    One level of the orthonormal 3D Haar transform; the diagonal (HHH) coefficients of the 2x2x2
    blocks whose 8 voxels are all foreground (``!= 0``); median(|c|) / 0.6745. Unit white noise
    gives 1; smooth structure gives ~0.
    """
    values = np.asarray(array, dtype=np.float32)
    if values.ndim != 3 or min(values.shape) < 2:
        raise ValueError(
            f"noise_sigma needs a 3D volume of at least 2 voxels a side, got {values.shape}"
        )
    even = tuple(s - s % 2 for s in values.shape)
    blocks = values[: even[0], : even[1], : even[2]].reshape(
        even[0] // 2, 2, even[1] // 2, 2, even[2] // 2, 2
    )
    sign = np.array([1.0, -1.0], dtype=np.float32)
    coeffs = np.einsum("aibjck,i,j,k->abc", blocks, sign, sign, sign) / np.float32(np.sqrt(8.0))
    inside = (blocks != 0).all(axis=(1, 3, 5))
    if not inside.any():
        return 0.0
    return float(np.median(np.abs(coeffs[inside])) / 0.6745)


ESTIMATORS = ("noise", "highpass")


def calibrate(
    real: list[tuple[np.ndarray, float]],
    generated: list[tuple[np.ndarray, float]],
    filter_sigma: float = DEFAULT_FILTER_SIGMA,
    estimator: str = "noise",
) -> dict[str, Any]:
    """Noise level (relative to the intensity window) that G's samples lack.

    Args:
        real: (volume on the reference grid, its intensity-window width) per training case.
        generated: (G's sample restored to the reference grid, the window width it was restored
            with) per sample.
        filter_sigma: high-pass width in voxels (``highpass`` only).
        estimator: ``noise`` (wavelet noise estimate) or ``highpass`` (high-pass energy).

    Returns:
        ``{"sigma_rel", "estimator", "level_real_rel", "level_generated_rel", "gain",
        "filter_sigma", "n_real", "n_generated"}`` (``level_*_rel``: mean relative level).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if not real or not generated:
        raise ValueError("calibrate needs at least one real and one generated volume")
    if estimator == "noise":
        level, gain = noise_sigma, 1.0
    else:
        level, gain = partial(highpass_std, filter_sigma=filter_sigma), highpass_gain(filter_sigma)

    def mean_rel(items: list[tuple[np.ndarray, float]]) -> float:
        return float(np.mean([level(v) / max(w, 1e-12) for v, w in items]))

    real_rel, gen_rel = mean_rel(real), mean_rel(generated)
    sigma_rel = float(np.sqrt(max(real_rel**2 - gen_rel**2, 0.0)) / gain)
    return {
        "sigma_rel": sigma_rel,
        "estimator": estimator,
        "level_real_rel": real_rel,
        "level_generated_rel": gen_rel,
        "gain": gain,
        "filter_sigma": float(filter_sigma),
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
