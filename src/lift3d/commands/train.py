"""`lift3d train translate|generate`: train a LiFT model into a run folder."""

from __future__ import annotations

import argparse
import os

from lift3d.constants import TRAIN_KINDS

HELP = (
    "Train a LiFT model. 'translate' (--task mr2ct | missing): per-slice 2D translator, then the "
    "bidirectional z-context mixer (SynthRAD layout for mr2ct, BraTS layout for missing). "
    "'generate': encoder, slice generator and trajectory mapper for unconditional volumes. "
    "Every stage checkpoints; --resume continues an interrupted run. The run folder gets "
    "config.yaml, run.json, log.txt, logs/, checkpoints/, val/ previews and model.safetensors."
)
EXAMPLE = (
    "lift3d train translate --task mr2ct --data SynthRAD2023 --out runs/mr2ct "
    "--config translate_mr2ct --set mixer.steps=1000"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=TRAIN_KINDS, help="what to train")
    parser.add_argument(
        "--task",
        choices=("mr2ct", "missing"),
        default=None,
        help="translate only: mr2ct (MR -> CT) or missing (any missing BraTS modality); "
        "default: the config's (mr2ct)",
    )
    parser.add_argument("--data", required=True, metavar="DIR", help="training dataset folder")
    parser.add_argument("--out", required=True, metavar="RUN", help="run folder to create")
    parser.add_argument(
        "--config",
        metavar="F",
        help="YAML config file, or a packaged config name (e.g. translate_demo)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override config values, e.g. --set train.lr=1e-4 mixer.steps=200",
    )
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in RUN")
    parser.add_argument(
        "--overwrite", action="store_true", help="delete an existing run folder RUN first"
    )
    parser.add_argument("--device", default=None, help="auto | cpu | cuda (default: config)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: config)")


def _prepare_run_dir(out, data, resume: bool, overwrite: bool) -> None:
    """Check RUN: a non-empty folder needs --resume or --overwrite; --overwrite only deletes a
    folder that is a lift3d run (has run.json or config.yaml)."""
    import shutil
    from pathlib import Path

    from lift3d.errors import InputError
    from lift3d.utils import check_output_path

    out = Path(out)
    if resume and overwrite:
        raise InputError("--resume and --overwrite contradict each other; pick one")
    if out.exists() and not out.is_dir():
        raise InputError("run folder path exists and is a file", out)
    if resume:
        if not (out / "run.json").is_file():
            raise InputError("nothing to resume: not a lift3d run folder (no run.json)", out)
        check_output_path(out, inputs=[data], overwrite=True)
        return
    check_output_path(out, inputs=[data], overwrite=overwrite)
    if overwrite and out.is_dir() and any(out.iterdir()):
        if not ((out / "run.json").is_file() or (out / "config.yaml").is_file()):
            raise InputError(
                "refusing to delete a folder that is not a lift3d run (no run.json); "
                "choose another --out",
                out,
            )
        shutil.rmtree(out)


def run(args: argparse.Namespace) -> int:
    from lift3d.config import load_config
    from lift3d.configs import config_path
    from lift3d.errors import InputError

    path = config_path(args.config) if args.config else None
    overrides = list(args.overrides)
    if args.kind == "translate":
        from lift3d.config import TranslateConfig as ConfigClass
    else:
        if args.task is not None:
            raise InputError("--task applies to 'train translate' only")
        from lift3d.config import GenerateConfig as ConfigClass
    cfg = load_config(ConfigClass, path, overrides)
    cfg.data.root = str(args.data)
    if args.kind == "translate" and args.task is not None:
        cfg.task = args.task
    if args.device is not None:
        cfg.train.device = args.device
    if args.seed is not None:
        cfg.train.seed = args.seed
    from pathlib import Path

    if not Path(args.data).exists():
        raise InputError("training data folder not found", args.data)
    _prepare_run_dir(args.out, args.data, args.resume, args.overwrite)

    if args.kind == "translate":
        from lift3d.constants import TRANSLATE_TASKS
        from lift3d.training.translate import train_translation

        if cfg.task not in TRANSLATE_TASKS:
            raise InputError(f"config key 'task': unknown task {cfg.task!r}; use mr2ct or missing")
        run_dir = train_translation(cfg, args.out, resume=args.resume)
    else:
        from lift3d.inference.detail import calibrate_model_folder
        from lift3d.training.generate import train_generation

        run_dir = train_generation(cfg, args.out, resume=args.resume)
        if cfg.detail.enabled and int(os.environ.get("RANK", "0")) == 0:
            calibrate_model_folder(run_dir, args.data)  # reference.json["detail"]
    print(f"model written to {run_dir}")
    from lift3d.report.html import write_run_report

    report = write_run_report(run_dir)
    if report is not None:
        print(f"report: {report}")
    return 0
