"""Model registry: size name -> factory.

The ``*_from_config`` functions build a model from its task config alone; that is how
`lift3d.model_folder` rebuilds a saved model.

Translation (`build_translation_model`): per-slice U-Net F + bidirectional z-mixers M
(`lift3d.models.lift.TranslationModel`). Sizes: ``tiny`` (tests), ``small`` (CPU demo on 64^3
phantoms), ``base`` and ``large`` (real data on a GPU, e.g. 240 x 240 x 155 BraTS / SynthRAD
volumes: residual U-Nets of 8 M and 36 M parameters, the range of the 2D networks used on
SynthRAD / BraSyn). Until 2026-11 ``base`` was a 0.5 M plain U-Net (widths 16..128); a folder
saved with it is refused with a message saying to retrain (`lift3d.model_folder.load_model`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from lift3d.config import GenerateConfig, TranslateConfig
from lift3d.errors import InputError
from lift3d.models.generation import build_generation
from lift3d.models.lift import TranslationModel, in_channels
from lift3d.models.slice_generator import DEPTH_MAX_FREQUENCY
from lift3d.models.translator import SliceUNet

# size -> (U-Net widths finest first, residual blocks per level (0: one plain block), mixer
# options). mixer_levels: 1 = bottleneck only, k > 1 also mixes the first k - 1 decoder stages
# (coarse to fine). Five levels: 240 = 15 * 2^4, so BraTS slices need no padding.
TRANSLATION_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "channels": (8, 16),
        "mixer_levels": 2,
        "mixer_depth": 1,
        "z_context": 2,
        "mixer_hidden": 1.0,
    },
    "small": {
        "channels": (16, 32, 64),
        # bottleneck + first decoder stage: on the realistic phantom (MR -> CT, three seeds) as
        # good as mixing every stage (dz MAE -21 % vs -20 % against 2D) at 0.75x the translate
        # time; the bottleneck alone keeps half the gain (-12 %). Folders trained with 3 levels
        # still load (`lift3d.model_folder.load_model` reads the level count from the weights).
        "mixer_levels": 2,
        "mixer_depth": 2,
        "z_context": 3,
        "mixer_hidden": 1.0,
    },
    "base": {  # 8.1 M parameters in F, 3.5 TFLOP per 240 x 240 x 155 volume
        "channels": (32, 64, 128, 256, 512),
        "res_blocks": 1,
        "mixer_levels": 1,  # bottleneck only (15^2 at 240^2)
        "mixer_depth": 2,
        "z_context": 4,
        "mixer_hidden": 0.5,
    },
    "large": {  # 36 M parameters in F, 14.5 TFLOP per 240 x 240 x 155 volume
        "channels": (48, 96, 192, 384, 768),
        "res_blocks": 2,
        "mixer_levels": 1,
        "mixer_depth": 2,
        "z_context": 4,
        "mixer_hidden": 0.5,
    },
}


def build_translation_model(
    size: str,
    in_channels: int,
    out_channels: int = 1,
    use_mixer: bool = True,
    **overrides: Any,
) -> nn.Module:
    """Build a `TranslationModel`: forward(x (B, C, D, H, W)) -> (B, 1, D, H, W).

    Args:
        size: a key of `TRANSLATION_SIZES`.
        in_channels: source channels C.
        out_channels: target channels (1).
        use_mixer: False builds the no-mapper ablation default (mixers present but unused).
        **overrides: replace registry options (``channels``, ``res_blocks``, ``mixer_levels``,
            ``mixer_depth``,
            ``z_context``, ``mixer_hidden``, ``mixer_inplane`` (in-plane kernel of each mixer
            z-tap, 0 = pointwise), ``chunk_size``, ``context_slices``: k neighbouring
            slices on each side as extra input channels, F then takes C * (2k + 1)); None
            values are ignored.

    Raises:
        ValueError: unknown size or option.
    """

    if size not in TRANSLATION_SIZES:
        raise ValueError(
            f"unknown translation model size {size!r}; use one of {list(TRANSLATION_SIZES)}"
        )
    opts = {"res_blocks": 0, **TRANSLATION_SIZES[size]}
    opts["chunk_size"] = None
    opts["context_slices"] = 0
    opts.setdefault("mixer_inplane", 0)
    for key, value in overrides.items():
        if key not in opts:
            raise ValueError(f"unknown translation model option {key!r}")
        if value is not None:
            opts[key] = value
    if opts["context_slices"] < 0:
        raise ValueError(f"context_slices must be >= 0, got {opts['context_slices']}")
    slab = 2 * opts["context_slices"] + 1
    translator = SliceUNet(
        in_channels * slab,
        out_channels,
        channels=opts.pop("channels"),
        res_blocks=opts.pop("res_blocks"),
    )
    return TranslationModel(translator, use_mixer=use_mixer, **opts)


def build_generation_model(
    size: str,
    channels: int,
    shape: tuple[int, int, int],
    encoder_objective: str = "denoise",
    generator_latent: int = 0,
    autoencoder_width: int = 32,
    generator_depth_frequency: float = DEPTH_MAX_FREQUENCY,
) -> nn.Module:
    """Build an unconditional `GenerationModel` (slice encoder E, slice generator G, trajectory
    mapper T): ``.sample(n, generator=None, use_mapper=True) -> (n, C, D, H, W)``.

    Args:
        size: a key of `lift3d.models.generation.GENERATION_SIZES` (tiny | small | base).
        channels: C (1 modality, or the four BraTS modalities jointly).
        shape: model grid (D, H, W).
        encoder_objective: ``denoise`` | ``masked`` (E's self-supervised objective).
        generator_latent: 0, or the latent channels of G's slice autoencoder.
        autoencoder_width: that autoencoder's channels at full resolution.
        generator_depth_frequency: the highest frequency of G's depth embedding.

    Raises:
        ValueError: unknown size.
    """

    return build_generation(
        size,
        channels,
        shape,
        encoder_objective=encoder_objective,
        generator_latent=generator_latent,
        autoencoder_width=autoencoder_width,
        generator_depth_frequency=generator_depth_frequency,
    )


def check_translation_model_config(cfg: TranslateConfig) -> None:
    """Check the model keys that depend on each other or on the registry, without building.

    Raises:
        InputError: naming the config key: unknown size, ``model.context_slices`` negative or
            not below the slice count ``data.shape[0]``, an even ``model.mixer_inplane``.
    """
    m = cfg.model
    if m.size not in TRANSLATION_SIZES:
        raise InputError(
            f"config key 'model.size': unknown size {m.size!r}; use one of "
            f"{', '.join(TRANSLATION_SIZES)}"
        )
    # inference grids are never thinner than data.shape (lift3d.inference.translate), so this
    # bounds the context of every volume the model sees through the CLI
    depth = int(cfg.data.shape[0])
    if not 0 <= m.context_slices < depth:
        raise InputError(
            f"config key 'model.context_slices': must be in 0..{depth - 1} (below the "
            f"{depth} slices of data.shape), got {m.context_slices}"
        )
    if m.mixer_inplane and m.mixer_inplane % 2 == 0:
        raise InputError(
            f"config key 'model.mixer_inplane': must be odd (an in-plane kernel) or 0, got "
            f"{m.mixer_inplane}"
        )


def translation_model_from_config(cfg: TranslateConfig, use_mixer: bool = True) -> nn.Module:
    """The `TranslationModel` a config describes (random init).

    Raises:
        InputError: naming the config key (`check_translation_model_config`), or an option the
            model rejects.
    """
    check_translation_model_config(cfg)
    m = cfg.model
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
            mixer_inplane=m.mixer_inplane,
            chunk_size=m.chunk_size or None,
            context_slices=m.context_slices,
        )
    except ValueError as exc:
        raise InputError(f"model config: {exc}") from None


def generation_model_from_config(cfg: GenerateConfig) -> nn.Module:
    """The `GenerationModel` a config describes (random init): size, one channel per modality,
    the model grid ``data.shape``."""
    return build_generation_model(
        cfg.model.size,
        len(cfg.model.modalities),
        tuple(int(s) for s in cfg.data.shape),
        generator_latent=cfg.model.generator_latent,
        autoencoder_width=cfg.model.autoencoder_width,
        generator_depth_frequency=cfg.model.generator_depth_frequency,
    )
