"""Train LiFT paired translation: per-slice translator F, then the bidirectional z-mixer M.

(LiFT, arXiv 2605.19060; METHOD.md variant 2.) Two resumable engine stages in one run folder:

1. ``translator``: F trained on 2D slices (L1, optionally + SSIM), the mixers unused.
2. ``mixer``: M trained on whole volumes (or random z-chunks of them) with F frozen by default,
   loss L1 on slices + a through-plane L1 on z-differences (`lift3d.losses.translation`).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lift3d.config import DataConfig, TrainConfig
from lift3d.errors import InputError

log = logging.getLogger(__name__)

TASKS = ("mr2ct", "missing")
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"


@dataclass
class TranslateModelConfig:
    """Model size (`lift3d.models.registry.TRANSLATION_SIZES`) and optional overrides."""

    size: str = "base"
    mixer_levels: int | None = None  # 1 = bottleneck only; k adds k - 1 decoder stages
    mixer_depth: int | None = None
    z_context: int | None = None
    mixer_hidden: float | None = None
    chunk_size: int = 32  # z-chunk (output slices) for validation and inference


@dataclass
class TranslatorStageConfig:
    """Stage 1: F on 2D slices."""

    steps: int = 2000
    lr: float = 1e-3
    batch_size: int = 16
    ssim_weight: float = 0.0


@dataclass
class MixerStageConfig:
    """Stage 2: M on volumes (F frozen unless ``freeze_translator`` is false)."""

    steps: int = 500
    lr: float = 5e-4
    batch_size: int = 1
    z_chunk: int = 0  # train on random z-chunks of this many slices; 0 = whole volumes
    zgrad_weight: float = 1.0  # weight of the through-plane term
    freeze_translator: bool = True
    translator_lr: float = 1e-5  # used only when freeze_translator is false


@dataclass
class TranslateConfig:
    """Top-level config of ``lift3d train translate``."""

    task: str = "mr2ct"  # mr2ct | missing
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    model: TranslateModelConfig = field(default_factory=TranslateModelConfig)
    translator: TranslatorStageConfig = field(default_factory=TranslatorStageConfig)
    mixer: MixerStageConfig = field(default_factory=MixerStageConfig)
    val_cases: int = 4  # held-out cases scored at each validation (0 = all)


# ------------------------------------------------------------------ task description


def task_modalities(task: str) -> tuple[list[str], str | None]:
    """(modality slots, fixed target) of a task: mr2ct -> (["mr"], "ct");
    missing -> (the four BraTS modalities, None: any of them)."""
    from lift3d.data.discovery import BRATS_MODALITIES

    if task == "mr2ct":
        return ["mr"], "ct"
    if task == "missing":
        return list(BRATS_MODALITIES), None
    raise InputError(f"unknown translation task {task!r}; use one of {', '.join(TASKS)}")


def in_channels(task: str) -> int:
    """Model input channels: 1 for mr2ct; 4 slots + 4 one-hot planes for missing."""
    slots, target = task_modalities(task)
    return len(slots) if target is not None else 2 * len(slots)


def build_model(cfg: TranslateConfig, use_mixer: bool = True) -> nn.Module:
    """The `TranslationModel` a config describes (random init)."""
    from lift3d.models.registry import TRANSLATION_SIZES, build_translation_model

    m = cfg.model
    if m.size not in TRANSLATION_SIZES:
        raise InputError(
            f"config key 'model.size': unknown size {m.size!r}; use one of "
            f"{', '.join(TRANSLATION_SIZES)}"
        )
    try:
        return build_translation_model(
            m.size,
            in_channels(cfg.task),
            1,
            use_mixer=use_mixer,
            mixer_levels=m.mixer_levels,
            mixer_depth=m.mixer_depth,
            z_context=m.z_context,
            mixer_hidden=m.mixer_hidden,
            chunk_size=m.chunk_size or None,
        )
    except ValueError as exc:
        raise InputError(f"model config: {exc}") from None


def make_input(task: str, batch: dict[str, Any], missing: Tensor | None = None) -> Tensor:
    """Model input from a batch of (B, 1, ...) modality tensors.

    mr2ct: (B, 1, ...) MR. missing: (B, 8, ...) with slot `missing` (B,) zero-filled + one-hot.
    Slice batches (B, 1, H, W) get a singleton D axis: (B, C, 1, H, W).
    """
    from lift3d.models.lift import missing_modality_input

    slots, target = task_modalities(task)
    x = torch.cat([batch[m] for m in slots], dim=1)
    if x.dim() == 4:
        x = x[:, :, None]
    if target is not None:
        return x
    assert missing is not None
    return missing_modality_input(x, missing)


def select_target(task: str, batch: dict[str, Any], missing: Tensor | None = None) -> Tensor:
    """(B, 1, ...) target: CT, or each item's missing modality."""
    slots, target = task_modalities(task)
    if target is not None:
        y = batch[target]
    else:
        stacked = torch.cat([batch[m] for m in slots], dim=1)  # (B, 4, ...)
        idx = missing.view(-1, *([1] * (stacked.dim() - 1))).expand(-1, 1, *stacked.shape[2:])
        y = torch.gather(stacked, 1, idx)
    return y[:, :, None] if y.dim() == 4 else y


# ------------------------------------------------------------------ validation


def plane_scores(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Model-space ([0, 1]) PSNR per plane and z-gradient error inside `mask`.

    Arrays are (D, H, W) model space with D the slice axis; the z-gradient is along D.
    """
    from lift3d.metrics.consistency import plane_psnr, zgrad_metrics

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
    mse = float(((p - t) ** 2)[m].mean()) if m.any() else float("nan")
    out["psnr"] = float(10 * np.log10(1.0 / mse)) if mse > 0 else float("inf")
    return out


def preview_png(rows: dict[str, np.ndarray], path: Path, title: str = "") -> Path:
    """Tri-planar PNG: one row per (D, H, W) model-space volume, centre cut of each plane."""
    from matplotlib.figure import Figure

    from lift3d.utils import atomic_path

    fig = Figure(figsize=(6.3, 2.1 * len(rows) + 0.4), dpi=80)
    axes = fig.subplots(len(rows), 3, squeeze=False)
    for r, (name, vol) in enumerate(rows.items()):
        d, h, w = vol.shape
        cuts = [vol[d // 2], vol[:, h // 2], vol[:, :, w // 2]]
        for c, img in enumerate(cuts):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray", vmin=0, vmax=1, origin="lower", aspect="auto")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(("slice (d)", "h cut", "w cut")[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


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
        )
        return metrics

    return validate


# ------------------------------------------------------------------ training


def _update_run_json(run_dir: Path, **fields: Any) -> None:
    from lift3d.utils import atomic_write_text

    path = run_dir / "run.json"
    info = json.loads(path.read_text()) if path.is_file() else {}
    info.update(fields)
    atomic_write_text(path, json.dumps(info, indent=1))


def write_model_folder(
    model: nn.Module, cfg: TranslateConfig, out_dir: str | Path, run_info: dict | None = None
) -> Path:
    """Write a translation model folder (``config.yaml``, ``run.json``, ``model.safetensors``)
    outside a training run, e.g. for a model built or converted in code.

    Args:
        model: a `TranslationModel` matching `cfg`.
        cfg: its config.
        out_dir: folder to create or fill.
        run_info: extra ``run.json`` fields.
    """
    import lift3d
    from lift3d.config import save_config
    from lift3d.training.checkpoint import save_weights
    from lift3d.utils import atomic_write_text

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out_dir / "config.yaml")
    info = {
        "task": "translate",
        "subtask": cfg.task,
        "model_size": cfg.model.size,
        "lift3d_version": lift3d.__version__,
        "torch_version": torch.__version__,
        **(run_info or {}),
    }
    atomic_write_text(out_dir / "run.json", json.dumps(info, indent=1))
    save_weights(model, out_dir / WEIGHTS_FILE, {"task": "translate", "subtask": cfg.task})
    return out_dir


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
    from lift3d.data.datasets import SliceDataset, VolumeDataset, collate_volumes, split_cases
    from lift3d.data.discovery import discover_cases
    from lift3d.losses.translation import slice_loss, volume_loss
    from lift3d.training.checkpoint import save_weights
    from lift3d.training.engine import Engine
    from lift3d.utils import atomic_write_text

    run_dir = Path(run_dir)
    if not cfg.data.root:
        raise InputError("no training data: set data.root (lift3d train translate --data DIR)")
    slots, fixed_target = task_modalities(cfg.task)
    required = tuple(slots) if fixed_target is None else (*slots, fixed_target)
    shape = tuple(int(s) for s in cfg.data.shape)
    cases = list(
        discover_cases(
            cfg.data.root, cfg.data.layout, required=required, skip_bad=cfg.data.skip_bad
        )
    )
    train_cases, val_cases = split_cases(cases, cfg.data.val_fraction, cfg.train.seed)
    volumes = VolumeDataset(
        train_cases, required, shape, cfg.data.slice_axis, cfg.data.spacing_mm, cache=cfg.data.cache
    )
    val_data = (
        VolumeDataset(val_cases, required, shape, cfg.data.slice_axis, cfg.data.spacing_mm)
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
    _update_run_json(run_dir, subtask=cfg.task, model_size=cfg.model.size)
    model = build_model(cfg).to(engine.device)
    scores: dict[str, dict[str, float]] = {}
    n_slots = len(slots)

    def draw_missing(b: int, device: torch.device) -> Tensor | None:
        return None if fixed_target is not None else torch.randint(0, n_slots, (b,)).to(device)

    # Stage 1: F on slices (mixers unused and frozen).
    def translator_step(net: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        b = batch["mask"].shape[0]
        missing = draw_missing(b, batch["mask"].device)
        x = make_input(cfg.task, batch, missing)  # (B, C, 1, H, W)
        y = select_target(cfg.task, batch, missing)
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
        SliceDataset(volumes),
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
        if 0 < mcfg.z_chunk < depth:
            start = int(torch.randint(0, depth - mcfg.z_chunk + 1, (1,)))
            batch = {
                k: v[:, :, start : start + mcfg.z_chunk]
                if isinstance(v, Tensor) and v.dim() == 5
                else v
                for k, v in batch.items()
            }
        missing = draw_missing(b, batch["mask"].device)
        x = make_input(cfg.task, batch, missing)
        y = select_target(cfg.task, batch, missing)
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
        save_weights(
            model,
            run_dir / WEIGHTS_FILE,
            {"task": "translate", "subtask": cfg.task, "size": cfg.model.size},
        )
        if scores:
            atomic_write_text(run_dir / METRICS_FILE, json.dumps(scores, indent=1))
        log.info("model written to %s", run_dir / WEIGHTS_FILE)
    return run_dir
