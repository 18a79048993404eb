"""One module per `lift3d` subcommand (see `lift3d.cli`), and the arguments they share."""

from __future__ import annotations

import argparse


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
