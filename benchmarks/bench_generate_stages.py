"""Seconds per training step of each generation stage, and the whole run they add up to.

Runs ``lift3d train generate`` for a few steps per stage (encoder, generator, mapper) on a
dataset folder with a packaged or given config, reads each stage's cumulative ``seconds`` from
``RUN/logs/<stage>.jsonl`` (logged every step) and extrapolates to the config's step counts.
The first ``--warmup`` steps of each stage are left out of the rate (allocator, oneDNN/cuDNN
kernel choice); the on-disk store (``data.store``) is built before the timed run.

    lift3d phantom --kind basic --cases 6 --shape 240 240 155 --out brats6
    python benchmarks/bench_generate_stages.py --data brats6 --config generate_brats --threads 2
    python benchmarks/bench_generate_stages.py --data brats6 --config generate_brats --device cuda

Numbers are rates of this machine, not of the method; note the load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from lift3d.config import GenerateConfig, load_config
from lift3d.configs import config_path

STAGES = ("encoder", "generator", "decoder", "mapper")


def stage_rate(log: Path, warmup: int) -> float:
    """Seconds per step after `warmup` steps, from a stage's per-step jsonl log."""
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "seconds" in r]
    timed = [r for r in rows if r["step"] > warmup]
    if len(timed) < 2:
        raise SystemExit(f"{log}: need more than {warmup + 1} logged steps")
    first, last = timed[0], timed[-1]
    return (last["seconds"] - first["seconds"]) / (last["step"] - first["step"])


def config_stages(cfg: GenerateConfig) -> tuple[str, ...]:
    """The stages a config trains (the decoder stage only when it has steps)."""
    return tuple(s for s in STAGES if s != "decoder" or cfg.decoder.steps > 0)


def timing_overrides(steps: int, threads: int, stages: tuple[str, ...] = STAGES) -> list[str]:
    """The ``--set`` overrides of the timed run: `steps` per stage in `stages`, a log line every
    step, no validation, checkpoints, output-detail calibration or checkpoint averaging (a few
    steps leave nothing to average), `threads` torch threads."""
    return [f"{s}.steps={steps}" for s in stages] + [
        "train.log_every=1",
        "train.val_every=0",
        f"train.ckpt_every={10 * steps}",
        f"train.num_threads={threads}",
        "detail.enabled=false",
        "detail.sample_detail=false",
        "detail.sample_intensity_map=false",
        "generator_average=1",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="BraTS-layout dataset folder")
    p.add_argument("--config", default="generate_brats", help="packaged config name or YAML")
    p.add_argument("--steps", type=int, default=6, help="steps per stage (default 6)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default="", help="write the numbers here too")
    args = p.parse_args(argv)

    cfg_file = Path(args.config)
    if not cfg_file.is_file():
        cfg_file = config_path(args.config)
    cfg = load_config(GenerateConfig, cfg_file)
    stages = config_stages(cfg)
    full = {s: getattr(cfg, s).steps for s in stages}
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        sets = timing_overrides(args.steps, args.threads, stages)
        cmd = [
            sys.executable, "-m", "lift3d", "train", "generate", "--data", args.data,
            "--out", str(run), "--config", str(cfg_file), "--device", args.device,
            "--set", *sets,
        ]  # fmt: skip
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=os.environ.copy())
        rate = {s: stage_rate(run / "logs" / f"{s}.jsonl", args.warmup) for s in stages}
    total = sum(rate[s] * full[s] for s in stages)
    out = {
        "config": args.config,
        "grid": cfg.data.shape,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, device {args.device}",
        "threads": args.threads,
        "seconds_per_step": rate,
        "config_steps": full,
        "hours_at_config_steps": {s: rate[s] * full[s] / 3600 for s in stages},
        "total_hours": total / 3600,
    }
    print(f"{args.config} at {cfg.data.shape} on {out['machine']}")
    for s in stages:
        print(
            f"  {s:9s} {rate[s]:8.3f} s/step x {full[s]:6d} steps = "
            f"{rate[s] * full[s] / 3600:7.2f} h"
        )
    print(f"  total {total / 3600:.2f} h")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
