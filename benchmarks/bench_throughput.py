"""Training throughput, data loading included: translator slices/s and mapper volumes/s.

For each model size and precision, phantom cases are written to a temporary folder and one
training stage runs through the real path: `lift3d.training.engine.Engine` (Lightning Fabric
precision: ``32`` or ``bf16-mixed``), its DataLoader over `VolumeDataset` / `SliceDataset`
(``data.cache``, ``data.store`` and ``data.num_workers`` as configured), and the stage's loss:

- translator (stage 1 of `lift3d train translate`, mr2ct on SynthRAD-layout phantoms): L1 (+ SSIM)
  on slices of the model grid, ``translator.batch_size`` slices per step -> slices per second;
- mapper (stage 3 of `lift3d train generate`, `lift3d.training.generate.mapper_step`, E and G
  frozen with random weights, the demo config's mapper settings) -> real volumes per second
  (``mapper.batch_size`` real and ``mapper.gen_batch`` generated volumes per step).

Each step's start is time-stamped; after ``--warmup`` steps the rate is items / (time between
the first and last timed step starts), so every interval holds one step's data loading,
forward, backward and optimiser update. The numbers are rates of this machine, not of the
method: compare rows from the same machine and run, and note the load.

    python benchmarks/bench_throughput.py --threads 2 --json throughput.json
    python benchmarks/bench_throughput.py --device cuda --sizes small base --steps 30
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from lift3d.config import GenerateConfig, TranslateConfig, load_config
from lift3d.configs import config_path
from lift3d.data.datasets import SliceDataset, VolumeDataset, collate_volumes
from lift3d.data.discovery import discover_cases
from lift3d.data.store import resolve_store_dir
from lift3d.data.synthetic import write_phantom_dataset
from lift3d.losses.translation import slice_loss
from lift3d.models.lift import make_input, select_target
from lift3d.models.registry import generation_model_from_config, translation_model_from_config
from lift3d.training.engine import Engine
from lift3d.training.generate import prepare_mapper_stage
from lift3d.utils import resolve_device

PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed"}


class StepClock:
    """Wraps a step function and time-stamps the start of every call."""

    def __init__(self, step_fn: Any, device: str) -> None:
        self.step_fn = step_fn
        self.cuda = device.startswith("cuda")
        self.starts: list[float] = []

    def __call__(self, model: torch.nn.Module, batch: Any) -> dict[str, Any]:
        if self.cuda:
            torch.cuda.synchronize()
        self.starts.append(time.perf_counter())
        return self.step_fn(model, batch)

    def rate(self, items_per_step: int, warmup: int) -> tuple[float, float]:
        """(items per second, seconds per step) over the steps after `warmup`."""
        t = self.starts[warmup:]
        if len(t) < 2:
            raise ValueError("need at least two timed steps: raise --steps")
        per_step = (t[-1] - t[0]) / (len(t) - 1)
        return items_per_step / per_step, per_step


def phantom_shape(model_shape: list[int]) -> tuple[int, int, int]:
    """File shape (x, y, z) of phantoms whose axial model grid is `model_shape` (D, H, W)."""
    d, h, w = model_shape
    return (max(16, w), max(16, h), max(16, d))


def train_cfg_overrides(args: argparse.Namespace, precision: str, steps: int) -> list[str]:
    return [
        f"train.device={args.device}",
        f"train.precision={PRECISIONS[precision]}",
        f"train.max_steps={steps}",
        "train.val_every=0",
        f"train.ckpt_every={steps + 1}",
        f"train.log_every={steps}",
        f"train.num_threads={args.threads or 0}",
        f"data.num_workers={args.num_workers}",
        f"data.store={args.store}",
    ]


def translator_throughput(
    args: argparse.Namespace, data: Path, size: str, precision: str, run_dir: Path
) -> dict[str, Any]:
    steps = args.warmup + args.steps
    cfg = load_config(
        TranslateConfig,
        None,
        [
            *train_cfg_overrides(args, precision, steps),
            f"data.root={data}",
            f"data.shape=[{','.join(map(str, args.translate_shape))}]",
            "data.val_fraction=0",
            f"model.size={size}",
            f"translator.steps={steps}",
            f"translator.batch_size={args.translate_batch}",
        ],
    )
    cases = list(discover_cases(data, "auto", required=("mr", "ct")))
    grid = (("mr", "ct"), tuple(cfg.data.shape), cfg.data.slice_axis, cfg.data.spacing_mm)
    store = resolve_store_dir(cfg.data.store, cfg.data.root)
    volumes = VolumeDataset(cases, *grid, cache=cfg.data.cache, store_dir=store)
    engine = Engine(cfg.train, run_dir, full_config=cfg, task="translate", show_progress=False)
    model = translation_model_from_config(cfg).to(engine.device)

    def translator_step(net: torch.nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        x = make_input(cfg.task, batch)  # (B, 1, 1, H, W)
        y = select_target(cfg.task, batch)
        pred = net(x, use_mixer=False, chunk_size=0)
        return {"loss": slice_loss(pred[:, :, 0], y[:, :, 0], cfg.translator.ssim_weight)}

    for p in model.mixers.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(model.translator.parameters(), lr=cfg.translator.lr)
    clock = StepClock(translator_step, engine.device)
    engine.fit(
        "translator",
        model,
        opt,
        SliceDataset(volumes),
        clock,
        max_steps=steps,
        batch_size=cfg.translator.batch_size,
        collate_fn=collate_volumes,
        num_workers=cfg.data.num_workers,
    )
    rate, per_step = clock.rate(cfg.translator.batch_size, args.warmup)
    return {
        "stage": "translator",
        "unit": "slices/s",
        "rate": rate,
        "seconds_per_step": per_step,
        "items_per_step": cfg.translator.batch_size,
        "slice_shape": list(cfg.data.shape[1:]),
        "params": sum(p.numel() for p in model.translator.parameters()),
    }


def mapper_throughput(
    args: argparse.Namespace, data: Path, size: str, precision: str, run_dir: Path
) -> dict[str, Any]:
    steps = args.warmup + args.steps
    cfg = load_config(
        GenerateConfig,
        config_path("generate_demo"),
        [
            *train_cfg_overrides(args, precision, steps),
            f"data.root={data}",
            f"data.shape=[{','.join(map(str, args.generate_shape))}]",
            "data.spacing_mm=null",
            "data.val_fraction=0",
            f"model.size={size}",
            f"mapper.steps={steps}",
        ],
    )
    mc = cfg.mapper
    if mc.loss_size is not None and any(
        s % n for s, n in zip(cfg.data.shape, mc.loss_size, strict=True)
    ):
        cfg.mapper.loss_size = None  # the demo's 32^3 loss volume needs a multiple of it
    cases = list(discover_cases(data, "auto", required=tuple(cfg.model.modalities)))
    store = resolve_store_dir(cfg.data.store, cfg.data.root)
    volumes = VolumeDataset(
        cases,
        list(cfg.model.modalities),
        tuple(cfg.data.shape),
        cfg.data.slice_axis,
        cfg.data.spacing_mm,
        cache=cfg.data.cache,
        store_dir=store,
    )
    engine = Engine(cfg.train, run_dir, full_config=cfg, task="generate", show_progress=False)
    model = generation_model_from_config(cfg).to(engine.device)
    step = prepare_mapper_stage(cfg, model)
    clock = StepClock(step, engine.device)
    opt = torch.optim.Adam(model.mapper.parameters(), lr=mc.lr)
    engine.fit(
        "mapper",
        model.mapper,
        opt,
        volumes,
        clock,
        max_steps=steps,
        batch_size=mc.batch_size,
        collate_fn=collate_volumes,
        num_workers=cfg.data.num_workers,
    )
    rate, per_step = clock.rate(mc.batch_size, args.warmup)
    return {
        "stage": "mapper",
        "unit": "volumes/s",
        "rate": rate,
        "seconds_per_step": per_step,
        "items_per_step": mc.batch_size,
        "gen_batch": mc.gen_batch,
        "loss_size": mc.loss_size,
        "volume_shape": list(cfg.data.shape),
        "params": sum(p.numel() for p in model.mapper.parameters()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small", "base"])
    parser.add_argument(
        "--precisions", nargs="+", choices=list(PRECISIONS), default=["fp32", "bf16"]
    )
    parser.add_argument(
        "--stages", nargs="+", choices=["translator", "mapper"], default=["translator", "mapper"]
    )
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps (default 8)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps (default 2)")
    parser.add_argument("--cases", type=int, default=6, help="phantom cases per dataset")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--store", default="", help='data.store: "" (off, cache on) or "auto"')
    parser.add_argument(
        "--translate-shape", type=int, nargs=3, default=[32, 128, 128], metavar=("D", "H", "W")
    )
    parser.add_argument("--translate-batch", type=int, default=16, help="slices per step")
    parser.add_argument(
        "--generate-shape", type=int, nargs=3, default=[64, 64, 64], metavar=("D", "H", "W")
    )
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    args.device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    for name in ("lift3d", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)

    rows = []
    with tempfile.TemporaryDirectory(prefix="lift3d-throughput-") as tmp:
        root = Path(tmp)
        synthrad, brats = root / "synthrad", root / "brats"
        if "translator" in args.stages:
            write_phantom_dataset(
                synthrad, "synthrad", args.cases, phantom_shape(args.translate_shape), seed=1
            )
        if "mapper" in args.stages:
            write_phantom_dataset(
                brats, "brats", args.cases, phantom_shape(args.generate_shape), seed=0
            )
        for size in args.sizes:
            for precision in args.precisions:
                for stage in args.stages:
                    fn = translator_throughput if stage == "translator" else mapper_throughput
                    data = synthrad if stage == "translator" else brats
                    run_dir = root / f"run_{stage}_{size}_{precision}"
                    row = fn(args, data, size, precision, run_dir)
                    row.update(size=size, precision=precision)
                    rows.append(row)
                    print(
                        f"{stage:<10} {size:<6} {precision:<5} {row['rate']:9.2f} {row['unit']:<10}"
                        f" ({row['seconds_per_step']:.3f} s/step, {row['items_per_step']} per step)",
                        flush=True,
                    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result = {
        "device": args.device,
        "device_name": torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "num_workers": args.num_workers,
        "store": args.store,
        "steps": args.steps,
        "warmup": args.warmup,
        "loadavg_1m_end": load,
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
