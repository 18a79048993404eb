"""One module per `lift3d` subcommand (see `lift3d.cli`), and the arguments they share."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_model_run_arguments(
    parser: argparse.ArgumentParser, overwrite_help: str, ablation: str | None = None
) -> None:
    """``--device`` and ``--overwrite`` of every command that runs a trained model, plus the
    translation ablation ``--no-mixer`` when `ablation` is "mixer"."""
    if ablation == "mixer":
        parser.add_argument(
            "--no-mixer", action="store_true", help="ablation: per-slice translator, no z-mixer"
        )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument("--overwrite", action="store_true", help=overwrite_help)


def warn_if_no_mixer_is_not_2d(cfg: Any, model: Any) -> None:
    """``--no-mixer`` on a model whose translator was trained together with its mixer (no
    per-slice stage, or F fine-tuned in the mixer stage): its F alone is not the per-slice (2D)
    ablation, so say so on stderr (the output is still written)."""
    joint = cfg.translator.steps == 0 or not cfg.mixer.freeze_translator
    if joint and cfg.mixer.steps > 0:
        print(
            f"warning: {model}: the translator was trained together with its z-mixer "
            f"(translator.steps={cfg.translator.steps}, mixer.freeze_translator="
            f"{str(cfg.mixer.freeze_translator).lower()}); --no-mixer runs it without the mixer "
            "it was trained with, which is not the per-slice (2D) ablation: train a model with "
            "mixer.steps=0 for that",
            file=sys.stderr,
        )


def add_precision_arguments(parser: argparse.ArgumentParser) -> None:
    """``--precision`` and ``--compile`` of the commands that run a network for inference
    (`lift3d.inference.precision`)."""
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="network precision: bf16 autocast or fp32 (default auto: bf16 on CUDA, fp32 on "
        "the CPU); outputs are float32 either way",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the network's blocks (CUDA: every convolution and z-mixer block; "
        "CPU: the z-mixer blocks, the ones it speeds up there); the first volume pays the "
        "compilation",
    )


def load_training_config(args: argparse.Namespace, command: str):
    """The config of ``lift3d <command> translate|generate``: the file (``--config``) with the
    ``--set`` overrides, ``--data`` as ``data.root`` and ``--task`` (translate only), checked.

    Raises:
        InputError: ``--task`` with generate, a bad key or value (named).
    """
    from lift3d.config import GenerateConfig, TranslateConfig, load_config, validate_config
    from lift3d.configs import config_path
    from lift3d.errors import InputError

    if args.kind == "generate" and args.task is not None:
        raise InputError(f"--task applies to '{command} translate' only")
    config_class = TranslateConfig if args.kind == "translate" else GenerateConfig
    path = config_path(args.config) if args.config else None
    cfg = load_config(config_class, path, list(args.overrides))  # keys, types, values checked
    cfg.data.root = str(args.data)
    if args.task is not None:
        cfg.task = args.task
    for key in ("device", "seed"):  # flags of 'lift3d train' only
        if getattr(args, key, None) is not None:
            setattr(cfg.train, key, getattr(args, key))
    validate_config(cfg)  # the values given as flags too
    return cfg
