"""Train the unconditional LiFT model: encoder E -> slice generator G -> trajectory mapper T.

(LiFT, arXiv 2605.19060; METHOD.md variant 1.) Three resumable engine stages in one run folder:

1. ``encoder``: E trained self-supervised (denoising or masked autoencoder) on 2D slices cut
   along all three axes of the training volumes, then frozen.
2. ``generator``: G(w, s) trained with the drifting loss in E's feature space (multi-scale
   tokens and an 8x8 intensity thumbnail); the normalised depth is appended to every feature so
   the kernel pairs generated slices with real slices at nearby depth.
3. ``mapper``: T trained with the tri-planar drifting loss, E and G frozen.

The run folder gets ``model.safetensors`` (E + G + T), ``reference.json`` (the training data's
reference grid and intensity record, so `lift3d generate` writes volumes on it) and preview
PNGs under ``val/``.
"""

from __future__ import annotations

import json
import logging
import math
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from lift3d.config import GenerateConfig, MapperConfig
from lift3d.data.datasets import SliceDataset, VolumeDataset, collate_volumes, split_cases
from lift3d.data.discovery import discover_cases
from lift3d.data.preprocess import restore_sample
from lift3d.data.volume import read_volume
from lift3d.errors import InputError
from lift3d.evaluation import EvalDescriptor, distribution_metrics, train_eval_encoder
from lift3d.inference import detail
from lift3d.inference.detail import ESTIMATORS
from lift3d.losses.drifting import drifting_loss_sets
from lift3d.losses.triplanar import triplanar_drifting_loss
from lift3d.model_folder import WEIGHTS_FILE, save_model, update_run_json
from lift3d.models.registry import generation_model_from_config
from lift3d.report.figures import preview_png
from lift3d.training.engine import Engine

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ data


def check_same_grid(cases: list[Any], modality: str) -> tuple[tuple[int, ...], np.ndarray]:
    """All training cases must share one grid (shape and affine), the generation output grid.

    Returns:
        (shape, affine) of the first case.

    Raises:
        InputError: naming the first case whose grid differs.
    """
    import nibabel as nib

    def grid(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
        if str(path).lower().endswith((".nii", ".nii.gz")):
            img = nib.load(str(path))
            return tuple(int(s) for s in img.shape[:3]), np.asarray(img.affine)
        vol = read_volume(path)
        return vol.shape, vol.affine

    ref_shape, ref_affine = grid(cases[0].paths[modality])
    for case in cases[1:]:
        shape, affine = grid(case.paths[modality])
        if shape != ref_shape or not np.allclose(affine, ref_affine, atol=1e-3, rtol=0):
            raise InputError(
                f"case {case.case_id} is on another grid (shape {shape}) than {cases[0].case_id} "
                f"(shape {ref_shape}); unconditional generation needs one shared grid",
                case.paths[modality],
            )
    return ref_shape, ref_affine


def _channels(batch: dict[str, Any], modalities: list[str]) -> Tensor:
    """Stack modalities along channels: (B, 1, ...) each -> (B, C, ...)."""
    return torch.cat([batch[m] for m in modalities], dim=1).float()


def _resize_collate(size: tuple[int, int], modalities: list[str]):
    """Collate slices cut along different axes: resize each to (H, W), keep depth."""

    def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for m in modalities:
            out[m] = torch.cat(
                [
                    F.interpolate(
                        it[m][None].float(), size=size, mode="bilinear", align_corners=False
                    )
                    for it in items
                ]
            )
        out["depth"] = torch.tensor([float(it["depth"]) for it in items])
        return out

    return collate


# ------------------------------------------------------------------ generator features


def slice_feature_sets(
    encoder: Any, x: Tensor, tokens: int = 2, thumbnail: int = 8
) -> dict[str, Tensor]:
    """Feature sets of slices for G's drifting loss (no depth channel).

    Returns:
        name -> (N, L, C_s): one set per encoder scale, average-pooled to ``tokens x tokens``
        cells (capped at the map size), one location per cell, and "pixels" (one location: the
        ``thumbnail x thumbnail`` intensity image, thumbnail^2 C values; 0: none).
    """
    sets: dict[str, Tensor] = {}
    for i, f in enumerate(encoder.features(x)):
        grid = (min(tokens, f.shape[-2]), min(tokens, f.shape[-1]))
        sets[f"scale{i}"] = F.adaptive_avg_pool2d(f, grid).flatten(2).transpose(1, 2)
    if thumbnail:
        sets["pixels"] = F.adaptive_avg_pool2d(x, thumbnail).flatten(1)[:, None]
    return sets


class DepthGroups(torch.utils.data.Dataset):
    """Item ``d``: every volume's slice at depth index ``d`` (G's depth-grouped batches).

    Args:
        slices: a `SliceDataset` over the training volumes.

    Items:
        ``{"<mod>": (S, 1, H, W) for S volumes, "depth": s in [0, 1]}``.
    """

    def __init__(self, slices: Any) -> None:
        self.slices = slices

    def __len__(self) -> int:
        return int(self.slices.num_slices)

    def __getitem__(self, d: int) -> dict[str, Any]:
        n = len(self.slices.volumes)
        items = [self.slices[j * self.slices.num_slices + d] for j in range(n)]
        out: dict[str, Any] = {
            m: torch.stack([it[m] for it in items]) for m in self.slices.modalities
        }
        out["depth"] = float(items[0]["depth"])
        return out


def generator_feature_sets(
    encoder: Any,
    x: Tensor,
    depth: Tensor,
    depth_scale: Tensor | None,
    tokens: int = 2,
    thumbnail: int = 8,
) -> dict[str, Tensor]:
    """Feature sets of slices for G's drifting loss, depth appended to every token.

    Args:
        encoder: frozen SliceEncoder.
        x: (N, C, H, W) slices.
        depth: (N,) normalised depths.
        depth_scale: per-set multiplier of the depth channel (from the real batch), or None.
        tokens: each encoder scale is average-pooled to ``tokens x tokens`` cells (capped at
            the map size), one location per cell.
        thumbnail: side of the intensity thumbnail.

    Returns:
        name -> (N, L, C_s + 1): one set per encoder scale (tokens^2 locations) and "pixels"
        (one location: the thumbnail, thumbnail^2 C values).
    """
    sets = slice_feature_sets(encoder, x, tokens, thumbnail)
    out = {}
    for name, t in sets.items():
        scale = 1.0 if depth_scale is None else depth_scale[name]
        d = (depth.to(t.dtype) * scale)[:, None, None].expand(-1, t.shape[1], 1)
        out[name] = torch.cat([t, d], dim=2)
    return out


def depth_scales(
    encoder: Any,
    real: Tensor,
    weight: float,
    tokens: int = 2,
    thumbnail: int = 8,
) -> dict[str, Tensor]:
    """Depth-channel scale per set: `weight` x the typical real feature distance, so slices a
    fraction 1/weight of the volume apart are as far apart as two typical slices."""
    with torch.no_grad():
        sets = generator_feature_sets(
            encoder,
            real,
            torch.zeros(real.shape[0], device=real.device),
            None,
            tokens,
            thumbnail,
        )
        scales = {}
        for name, t in sets.items():
            feats = t[..., :-1].transpose(0, 1)  # (L, N, C)
            scales[name] = weight * torch.cdist(feats, feats).mean().clamp_min(1e-6)
        return scales


def mapper_feature_fn(encoder: Any, kind: str, tokens: int = 2, thumbnail: int = 16) -> Any:
    """The slice-feature function of the tri-planar loss (`MapperConfig.features`).

    Returns:
        ``embed(x)`` for ``"embed"``; for ``"multiscale"`` a function (N, C, h, w) ->
        {"scale<i>": (N, C_i * t * t), "pixels": (N, C * thumbnail^2)}.
    """
    if kind == "embed":
        return encoder.embed
    if kind != "multiscale":
        raise InputError(f"mapper.features must be 'embed' or 'multiscale', got {kind!r}")
    if tokens < 1 or thumbnail < 0:
        raise InputError(
            f"need mapper.tokens >= 1 and mapper.thumbnail >= 0, got {tokens}, {thumbnail}"
        )

    def features(x: Tensor) -> dict[str, Tensor]:
        sets = slice_feature_sets(encoder, x, tokens, thumbnail)
        return {k: v.flatten(1) for k, v in sets.items()}

    return features


# ------------------------------------------------------------------ previews


def check_generate_config(cfg: GenerateConfig) -> None:
    """Reject bad option values before any stage trains.

    Raises:
        InputError: naming the option.
    """
    if cfg.generator_batches not in ("slices", "depth"):
        raise InputError(
            f"generator_batches must be 'slices' or 'depth', got {cfg.generator_batches!r}"
        )
    if cfg.generator_batches == "depth" and cfg.generator_group < 2:
        raise InputError(f"generator_group must be >= 2, got {cfg.generator_group}")
    mc = cfg.mapper
    if mc.features not in ("embed", "multiscale"):
        raise InputError(f"mapper.features must be 'embed' or 'multiscale', got {mc.features!r}")
    if mc.tokens < 1 or mc.thumbnail < 0:
        raise InputError(
            f"need mapper.tokens >= 1 and mapper.thumbnail >= 0, got {mc.tokens}, {mc.thumbnail}"
        )
    if mc.path_sigma < 0 or not 0.0 <= mc.path_mix <= 1.0:
        raise InputError(
            f"need mapper.path_sigma >= 0 and 0 <= mapper.path_mix <= 1, "
            f"got {mc.path_sigma}, {mc.path_mix}"
        )
    if mc.learn_path and mc.path_sigma <= 0:
        raise InputError("mapper.learn_path needs mapper.path_sigma > 0")
    if mc.path_per_component and not mc.learn_path:
        raise InputError("mapper.path_per_component needs mapper.learn_path: true")
    if mc.lr_schedule not in ("constant", "cosine"):
        raise InputError(
            f"mapper.lr_schedule must be 'constant' or 'cosine', got {mc.lr_schedule!r}"
        )
    if not 0.0 <= mc.lr_final_ratio <= 1.0:
        raise InputError(f"mapper.lr_final_ratio must be in [0, 1], got {mc.lr_final_ratio}")
    if mc.prior_weight < 0:
        raise InputError(f"mapper.prior_weight must be >= 0, got {mc.prior_weight}")
    if not 0.0 <= mc.ema_decay < 1.0:
        raise InputError(f"mapper.ema_decay must be in [0, 1), got {mc.ema_decay}")
    if mc.select and (mc.select_every < 1 or mc.select_samples < 2):
        raise InputError(
            f"mapper.select needs select_every >= 1 and select_samples >= 2, "
            f"got {mc.select_every}, {mc.select_samples}"
        )
    dc = cfg.detail
    if dc.estimator not in ESTIMATORS:
        raise InputError(f"detail.estimator must be one of {ESTIMATORS}, got {dc.estimator!r}")
    if dc.enabled and (dc.filter_sigma <= 0 or dc.cases < 1 or dc.samples < 1):
        raise InputError(
            f"detail needs filter_sigma > 0, cases >= 1 and samples >= 1, "
            f"got {dc.filter_sigma}, {dc.cases}, {dc.samples}"
        )


def train_generation(cfg: GenerateConfig, run_dir: str | Path, resume: bool = False) -> Path:
    """Run the three stages (each resumable) and write the final model folder.

    Args:
        cfg: the resolved config (``cfg.data.root`` set).
        run_dir: run folder.
        resume: continue the stages from their checkpoints (the engine resumes any stage with a
            checkpoint; finished stages are skipped).

    Returns:
        `run_dir`.

    Raises:
        InputError: no data, a missing modality, cases on different grids, bad settings.
    """
    from torch.utils.data import ConcatDataset

    run_dir = Path(run_dir)
    if not cfg.data.root:
        raise InputError("no training data: set data.root (lift3d train generate --data DIR)")
    check_generate_config(cfg)
    modalities = list(cfg.model.modalities)
    if not modalities:
        raise InputError("model.modalities must name at least one modality")
    shape = tuple(int(s) for s in cfg.data.shape)
    cases = list(
        discover_cases(
            cfg.data.root, cfg.data.layout, required=tuple(modalities), skip_bad=cfg.data.skip_bad
        )
    )
    check_same_grid(cases, modalities[0])
    train_cases, val_cases = split_cases(cases, cfg.data.val_fraction, cfg.train.seed)
    volumes = VolumeDataset(
        train_cases,
        modalities,
        shape,
        cfg.data.slice_axis,
        cfg.data.spacing_mm,
        cache=cfg.data.cache,
    )
    val_volumes = (
        VolumeDataset(
            val_cases, modalities, shape, cfg.data.slice_axis, cfg.data.spacing_mm, cache=True
        )
        if val_cases
        else None
    )

    engine = Engine(cfg.train, run_dir, full_config=cfg, task="generate")
    update_run_json(run_dir, subtask="generate")
    device = torch.device(engine.device)
    model = generation_model_from_config(cfg)
    preview_dir = run_dir / "val"
    preview_vol = _channels(collate_volumes([volumes[0]]), modalities)[0]  # (C, D, H, W)
    preview_real = preview_vol[0].numpy()  # first channel, for the PNGs

    # -------- stage 1: encoder (slices along all three model axes, resized to (H, W))
    slices = ConcatDataset([SliceDataset(volumes, axis=a) for a in (0, 1, 2)])

    def encoder_step(enc: Any, batch: dict[str, Any]) -> dict[str, Any]:
        return {"loss": enc.pretext_loss(_channels(batch, modalities))}

    def encoder_preview(enc: Any, step: int) -> dict[str, float]:
        x = preview_vol[:, shape[0] // 2][None].to(device)  # (1, C, H, W)
        corrupted = enc.corrupt(x, torch.Generator().manual_seed(0))
        rec = enc.reconstruct(corrupted).clamp(0, 1)
        if engine.is_main:
            rows = {"real": x, "corrupted": corrupted.clamp(0, 1), "reconstruction": rec}
            rows = {k: v[0, 0].cpu().numpy()[None].repeat(2, 0) for k, v in rows.items()}
            preview_png(rows, preview_dir / f"encoder_{step:07d}.png", f"encoder step {step}")
        return {"recon_mse": float(F.mse_loss(rec, x))}

    opt = torch.optim.Adam(model.encoder.parameters(), lr=cfg.encoder.lr)
    model.encoder = engine.fit(
        "encoder",
        model.encoder,
        opt,
        slices,
        step_fn=encoder_step,
        max_steps=cfg.encoder.steps,
        batch_size=cfg.encoder.batch_size,
        collate_fn=_resize_collate(shape[1:], modalities),
        validate_fn=encoder_preview,
    )
    encoder = model.encoder.to(device).eval()
    for p in encoder.parameters():
        p.requires_grad_(False)

    # -------- stage 2: slice generator, drifting loss in E's feature space
    axial = SliceDataset(volumes, axis=0)
    latent = model.generator.latent_dim

    def grouped_generator_step(gen: Any, batch: dict[str, Any]) -> dict[str, Any]:
        real = torch.cat([batch[m] for m in modalities], dim=2).float()  # (B, S, C, H, W)
        real = torch.cat([real, real.flip(-1)], dim=1)  # mirror images: 2S positives per depth
        b, n = real.shape[0], cfg.generator_group
        depth = batch["depth"].float()
        fake = gen(torch.randn(b * n, latent, device=real.device), depth.repeat_interleave(n))
        tok, thumb = cfg.generator_tokens, cfg.generator_thumbnail
        # Locations of every depth side by side: the drift is computed within each depth.
        g_sets = {
            k: rearrange(v, "(b n) l c -> n (b l) c", b=b)
            for k, v in slice_feature_sets(encoder, fake, tok, thumb).items()
        }
        with torch.no_grad():
            flat = rearrange(real, "b s c h w -> (b s) c h w")
            r_sets = {
                k: rearrange(v, "(b s) l c -> s (b l) c", b=b)
                for k, v in slice_feature_sets(encoder, flat, tok, thumb).items()
            }
        loss, parts = drifting_loss_sets(g_sets, r_sets)
        return {"loss": loss, **{f"ed_{k}": v for k, v in parts.items()}}

    def generator_step(gen: Any, batch: dict[str, Any]) -> dict[str, Any]:
        real = _channels(batch, modalities)
        depth = batch["depth"].float()
        n = real.shape[0]
        fake = gen(torch.randn(n, latent, device=real.device), depth)
        tok, thumb = cfg.generator_tokens, cfg.generator_thumbnail
        scales = depth_scales(encoder, real, cfg.depth_weight, tok, thumb)
        g_sets = generator_feature_sets(encoder, fake, depth, scales, tok, thumb)
        with torch.no_grad():
            r_sets = generator_feature_sets(encoder, real, depth, scales, tok, thumb)
        loss, parts = drifting_loss_sets(g_sets, r_sets)
        return {"loss": loss, **{f"ed_{k}": v for k, v in parts.items()}}

    def generator_preview(gen: Any, step: int) -> dict[str, float]:
        g = torch.Generator().manual_seed(0)
        w = torch.randn(3, latent, generator=g).to(device)
        s = torch.linspace(0, 1, shape[0], device=device)
        rows = {}
        for i in range(3):  # one code swept through depth, per row
            rows[f"code {i}"] = gen(w[i : i + 1].expand(shape[0], -1), s)[:, 0].cpu().numpy()
        rows["real"] = preview_real
        if engine.is_main:
            preview_png(rows, preview_dir / f"generator_{step:07d}.png", f"generator step {step}")
        fake = np.stack([rows[f"code {i}"] for i in range(3)])
        return {"mean_intensity_gap": float(abs(fake.mean() - preview_real.mean()))}

    grouped = cfg.generator_batches == "depth"
    opt = torch.optim.Adam(model.generator.parameters(), lr=cfg.generator.lr, betas=(0.5, 0.99))
    model.generator = engine.fit(
        "generator",
        model.generator,
        opt,
        DepthGroups(axial) if grouped else axial,
        step_fn=grouped_generator_step if grouped else generator_step,
        max_steps=cfg.generator.steps,
        batch_size=cfg.generator.batch_size,
        collate_fn=collate_volumes,
        validate_fn=generator_preview,
    )

    # -------- stage 3: trajectory mapper, tri-planar drifting loss, E and G frozen
    model.to(device)
    model.freeze_for_mapper()
    mc = cfg.mapper
    model.mapper.set_base_path(mc.path_sigma, mc.path_mix)  # a resumed checkpoint overrides
    if mc.learn_path:
        model.mapper.learn_base_path(True, per_component=mc.path_per_component)
    set_weights = {"slice": mc.weight_slice, "incr": mc.weight_incr, "traj": mc.weight_traj}
    slice_features = mapper_feature_fn(encoder, mc.features, mc.tokens, mc.thumbnail)

    def mapper_step(mapper: Any, batch: dict[str, Any]) -> dict[str, Any]:
        real = _channels(batch, modalities)
        if mc.flip_augment:
            flip = torch.rand(real.shape[0], device=real.device) < 0.5
            real = torch.where(flip[:, None, None, None, None], real.flip(-1), real)
        eps, per_slice = model.mapper.sample_noise(mc.gen_batch, shape[0], device=real.device)
        codes = mapper(eps, per_slice)  # (B, D, latent)
        fake = model.decode(codes)
        loss, parts = triplanar_drifting_loss(
            fake,
            real,
            slice_features,
            num_positions=mc.num_positions,
            set_weights=set_weights,
            loss_size=mc.loss_size,
            use_checkpoint=mc.checkpoint,
        )
        out = {"loss": loss, **{f"ed_{k}": v for k, v in parts.items()}}
        if mc.prior_weight > 0:
            prior = code_prior_penalty(codes)
            out["loss"] = loss + mc.prior_weight * prior
            out["code_prior"] = prior.detach()
        return out

    def sample_with(mapper: Any, n: int, seed: int) -> Tensor:
        """n volumes (n, C, D, H, W) from `mapper` (the validated weights: EMA when on)."""
        return model.sample(n, torch.Generator().manual_seed(seed), mapper=mapper)

    select_encoder = None
    if mc.select:
        select_refs = [volumes[i][modalities[0]][0].float().numpy() for i in range(len(volumes))]
        if val_volumes is not None:
            select_refs += [
                val_volumes[i][modalities[0]][0].float().numpy() for i in range(len(val_volumes))
            ]
        select_encoder = EvalDescriptor(
            train_eval_encoder(select_refs, seed=mc.select_seed, steps=mc.select_encoder_steps),
            "meanstd",
        )

    def mapper_preview(mapper: Any, step: int) -> dict[str, float]:
        lifted = sample_with(mapper, 1, 0)[0, 0].cpu().numpy()
        indep = (
            model.sample(1, torch.Generator().manual_seed(0), use_mapper=False)[0, 0].cpu().numpy()
        )
        if engine.is_main:
            rows = {"LiFT": lifted, "no mapper": indep, "real": preview_real}
            preview_png(rows, preview_dir / f"mapper_{step:07d}.png", f"mapper step {step}")
        real_dz = float(np.abs(np.diff(preview_real, axis=0)).mean())
        out = {"zgrad_ratio": float(np.abs(np.diff(lifted, axis=0)).mean()) / max(real_dz, 1e-8)}
        if select_encoder is not None:
            gen = sample_with(mapper, mc.select_samples, 1)[:, 0].float().cpu().numpy()
            m = distribution_metrics(
                list(gen),
                select_refs,
                select_encoder,
                max_slices=16,
                kid_subset_size=100,
                bootstrap=0,
            )
            kids = {f"select_kid_{p}": m[f"kid_{p}"] for p in ("axial", "coronal", "sagittal")}
            out.update(kids, select_kid=float(np.mean(list(kids.values()))))
        return out

    opt = torch.optim.Adam(model.mapper.parameters(), lr=mc.lr)
    sched = None
    if mc.lr_schedule == "cosine":
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, partial(cosine_factor, steps=mc.steps, final=mc.lr_final_ratio)
        )
    model.mapper = engine.fit(
        "mapper",
        model.mapper,
        opt,
        volumes,
        step_fn=mapper_step,
        max_steps=mc.steps,
        batch_size=mc.batch_size,
        collate_fn=collate_volumes,
        validate_fn=mapper_preview,
        scheduler=sched,
        ema_decay=mc.ema_decay,
        select=("select_kid", "min") if mc.select else None,
        val_every=mc.select_every if mc.select else None,
    )

    # -------- final model folder
    model.to("cpu")
    record = volumes[0]["record"]
    if engine.is_main:
        reference = {
            "task": "generate",
            "modalities": modalities,
            "shape": list(shape),
            "slice_axis": cfg.data.slice_axis,
            "size": cfg.model.size,
            "record": record,
            "reference_case": train_cases[0].case_id,
            "train_cases": [c.case_id for c in train_cases],
            "val_cases": [c.case_id for c in val_cases],
            "mapper_selection": _mapper_selection(run_dir, mc),
            "detail": calibrate_detail(model, train_cases, volumes, modalities, cfg),
            "data_root": str(Path(cfg.data.root).resolve()),
        }
        save_model(model, cfg, run_dir, reference=reference)
        log.info("model written to %s", run_dir / WEIGHTS_FILE)
    _ = val_volumes  # held-out volumes: scored by `lift3d evaluate --task generate`
    return run_dir


def calibrate_detail(
    model: Any, cases: list[Any], volumes: Any, modalities: list[str], cfg: GenerateConfig
) -> dict[str, Any] | None:
    """The output-detail record of reference.json (None when ``detail.enabled`` is false).

    Measures ``detail.cases`` training files as stored (the reference grid, each relative to its
    own intensity window) and ``detail.samples`` no-mapper samples of G restored to the
    reference grid with the reference record (`lift3d.inference.detail.calibrate`).
    """

    dc = cfg.detail
    if not dc.enabled:
        return None
    record = volumes[0]["record"]
    n_real = min(dc.cases, len(cases))
    real: dict[str, list[tuple[np.ndarray, float]]] = {m: [] for m in modalities}
    for i in range(n_real):
        case_record = volumes[i]["record"]
        for m in modalities:
            array = read_volume(cases[i].paths[m]).array
            real[m].append((array, detail.window_width(case_record, m)))
    generated: dict[str, list[tuple[np.ndarray, float]]] = {m: [] for m in modalities}
    gen = torch.Generator().manual_seed(dc.seed)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for _ in range(dc.samples):
            vol = model.sample(1, gen, use_mapper=False)[0].float().numpy()
            for c, m in enumerate(modalities):
                restored = restore_sample(vol[c], record, m).array
                generated[m].append((restored, detail.window_width(record, m)))
    model.train(was_training)
    out = {
        m: detail.calibrate(real[m], generated[m], dc.filter_sigma, dc.estimator)
        for m in modalities
    }
    for m, rec in out.items():
        log.info(
            "output detail %s (%s): level real %.4f, G %.4f (of the window) -> noise %.4f",
            m, dc.estimator, rec["level_real_rel"], rec["level_generated_rel"], rec["sigma_rel"],
        )  # fmt: skip
    return {"kind": "white gaussian, foreground only", "modalities": out}


def code_prior_penalty(codes: Tensor) -> Tensor:
    """Moment mismatch of codes (B, D, L) with N(0, I): mean over L of mean^2 + (var - 1)^2."""
    z = codes.reshape(-1, codes.shape[-1]).float()
    return (z.mean(0).square() + (z.var(0) - 1.0).square()).mean()


def cosine_factor(step: int, steps: int, final: float) -> float:
    """Learning-rate factor of a cosine decay from 1 at step 0 to `final` at `steps`."""
    t = min(max(step, 0), max(steps, 1)) / max(steps, 1)
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * t))


def _mapper_selection(run_dir: Path, mc: MapperConfig) -> dict[str, Any] | None:
    """How T's final weights were chosen (None: the last step's, or their average)."""
    if not mc.select:
        return None
    final = run_dir / "checkpoints" / "mapper" / "final.json"
    selected = json.loads(final.read_text()).get("selected") if final.is_file() else None
    return {
        "metric": "mean per-plane KID vs the training volumes (model grid)",
        "encoder": f"masked autoencoder, seed {mc.select_seed}, {mc.select_encoder_steps} steps",
        "every": mc.select_every,
        "samples": mc.select_samples,
        "selected": selected,
    }
