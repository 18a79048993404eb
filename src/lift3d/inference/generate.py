"""Sample volumes from a trained unconditional LiFT model and write them on the reference grid.

(LiFT, arXiv 2605.19060.) A model folder from ``lift3d train generate`` holds ``config.yaml``,
``run.json`` (task "generate"), ``model.safetensors`` (E + G + T) and ``reference.json`` (the
training data's reference grid and intensity record). Each sample is one forward pass of the
trajectory mapper T and D batched passes of the slice generator G; with ``use_mapper=False``
every slice's latent is drawn independently (the no-mapper ablation), which a folder written
after the generator stage (mapper not trained yet, `lift3d.model_folder`) already samples;
such a folder is refused with ``use_mapper=True``.

Output folder: ``sample_0000.nii.gz`` ... (one modality), or ``sample_0000-<mod>.nii.gz`` per
modality when several are generated jointly; ``montage.png`` (tri-planar views of the first
samples on the model grid) and ``generation.json`` (model, seed, mapper flag, output detail,
files, timing).

Intensity map (`lift3d.inference.intensity`; ``intensity_map=None`` follows the model config's
``detail.sample_intensity_map``, on in the shipped generation configs): each MR
sample's foreground is histogram-matched to the training data (a monotone curve measured after
training from the arm's own samples and training volumes), before any output detail.

Output detail (`lift3d.inference.detail`; ``detail=None`` follows the model config's
``detail.sample_detail``, on in the shipped generation configs): white noise at the
training data's noise level (measured after training), added to every sample's
foreground on the reference grid. Its noise depends only on (seed, sample index), so LiFT and
the no-mapper ablation get the same noise.

Precision (`lift3d.inference.precision`): T and G run in fp32 or under bf16 autocast (``auto``:
bf16 on CUDA, fp32 on the CPU); each sample is cast to float32 before it is restored and
written. The noise is drawn in float32 on the CPU either way, so both precisions sample the
same trajectories' noise.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lift3d.data.preprocess import FOREGROUND_THRESHOLD, restore_sample
from lift3d.data.volume import with_nifti_codes, write_volume
from lift3d.errors import InputError
from lift3d.inference.detail import add_detail, sample_rng, window_width
from lift3d.inference.intensity import apply_intensity_map
from lift3d.inference.precision import (
    compile_blocks,
    generation_blocks,
    inference_mode,
    resolve_precision,
)
from lift3d.model_folder import load_model
from lift3d.report.figures import preview_png
from lift3d.utils import atomic_write_text

log = logging.getLogger(__name__)


def generate_volumes(
    model_dir: str | Path,
    n: int,
    out_dir: str | Path,
    *,
    seed: int = 0,
    use_mapper: bool = True,
    detail: bool | None = None,
    intensity_map: bool | None = None,
    device: str = "cpu",
    progress: bool = True,
    overwrite: bool = False,
    precision: str = "fp32",
    compile: bool = False,
) -> list[Path]:
    """Sample `n` volumes and write them (plus montage and generation.json) into `out_dir`.

    Args:
        model_dir: model folder from ``lift3d train generate``.
        n: number of samples (> 0).
        out_dir: output folder (checked by the caller with `check_output_path`).
        seed: noise seed; sample i is the same for the same (model, seed, i, mapper flag).
        use_mapper: False gives the no-mapper ablation (also from a folder whose mapper stage is
            not trained yet; True refuses such a folder).
        detail: add the model's calibrated output detail (`lift3d.inference.detail`; models
            trained before it have none); None: as the model's config says
            (``detail.sample_detail``). Its noise depends only on (seed, i), not on `use_mapper`.
        intensity_map: map each MR sample's foreground onto the training data's intensity
            distribution (`lift3d.inference.intensity`; calibrated with the output detail on
            each arm's own samples, ``intensity_map`` / ``intensity_map_mapper``; models
            calibrated before it have none); None: as the model's config says
            (``detail.sample_intensity_map``).
        device: torch device.
        progress: tqdm bar when stderr is a TTY.
        overwrite: replace existing files (else each file is created exclusively: one that
            appears meanwhile, e.g. from another run, is an error).
        precision: auto | fp32 | bf16 (`lift3d.inference.precision`).
        compile: `torch.compile` G's convolution blocks (CUDA; nothing on the CPU, where it was
            slower).

    Returns:
        The written volume files.
    """
    from tqdm.auto import tqdm

    if n <= 0:
        raise InputError(f"--n must be a positive number of samples, got {n}")
    try:
        precision = resolve_precision(precision, device)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    model, folder = load_model(model_dir, "generate", device, use_mapper=use_mapper)
    # None: the model config's own defaults (``detail.sample_detail`` / ``sample_intensity_map``)
    if detail is None:
        detail = bool(folder.config.detail.sample_detail)
    if intensity_map is None:
        intensity_map = bool(folder.config.detail.sample_intensity_map)
    if compile:
        compile_blocks(model, generation_blocks(device))
    ref = folder.reference
    modalities = list(ref["modalities"])
    detail_record = ref.get("detail") if detail else None
    sigmas = {
        mod: detail_record["modalities"][mod]["sigma_rel"] * window_width(ref["record"], mod)
        for mod in modalities
        if detail_record
    }
    calibration = ref.get("detail") or {}
    map_key = "intensity_map_mapper" if use_mapper else "intensity_map"  # each arm its own
    maps = {
        mod: rec[map_key]
        for mod, rec in (calibration.get("modalities") or {}).items()
        if intensity_map and mod in modalities and rec.get(map_key)
    }
    if intensity_map and not maps:
        log.warning(
            "--intensity-map: %s has no intensity-map calibration for this arm (%s); writing "
            "raw intensities (lift3d.inference.detail.calibrate_model_folder measures it)",
            model_dir, map_key,
        )  # fmt: skip
    codes = ref.get("nifti_codes")  # the training files' qform/sform codes
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    written: list[Path] = []
    samples, previews, seconds = [], [], []
    for i in tqdm(
        range(n), desc="generate", unit="vol", disable=not (progress and sys.stderr.isatty())
    ):
        start = time.perf_counter()
        with inference_mode(device, precision):
            vol = model.sample(1, gen, use_mapper=use_mapper)[0]
        vol = vol.float().cpu().numpy()  # (C, D, H, W), float32 from bf16 too
        seconds.append(time.perf_counter() - start)
        files = {}
        rng = sample_rng(seed, i)
        for c, mod in enumerate(modalities):
            name = (
                f"sample_{i:04d}.nii.gz" if len(modalities) == 1 else f"sample_{i:04d}-{mod}.nii.gz"
            )
            restored = restore_sample(vol[c], ref["record"], mod)
            if mod in maps:
                restored.array = apply_intensity_map(restored.array, maps[mod])
            if sigmas:
                is_mr = ref["record"]["intensity"][mod]["kind"] == "mr"
                restored.array = add_detail(
                    restored.array, sigmas[mod], rng, 0.0 if is_mr else None
                )
            if codes is not None:
                restored = with_nifti_codes(restored, *codes)
            write_volume(restored, out_dir / name, overwrite=overwrite, require_finite=True)
            written.append(out_dir / name)
            files[mod] = name
        samples.append({"id": f"sample_{i:04d}", "files": files})
        if len(previews) < 4:  # the montage shows what was written, on the model grid
            first, mod0 = vol[0], modalities[0]
            if mod0 in maps or mod0 in sigmas:
                first = np.where(first > FOREGROUND_THRESHOLD, first, 0.0)
            if mod0 in maps:
                first = apply_intensity_map(first, maps[mod0])
            if mod0 in sigmas:  # the same level in the model's [0, 1] window units
                sigma_rel = detail_record["modalities"][mod0]["sigma_rel"]
                first = add_detail(first, sigma_rel, sample_rng(seed, i), 0.0)
            previews.append(first)
    kind = "LiFT (mapper)" if use_mapper else "no mapper (independent slice latents)"
    preview_png(
        {f"sample {i}": v for i, v in enumerate(previews)},
        out_dir / "montage.png",
        f"{kind}, seed {seed}, {modalities[0]}",
    )
    info = {
        "model": str(Path(model_dir).resolve()),
        "model_stages": folder.stages_done,  # the trained stages when these were sampled
        "seed": seed,
        "use_mapper": use_mapper,
        "n": n,
        "modalities": modalities,
        "model_shape": ref["shape"],
        "reference_case": ref.get("reference_case"),
        "device": device,
        "precision": precision,
        "detail": {
            "applied": bool(sigmas),
            "why_not": None
            if sigmas
            else ("not asked for" if not detail else "the model has no detail calibration"),
            "sigma": sigmas or None,
            "calibration": ref.get("detail"),
        },
        "intensity_map": {
            "applied": sorted(maps),
            "why_not": None
            if maps
            else (
                "not asked for (--intensity-map)"
                if not intensity_map
                else f"the model has no intensity-map calibration for this arm ({map_key})"
            ),
            "what": "foreground histogram matched to the training data "
            "(lift3d.inference.intensity); calibration in detail.calibration",
        },
        "seconds_per_volume": float(np.mean(seconds)),
        "samples": samples,
        "montage": "montage.png",
    }
    atomic_write_text(out_dir / "generation.json", json.dumps(info, indent=1), overwrite=overwrite)
    log.info("wrote %d volume(s) to %s (%.2f s per volume)", n, out_dir, info["seconds_per_volume"])
    return written
