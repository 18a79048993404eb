"""Train the unconditional LiFT model: encoder E -> slice generator G -> trajectory mapper T.

(LiFT, arXiv 2605.19060; METHOD.md variant 1.) Three resumable engine stages in one run folder,
each a function of its own:

1. `train_encoder`: E trained self-supervised (denoising autoencoder) on 2D slices cut along
   all three axes of the training volumes, then frozen.
2. `train_generator`: G(w, s) trained with the drifting loss in E's feature space (pooled
   encoder tokens and an intensity thumbnail); the normalised depth is appended to every
   feature so the kernel pairs generated slices with real slices at nearby depth.
   With a latent G and ``decoder.steps > 0``, `train_decoder` then tunes the slice
   autoencoder's decoder to G's latent maps (a patch critic and G's drifting loss beside its
   reconstruction loss; its own checkpoint folder, part of G's stage in ``stages_done``).
3. `train_mapper`: T trained with the tri-planar drifting loss, E and G frozen.

`train_generation` runs them in order and writes the model folder with
`lift3d.model_folder.save_model`: ``model.safetensors`` (E + G + T), ``reference.json`` (the
training data's reference grid and intensity record, so `lift3d generate` writes volumes on
it) and preview PNGs under ``val/``. The folder is written once after the generator stage
(``run.json["stages_done"]`` = encoder, generator: ``lift3d generate --no-mapper`` works while T
trains, since T's stage freezes E and G) and again, final, after the mapper stage. The output-detail calibration is a separate step on the
finished folder (`lift3d.inference.detail.calibrate_model_folder`, run by
``lift3d train generate``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import ConcatDataset

from lift3d.config import (
    DISCRIMINATOR_LR,
    GENERATOR_DEPTH_WEIGHT,
    MAPPER_LR_FINAL_RATIO,
    GenerateConfig,
    MapperConfig,
    StageConfig,
)
from lift3d.data.datasets import SliceDataset, VolumeDataset, collate_volumes, split_cases
from lift3d.data.discovery import discover_cases
from lift3d.data.layouts import Case
from lift3d.data.store import resolve_store_dir
from lift3d.data.volume import nifti_codes, read_volume
from lift3d.errors import InputError
from lift3d.losses.drifting import drifting_loss_sets
from lift3d.losses.triplanar import through_plane_loss, triplanar_drifting_loss
from lift3d.model_folder import (
    GENERATION_STAGES,
    REFERENCE_FILE,
    RUN_FILE,
    STAGES_KEY,
    WEIGHTS_FILE,
    save_model,
    trained_stages,
    update_run_json,
)
from lift3d.models.registry import generation_model_from_config
from lift3d.models.slice_generator import LatentDiscriminator, SliceCritic
from lift3d.models.weights import load_weights
from lift3d.report.figures import preview_png, slices_png
from lift3d.training import checkpoint as ckpt
from lift3d.training.engine import Engine

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ data


@dataclass
class TrainingData:
    """The cases and volumes of one generation run.

    Attributes:
        modalities: the channels, in order.
        train_cases: the training split (its first case's grid is the reference grid).
        val_cases: held-out cases (scored by ``lift3d evaluate --task generate``).
        volumes: the training volumes on the model grid, items ``{"<mod>": (1, D, H, W),
            "record": preprocessing record, ...}``.
    """

    modalities: list[str]
    train_cases: list[Case]
    val_cases: list[Case]
    volumes: VolumeDataset


def load_training_data(cfg: GenerateConfig) -> TrainingData:
    """Discover ``cfg.data.root``, check the shared grid, split, and wrap the training volumes.

    Raises:
        InputError: no data root, no modality, a missing modality, cases on different grids.
    """
    if not cfg.data.root:
        raise InputError("no training data: set data.root (lift3d train generate --data DIR)")
    modalities = list(cfg.model.modalities)
    if not modalities:
        raise InputError("model.modalities must name at least one modality")
    store_dir = resolve_store_dir(cfg.data.store, cfg.data.root)
    cases = list(
        discover_cases(
            cfg.data.root,
            cfg.data.layout,
            required=tuple(modalities),
            skip_bad=cfg.data.skip_bad,
            # with a store, voxel data is checked once, when a case is built into it
            validate="header" if store_dir is not None else True,
        )
    )
    check_same_grid(cases, modalities[0])
    train_cases, val_cases = split_cases(cases, cfg.data.val_fraction, cfg.train.seed)
    volumes = VolumeDataset(
        train_cases,
        modalities,
        tuple(int(s) for s in cfg.data.shape),
        cfg.data.slice_axis,
        cfg.data.spacing_mm,
        cache=cfg.data.cache,
        store_dir=store_dir,
        skip_bad=cfg.data.skip_bad,
    )
    return TrainingData(modalities, volumes.cases, val_cases, volumes)


def check_same_grid(cases: list[Any], modality: str) -> tuple[tuple[int, ...], np.ndarray]:
    """All training cases must share one grid (shape and affine), the generation output grid.

    Returns:
        (shape, affine) of the first case.

    Raises:
        InputError: naming the first case whose grid differs.
    """

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


def check_generate_config(cfg: GenerateConfig) -> None:
    """Reject bad option values before any stage trains.

    Raises:
        InputError: naming the option.
    """
    mc = cfg.mapper
    if mc.path_sigma < 0 or not 0.0 <= mc.path_mix <= 1.0:
        raise InputError(
            f"need mapper.path_sigma >= 0 and 0 <= mapper.path_mix <= 1, "
            f"got {mc.path_sigma}, {mc.path_mix}"
        )
    if mc.learn_path and mc.path_sigma <= 0:
        raise InputError("mapper.learn_path needs mapper.path_sigma > 0")
    if not mc.residual_head and not mc.learn_path:
        raise InputError(
            "mapper.residual_head: false leaves nothing to train unless mapper.learn_path is true"
        )
    if mc.lr_schedule not in ("constant", "cosine"):
        raise InputError(
            f"mapper.lr_schedule must be 'constant' or 'cosine', got {mc.lr_schedule!r}"
        )
    if cfg.generator_adversarial > 0 and cfg.model.generator_latent <= 0:
        raise InputError(
            "generator_adversarial needs a latent generator (model.generator_latent > 0): its "
            "critic compares latent maps"
        )
    if cfg.decoder.steps > 0 and cfg.model.generator_latent <= 0:
        raise InputError(
            "decoder.steps > 0 needs a latent generator (model.generator_latent > 0): the stage "
            "tunes the slice autoencoder's decoder that renders G's latent maps"
        )
    n, tc = cfg.generator_average, cfg.train
    if n > 1 and (
        tc.ckpt_every <= 0
        or (0 < tc.keep_last < n)
        or (n - 1) * tc.ckpt_every >= cfg.generator.steps
    ):
        raise InputError(
            f"generator_average={n} averages G's newest {n} step checkpoints: it needs "
            f"train.ckpt_every > 0, train.keep_last >= {n} (or 0) and generator.steps > "
            f"{n - 1} x train.ckpt_every; got {tc.ckpt_every}, {tc.keep_last} and "
            f"{cfg.generator.steps}"
        )
    dc = cfg.detail
    if dc.enabled and (dc.cases < 1 or dc.samples < 1):
        raise InputError(f"detail needs cases >= 1 and samples >= 1, got {dc.cases}, {dc.samples}")
    if not dc.enabled and (dc.sample_detail or dc.sample_intensity_map):
        raise InputError(
            "detail.sample_detail and detail.sample_intensity_map need detail.enabled: true "
            "(the calibration they apply is measured after training)"
        )


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


@dataclass(frozen=True)
class SliceFeatures:
    """Which feature sets G's drifting loss compares (the ``generator_*`` config keys).

    Attributes:
        tokens: each encoder scale average-pooled to ``tokens x tokens`` cells, one location
            per cell.
        thumbnail: side of the intensity thumbnail (0: none).
        edges: side of the pooled voxel-difference grid (0: none).
    """

    tokens: int = 2
    thumbnail: int = 8
    edges: int = 0

    @classmethod
    def from_config(cls, cfg: GenerateConfig) -> SliceFeatures:
        return cls(cfg.generator_tokens, cfg.generator_thumbnail, cfg.generator_edges)


def slice_feature_sets(encoder: Any, x: Tensor, spec: SliceFeatures) -> dict[str, Tensor]:
    """Feature sets of slices for G's drifting loss (no depth channel).

    Args:
        encoder: the frozen slice encoder E.
        x: (N, C, H, W) slices.
        spec: which sets.

    Returns:
        name -> (N, L, C_s): one set per encoder scale, average-pooled to ``tokens x tokens``
        cells (capped at the map size), one location per cell; "pixels" (one location: the
        ``thumbnail x thumbnail`` intensity image, thumbnail^2 C values); "edges" (one
        location: the mean absolute voxel-to-voxel difference along each in-plane axis, pooled
        to ``edges x edges`` cells, 2 edges^2 C values). Average pooling hides voxel-scale
        patterns such as stripes from the encoder tokens and the thumbnail; the edge set sees
        how much a slice changes from voxel to voxel, and where.
    """
    sets: dict[str, Tensor] = {}
    for i, f in enumerate(encoder.features(x)):
        grid = (min(spec.tokens, f.shape[-2]), min(spec.tokens, f.shape[-1]))
        sets[f"scale{i}"] = F.adaptive_avg_pool2d(f, grid).flatten(2).transpose(1, 2)
    if spec.thumbnail:
        sets["pixels"] = F.adaptive_avg_pool2d(x, spec.thumbnail).flatten(1)[:, None]
    if spec.edges:
        dy = F.adaptive_avg_pool2d((x[..., 1:, :] - x[..., :-1, :]).abs(), spec.edges)
        dx = F.adaptive_avg_pool2d((x[..., :, 1:] - x[..., :, :-1]).abs(), spec.edges)
        sets["edges"] = torch.cat([dy.flatten(1), dx.flatten(1)], dim=1)[:, None]
    return sets


def with_depth(
    sets: dict[str, Tensor], depth: Tensor, depth_scale: dict[str, Tensor]
) -> dict[str, Tensor]:
    """Append the normalised depth to every token: (N, L, C_s) -> (N, L, C_s + 1).

    Args:
        sets: `slice_feature_sets` output.
        depth: (N,) normalised depths.
        depth_scale: per-set multiplier of the depth channel (`depth_scales`).
    """
    out = {}
    for name, t in sets.items():
        d = (depth.to(t.dtype) * depth_scale[name])[:, None, None].expand(-1, t.shape[1], 1)
        out[name] = torch.cat([t, d], dim=2)
    return out


def depth_scales(sets: dict[str, Tensor], weight: float) -> dict[str, Tensor]:
    """Depth-channel scale per set from the real batch's `slice_feature_sets`: `weight` x the
    typical real feature distance, so slices a fraction 1/weight of the volume apart are as far
    apart as two typical slices."""
    with torch.no_grad():
        scales = {}
        for name, t in sets.items():
            feats = t.transpose(0, 1)  # (L, N, C)
            scales[name] = weight * torch.cdist(feats, feats).mean().clamp_min(1e-6)
        return scales


def cosine_factor(step: int, steps: int, final: float) -> float:
    """Learning-rate factor of a cosine decay from 1 at step 0 to `final` at `steps`."""
    t = min(max(step, 0), max(steps, 1)) / max(steps, 1)
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * t))


def lr_scheduler(opt: torch.optim.Optimizer, schedule: str, steps: int) -> Any:
    """The stage's scheduler for ``lr_schedule`` (None for "constant"; "cosine": from the
    optimiser's lr down to ``MAPPER_LR_FINAL_RATIO`` of it at `steps`)."""
    if schedule == "constant":
        return None
    factor = partial(cosine_factor, steps=steps, final=MAPPER_LR_FINAL_RATIO)
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


# ------------------------------------------------------------------ step losses


def encoder_step(encoder: nn.Module, batch: dict[str, Any], *, modalities: list[str]) -> dict:
    """E's self-supervised pretext loss on a batch of (B, C, H, W) slices."""
    return {"loss": encoder.pretext_loss(_channels(batch, modalities))}


def encoder_autoencoder_step(
    pair: nn.ModuleDict, batch: dict[str, Any], *, modalities: list[str]
) -> dict:
    """The encoder stage when G decodes through a slice autoencoder: E's pretext loss plus the
    autoencoder's L1 reconstruction loss, on the same slices."""
    x = _channels(batch, modalities)
    pretext = pair["encoder"].pretext_loss(x)
    recon = pair["autoencoder"].reconstruction_loss(x)
    return {"loss": pretext + recon, "pretext": pretext.detach(), "recon_l1": recon.detach()}


def generator_step(
    generator: nn.Module,
    batch: dict[str, Any],
    *,
    encoder: nn.Module,
    modalities: list[str],
    features: SliceFeatures,
) -> dict[str, Any]:
    """G's drifting loss: one generated slice per real slice, at the same depth.

    Args:
        generator: G(w, s).
        batch: ``{"<mod>": (B, 1, H, W), "depth": (B,)}`` axial slices.
        encoder: the frozen E whose features the loss compares.
        modalities: the channels, in order.
        features: the feature sets.

    Returns:
        ``{"loss", "ed_<set>": energy distance per feature set}``.
    """
    real = _channels(batch, modalities)
    depth = batch["depth"].float()
    fake = generator(torch.randn(real.shape[0], generator.latent_dim, device=real.device), depth)
    loss, parts = _slice_drifting_loss(encoder, real, fake, depth, features)
    return {"loss": loss, **{f"ed_{k}": v for k, v in parts.items()}}


def _slice_drifting_loss(
    encoder: nn.Module, real: Tensor, fake: Tensor, depth: Tensor, features: SliceFeatures
) -> tuple[Tensor, dict[str, float]]:
    """The drifting loss between generated and real slices at the same depths, in E's feature
    sets with the depth appended (scaled from the real batch)."""
    with torch.no_grad():
        real_sets = slice_feature_sets(encoder, real, features)
        scales = depth_scales(real_sets, GENERATOR_DEPTH_WEIGHT)
        r_sets = with_depth(real_sets, depth, scales)
    g_sets = with_depth(slice_feature_sets(encoder, fake, features), depth, scales)
    return drifting_loss_sets(g_sets, r_sets)


# Largest code cache `RealCodes` keeps (bytes); past it G's stage encodes the real slices anew
# each step (the 64^3 phantoms' codes take 4 MB; BraTS-size datasets' would take gigabytes).
CODE_CACHE_BYTES = 256 * 2**20


class RealCodes:
    """The frozen autoencoder's codes of the training slices, each computed once.

    The latent critic compares G's maps with the autoencoder's codes of the batch's real
    slices; the autoencoder is frozen in G's stage and the slices are not augmented, so a
    slice's code never changes. Encoding them anew every step was about a fifth of the
    demo's G step on the CPU. Codes are kept in one float32 tensor (filled as slices first
    appear) when it fits in ``limit`` bytes; otherwise every call encodes.

    Args:
        autoencoder: the frozen `SliceAutoencoder`.
        num_cases: cases of the slice dataset (``batch["case_index"]`` < this).
        num_slices: slices per case (``batch["index"]`` < this).
        slice_size: (H, W) of the slices.
        limit: the most bytes the cache may hold.
    """

    def __init__(
        self,
        autoencoder: nn.Module,
        num_cases: int,
        num_slices: int,
        slice_size: tuple[int, int],
        limit: int = CODE_CACHE_BYTES,
    ) -> None:
        self.autoencoder = autoencoder
        self.num_slices = num_slices
        h, w = autoencoder.latent_size(slice_size)
        shape = (num_cases * num_slices, autoencoder.latent_channels, h, w)
        self.codes: Tensor | None = None
        if math.prod(shape) * 4 <= limit:
            self.codes = torch.zeros(shape)
            self.filled = torch.zeros(shape[0], dtype=torch.bool)

    def __call__(self, real: Tensor, batch: dict[str, Any]) -> Tensor:
        """Codes (N, c, h, w) of the batch's real slices (N, C, H, W), float32."""
        with torch.no_grad():
            if self.codes is None:
                return self.autoencoder.encode(real).float()
            keys = batch["case_index"].cpu() * self.num_slices + batch["index"].cpu()
            missing = ~self.filled[keys]
            if missing.any():
                todo = missing.nonzero()[:, 0]
                new = self.autoencoder.encode(real[todo.to(real.device)]).float().cpu()
                self.codes[keys[todo]] = new
                self.filled[keys[todo]] = True
            return self.codes[keys].to(real.device)


def adversarial_generator_step(
    pair: nn.ModuleDict,
    batch: dict[str, Any],
    *,
    encoder: nn.Module,
    modalities: list[str],
    features: SliceFeatures,
    weight: float,
    real_codes: RealCodes | None = None,
) -> dict[str, Any]:
    """G's drifting loss plus ``weight`` x an adversarial term on its latent maps
    (``generator_adversarial > 0``).

    First the critic (``pair["discriminator"]``, a `LatentDiscriminator`) takes one Adam step
    of its own (`LatentDiscriminator.update`, learning rate ``DISCRIMINATOR_LR``) on its hinge
    loss: the frozen autoencoder's codes of the batch's real slices against G's latent maps
    (detached) at the same depths. Then G's term, ``-critic(map)``, is taken from the updated
    critic, whose parameters the stage keeps frozen, so the stage's optimiser trains G alone.

    ``real_codes`` (a `RealCodes` over the stage's slice dataset) supplies the real slices'
    codes without encoding them again; None encodes them here.

    Returns:
        ``{"loss", "critic", "adversarial", "ed_<set>"}``.
    """
    generator, critic = pair["generator"], pair["discriminator"]
    real = _channels(batch, modalities)
    depth = batch["depth"].float()
    w = torch.randn(real.shape[0], generator.latent_dim, device=real.device)
    fake_map = generator.latent_map(w, depth)
    if real_codes is None:
        with torch.no_grad():
            real_map = generator.autoencoder.encode(real).float()
    else:
        real_map = real_codes(real, batch)
    critic_loss = critic.hinge_update(
        (real_map, depth), (fake_map.detach().float(), depth), DISCRIMINATOR_LR
    )
    fake = generator.autoencoder.decode(fake_map, generator.slice_size)
    drift, parts = _slice_drifting_loss(encoder, real, fake, depth, features)
    # the stage keeps the critic's parameters frozen (`train_generator`): G's term trains G only
    adversarial = -critic(fake_map.float(), depth).mean()
    return {
        "loss": drift + weight * adversarial,
        "critic": critic_loss,
        "adversarial": adversarial.detach(),
        **{f"ed_{k}": v for k, v in parts.items()},
    }


def decoder_step(
    pair: nn.ModuleDict,
    batch: dict[str, Any],
    *,
    modalities: list[str],
    weight: float,
    real_codes: RealCodes | None = None,
    drifting: float = 0.0,
    encoder: nn.Module | None = None,
    features: SliceFeatures | None = None,
) -> dict[str, Any]:
    """One step of the decoder-tuning stage (`train_decoder`).

    First the patch critic (``pair["critic"]``, a `SliceCritic`) takes one Adam step of its own
    on its hinge loss: the batch's real slices against the decoder's renderings of G's latent
    maps (drawn at the same depths, G frozen). Then the decoder's loss: L1 between the real
    slices and their reconstruction from their codes (it stays the autoencoder's decoder) plus
    ``weight`` x ``-critic(rendering)`` from the updated critic (which also sees the slices'
    depths when it was built with ``depth_dim > 0``), plus ``drifting`` x G's
    drifting loss of the renderings in ``encoder``'s ``features`` (when > 0).

    Returns:
        ``{"loss", "recon_l1", "critic", "adversarial"}`` (and ``"drifting"``).
    """
    generator, critic = pair["generator"], pair["critic"]
    autoencoder = generator.autoencoder
    real = _channels(batch, modalities)
    depth = batch["depth"].float()
    size = generator.slice_size
    with torch.no_grad():
        fake_map = generator.latent_map(
            torch.randn(real.shape[0], generator.latent_dim, device=real.device), depth
        )
        if real_codes is None:
            codes = autoencoder.encode(real).float()
        else:
            codes = real_codes(real, batch)
    fake = autoencoder.decode(fake_map, size)
    seen = (depth,) if critic.depth_dim else ()  # a depth-conditioned critic sees the depths
    critic_loss = critic.hinge_update(
        (real.float(), *seen), (fake.detach().float(), *seen), DISCRIMINATOR_LR
    )
    recon = F.l1_loss(autoencoder.decode(codes, size).float(), real.float())
    adversarial = -critic(fake.float(), *seen).mean()
    out = {
        "loss": recon + weight * adversarial,
        "recon_l1": recon.detach(),
        "critic": critic_loss,
        "adversarial": adversarial.detach(),
    }
    if drifting > 0:
        if encoder is None or features is None:
            raise ValueError("a drifting term needs the encoder and its feature sets")
        drift, _ = _slice_drifting_loss(encoder, real, fake, depth, features)
        out["loss"] = out["loss"] + drifting * drift
        out["drifting"] = drift.detach()
    return out


def loss_factors(
    shape: tuple[int, ...] | list[int], loss_size: list[int] | None
) -> tuple[int, int, int] | None:
    """Per-axis integer factors from the model grid (D, H, W) down to the mapper's loss
    volume, or None when there is no loss size or some axis does not divide evenly (the loss
    then resamples the decoded volumes trilinearly)."""
    if loss_size is None:
        return None
    shape = [int(s) for s in shape]
    size = [int(s) for s in loss_size]
    if any(n <= 0 or s % n for s, n in zip(shape, size, strict=True)):
        return None
    factors = tuple(s // n for s, n in zip(shape, size, strict=True))
    return None if factors == (1, 1, 1) else factors  # type: ignore[return-value]


def mapper_step(
    mapper: nn.Module,
    batch: dict[str, Any],
    *,
    model: nn.Module,
    modalities: list[str],
    gen_batch: int,
    num_positions: int,
    loss_size: list[int] | None,
    zgrad_weight: float = 0.0,
    noise_sigma: list[float] | float = 0.0,
) -> dict[str, Any]:
    """T's tri-planar drifting loss between ``gen_batch`` generated and the batch's real volumes.

    Args:
        mapper: T (``model.mapper``).
        batch: ``{"<mod>": (B, 1, D, H, W)}`` real volumes.
        model: the `GenerationModel` whose frozen G decodes T's codes and whose E embeds cuts.
        modalities: the channels, in order.
        gen_batch: generated volumes per step.
        num_positions: cuts per plane.
        loss_size: (D, H, W) the loss volumes are resampled to, or None. When it divides the
            model grid by integer factors, G decodes only every f_d-th slice (a random phase
            per step, the same slices of the real volumes) and both are average-pooled
            in-plane: the loss sees the same grid at a fraction of the cost of decoding every
            slice (docs/journal/2026-11-27-demo-speed.md).
        zgrad_weight: weight of `through_plane_loss` on the loss volumes (0: not computed).
        noise_sigma: the output detail's noise std per channel (model space, model grid) that
            `through_plane_loss` adds to the generated volumes (scaled to the in-plane pooling).

    Returns:
        ``{"loss", "ed_<plane>_<set>": energy distance per plane and feature set}``, and with a
        through-plane term ``"zgrad_ratio"`` (generated / real slice-to-slice change).
    """
    real = _channels(batch, modalities)
    # Mirror real volumes left-right (W axis) at random: a brain's two halves are alike.
    flip = torch.rand(real.shape[0], device=real.device) < 0.5
    real = torch.where(flip[:, None, None, None, None], real.flip(-1), real)
    eps, per_slice = mapper.sample_noise(gen_batch, model.num_slices, device=real.device)
    codes = mapper(eps, per_slice)  # (B, D, latent)
    factors = loss_factors(model.shape, loss_size)
    pooled = 1
    if factors is None:
        fake = model.decode(codes)  # (B, C, D, H, W)
    else:
        # Decode only what the loss volume needs: every f_d-th slice (random phase, the same
        # for the real volumes), average-pooled in-plane to the loss size.
        f_d, f_h, f_w = factors
        phase = int(torch.randint(0, f_d, (1,)))
        depths = model.depths(real.device)[phase::f_d]
        fake = F.avg_pool3d(model.decode(codes[:, phase::f_d], depths), (1, f_h, f_w))
        real = F.avg_pool3d(real[:, :, phase::f_d], (1, f_h, f_w))
        pooled = f_h * f_w
    loss, parts = triplanar_drifting_loss(
        fake, real, model.encoder.embed, num_positions=num_positions, loss_size=loss_size
    )
    out = {"loss": loss, **{f"ed_{k}": v for k, v in parts.items()}}
    if zgrad_weight > 0:
        # white noise averaged over `pooled` voxels in-plane: its std shrinks by sqrt(pooled)
        sigma = [float(s) / math.sqrt(pooled) for s in np.atleast_1d(noise_sigma)]
        term, ratio = through_plane_loss(fake, real, sigma)
        out["loss"] = out["loss"] + zgrad_weight * term
        out["zgrad_ratio"] = ratio
    return out


# ------------------------------------------------------------------ previews


@dataclass
class Previews:
    """Stage previews: PNGs in `folder`, each next to the first training volume.

    Attributes:
        folder: where the PNGs go (``RUN/val``).
        real: (C, D, H, W) the first training volume on the model grid.
        device: the device the stages train on.
        write: write PNGs (the main process only); the returned metrics are computed anyway.
    """

    folder: Path
    real: Tensor
    device: torch.device
    write: bool = True

    @classmethod
    def for_run(cls, run_dir: Path, data: TrainingData, engine: Engine) -> Previews:
        real = _channels(collate_volumes([data.volumes[0]]), data.modalities)[0]
        return cls(run_dir / "val", real, torch.device(engine.device), engine.is_main)


def encoder_preview(
    encoder: nn.Module,
    step: int,
    *,
    previews: Previews,
    autoencoder: nn.Module | None = None,
) -> dict[str, float]:
    """Corrupt and reconstruct the middle axial, coronal and sagittal slices of the preview
    volume, the latter two resized to the axial slice size as in training (and, when G has a
    slice autoencoder, its reconstruction of the clean slices). Scores are over the three."""
    real = previews.real  # (C, D, H, W)
    _, d, h, w = real.shape
    cuts = [real[:, d // 2], real[:, :, h // 2], real[:, :, :, w // 2]]
    x = torch.stack([F.interpolate(t[None], size=(h, w), mode="bilinear")[0] for t in cuts])
    x = x.to(previews.device)  # (3, C, H, W)
    corrupted = encoder.corrupt(x, torch.Generator().manual_seed(0))
    rec = encoder.reconstruct(corrupted).clamp(0, 1)
    rows = {"real": x, "corrupted": corrupted.clamp(0, 1), "reconstruction": rec}
    scores = {"recon_mse": float(F.mse_loss(rec, x))}
    if autoencoder is not None:
        ae = autoencoder.decode(autoencoder.encode(x), (h, w))
        rows["autoencoder"] = ae
        scores["autoencoder_l1"] = float(F.l1_loss(ae, x))
    if previews.write:
        images = {k: list(v[:, 0].float().cpu().numpy()) for k, v in rows.items()}
        slices_png(images, previews.folder / f"encoder_{step:07d}.png", f"encoder step {step}")
    return scores


def generator_preview(
    generator: nn.Module, step: int, *, previews: Previews, stage: str = "generator"
) -> dict[str, float]:
    """Three codes, each swept through depth, next to the real volume (first channel); the
    image is ``<stage>_<step>.png``."""
    depth, device = previews.real.shape[1], previews.device
    real = previews.real[0].numpy()
    w = torch.randn(3, generator.latent_dim, generator=torch.Generator().manual_seed(0))
    w, s = w.to(device), torch.linspace(0, 1, depth, device=device)
    rows = {}
    for i in range(3):  # one code swept through depth, per row
        rows[f"code {i}"] = generator(w[i : i + 1].expand(depth, -1), s)[:, 0].float().cpu().numpy()
    rows["real"] = real
    if previews.write:
        name = previews.folder / f"{stage}_{step:07d}.png"
        preview_png(rows, name, f"{stage} step {step}")
    fake = np.stack([rows[f"code {i}"] for i in range(3)])
    return {"mean_intensity_gap": float(abs(fake.mean() - real.mean()))}


def mapper_preview(
    mapper: nn.Module, step: int, *, model: nn.Module, previews: Previews
) -> dict[str, float]:
    """One LiFT sample and one no-mapper sample next to the real volume; through-plane
    gradient of the LiFT sample relative to the real one's."""
    real = previews.real[0].numpy()
    lifted = model.sample(1, torch.Generator().manual_seed(0))[0, 0].float().cpu().numpy()
    indep = model.sample(1, torch.Generator().manual_seed(0), use_mapper=False)[0, 0]
    if previews.write:
        rows = {"LiFT": lifted, "no mapper": indep.float().cpu().numpy(), "real": real}
        preview_png(rows, previews.folder / f"mapper_{step:07d}.png", f"mapper step {step}")
    real_dz = float(np.abs(np.diff(real, axis=0)).mean())
    return {"zgrad_ratio": float(np.abs(np.diff(lifted, axis=0)).mean()) / max(real_dz, 1e-8)}


# ------------------------------------------------------------------ stages


def train_encoder(
    cfg: GenerateConfig,
    engine: Engine,
    model: nn.Module,
    volumes: VolumeDataset,
    previews: Previews | None = None,
) -> nn.Module:
    """Stage ``encoder``: E's pretext task on slices cut along all three model axes.

    Slices along H and W are resized to the (H, W) of axial slices. Trains ``model.encoder``
    in place (resuming from its checkpoints), and with it G's slice autoencoder when G has one
    (``model.generator_latent > 0``: `encoder_autoencoder_step`).

    Args:
        cfg: the run's config (``encoder`` section: steps, lr, batch size).
        engine: the run's training engine.
        model: the `GenerationModel`.
        volumes: the training volumes.
        previews: periodic reconstruction previews, or None.

    Returns:
        The trained encoder (``model.encoder``).
    """
    modalities = list(cfg.model.modalities)
    slices = ConcatDataset([SliceDataset(volumes, axis=a) for a in (0, 1, 2)])
    autoencoder = model.generator.autoencoder
    if autoencoder is not None:
        pair = nn.ModuleDict({"encoder": model.encoder, "autoencoder": autoencoder})
        # Channels-last weights for the stage: the thin full-resolution convolutions of both
        # networks train ~25 % faster so on the CPU (with `lift3d.models.layers.GroupNorm`);
        # the same function. Back to the default layout afterwards (the mapper's step is
        # faster with it).
        pair = pair.to(memory_format=torch.channels_last)
        preview = None
        if previews is not None:
            preview = lambda net, step: encoder_preview(  # noqa: E731
                net["encoder"], step, previews=previews, autoencoder=net["autoencoder"]
            )
        opt = torch.optim.Adam(pair.parameters(), lr=cfg.encoder.lr)
        pair = engine.fit(
            "encoder",
            pair,
            opt,
            slices,
            step_fn=partial(encoder_autoencoder_step, modalities=modalities),
            max_steps=cfg.encoder.steps,
            batch_size=cfg.encoder.batch_size,
            collate_fn=_resize_collate(model.shape[1:], modalities),
            validate_fn=preview,
            scheduler=lr_scheduler(opt, cfg.encoder.lr_schedule, cfg.encoder.steps),
        )
        pair = pair.to(memory_format=torch.contiguous_format)
        model.encoder, model.generator.autoencoder = pair["encoder"], pair["autoencoder"]
        return model.encoder
    opt = torch.optim.Adam(model.encoder.parameters(), lr=cfg.encoder.lr)
    model.encoder = engine.fit(
        "encoder",
        model.encoder,
        opt,
        slices,
        step_fn=partial(encoder_step, modalities=modalities),
        max_steps=cfg.encoder.steps,
        batch_size=cfg.encoder.batch_size,
        collate_fn=_resize_collate(model.shape[1:], modalities),
        validate_fn=None if previews is None else partial(encoder_preview, previews=previews),
        scheduler=lr_scheduler(opt, cfg.encoder.lr_schedule, cfg.encoder.steps),
    )
    return model.encoder


def _fit_stage(
    engine: Engine,
    stage: str,
    module: nn.Module,
    opt: torch.optim.Optimizer,
    dataset: Any,
    step: Callable[..., dict],
    sc: StageConfig | MapperConfig,
    preview: Callable[..., dict] | None,
) -> nn.Module:
    """One engine stage with the stage config's steps, batch size and lr schedule."""
    return engine.fit(
        stage,
        module,
        opt,
        dataset,
        step_fn=step,
        max_steps=sc.steps,
        batch_size=sc.batch_size,
        collate_fn=collate_volumes,
        validate_fn=preview,
        scheduler=lr_scheduler(opt, sc.lr_schedule, sc.steps),
    )


def train_generator(
    cfg: GenerateConfig,
    engine: Engine,
    model: nn.Module,
    volumes: VolumeDataset,
    previews: Previews | None = None,
) -> nn.Module:
    """Stage ``generator``: G on axial slices with the drifting loss in frozen E's features.

    Freezes ``model.encoder`` (eval mode, no gradients) and trains ``model.generator`` in place.

    Args:
        cfg: the run's config (``generator`` section, ``generator_tokens``,
            ``generator_thumbnail``).
        engine: the run's training engine.
        model: the `GenerationModel` (its encoder trained).
        volumes: the training volumes.
        previews: periodic depth-sweep previews, or None.

    Returns:
        The trained generator (``model.generator``).
    """
    encoder = model.encoder.to(torch.device(engine.device)).eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    if model.generator.autoencoder is not None:  # trained in the encoder stage; frozen here
        for p in model.generator.autoencoder.parameters():
            p.requires_grad_(False)
    modalities, features = list(cfg.model.modalities), SliceFeatures.from_config(cfg)
    trainable = [p for p in model.generator.parameters() if p.requires_grad]
    stage_model: nn.Module = model.generator
    step = partial(generator_step, encoder=encoder, modalities=modalities, features=features)
    preview = None if previews is None else partial(generator_preview, previews=previews)
    slices = SliceDataset(volumes, axis=0)
    if cfg.generator_adversarial > 0:
        critic = LatentDiscriminator(
            model.generator.latent_channels, width=cfg.generator_critic_width
        ).to(engine.device)
        for p in critic.parameters():  # updated by the step itself (`LatentDiscriminator.update`)
            p.requires_grad_(False)
        stage_model = nn.ModuleDict({"generator": model.generator, "discriminator": critic})
        step = partial(
            adversarial_generator_step,
            encoder=encoder,
            modalities=modalities,
            features=features,
            weight=cfg.generator_adversarial,
            real_codes=RealCodes(
                model.generator.autoencoder,
                len(volumes),
                slices.num_slices,
                model.generator.slice_size,
            ),
        )
        if previews is not None:
            preview = lambda net, step: generator_preview(  # noqa: E731
                net["generator"], step, previews=previews
            )
    opt = torch.optim.Adam(trainable, lr=cfg.generator.lr, betas=(0.5, 0.99))
    trained = _fit_stage(
        engine, "generator", stage_model, opt, slices, step, cfg.generator, preview
    )
    model.generator = trained["generator"] if isinstance(trained, nn.ModuleDict) else trained
    stage_dir = engine.run_dir / "checkpoints" / "generator"
    if cfg.generator_average > 1 and (stage_dir / ckpt.DONE_MARKER).exists():
        average_checkpoints(trained, model.generator, stage_dir, cfg.generator_average)
    return model.generator


def train_decoder(
    cfg: GenerateConfig,
    engine: Engine,
    model: nn.Module,
    volumes: VolumeDataset,
    previews: Previews | None = None,
) -> nn.Module:
    """Stage ``decoder`` (``decoder.steps > 0``, a latent G): tune the slice autoencoder's
    decoder to G's latent maps.

    The decoder was trained in the encoder stage on the encoder's codes of real slices; G's
    maps are smoother than those codes, and the decoder renders them as a grid of its
    upsampling blocks (docs/journal/2026-11-28-latent-generator-grid.md). Here the decoder
    alone trains (E, the autoencoder's encoder and G's stack frozen) against a patch critic
    (`SliceCritic`, weight ``decoder_adversarial``) that compares its renderings of G's maps
    with real slices, while an L1 loss keeps it reconstructing real slices from their codes
    (`decoder_step`). The mapper then trains on the tuned G.

    Returns:
        The generator (``model.generator``), its decoder tuned in place.
    """
    generator = model.generator
    if cfg.decoder.steps <= 0 or generator.autoencoder is None:
        return generator
    for p in generator.parameters():
        p.requires_grad_(False)
    autoencoder = generator.autoencoder
    trainable = [
        p
        for part in (autoencoder.dec_low, autoencoder.dec_mid, autoencoder.dec_high)
        for p in part.parameters()
    ]
    for p in trainable:
        p.requires_grad_(True)
    critic = SliceCritic(
        generator.out_channels, width=cfg.decoder_critic_width, depth_dim=cfg.decoder_critic_depth
    ).to(engine.device)
    for p in critic.parameters():  # updated by the step itself (`SliceCritic.update`)
        p.requires_grad_(False)
    slices = SliceDataset(volumes, axis=0)
    step = partial(
        decoder_step,
        modalities=list(cfg.model.modalities),
        weight=cfg.decoder_adversarial,
        real_codes=RealCodes(autoencoder, len(volumes), slices.num_slices, generator.slice_size),
        drifting=cfg.decoder_drifting,
        encoder=model.encoder.to(torch.device(engine.device)).eval(),
        features=SliceFeatures.from_config(cfg),
    )
    preview = None
    if previews is not None:
        preview = lambda net, step: generator_preview(  # noqa: E731
            net["generator"], step, previews=previews, stage="decoder"
        )
    pair = nn.ModuleDict({"generator": generator, "critic": critic})
    try:
        opt = torch.optim.Adam(trainable, lr=cfg.decoder.lr, betas=(0.5, 0.99))
        trained = _fit_stage(engine, "decoder", pair, opt, slices, step, cfg.decoder, preview)
    finally:
        for p in trainable:
            p.requires_grad_(False)
    model.generator = trained["generator"]
    return model.generator


def average_checkpoints(
    stage_model: nn.Module, part: nn.Module, stage_dir: Path, count: int
) -> list[int]:
    """Set `part`'s weights to their mean over the stage's newest `count` step checkpoints.

    G's last iterate moves a lot between checkpoints 100 steps apart (held-out FID up to 1.6x,
    docs/journal/2026-11-29-generator-averaging.md); the mean of the last few is a steadier G
    (averaging iterates, as in stochastic weight averaging). Reads the checkpoint files, so a
    resumed or finished stage gives the same weights.

    Args:
        stage_model: the module the stage trained (its checkpoints hold its weights).
        part: the submodule of `stage_model` to average (G); the rest is left as it is.
        stage_dir: the stage's checkpoint folder.
        count: how many of the newest checkpoints.

    Returns:
        The steps averaged.

    Raises:
        InputError: fewer than `count` step checkpoints in `stage_dir`.
    """
    found = ckpt.list_checkpoints(stage_dir)[-count:]
    if len(found) < count:
        raise InputError(
            f"generator_average={count} needs {count} step checkpoints of the generator stage, "
            f"found {len(found)}",
            stage_dir,
        )
    keep = {k: v.clone() for k, v in stage_model.state_dict().items()}
    sums: dict[str, Tensor] = {}
    for _, json_path in found:
        load_weights(stage_model, json_path.with_suffix(".safetensors"))
        for k, v in part.state_dict().items():
            if v.is_floating_point():
                sums[k] = sums[k] + v.double() if k in sums else v.double()
    stage_model.load_state_dict(keep)
    with torch.no_grad():
        for k, v in part.state_dict().items():
            if k in sums:
                v.copy_(sums[k] / count)
    steps = [step for step, _ in found]
    log.info("generator: weights averaged over its checkpoints at steps %s", steps)
    return steps


def prepare_mapper_stage(
    cfg: GenerateConfig, model: nn.Module, detail: dict[str, Any] | None = None
) -> Callable[..., dict]:
    """Freeze E and G, set T's base path from ``cfg.mapper`` and return the stage's step
    function ``step(mapper, batch)`` (`mapper_step` bound to the model and the config; the
    through-plane term's noise from the output `detail` record, none without one)."""
    mc = cfg.mapper
    model.freeze_for_mapper()
    model.mapper.set_base_path(mc.path_sigma, mc.path_mix)
    if mc.learn_path:
        model.mapper.learn_base_path(True)
    if not mc.residual_head:  # the head stays at its zero init: codes = the base path
        model.mapper.freeze_head()
    return partial(
        mapper_step,
        model=model,
        modalities=list(cfg.model.modalities),
        gen_batch=mc.gen_batch,
        num_positions=mc.num_positions,
        loss_size=mc.loss_size,
        zgrad_weight=mc.zgrad_weight,
        noise_sigma=detail_noise(detail, list(cfg.model.modalities)),
    )


def detail_noise(detail: dict[str, Any] | None, modalities: list[str]) -> list[float]:
    """Per modality, the std of the output detail's noise in model space (its ``sigma_rel``,
    relative to the intensity window, which model space scales to [0, 1]); 0 where the
    record has none."""
    records = (detail or {}).get("modalities", {})
    return [float(records.get(m, {}).get("sigma_rel", 0.0)) for m in modalities]


def train_mapper(
    cfg: GenerateConfig,
    engine: Engine,
    model: nn.Module,
    volumes: VolumeDataset,
    previews: Previews | None = None,
    detail: dict[str, Any] | None = None,
) -> nn.Module:
    """Stage ``mapper``: T with the tri-planar drifting loss, E and G frozen.

    Sets T's base path from ``mapper.path_sigma`` / ``path_mix`` (a resumed checkpoint
    overrides it) and, with ``mapper.learn_path``, trains it with T.

    Args:
        cfg: the run's config (``mapper`` section).
        engine: the run's training engine.
        model: the `GenerationModel` (its encoder and generator trained).
        volumes: the training volumes.
        previews: periodic LiFT / no-mapper previews, or None.
        detail: the output detail record (``reference.json["detail"]``), whose noise level
            ``mapper.zgrad_weight``'s term adds to the generated volumes; None: no noise.

    Returns:
        The trained mapper (``model.mapper``).
    """
    mc = cfg.mapper
    model.to(torch.device(engine.device))
    step = prepare_mapper_stage(cfg, model, detail)
    opt = torch.optim.Adam([p for p in model.mapper.parameters() if p.requires_grad], lr=mc.lr)
    preview = None if previews is None else partial(mapper_preview, model=model, previews=previews)
    model.mapper = _fit_stage(engine, "mapper", model.mapper, opt, volumes, step, mc, preview)
    return model.mapper


# ------------------------------------------------------------------ the whole run


def reference_record(cfg: GenerateConfig, data: TrainingData) -> dict[str, Any]:
    """The ``reference.json`` of a generation model folder (``"detail"``: filled later by
    `lift3d.inference.detail.calibrate_model_folder`, None until then)."""
    return {
        "task": "generate",
        "modalities": data.modalities,
        "shape": [int(s) for s in cfg.data.shape],
        "slice_axis": cfg.data.slice_axis,
        "size": cfg.model.size,
        "record": data.volumes[0]["record"],
        "reference_case": data.train_cases[0].case_id,
        # qform/sform codes of the reference file, so samples are written with the same codes
        "nifti_codes": nifti_codes(data.train_cases[0].paths[data.modalities[0]]),
        "train_cases": [c.case_id for c in data.train_cases],
        "val_cases": [c.case_id for c in data.val_cases],
        "detail": None,
        "data_root": str(Path(cfg.data.root).resolve()),
    }


def train_generation(
    cfg: GenerateConfig,
    run_dir: str | Path,
    resume: bool = False,
    calibrate: Callable[[nn.Module, dict[str, Any]], dict[str, Any]] | None = None,
    calibrate_mapper: Callable[[nn.Module, dict[str, Any]], dict[str, Any]] | None = None,
) -> Path:
    """Run the three stages (each resumable; the decoder tuning, when configured, after G's)
    and write the model folder: after the generator (and decoder) stage marked
    ``"stages_done": ["encoder", "generator"]`` (usable with ``--no-mapper``), and after the
    mapper stage marked finished.

    Args:
        cfg: the resolved config (``cfg.data.root`` set).
        run_dir: run folder.
        resume: continue the stages from their checkpoints (the engine resumes any stage with a
            checkpoint; finished stages are skipped).
        calibrate: ``calibrate(model, reference) -> detail record`` (the output detail,
            `lift3d.inference.detail.calibrate_model`), run on the main process once G is
            trained and stored in the folder's ``reference.json["detail"]`` from the
            generator-stage folder on, so no-mapper samples drawn while T trains get the same
            detail as the finished model's.
        calibrate_mapper: ``calibrate_mapper(model, reference) -> detail record`` with the LiFT
            arm's intensity maps added (`lift3d.inference.detail.calibrate_mapper_intensity`),
            run on the main process once T is trained (when the detail was measured).

    Returns:
        `run_dir`.

    Raises:
        InputError: no data, a missing modality, cases on different grids, bad settings.
    """
    run_dir = Path(run_dir)
    if not cfg.data.root:
        raise InputError("no training data: set data.root (lift3d train generate --data DIR)")
    check_generate_config(cfg)
    data = load_training_data(cfg)
    engine = Engine(cfg.train, run_dir, full_config=cfg, task="generate")
    # A new run has no stage yet (a resumed one keeps what its folder says).
    done_before = _folder_stages(run_dir)
    if engine.is_main:
        update_run_json(
            run_dir, subtask="generate", **({} if done_before is not None else {STAGES_KEY: []})
        )
    model = generation_model_from_config(cfg)
    previews = Previews.for_run(run_dir, data, engine)
    reference = reference_record(cfg, data)
    train_encoder(cfg, engine, model, data.volumes, previews)
    train_generator(cfg, engine, model, data.volumes, previews)
    decoder_done = (engine.run_dir / "checkpoints" / "decoder" / ckpt.DONE_MARKER).exists()
    train_decoder(cfg, engine, model, data.volumes, previews)
    # the folder after G (and the decoder, when it is tuned) - written again when the decoder
    # stage has just trained, since it changes the slices the detail is calibrated on
    new_decoder = cfg.decoder.steps > 0 and not decoder_done
    if engine.is_main and ("generator" not in (done_before or []) or new_decoder):
        # E and G are final (the mapper stage freezes them): the no-mapper ablation can be
        # sampled from the folder while T trains.
        if calibrate is not None:
            reference["detail"] = calibrate(model, reference)
        save_model(model, cfg, run_dir, reference=reference, stages=GENERATION_STAGES[:2])
        log.info("encoder and generator written to %s (mapper not trained yet)", run_dir)
    elif "generator" in (done_before or []) and (detail := folder_detail(run_dir)) is not None:
        reference["detail"] = detail  # measured when G was trained (a resumed run)
    train_mapper(cfg, engine, model, data.volumes, previews, reference.get("detail"))
    model.to("cpu")
    if engine.is_main and calibrate_mapper is not None and reference.get("detail"):
        reference["detail"] = calibrate_mapper(model, reference)
    if engine.is_main:
        save_model(model, cfg, run_dir, reference=reference, stages=GENERATION_STAGES)
        log.info("model written to %s", run_dir / WEIGHTS_FILE)
    return run_dir


def _folder_stages(run_dir: Path) -> list[str] | None:
    """The stages the model folder in `run_dir` already holds (weights written), or None."""
    if not (run_dir / WEIGHTS_FILE).is_file() or not (run_dir / RUN_FILE).is_file():
        return None
    try:
        return trained_stages(json.loads((run_dir / RUN_FILE).read_text()))
    except (OSError, json.JSONDecodeError):
        return None


def folder_detail(run_dir: str | Path) -> dict[str, Any] | None:
    """The output-detail record of the model folder in `run_dir`, or None."""
    try:
        return json.loads((Path(run_dir) / REFERENCE_FILE).read_text()).get("detail")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
