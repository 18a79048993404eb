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


def _prepare_run_dir(out, data, resume: bool, overwrite: bool) -> bool:
    """Check RUN before anything is created: a non-empty folder needs --resume or --overwrite;
    --overwrite only deletes a folder that is a lift3d run (has run.json or config.yaml).

    Returns:
        True when RUN is absent or empty (this run would create everything in it).
    """
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
        return False
    check_output_path(out, inputs=[data], overwrite=overwrite)
    fresh = not out.is_dir() or not any(out.iterdir())
    if overwrite and not fresh:
        if not ((out / "run.json").is_file() or (out / "config.yaml").is_file()):
            raise InputError(
                "refusing to delete a folder that is not a lift3d run (no run.json); "
                "choose another --out",
                out,
            )
    return fresh


def _claimed_run_dir(out, resume: bool, overwrite: bool) -> None:
    """Under the folder lock: make RUN ready (another process may have changed it since
    `_prepare_run_dir` looked): empty for a new run, its old content deleted for --overwrite."""
    import shutil
    from pathlib import Path

    from lift3d.errors import InputError
    from lift3d.utils import LOCK_NAME, exists_error

    out = Path(out)
    content = [p for p in out.iterdir() if p.name != LOCK_NAME]
    if resume:
        if not (out / "run.json").is_file():
            raise InputError("nothing to resume: not a lift3d run folder (no run.json)", out)
    elif overwrite:
        for path in content:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    elif content:
        raise exists_error(out, meanwhile=True)


def _undo_run_dir(out, created: bool) -> None:
    """A run that failed before its first checkpoint leaves nothing behind (a folder this
    command created is removed, one that was empty is emptied again)."""
    import shutil
    from pathlib import Path

    out = Path(out)
    if any((out / "checkpoints").rglob("*.safetensors")):
        return  # trained steps to resume from: keep them
    if created:
        shutil.rmtree(out, ignore_errors=True)
        return
    for path in list(out.iterdir()):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def run(args: argparse.Namespace) -> int:
    import contextlib
    from pathlib import Path

    from lift3d.commands import load_training_config
    from lift3d.errors import InputError
    from lift3d.utils import folder_lock, resolve_device

    cfg = load_training_config(args, "train")
    if args.kind == "translate":
        from lift3d.models.registry import check_translation_model_config

        check_translation_model_config(cfg)  # keys that depend on each other, before discovery
    resolve_device(cfg.train.device)  # CUDA asked for but absent: fail before creating RUN
    if not Path(args.data).exists():
        raise InputError("training data folder not found", args.data)
    out = Path(args.out)
    main_rank = int(os.environ.get("RANK", "0")) == 0  # only rank 0 writes (torchrun)
    fresh = _prepare_run_dir(out, args.data, args.resume, args.overwrite)
    lock = contextlib.nullcontext()
    created = False
    if main_rank:
        created = not out.exists()
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            from lift3d.utils import write_error

            raise write_error(exc, out) from None
        lock = folder_lock(out)
    with lock:
        try:
            if main_rank:
                _claimed_run_dir(out, args.resume, args.overwrite)
            run_dir = _train(args, cfg)
        except InputError:
            if main_rank and (fresh or args.overwrite) and not args.resume:
                _undo_run_dir(out, created)
            raise
    print(f"model written to {run_dir}")
    from lift3d.report.html import write_run_report

    report = write_run_report(run_dir)
    if report is not None:
        print(f"report: {report}")
    return 0


def _train(args: argparse.Namespace, cfg):
    """Train into RUN (``args.out``); returns the run folder."""
    from lift3d.errors import InputError

    if args.kind == "translate":
        from lift3d.constants import TRANSLATE_TASKS
        from lift3d.training.translate import train_translation

        if cfg.task not in TRANSLATE_TASKS:
            raise InputError(f"config key 'task': unknown task {cfg.task!r}; use mr2ct or missing")
        return train_translation(cfg, args.out, resume=args.resume)
    from lift3d.inference.detail import (
        add_mapper_intensity,
        calibrate_mapper_intensity,
        calibrate_model,
        calibrate_model_folder,
        has_mapper_intensity,
    )
    from lift3d.model_folder import read_model_folder
    from lift3d.training.generate import folder_detail, train_generation

    calibrate = calibrate_mapper = None
    if cfg.detail.enabled:
        # reference.json["detail"], measured once G is trained (before the mapper stage) ...
        def calibrate(model, ref):
            return calibrate_model(model, cfg, ref, args.data)

        # ... and the LiFT arm's intensity map once the mapper is trained
        def calibrate_mapper(model, ref):
            add_mapper_intensity(ref["detail"], calibrate_mapper_intensity(model, cfg, ref))
            return ref["detail"]

    run_dir = train_generation(
        cfg, args.out, resume=args.resume, calibrate=calibrate, calibrate_mapper=calibrate_mapper
    )
    if cfg.detail.enabled and int(os.environ.get("RANK", "0")) == 0:
        detail = folder_detail(run_dir)
        ref = read_model_folder(run_dir, "generate", use_mapper=False).reference
        # e.g. resumed after the generator stage, or calibrated before the LiFT arm had a map
        if not detail or not has_mapper_intensity(detail, ref):
            calibrate_model_folder(run_dir, args.data)
    return run_dir
