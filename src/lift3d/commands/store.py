"""`lift3d store translate|generate`: build a dataset's preprocessed on-disk store ahead of training."""

from __future__ import annotations

import argparse

from lift3d.constants import TRAIN_KINDS

HELP = (
    "Build the preprocessed on-disk store (data.store) of a dataset for a training config, "
    "before training (e.g. on a CPU machine, or once for several runs): every case is decoded, "
    "preprocessed to the config's model grid and written as memory-mapped arrays. Training "
    "with the same config and data then decodes nothing. 'lift3d train' builds it too, on "
    "first use. Cases already in the store are kept; changed ones are rebuilt."
)
EXAMPLE = (
    "lift3d store translate --task missing --data BraTS2023 --config translate_missing "
    "--set data.store=/scratch/lift3d-store"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=TRAIN_KINDS, help="the training the store is for")
    parser.add_argument(
        "--task",
        choices=("mr2ct", "missing"),
        default=None,
        help="translate only: mr2ct or missing (default: the config's)",
    )
    parser.add_argument("--data", required=True, metavar="DIR", help="training dataset folder")
    parser.add_argument("--config", metavar="F", help="YAML config file, or a packaged config name")
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override config values, e.g. --set data.store=/scratch/store data.shape=[64,64,64]",
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lift3d.commands import load_training_config
    from lift3d.data.datasets import VolumeDataset
    from lift3d.data.discovery import discover_cases
    from lift3d.data.store import AUTO, resolve_store_dir
    from lift3d.errors import InputError
    from lift3d.models.lift import task_modalities

    cfg = load_training_config(args, "store")
    if not Path(args.data).exists():
        raise InputError("training data folder not found", args.data)
    if args.kind == "translate":
        slots, target = task_modalities(cfg.task)
        modalities = tuple(slots) if target is None else (*slots, target)
    else:
        modalities = tuple(cfg.model.modalities)
    store = cfg.data.store or AUTO
    store_dir = resolve_store_dir(store, cfg.data.root)
    assert store_dir is not None
    cases = discover_cases(
        cfg.data.root,
        cfg.data.layout,
        required=modalities,
        skip_bad=cfg.data.skip_bad,
        validate="header",
    )
    dataset = VolumeDataset(
        cases,
        modalities,
        tuple(int(s) for s in cfg.data.shape),
        cfg.data.slice_axis,
        cfg.data.spacing_mm,
        store_dir=store_dir,
        skip_bad=cfg.data.skip_bad,
    )
    assert dataset.store is not None
    folder = dataset.store.folder
    size = sum(p.stat().st_size for p in (folder / "cases").glob("*.npy"))
    print(f"data store {folder}: {len(dataset)} cases, {size / 2**30:.2f} GiB")
    if not cfg.data.store:
        print(f"train with --set data.store={store} to use it (this config has no store)")
    return 0
