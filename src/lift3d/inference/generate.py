"""Sample volumes from a trained unconditional LiFT model and write them on the reference grid.

(LiFT, arXiv 2605.19060.) A model folder from ``lift3d train generate`` holds ``config.yaml``,
``run.json`` (task "generate"), ``model.safetensors`` (E + G + T) and ``reference.json`` (the
training data's reference grid and intensity record). Each sample is one forward pass of the
trajectory mapper T and D batched passes of the slice generator G; with ``use_mapper=False``
every slice's latent is drawn independently (the no-mapper ablation).

Output folder: ``sample_0000.nii.gz`` ... (one modality), or ``sample_0000-<mod>.nii.gz`` per
modality when several are generated jointly; ``montage.png`` (tri-planar views of the first
samples on the model grid) and ``generation.json`` (model, seed, mapper flag, output detail,
files, timing).

Output detail (`lift3d.inference.detail`, opt-in with ``detail=True``): white noise at the
training data's noise level (measured at the end of training), added to every sample's
foreground on the reference grid. Its noise depends only on (seed, sample index), so LiFT and
the no-mapper ablation get the same noise.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lift3d.errors import InputError

log = logging.getLogger(__name__)

FOREGROUND_THRESHOLD = 0.01  # model-space values at or below are background (0 in the output)


def read_model_folder(model_dir: str | Path) -> dict[str, Any]:
    """Check a generation model folder and read its metadata.

    Returns:
        {"config": dict, "reference": dict, "run": dict, "weights": Path}.

    Raises:
        InputError: not a folder, not a generation model (names the task it is from), files
            missing or unreadable.
    """
    import yaml

    from lift3d.utils import read_model_folder

    model_dir = Path(model_dir)
    names = ("config.yaml", "reference.json", "model.safetensors")
    run = read_model_folder(model_dir, "generate", required=names)
    paths = {n: model_dir / n for n in names}
    try:
        config = yaml.safe_load(paths["config.yaml"].read_text()) or {}
        reference = json.loads(paths["reference.json"].read_text())
    except (OSError, yaml.YAMLError, json.JSONDecodeError) as exc:
        raise InputError(
            f"unreadable model metadata ({exc.__class__.__name__})", model_dir
        ) from None
    return {
        "config": config,
        "reference": reference,
        "run": run,
        "weights": paths["model.safetensors"],
    }


def load_generation_model(
    model_dir: str | Path, device: str = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model from its folder (no flags needed) and load the final weights.

    Returns:
        (GenerationModel in eval mode on `device`, folder metadata from `read_model_folder`).
    """
    from lift3d.models.registry import build_generation_model
    from lift3d.training.checkpoint import load_weights

    meta = read_model_folder(model_dir)
    ref = meta["reference"]
    objective = meta["config"].get("model", {}).get("encoder_objective", "denoise")
    model = build_generation_model(
        ref["size"], len(ref["modalities"]), tuple(ref["shape"]), encoder_objective=objective
    )
    load_weights(model, meta["weights"])
    return model.to(device).eval(), meta


def restore_sample(array_dhw: np.ndarray, record_dict: dict[str, Any], modality: str):
    """Model-space (D, H, W) in [0, 1] -> Volume on the reference grid in source units.

    Background (values <= FOREGROUND_THRESHOLD) is written as 0, as in the training files,
    instead of the bottom of the intensity window.
    """
    from lift3d.data.preprocess import PreprocessRecord, restore_volume

    record = PreprocessRecord.from_dict(record_dict)
    vol = restore_volume(array_dhw, record, modality)
    fg_record = copy.deepcopy(record)
    fg_record.intensity["_foreground"] = {"kind": "mask", "window": None, "dtype": "|u1"}
    fg = restore_volume(
        (array_dhw > FOREGROUND_THRESHOLD).astype(np.uint8), fg_record, "_foreground"
    )
    if record.intensity[modality]["kind"] == "mr":
        vol.array[fg.array == 0] = 0
    return vol


def montage_png(volumes: list[np.ndarray], path: Path, title: str) -> Path:
    """Tri-planar montage (centre cuts) of up to 4 (D, H, W) volumes."""
    from lift3d.training.generate import preview_png

    rows = {f"sample {i}": v for i, v in enumerate(volumes[:4])}
    return preview_png(rows, path, title)


def generate_volumes(
    model_dir: str | Path,
    n: int,
    out_dir: str | Path,
    *,
    seed: int = 0,
    use_mapper: bool = True,
    detail: bool = False,
    device: str = "cpu",
    progress: bool = True,
) -> list[Path]:
    """Sample `n` volumes and write them (plus montage and generation.json) into `out_dir`.

    Args:
        model_dir: model folder from ``lift3d train generate``.
        n: number of samples (> 0).
        out_dir: output folder (checked by the caller with `check_output_path`).
        seed: noise seed; sample i is the same for the same (model, seed, i, mapper flag).
        use_mapper: False gives the no-mapper ablation.
        detail: add the model's calibrated output detail (`lift3d.inference.detail`; models
            trained before it have none). Its noise depends only on (seed, i), not on
            `use_mapper`.
        device: torch device.
        progress: tqdm bar when stderr is a TTY.

    Returns:
        The written volume files.
    """
    import sys

    from tqdm.auto import tqdm

    from lift3d.data.volume import write_volume
    from lift3d.inference.detail import add_detail, sample_rng, window_width
    from lift3d.utils import atomic_write_text

    if n <= 0:
        raise InputError(f"--n must be a positive number of samples, got {n}")
    model, meta = load_generation_model(model_dir, device)
    ref = meta["reference"]
    modalities = list(ref["modalities"])
    detail_record = ref.get("detail") if detail else None
    sigmas = {
        mod: detail_record["modalities"][mod]["sigma_rel"] * window_width(ref["record"], mod)
        for mod in modalities
        if detail_record
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    written: list[Path] = []
    samples, previews, seconds = [], [], []
    for i in tqdm(
        range(n), desc="generate", unit="vol", disable=not (progress and sys.stderr.isatty())
    ):
        start = time.perf_counter()
        vol = model.sample(1, gen, use_mapper=use_mapper)[0].cpu().numpy()  # (C, D, H, W)
        seconds.append(time.perf_counter() - start)
        files = {}
        rng = sample_rng(seed, i)
        for c, mod in enumerate(modalities):
            name = (
                f"sample_{i:04d}.nii.gz" if len(modalities) == 1 else f"sample_{i:04d}-{mod}.nii.gz"
            )
            restored = restore_sample(vol[c], ref["record"], mod)
            if sigmas:
                is_mr = ref["record"]["intensity"][mod]["kind"] == "mr"
                restored.array = add_detail(
                    restored.array, sigmas[mod], rng, 0.0 if is_mr else None
                )
            write_volume(restored, out_dir / name)
            written.append(out_dir / name)
            files[mod] = name
        samples.append({"id": f"sample_{i:04d}", "files": files})
        if len(previews) < 4:
            previews.append(vol[0])
    kind = "LiFT (mapper)" if use_mapper else "no mapper (independent slice latents)"
    montage_png(previews, out_dir / "montage.png", f"{kind}, seed {seed}, {modalities[0]}")
    info = {
        "model": str(Path(model_dir).resolve()),
        "seed": seed,
        "use_mapper": use_mapper,
        "n": n,
        "modalities": modalities,
        "model_shape": ref["shape"],
        "reference_case": ref.get("reference_case"),
        "device": device,
        "detail": {
            "applied": bool(sigmas),
            "why_not": None
            if sigmas
            else ("not asked for" if not detail else "the model has no detail calibration"),
            "sigma": sigmas or None,
            "calibration": ref.get("detail"),
        },
        "seconds_per_volume": float(np.mean(seconds)),
        "samples": samples,
        "montage": "montage.png",
    }
    atomic_write_text(out_dir / "generation.json", json.dumps(info, indent=1))
    log.info("wrote %d volume(s) to %s (%.2f s per volume)", n, out_dir, info["seconds_per_volume"])
    return written
