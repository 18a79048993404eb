"""Typed configs: dataclasses with defaults, YAML files, dotted command-line overrides.

Every task has one top-level dataclass (e.g. ``TranslateConfig``) made of nested sections.
``load_config(TranslateConfig, "configs/tiny.yaml", ["train.lr=1e-4"])`` starts from the
defaults, applies the YAML file, then the overrides, checking every key against
``dataclasses.fields`` and every value against the field's type. An unknown key or a wrong type
raises `InputError` naming the dotted key. The resolved config is stored in every run folder and
checkpoint, so a run can be rebuilt with no flags.

Values are checked too, before anything is created: every number must be finite, and a
section's ``CHECKS`` (declared next to its fields) gives the range or the choices of a field,
e.g. ``"lr": POSITIVE`` or ``"size": one_of(*TRANSLATION_SIZE_NAMES)``. `validate_config`
runs the same checks on a config changed after loading (command-line flags).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from lift3d.constants import (
    GENERATION_SIZE_NAMES,
    PLANES,
    TRANSLATE_TASKS,
    TRANSLATION_SIZE_NAMES,
)
from lift3d.errors import InputError
from lift3d.utils import atomic_write_text

C = TypeVar("C")


# ------------------------------------------------------------------ value checks


@dataclass(frozen=True)
class Check:
    """A rule for one config value: `test(value)` is true for a valid value; `rule` says what
    a valid value is (in the error message). None values (optional fields) are not checked."""

    rule: str
    test: Callable[[Any], bool]


def at_least(low: float) -> Check:
    return Check(f"at least {low}", lambda v: v >= low)


def fraction(closed: bool = False) -> Check:
    """In [0, 1) (or [0, 1] when `closed`)."""
    if closed:
        return Check("in [0, 1]", lambda v: 0 <= v <= 1)
    return Check("in [0, 1)", lambda v: 0 <= v < 1)


def one_of(*choices: str) -> Check:
    return Check(f"one of {', '.join(choices)}", lambda v: v in choices)


def _grid(v: Any) -> bool:
    return len(v) == 3 and all(isinstance(s, int | float) and s > 0 for s in v)


POSITIVE = Check("greater than 0", lambda v: v > 0)
NON_NEGATIVE = at_least(0)
COUNT = at_least(1)
GRID = Check("three positive sizes [D, H, W]", lambda v: _grid(v) and all(int(s) == s for s in v))
SPACING = Check("three positive spacings in mm", _grid)
NON_EMPTY = Check("a non-empty list", lambda v: len(v) > 0)
DEVICE = Check(
    "auto, cpu, cuda or cuda:N", lambda v: re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None
)
PRECISION = one_of(
    "auto",
    "32",
    "64",
    "16",
    "bf16",
    "32-true",
    "64-true",
    "bf16-mixed",
    "16-mixed",
    "bf16-true",
    "bf16-if-fast",
)


@dataclass
class DataConfig:
    """Where the data is and how volumes become model tensors."""

    root: str = ""  # dataset folder (BraTS, SynthRAD or manifest); set by --data
    layout: str = "auto"  # auto | brats | synthrad | manifest
    slice_axis: str = "axial"  # axial | coronal | sagittal: the D axis of (C, D, H, W)
    shape: list[int] = field(default_factory=lambda: [64, 64, 64])  # model grid (D, H, W)
    spacing_mm: list[float] | None = None  # resample to this spacing first; None keeps source
    val_fraction: float = 0.2  # held-out cases for periodic validation
    num_workers: int = 0
    cache: bool = True  # keep decoded volumes in memory after the first epoch (no store)
    # Preprocessed on-disk store (lift3d.data.store): "" = off; "auto" = DATA.lift3d-store
    # beside the dataset folder; or a folder. Built on first use (every case decoded once per
    # preprocessing setting, ~4 bytes per model voxel and modality), then memory-mapped: memory
    # stays bounded at any dataset size and `cache` is ignored. Rebuilt for changed sources.
    store: str = ""
    skip_bad: bool = False  # skip invalid cases with a warning instead of failing

    CHECKS: ClassVar[dict[str, Check]] = {
        "layout": one_of("auto", "brats", "synthrad", "manifest"),
        "slice_axis": one_of(*PLANES),
        "shape": GRID,
        "spacing_mm": SPACING,
        "val_fraction": fraction(),
        "num_workers": NON_NEGATIVE,
        "store": Check(
            '"" (off), "auto" or a folder path', lambda v: v == v.strip() and "\0" not in v
        ),
    }


@dataclass
class TrainConfig:
    """Options of the shared training engine (see `lift3d.training.engine`)."""

    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    # auto (bf16-mixed on GPU, 32 on CPU) | 32 | bf16-mixed | 16-mixed | bf16-if-fast (bf16-mixed
    # on a GPU with bf16 or an AMX-BF16 CPU, else 32)
    precision: str = "auto"
    batch_size: int = 8
    lr: float = 2e-4
    weight_decay: float = 0.0
    max_steps: int = 1000
    grad_clip: float = 1.0
    log_every: int = 10
    val_every: int = 200  # 0 disables periodic validation
    ckpt_every: int = 200
    keep_last: int = 3  # checkpoints kept per stage
    num_threads: int = 0  # torch CPU threads; 0 leaves torch's default

    CHECKS: ClassVar[dict[str, Check]] = {
        "device": DEVICE,
        "precision": PRECISION,
        "batch_size": COUNT,
        "lr": POSITIVE,
        "weight_decay": NON_NEGATIVE,
        "max_steps": NON_NEGATIVE,
        "grad_clip": NON_NEGATIVE,
        "log_every": NON_NEGATIVE,
        "val_every": NON_NEGATIVE,
        "ckpt_every": NON_NEGATIVE,
        "keep_last": NON_NEGATIVE,
        "num_threads": NON_NEGATIVE,
    }


# ------------------------------------------------------------------ paired translation


@dataclass
class TranslateModelConfig:
    """Model size (`lift3d.models.registry.TRANSLATION_SIZES`) and optional overrides."""

    size: str = "base"
    mixer_levels: int | None = None  # 1 = bottleneck only; k adds k - 1 decoder stages
    mixer_depth: int | None = None
    z_context: int | None = None
    mixer_hidden: float | None = None
    mixer_inplane: int | None = None  # in-plane kernel of each mixer z-tap (odd); 0 pointwise
    chunk_size: int = 32  # z-chunk (output slices) for validation and inference
    context_slices: int = 0  # 2.5D: k neighbouring source slices on each side as channels

    CHECKS: ClassVar[dict[str, Check]] = {
        "size": one_of(*TRANSLATION_SIZE_NAMES),
        "mixer_levels": COUNT,
        "mixer_depth": COUNT,
        "z_context": COUNT,
        "mixer_hidden": POSITIVE,
        "mixer_inplane": NON_NEGATIVE,
        "chunk_size": NON_NEGATIVE,
        "context_slices": NON_NEGATIVE,
    }


@dataclass
class TranslatorStageConfig:
    """Stage 1: F on 2D slices."""

    steps: int = 2000
    lr: float = 1e-3
    batch_size: int = 16
    ssim_weight: float = 0.0

    CHECKS: ClassVar[dict[str, Check]] = {
        "steps": NON_NEGATIVE,
        "lr": POSITIVE,
        "batch_size": COUNT,
        "ssim_weight": fraction(closed=True),
    }


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

    CHECKS: ClassVar[dict[str, Check]] = {
        "steps": NON_NEGATIVE,
        "lr": POSITIVE,
        "batch_size": COUNT,
        "z_chunk": NON_NEGATIVE,
        "zgrad_weight": NON_NEGATIVE,
        "translator_lr": POSITIVE,
    }


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

    CHECKS: ClassVar[dict[str, Check]] = {
        "task": one_of(*TRANSLATE_TASKS),
        "val_cases": NON_NEGATIVE,
    }


# ------------------------------------------------------------------ unconditional generation

# Values the shipped generation configs rely on, fixed since their options went (the options'
# stored names are accepted with these values: `RETIRED` below).
MAPPER_LR_FINAL_RATIO = 0.05  # end of mapper.lr_schedule=cosine, as a share of mapper.lr
GENERATOR_DEPTH_WEIGHT = 4.0  # weight of the depth channel in G's drifting features
DISCRIMINATOR_LR = 2e-4  # the latent critic's learning rate (generator_adversarial > 0)


@dataclass
class GenModelConfig:
    """Which model: size name and modalities (channels)."""

    size: str = "small"  # tiny | small | base (lift3d.models.generation.GENERATION_SIZES)
    modalities: list[str] = field(default_factory=lambda: ["t1n"])  # all four: joint C=4
    # 0: G draws pixels; c > 0: G draws a (c, H/4, W/4) latent map decoded by a slice
    # autoencoder trained in the encoder stage (lift3d.models.slice_generator.SliceAutoencoder)
    generator_latent: int = 0
    # channels of that autoencoder at full resolution (2x at 1/2 and 1/4): its convolutions are
    # most of the encoder stage's time and, through the decoder, of G's and the mapper's steps
    autoencoder_width: int = 32
    # highest frequency of G's sinusoidal depth embedding (sin(f * pi * s), s in [0, 1]): at 64
    # its period is two slices of a 64-slice volume, and G's slices change from one slice to
    # the next with it; 8 halves the samples' axial increments but costs axial and sagittal FID
    # (docs/journal/2026-11-29-autoencoder-ceiling.md); the shipped configs set 16 with
    # mapper.zgrad_weight (2026-11-29-depth-frequency-and-through-plane-term.md). The default
    # stays 64 so that model folders written before load as they were trained.
    generator_depth_frequency: float = 64.0

    # Tried on the latent G and worse (docs/journal/2026-11-28-latent-generator-grid.md).
    RETIRED: ClassVar[dict[str, Any]] = {
        "encoder_objective": "denoise",
        "generator_upsample": "nearest",
        "autoencoder_upsample": "nearest",
        # per-block noise inputs in G (docs/journal/2026-11-28-latent-critic.md)
        "generator_noise_inputs": 0.0,
    }
    CHECKS: ClassVar[dict[str, Check]] = {
        "size": one_of(*GENERATION_SIZE_NAMES),
        "modalities": NON_EMPTY,
        "generator_latent": NON_NEGATIVE,
        "autoencoder_width": COUNT,
        "generator_depth_frequency": POSITIVE,
    }


@dataclass
class StageConfig:
    """Steps, learning rate and batch size of one stage."""

    steps: int = 500
    lr: float = 1e-3
    batch_size: int = 64
    # "constant", or "cosine": the learning rate decays to MAPPER_LR_FINAL_RATIO * lr over the
    # stage, as mapper.lr_schedule does
    lr_schedule: str = "constant"

    CHECKS: ClassVar[dict[str, Check]] = {
        "steps": NON_NEGATIVE,
        "lr": POSITIVE,
        "batch_size": COUNT,
        "lr_schedule": one_of("constant", "cosine"),
    }


@dataclass
class MapperConfig:
    """The mapper stage and its tri-planar drifting loss."""

    steps: int = 300
    lr: float = 1e-3
    # "constant", or "cosine": the learning rate decays to MAPPER_LR_FINAL_RATIO * lr over the
    # stage (lower seed spread than a constant lr: BENCHMARKS.md, "Generation options").
    lr_schedule: str = "constant"
    batch_size: int = 8  # real volumes per step
    gen_batch: int = 8  # generated volumes per step
    num_positions: int = 8  # cuts per plane
    # (D, H, W) the loss volume is resampled to; None = model grid.
    loss_size: list[int] | None = None
    # T's base trajectory (models/trajectory.py): per-slice codes, each N(0, I), smoothed along
    # depth by a Gaussian of this width in normalised depth (0 = one constant code swept through
    # depth, too smooth along z), and the share of the code common to the whole volume.
    path_sigma: float = 0.02
    path_mix: float = 0.25
    # Train path_sigma / path_mix with T (TrajectoryMapper.learn_base_path): the loss then sets
    # how smooth the codes are along depth (lower increment distance: "Generation options").
    learn_path: bool = True
    # Train T's residual head (GRU) on top of the base path; false: only the base path's width
    # and mix are trained (needs learn_path), so every code keeps G's prior N(0, I).
    residual_head: bool = True
    # Weight of a term beside the drifting loss: log(c_gen / c_real)^2, c the mean change
    # between neighbouring slices of the loss volumes over foreground voxels (the evaluation's
    # zgrad ratio), the output detail's noise added to the generated side
    # (lift3d.losses.triplanar.through_plane_loss). 0 = off.
    zgrad_weight: float = 0.0

    CHECKS: ClassVar[dict[str, Check]] = {
        "steps": NON_NEGATIVE,
        "lr": POSITIVE,
        "lr_schedule": one_of("constant", "cosine"),
        "batch_size": COUNT,
        "gen_batch": COUNT,
        "num_positions": COUNT,
        "loss_size": GRID,
        "path_sigma": NON_NEGATIVE,
        "path_mix": fraction(closed=True),
        "zgrad_weight": NON_NEGATIVE,
    }

    # Options that did not help (BENCHMARKS.md, "Generation options") or that no config
    # set: stored configs may still name them with the value now fixed (None: any value).
    RETIRED: ClassVar[dict[str, Any]] = {
        "lr_final_ratio": MAPPER_LR_FINAL_RATIO,
        "checkpoint": False,
        "weight_slice": 1.0,
        "weight_incr": 1.0,
        "weight_traj": 1.0,
        "flip_augment": True,
        "path_per_component": False,
        "prior_weight": 0.0,
        "ema_decay": 0.0,
        "features": "embed",
        "tokens": None,
        "thumbnail": None,
        "select": False,
        "select_every": None,
        "select_samples": None,
        "select_seed": None,
        "select_encoder_steps": None,
    }


@dataclass
class DetailConfig:
    """Output detail (`lift3d.inference.detail`): noise calibrated on the training data.

    After training, the wavelet noise estimate of ``cases`` training volumes and of ``samples``
    no-mapper samples of G, both on the reference grid, fixes the level of white noise that
    ``lift3d generate --detail`` adds to every sample; the same volumes (and as many LiFT
    samples once the mapper is trained) give each arm's intensity map
    (`lift3d.inference.intensity`, applied by ``lift3d generate --intensity-map``). Without
    either flag, ``sample_detail`` / ``sample_intensity_map`` decide.
    """

    enabled: bool = True
    # What ``lift3d generate`` applies unless told otherwise: the output detail (``--detail`` /
    # ``--no-detail``) and the intensity map (``--intensity-map`` / ``--no-intensity-map``). The
    # latent generator's decoder draws no voxel noise and shifts the tissue intensities; the two
    # calibrations, from training data alone, put both back (BENCHMARKS.md, "Generation
    # options"). Off here; on in the shipped generation configs.
    sample_detail: bool = False
    sample_intensity_map: bool = False
    cases: int = 16  # training volumes measured (the first ones of the training split)
    samples: int = 16  # G samples measured (noise level)
    # samples per arm for the intensity maps: LiFT's volumes differ more from one another than
    # independent slices (the 16-volume histogram distance of one phantom model varied 5x more
    # than the no-mapper arm's), so 16 leave its map off by chance
    map_samples: int = 64
    # noise seed of those samples (not train.seed: same G and data, same level); apart from the
    # generation seeds users pick (0, 1, ...), so no calibration sample is a scored sample
    seed: int = 7919

    RETIRED: ClassVar[dict[str, Any]] = {"estimator": "noise", "filter_sigma": None}
    CHECKS: ClassVar[dict[str, Check]] = {"cases": COUNT, "samples": COUNT, "map_samples": COUNT}


@dataclass
class GenerateConfig:
    """Top-level config of ``lift3d train generate``."""

    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    model: GenModelConfig = field(default_factory=GenModelConfig)
    encoder: StageConfig = field(default_factory=lambda: StageConfig(steps=300, lr=1e-3))
    generator: StageConfig = field(default_factory=lambda: StageConfig(steps=500, lr=5e-4))
    # A latent G only: after G's stage the slice autoencoder's decoder is tuned to render G's
    # latent maps as slices a patch critic cannot tell from real ones, while still
    # reconstructing real slices from their codes (lift3d.training.generate.train_decoder;
    # 0 steps: the decoder stays as the encoder stage left it).
    decoder: StageConfig = field(
        default_factory=lambda: StageConfig(steps=0, lr=2e-4, batch_size=32)
    )
    mapper: MapperConfig = field(default_factory=MapperConfig)
    detail: DetailConfig = field(default_factory=DetailConfig)
    # G's drifting features: encoder maps average-pooled to tokens x tokens cells, and a
    # thumbnail x thumbnail intensity image (finer = more structure seen by the loss).
    generator_tokens: int = 2
    generator_thumbnail: int = 8
    # ... and the mean absolute voxel-to-voxel differences pooled to edges x edges cells (0:
    # none), which see voxel-scale patterns (stripes, texture) that pooling hides.
    generator_edges: int = 0
    # Weight of an adversarial term in G's stage (a latent G only): a critic on the latent maps
    # (lift3d.models.slice_generator.LatentDiscriminator) tells them from the autoencoder's
    # codes of real slices (0: drifting loss only).
    generator_adversarial: float = 0.0
    # channels of that critic's first convolution (2x and 4x after its two stride-2 stages)
    generator_critic_width: int = 64
    # G's weights after its stage: the mean of its newest N step checkpoints (every
    # train.ckpt_every steps; needs train.keep_last >= N). 1: the last iterate.
    generator_average: int = 1
    # weight of the critic's term against the decoder's L1 reconstruction loss in that stage
    decoder_adversarial: float = 0.2
    # channels of the decoder stage's patch critic's first convolution (2x and 4x after it)
    decoder_critic_width: int = 32
    # size of the depth embedding that patch critic sees beside each slice (0: it does not see
    # depth and judges every depth's slices against all real slices at once)
    decoder_critic_depth: int = 0
    # ... and of G's drifting loss on its renderings of G's maps (0: none)
    decoder_drifting: float = 0.0

    CHECKS: ClassVar[dict[str, Check]] = {
        "generator_average": COUNT,
        "generator_tokens": COUNT,
        "generator_thumbnail": COUNT,
        "generator_edges": NON_NEGATIVE,
        "generator_adversarial": NON_NEGATIVE,
        "generator_critic_width": COUNT,
        "decoder_adversarial": NON_NEGATIVE,
        "decoder_critic_width": COUNT,
        "decoder_critic_depth": NON_NEGATIVE,
        "decoder_drifting": NON_NEGATIVE,
    }
    RETIRED: ClassVar[dict[str, Any]] = {
        "depth_weight": GENERATOR_DEPTH_WEIGHT,
        "generator_batches": "slices",
        "generator_group": None,
        # tried on the latent G, not better (docs/journal/2026-11-28-latent-generator-grid.md)
        "generator_latent_cells": 0,
        "generator_spectrum": False,
        "generator_targets": "slices",
        "autoencoder_noise": 0.0,
        "generator_shift": 0,
        "autoencoder_blur": 0.0,
        # more real positives per G step than G draws: within seed spread
        # (docs/journal/2026-11-28-drifting-positives.md)
        "generator_positives": 0,
    }


# ------------------------------------------------------------------ loading and saving


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against type `tp` (with int -> float widening); raise naming `key`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except InputError as exc:
                errors.append(str(exc))
        raise InputError(f"config key {key!r}: expected {_type_name(tp)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise InputError(f"config key {key!r}: expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise InputError(f"config key {key!r}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if value is None:  # an empty section in YAML (``train:``) keeps the defaults
            value = {}
        if not isinstance(value, dict):
            raise InputError(f"config key {key!r}: expected a section (mapping), got {value!r}")
        return _build(tp, value, prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise InputError(f"config key {key!r}: expected true/false, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads "1e-4" (no dot) as a string; accept it for float fields.
            try:
                return float(value)
            except ValueError:
                pass
        raise InputError(f"config key {key!r}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise InputError(f"config key {key!r}: expected an integer, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise InputError(f"config key {key!r}: expected a string, got {value!r}")
    return value


def _check_retired(key: str, value: Any, fixed: Any) -> None:
    """A removed option in a stored config: fine at the value lift3d now always uses."""
    if fixed is not None and value != fixed:
        raise InputError(
            f"config key {key!r} was removed; lift3d now always uses {fixed!r} (got {value!r}): "
            "delete the key"
        )


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(_finite(v) for v in value)
    return True


def _check_values(obj: Any, prefix: str = "") -> None:
    """Check the values of one config section (not its subsections): finite numbers, and the
    section's ``CHECKS``. Raise InputError naming the dotted key."""
    checks: dict[str, Check] = getattr(type(obj), "CHECKS", {})
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = prefix + f.name
        if not _finite(value):
            raise InputError(f"config key {key!r}: must be a finite number, got {value!r}")
        check = checks.get(f.name)
        if check is None or value is None:
            continue
        try:
            ok = bool(check.test(value))
        except TypeError:
            ok = False
        if not ok:
            raise InputError(f"config key {key!r}: must be {check.rule}, got {value!r}")


def validate_config(cfg: Any, prefix: str = "") -> None:
    """Check every value of a config and its sections (what `load_config` checks on load).

    For a config changed after loading, e.g. by command-line flags.

    Raises:
        InputError: naming the first dotted key with a value out of range.
    """
    _check_values(cfg, prefix)
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            validate_config(value, f"{prefix}{f.name}.")


def _build(cls: type[C], data: dict[str, Any], prefix: str = "") -> C:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    retired = getattr(cls, "RETIRED", {})
    base = cls()
    for key, value in data.items():
        if key in retired and key not in names:
            _check_retired(prefix + key, value, retired[key])
            continue
        if key not in names:
            valid = ", ".join(sorted(names))
            raise InputError(f"unknown config key {prefix + key!r} (valid keys here: {valid})")
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict | None):
            # keys a section leaves out keep this field's default (the decoder stage's lr
            # 2e-4), not the section class's own (StageConfig's 1e-3)
            value = _merge(dataclasses.asdict(getattr(base, key)), value or {})
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    for f in dataclasses.fields(cls):
        if f.name not in kwargs:
            kwargs[f.name] = getattr(base, f.name)
        elif dataclasses.is_dataclass(hints[f.name]) and isinstance(kwargs[f.name], dict):
            kwargs[f.name] = _build(hints[f.name], kwargs[f.name], prefix=f"{prefix}{f.name}.")
    obj = cls(**kwargs)
    _check_values(obj, prefix)  # subsections were checked when they were built
    return obj


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value`` (value read as YAML: numbers, booleans, lists) into (keys, value)."""
    if "=" not in item:
        raise InputError(f"override {item!r} is not of the form key=value (e.g. train.lr=1e-4)")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise InputError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # YAML reads "1e-4" as a string; accept numeric-looking strings as floats.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else value
        except ValueError:
            pass
    return key.split("."), value


def config_from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Build a config dataclass from a (possibly partial) nested dict, validating keys and types."""
    if data is not None and not isinstance(data, dict):
        raise InputError(f"config must be a mapping of sections, got {type(data).__name__}")
    return _build(cls, data or {})


def load_config(
    cls: type[C],
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> C:
    """Defaults, then `base`, then a YAML file, then dotted overrides.

    Args:
        cls: the task's top-level config dataclass.
        path: optional YAML file.
        overrides: ``["train.lr=1e-4", "mixer.depth=1"]``.
        base: optional dict applied before the file (e.g. from a checkpoint).

    Raises:
        InputError: unreadable file, unknown key, wrong type or a value out of range (the key
            is named).
    """
    data: dict[str, Any] = copy.deepcopy(dict(base or {}))  # overrides must not edit `base`
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InputError("config file not found", path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise InputError(f"not valid YAML ({str(exc).splitlines()[0]})", path) from None
        if not isinstance(loaded, dict):
            raise InputError("config file must hold a mapping of sections", path)
        data = _merge(data, loaded)
    for item in overrides or []:
        keys, value = parse_override(item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise InputError(f"override {item!r}: {k!r} is not a section")
        node[keys[-1]] = value
    return _build(cls, data)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (for YAML, JSON and checkpoints)."""
    return asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""

    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
