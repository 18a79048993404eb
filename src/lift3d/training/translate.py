"""Train LiFT paired translation: per-slice translator F, then the bidirectional z-mixer M.

(LiFT, arXiv 2605.19060; METHOD.md variant 2.) Two resumable engine stages in one run folder:

1. ``translator``: F trained on 2D slices (L1, optionally + SSIM), the mixers unused. With
   ``model.context_slices = k`` each item is a slab of 2k + 1 source slices and the model
   assembles the centre slice's 2.5D input from it by the code inference uses.
2. ``mixer``: M trained on whole volumes (or random z-chunks of them) with F frozen by default,
   loss L1 on slices + a through-plane L1 on z-differences (`lift3d.losses.translation`). A
   2.5D z-chunk is cut with k more slices on each side, so its slices get the F input they get
   in whole-volume inference; the loss covers the chunk only.

Tasks: ``mr2ct`` (SynthRAD layout: mr -> ct in HU) and ``missing`` (BraTS layout: one model for
any missing modality; the input is the four modality slots with the missing one zero-filled plus
a one-hot of which is missing, trained with each of the four as target).

Validation on held-out cases (``data.val_fraction``) runs every ``train.val_every`` steps and at
the end of each stage: model-space PSNR per plane and z-gradient error (with and without the
mixer in stage 2) to ``logs/<stage>_val.jsonl``, and a tri-planar PNG to ``val/``. The run folder
ends with ``model.safetensors``, ``config.yaml``, ``run.json`` (task/subtask) and
``metrics.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lift3d.config import TranslateConfig
from lift3d.data.datasets import SliceDataset, VolumeDataset, collate_volumes, split_cases
from lift3d.data.discovery import discover_cases
from lift3d.data.store import resolve_store_dir
from lift3d.errors import InputError
from lift3d.losses.translation import slice_loss, volume_loss
from lift3d.metrics.consistency import dz_metrics, plane_psnr, zgrad_metrics
from lift3d.model_folder import METRICS_FILE, WEIGHTS_FILE, save_model, update_run_json
from lift3d.models.lift import make_input, select_target, task_modalities
from lift3d.models.registry import translation_model_from_config
from lift3d.report.figures import preview_png
from lift3d.training.engine import Engine
from lift3d.utils import atomic_write_text

log = logging.getLogger(__name__)

# ------------------------------------------------------------------ validation


def plane_scores(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Model-space ([0, 1]) PSNR per plane, z-gradient error and Δz correlation inside `mask`.

    Arrays are (D, H, W) model space with D the slice axis; the z-gradient is along D. The
    paper's Δz MAE is ``zgrad_error`` here (the same definition), ``dz_corr`` its Δz correlation.
    """
    p, t, m = (np.asarray(a, dtype=np.float64) for a in (pred, target, mask))
    m = m > 0
    out = {
        "psnr_slice": plane_psnr(p, t, m, 1.0, 0),
        "psnr_h": plane_psnr(p, t, m, 1.0, 1),
        "psnr_w": plane_psnr(p, t, m, 1.0, 2),
    }
    z = zgrad_metrics(p, t, m, axis=0)
    out["zgrad_error"] = z["zgrad_error"]
    out["zgrad_ratio"] = z["zgrad_ratio"]
    out["dz_corr"] = dz_metrics(p, t, m, axis=0)["dz_corr"]
    mse = float(((p - t) ** 2)[m].mean()) if m.any() else float("nan")
    out["psnr"] = float(10 * np.log10(1.0 / mse)) if mse > 0 else float("inf")
    return out


def _validator(cfg: TranslateConfig, val_data: Any, run_dir: Path, stage: str, store: dict):
    """A ``validate_fn(model, step)`` scoring the held-out volumes (None without val data)."""
    if val_data is None:
        return None
    n_val = len(val_data) if cfg.val_cases <= 0 else min(cfg.val_cases, len(val_data))
    slots, _ = task_modalities(cfg.task)

    def validate(model: nn.Module, step: int) -> dict[str, float]:
        device = next(model.parameters()).device
        variants = {"mixer": True, "no_mixer": False} if stage == "mixer" else {"": False}
        sums: dict[str, list[float]] = {}
        preview: dict[str, np.ndarray] = {}
        for i in range(n_val):
            item = val_data[i]
            batch = {k: v[None].to(device) for k, v in item.items() if isinstance(v, Tensor)}
            missing = torch.tensor([i % len(slots)], device=device)
            x = make_input(cfg.task, batch, missing)
            y = select_target(cfg.task, batch, missing)[0, 0].cpu().numpy()
            mask = item["mask"][0].numpy()
            for name, use_mixer in variants.items():
                pred = model(x, use_mixer=use_mixer, chunk_size=cfg.model.chunk_size or 0)
                pred = pred.clamp(0, 1)[0, 0].float().cpu().numpy()
                for key, value in plane_scores(pred, y, mask).items():
                    sums.setdefault(f"{key}_{name}" if name else key, []).append(value)
                if i == 0:
                    preview[f"pred {name}".strip()] = pred
            if i == 0:
                src = slots[0] if cfg.task == "mr2ct" else slots[(1 + i) % len(slots)]
                target_name = "ct" if cfg.task == "mr2ct" else slots[i % len(slots)]
                preview = {
                    f"source {src}": batch[src][0, 0].cpu().numpy(),
                    f"target {target_name}": y,
                    **preview,
                }
        metrics = {k: float(np.nanmean(v)) for k, v in sums.items()}
        store[stage] = metrics
        preview_png(
            preview,
            run_dir / "val" / f"{stage}_step{step:07d}.png",
            f"{stage} step {step}, case {val_data.cases[0].case_id}",
            labels=("slice (d)", "h cut", "w cut"),
            aspect="auto",
        )
        return metrics

    return validate


# ------------------------------------------------------------------ training


def _set_trainable(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def train_translation(cfg: TranslateConfig, run_dir: str | Path, resume: bool = False) -> Path:
    """Run both stages (each resumable) and write the final model folder.

    Args:
        cfg: the resolved config (``cfg.data.root`` set).
        run_dir: run folder.
        resume: continue from the stages' checkpoints (the engine resumes any stage with a
            checkpoint and skips finished ones; without checkpoints this starts afresh).

    Returns:
        `run_dir`.

    Raises:
        InputError: no data, unknown task or size, a case without a needed modality.
    """
    run_dir = Path(run_dir)
    if not cfg.data.root:
        raise InputError("no training data: set data.root (lift3d train translate --data DIR)")
    slots, fixed_target = task_modalities(cfg.task)
    required = tuple(slots) if fixed_target is None else (*slots, fixed_target)
    shape = tuple(int(s) for s in cfg.data.shape)
    store_dir = resolve_store_dir(cfg.data.store, cfg.data.root)
    cases = list(
        discover_cases(
            cfg.data.root,
            cfg.data.layout,
            required=required,
            skip_bad=cfg.data.skip_bad,
            # with a store, voxel data is checked once, when a case is built into it
            validate="header" if store_dir is not None else True,
        )
    )
    train_cases, val_cases = split_cases(cases, cfg.data.val_fraction, cfg.train.seed)
    grid = (required, shape, cfg.data.slice_axis, cfg.data.spacing_mm)
    volumes = VolumeDataset(
        train_cases, *grid, cache=cfg.data.cache, store_dir=store_dir, skip_bad=cfg.data.skip_bad
    )
    val_data = (
        VolumeDataset(val_cases, *grid, store_dir=store_dir, skip_bad=cfg.data.skip_bad)
        if val_cases
        else None
    )
    log.info(
        "translate %s: %d training / %d validation cases, model grid %s",
        cfg.task,
        len(train_cases),
        len(val_cases),
        shape,
    )

    engine = Engine(cfg.train, run_dir, full_config=cfg, task="translate")
    update_run_json(run_dir, subtask=cfg.task, model_size=cfg.model.size)
    model = translation_model_from_config(cfg).to(engine.device)
    scores: dict[str, dict[str, float]] = {}
    n_slots = len(slots)

    def draw_missing(b: int, device: torch.device) -> Tensor | None:
        return None if fixed_target is not None else torch.randint(0, n_slots, (b,)).to(device)

    # Stage 1: F on slices (mixers unused and frozen).
    k = cfg.model.context_slices

    def translator_step(net: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        b = batch["mask"].shape[0]
        missing = draw_missing(b, batch["mask"].device)
        x = make_input(cfg.task, batch, missing)  # (B, C, 1, H, W); 2.5D: (B, C, 2k + 1, H, W)
        y = select_target(cfg.task, batch, missing)
        if k:  # the centre slice of each slab, its neighbours as context
            y = y[:, :, k : k + 1]
            pred = net(x, use_mixer=False, slices=(k, k + 1))
        else:
            pred = net(x, use_mixer=False, chunk_size=0)
        loss = slice_loss(pred[:, :, 0], y[:, :, 0], cfg.translator.ssim_weight)
        return {"loss": loss}

    _set_trainable(model.mixers, False)
    _set_trainable(model.translator, True)
    opt1 = torch.optim.AdamW(
        model.translator.parameters(), lr=cfg.translator.lr, weight_decay=cfg.train.weight_decay
    )
    model = engine.fit(
        "translator",
        model,
        opt1,
        SliceDataset(volumes, context=k),
        translator_step,
        max_steps=cfg.translator.steps,
        batch_size=cfg.translator.batch_size,
        collate_fn=collate_volumes,
        validate_fn=_validator(cfg, val_data, run_dir, "translator", scores),
        num_workers=cfg.data.num_workers,
    )

    # Stage 2: M on volumes (F frozen by default).
    mcfg = cfg.mixer

    def mixer_step(net: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        b, depth = batch["mask"].shape[0], batch["mask"].shape[2]
        core = None  # 2.5D: the chunk's slices inside a slab with their k neighbours each side
        if 0 < mcfg.z_chunk < depth:
            start = int(torch.randint(0, depth - mcfg.z_chunk + 1, (1,)))
            lo, hi = max(0, start - k), min(depth, start + mcfg.z_chunk + k)
            batch = {
                key: v[:, :, lo:hi] if isinstance(v, Tensor) and v.dim() == 5 else v
                for key, v in batch.items()
            }
            if k:
                core = (start - lo, start - lo + mcfg.z_chunk)
        missing = draw_missing(b, batch["mask"].device)
        x = make_input(cfg.task, batch, missing)
        y = select_target(cfg.task, batch, missing)
        if core is not None:
            pred = net(x, use_mixer=True, slices=core)
            y = y[:, :, core[0] : core[1]]
        else:
            pred = net(x, use_mixer=True, chunk_size=0)
        return volume_loss(pred, y, mcfg.zgrad_weight)

    _set_trainable(model.mixers, True)
    _set_trainable(model.translator, not mcfg.freeze_translator)
    groups = [{"params": list(model.mixers.parameters()), "lr": mcfg.lr}]
    if not mcfg.freeze_translator:
        groups.append({"params": list(model.translator.parameters()), "lr": mcfg.translator_lr})
    opt2 = torch.optim.AdamW(groups, lr=mcfg.lr, weight_decay=cfg.train.weight_decay)
    model = engine.fit(
        "mixer",
        model,
        opt2,
        volumes,
        mixer_step,
        max_steps=mcfg.steps,
        batch_size=mcfg.batch_size,
        collate_fn=collate_volumes,
        validate_fn=_validator(cfg, val_data, run_dir, "mixer", scores),
        num_workers=cfg.data.num_workers,
    )
    _set_trainable(model, True)

    if engine.is_main:
        save_model(model.cpu(), cfg, run_dir)
        if scores:
            atomic_write_text(run_dir / METRICS_FILE, json.dumps(scores, indent=1))
        log.info("model written to %s", run_dir / WEIGHTS_FILE)
    return run_dir
