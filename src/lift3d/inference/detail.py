"""Output detail: scanner-like noise, calibrated on the training data, added to generated volumes.

G's samples, written back on the reference grid, are smoother than any scan: they carry little
of the acquisition noise that every training volume has, and an evaluation encoder (or a
reader) tells them apart by that alone. After ``lift3d train generate``,
`calibrate_model_folder` estimates the noise level of training volumes and of G's samples (no
mapper, so the mapper cannot move it), both relative to their intensity window, and the missing
part becomes the standard deviation of white Gaussian noise that ``lift3d generate --detail``
adds to the foreground of every sample:

    sigma_rel = sqrt(max(level_real^2 - level_generated^2, 0))

The level is the robust noise estimate of wavelet denoising (Donoho & Johnstone): median
absolute value of the finest diagonal (HHH) Haar coefficients over blocks inside the foreground,
/ 0.6745. Edges are sparse there, so it measures noise, not structure.

The noise is drawn from its own stream, seeded by the generation seed and the sample index, so
LiFT and the ``--no-mapper`` ablation of the same seed get the very same noise and the comparison
between them stays fair. White noise is the same in every plane: it adds no through-plane
structure of its own.

Applied by default for models whose config says so (``detail.sample_detail``: the shipped
``generate_demo`` and ``generate_brats``), together with the intensity map: with the latent
generator's decoder, which draws no voxel noise, both lower every per-plane FID, the increments
and the histogram distance on the phantom, three training seeds x two held-out sets
(docs/journal/2026-11-28-detail-and-map.md). Earlier designs (a pixel G at 32^3) scored worse
with it. White noise is the simplest model of MR thermal noise, not of the data's anatomy: it
adds no structure the generator did not draw.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lift3d.config import DetailConfig
from lift3d.data.datasets import VolumeDataset
from lift3d.data.discovery import discover_cases
from lift3d.data.preprocess import restore_sample
from lift3d.data.volume import read_volume
from lift3d.errors import InputError
from lift3d.inference.intensity import (
    calibrate_intensity_map,
    foreground_values,
    pooled_quantiles,
)
from lift3d.model_folder import REFERENCE_FILE, load_model, read_model_folder
from lift3d.utils import atomic_write_text

log = logging.getLogger(__name__)

# What `calibrate` records as its method (the wavelet noise estimate, `noise_sigma`).
ESTIMATOR = "noise"


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


def calibrate(
    real: list[tuple[np.ndarray, float]], generated: list[tuple[np.ndarray, float]]
) -> dict[str, Any]:
    """Noise level (relative to the intensity window) that G's samples lack.

    Args:
        real: (volume on the reference grid, its intensity-window width) per training case.
        generated: (G's sample restored to the reference grid, the window width it was restored
            with) per sample.

    Returns:
        ``{"sigma_rel", "estimator", "level_real_rel", "level_generated_rel", "n_real",
        "n_generated"}`` (``level_*_rel``: mean relative `noise_sigma`).
    """
    if not real or not generated:
        raise ValueError("calibrate needs at least one real and one generated volume")

    def mean_rel(items: list[tuple[np.ndarray, float]]) -> float:
        return float(np.mean([noise_sigma(v) / max(w, 1e-12) for v, w in items]))

    real_rel, gen_rel = mean_rel(real), mean_rel(generated)
    return {
        "sigma_rel": float(np.sqrt(max(real_rel**2 - gen_rel**2, 0.0))),
        "estimator": ESTIMATOR,
        "level_real_rel": real_rel,
        "level_generated_rel": gen_rel,
        "n_real": len(real),
        "n_generated": len(generated),
    }


def calibrate_model_folder(
    run_dir: str | Path,
    data_root: str | Path | None = None,
    settings: DetailConfig | None = None,
) -> dict[str, Any]:
    """Measure a generation model folder's output detail (`calibrate_model`) and record it in
    its reference.json. The noise level needs E and G only (the calibration samples G without
    the mapper), so it works from the generator stage on; once the mapper is trained the
    mapper arm's intensity map is measured too (`calibrate_mapper_intensity`).

    Args:
        run_dir: model folder from `lift3d.training.generate.train_generation`.
        data_root: the training dataset (default: ``reference.json["data_root"]``).
        settings: sample counts and seed (default: the folder's ``detail`` config section).

    Returns:
        The record written to ``reference.json["detail"]`` (`calibrate_model`).

    Raises:
        InputError: not a generation model folder, a training case no longer in `data_root`,
            or ``cases`` / ``samples`` / ``map_samples`` below 1.
    """
    trained = "mapper" in read_model_folder(run_dir, "generate", use_mapper=False).stages_done
    model, folder = load_model(run_dir, "generate", use_mapper=trained)  # samples either arm
    ref = folder.reference
    ref["detail"] = calibrate_model(model, folder.config, ref, data_root, settings)
    if trained:
        add_mapper_intensity(
            ref["detail"], calibrate_mapper_intensity(model, folder.config, ref, settings)
        )
    atomic_write_text(Path(run_dir) / REFERENCE_FILE, json.dumps(ref, indent=1))
    return ref["detail"]


def _real_volumes(
    cfg: Any, ref: dict[str, Any], data_root: str | Path | None, dc: DetailConfig
) -> dict[str, list[tuple[np.ndarray, float]]]:
    """Per modality, (volume as stored, its window width) of the first ``dc.cases`` training
    cases."""
    if dc.cases < 1 or dc.samples < 1 or dc.map_samples < 1:
        raise InputError(
            "detail needs cases, samples and map_samples >= 1, got "
            f"{dc.cases}, {dc.samples}, {dc.map_samples}"
        )
    modalities = list(ref["modalities"])
    root = Path(data_root or ref["data_root"])
    found = discover_cases(
        root,
        cfg.data.layout,
        required=tuple(modalities),
        skip_bad=cfg.data.skip_bad,
        validate="header",  # the data was validated when the model was trained
    )
    by_id = {case.case_id: case for case in found}
    cases = []
    for case_id in ref["train_cases"][: dc.cases]:
        if case_id not in by_id:
            raise InputError(f"training case {case_id} not found for the detail calibration", root)
        cases.append(by_id[case_id])
    volumes = VolumeDataset(
        cases, modalities, ref["shape"], cfg.data.slice_axis, cfg.data.spacing_mm, cache=False
    )
    real: dict[str, list[tuple[np.ndarray, float]]] = {m: [] for m in modalities}
    for i, case in enumerate(cases):
        case_record = volumes.load_arrays(i)[1]
        for m in modalities:
            real[m].append((read_volume(case.paths[m]).array, window_width(case_record, m)))
    return real


def _samples(
    model: Any, ref: dict[str, Any], seed: int, n: int, use_mapper: bool
) -> Iterator[dict[str, np.ndarray]]:
    """`n` samples (noise seed `seed`), each ``{modality: volume on the reference grid}``."""
    gen = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for _ in range(n):
                vol = model.sample(1, gen, use_mapper=use_mapper)[0].float().cpu().numpy()
                yield {
                    m: restore_sample(vol[c], ref["record"], m).array
                    for c, m in enumerate(ref["modalities"])
                }
    finally:
        model.train(was_training)


def _mr(ref: dict[str, Any]) -> list[str]:
    return [m for m in ref["modalities"] if ref["record"]["intensity"][m]["kind"] == "mr"]


def calibrate_model(
    model: Any,
    cfg: Any,
    ref: dict[str, Any],
    data_root: str | Path | None = None,
    settings: DetailConfig | None = None,
) -> dict[str, Any]:
    """Measure a generation model's output detail: the noise level its samples lack, and the
    intensity map from their foreground distribution to the data's (MR), for the no-mapper arm.

    Real: the first ``settings.cases`` cases of the training split (``ref["train_cases"]``),
    each file as stored (the reference grid) relative to its own intensity window. Generated:
    no-mapper samples of G (noise seed ``settings.seed``) restored to the reference grid with
    the reference record, the first ``settings.samples`` for the noise level and
    ``settings.map_samples`` for the intensity map. Depends on E and G only, not on the mapper.

    Args:
        model: a `GenerationModel` (E and G trained; left in the train / eval mode it was in).
        cfg: its `GenerateConfig`.
        ref: its reference record (``reference.json``).
        data_root: the training dataset (default: ``ref["data_root"]``).
        settings: sample counts and seed (default: ``cfg.detail``).

    Returns:
        ``{"kind", "modalities": {mod: `calibrate` record}}``; an MR modality's record also
        holds ``"intensity_map"`` (`lift3d.inference.intensity.calibrate_intensity_map`).

    Raises:
        InputError: a training case no longer in `data_root`, or ``cases`` / ``samples`` /
            ``map_samples`` below 1.
    """
    dc = settings or cfg.detail
    real = _real_volumes(cfg, ref, data_root, dc)
    record = ref["record"]
    window = {m: window_width(record, m) for m in real}
    generated: dict[str, list[tuple[np.ndarray, float]]] = {m: [] for m in real}
    values: dict[str, list[np.ndarray]] = {m: [] for m in _mr(ref)}
    for i, sample in enumerate(
        _samples(model, ref, dc.seed, max(dc.samples, dc.map_samples), False)
    ):
        for m, array in sample.items():
            if i < dc.samples:
                generated[m].append((array, window[m]))
            if m in values and i < dc.map_samples:
                values[m].append(foreground_values(array))
    out = {m: calibrate(real[m], generated[m]) for m in real}
    for m, rec in out.items():
        log.info(
            "output detail %s (%s): level real %.4f, G %.4f (of the window) -> noise %.4f",
            m, ESTIMATOR, rec["level_real_rel"], rec["level_generated_rel"], rec["sigma_rel"],
        )  # fmt: skip
        if m in values:  # `lift3d.inference.intensity`
            rec["intensity_map"] = calibrate_intensity_map([v for v, _ in real[m]], values[m])
    return {"kind": "white gaussian, foreground only", "modalities": out}


def calibrate_mapper_intensity(
    model: Any, cfg: Any, ref: dict[str, Any], settings: DetailConfig | None = None
) -> dict[str, dict[str, Any]]:
    """The intensity map of the LiFT arm: as `calibrate_model`'s, from ``map_samples`` samples
    drawn with the trained mapper (each arm is matched to the data on its own samples, so
    neither is fitted on the other's), against the data's quantiles that `calibrate_model`
    stored in ``ref["detail"]`` (the same training cases, not read again).

    Returns:
        ``{mod: `calibrate_intensity_map` record}`` for the MR modalities.
    """
    dc = settings or cfg.detail
    no_mapper = {m: ref["detail"]["modalities"][m]["intensity_map"] for m in _mr(ref)}
    values: dict[str, list[np.ndarray]] = {m: [] for m in no_mapper}
    for sample in _samples(model, ref, dc.seed, dc.map_samples, True):
        for m in values:
            values[m].append(foreground_values(sample[m]))
    return {
        m: {
            **curve,
            "generated": [float(q) for q in pooled_quantiles(values[m], curve["levels"])],
            "n_generated": len(values[m]),
        }
        for m, curve in no_mapper.items()
    }


def add_mapper_intensity(detail: dict[str, Any], maps: dict[str, dict[str, Any]]) -> None:
    """Store the LiFT arm's maps in a detail record (``"intensity_map_mapper"`` per modality)."""
    for m, curve in maps.items():
        detail["modalities"][m]["intensity_map_mapper"] = curve


def has_mapper_intensity(detail: dict[str, Any] | None, ref: dict[str, Any]) -> bool:
    """Whether a detail record holds the LiFT arm's map for every MR modality."""
    if not detail:
        return False
    mods = detail.get("modalities") or {}
    return all(
        "intensity_map_mapper" in mods.get(m, {})
        for m in ref["modalities"]
        if ref["record"]["intensity"][m]["kind"] == "mr"
    )


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
