"""Per-volume inference cost of LiFT translation at BraTS size, z-mixer on vs off.

For each variant (``mixer``, ``no-mixer``) a fresh worker process builds the ``base`` translation
model (random weights, mixers made non-zero: the cost of a trained model), then times

- ``model``: the network alone on a (1, 1, D, H, W) model-space tensor (default 155 x 240 x 240,
  D padded to the model grid 160 as `lift3d translate` does), streamed in z-chunks;
- ``pipeline``: `lift3d.inference.translate.translate_volumes` from an in-memory MR `Volume` to
  the CT `Volume` on the source grid (preprocessing + network + restore; no file I/O),

after one warm-up run, as the median of ``--repeats`` runs, and reports the worker's peak RSS
(``ru_maxrss``, includes the ~0.4 GiB torch runtime). A third worker runs the network with the
mixer on and off alternately and reports the ratio of the minimum times, the mixer overhead
least disturbed by other load on a shared machine. Writes a JSON and prints a Markdown row for
BENCHMARKS.md naming the machine, threads and the load average it ran under (on a shared machine
timings are pessimistic), and the network's FLOPs per volume (`lift3d.bench.count_flops`, 2 per
multiply-add) with the mixer on and off.

``--context-slices k`` benchmarks the 2.5D arm (`model.context_slices`: F takes each slice with
its k neighbours on each side as channels); 0 (default) is the 2D arm. Run it with 0 and k for
the cost of 2D, 2.5D, LiFT (2D + mixer) and LiFT on 2.5D.

    python benchmarks/bench_translate.py --threads 2 --json bench_translate.json
    python benchmarks/bench_translate.py --threads 2 --context-slices 2 --json bench_25d.json

``LIFT3D_MALLOC=reuse`` runs the workers with the training allocator setting
(`lift3d.utils.tune_allocator`), as it would `lift3d translate`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

VARIANTS = ("mixer", "no-mixer")
INTERLEAVED = "interleaved"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Run one variant in this process and return its numbers."""
    import numpy as np
    import torch

    from lift3d.bench import count_flops
    from lift3d.config import TranslateConfig
    from lift3d.data.volume import Volume
    from lift3d.inference.translate import TranslationBundle, translate_volumes
    from lift3d.models.registry import translation_model_from_config as build_model
    from lift3d.utils import tune_allocator

    # as `lift3d translate`: glibc's allocator unless LIFT3D_MALLOC=reuse
    print(f"allocator reuse: {tune_allocator(reuse_by_default=False)}", file=sys.stderr)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    use_mixer = args.worker in ("mixer", INTERLEAVED)
    x_size, y_size, z_size = args.shape  # RAS voxels, e.g. 240 x 240 x 155
    cfg = TranslateConfig(task="mr2ct")
    cfg.model.size = args.size
    cfg.model.chunk_size = args.chunk
    cfg.model.context_slices = args.context_slices
    cfg.data.shape = [-(-z_size // 16) * 16, y_size, x_size]  # (D, H, W), D padded like BraTS
    model = build_model(cfg, use_mixer=use_mixer).eval()
    for mixer in model.mixers:
        for block in mixer.blocks:
            torch.nn.init.normal_(block.proj_out.weight, std=0.05)
    params = sum(p.numel() for p in model.parameters())
    mixer_params = sum(p.numel() for p in model.mixers.parameters())
    x = torch.rand(1, 1, *cfg.data.shape)

    def run_model() -> None:
        with torch.inference_mode():
            model(x, use_mixer=use_mixer, chunk_size=args.chunk)

    rng = np.random.default_rng(0)
    mr = Volume(rng.uniform(0, 1000, size=(x_size, y_size, z_size)).astype(np.float32), np.eye(4))
    bundle = TranslationBundle(model, cfg, "mr2ct", ["mr"], "ct", "cpu", None)

    def run_pipeline() -> None:
        translate_volumes(bundle, {"mr": mr}, use_mixer=use_mixer)

    if args.worker == INTERLEAVED:
        # mixer on / off alternately in one process: the ratio is robust to a shared machine's
        # changing load (each time is the minimum over the repeats)
        times: dict[str, list[float]] = {"mixer": [], "no-mixer": []}
        with torch.inference_mode():
            model(x, use_mixer=False, chunk_size=args.chunk)  # warm-up
            for _ in range(args.repeats):
                for name, flag in (("mixer", True), ("no-mixer", False)):
                    t0 = time.perf_counter()
                    model(x, use_mixer=flag, chunk_size=args.chunk)
                    times[name].append(time.perf_counter() - t0)
        return {
            "variant": INTERLEAVED,
            "times": times,
            "min_ratio": min(times["mixer"]) / min(times["no-mixer"]),
        }

    out: dict[str, Any] = {"variant": args.worker, "params": params, "mixer_params": mixer_params}
    out["model_flops"] = count_flops(run_model)[0]
    for name, fn in (("model", run_model), ("pipeline", run_pipeline)):
        fn()  # warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[f"{name}_seconds"] = statistics.median(times)
        out[f"{name}_seconds_all"] = times
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    out["model_grid"] = cfg.data.shape
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="base", help="translation model size (default base)")
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=[240, 240, 155],
        metavar=("X", "Y", "Z"),
        help="input volume voxels (default 240 240 155, BraTS)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--chunk", type=int, default=32, help="z-chunk size (default 32)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measure")
    parser.add_argument(
        "--context-slices",
        type=int,
        default=0,
        metavar="K",
        help="2.5D arm: K neighbouring slices on each side as input channels (default 0: 2D)",
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--machine", default="", help="machine label for the Markdown row")
    parser.add_argument("--worker", choices=(*VARIANTS, INTERLEAVED), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.context_slices < 0:
        parser.error("--context-slices must be >= 0")

    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    import torch

    import lift3d

    load_start = os.getloadavg()[0]
    results = []
    for variant in (*VARIANTS, INTERLEAVED):  # one fresh process each: clean peak RSS
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            variant,
            "--size",
            args.size,
            "--shape",
            *map(str, args.shape),
            "--threads",
            str(args.threads),
            "--chunk",
            str(args.chunk),
            "--repeats",
            str(args.repeats),
            "--context-slices",
            str(args.context_slices),
        ]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    load_end = os.getloadavg()[0]
    by = {r["variant"]: r for r in results}
    interleaved = by.pop(INTERLEAVED)
    report = {
        "benchmark": "bench_translate",
        "size": args.size,
        "input_shape_xyz": args.shape,
        "threads": args.threads,
        "chunk": args.chunk,
        "context_slices": args.context_slices,
        "repeats": args.repeats,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "load_average_start_end": [load_start, load_end],
        "torch_version": torch.__version__,
        "lift3d_version": lift3d.__version__,
        "results": by,
        "mixer_overhead_model": by["mixer"]["model_seconds"] / by["no-mixer"]["model_seconds"] - 1,
        "mixer_overhead_pipeline": by["mixer"]["pipeline_seconds"]
        / by["no-mixer"]["pipeline_seconds"]
        - 1,
        "interleaved": interleaved,
        "mixer_overhead_interleaved": interleaved["min_ratio"] - 1,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    machine = args.machine or f"{report['cpu']} ({os.cpu_count()} cores)"
    shape = "x".join(map(str, args.shape))
    model_name = args.size + (f" 2.5D k={args.context_slices}" if args.context_slices else "")
    print(
        "| machine | threads | load | model | input | variant | model s | pipeline s | "
        "peak RSS GiB | params |"
    )
    print("|---|---:|---|---|---|---|---:|---:|---:|---:|")
    for v in VARIANTS:
        r = by[v]
        print(
            f"| {machine} | {args.threads} | {load_start:.1f} -> {load_end:.1f} | {model_name} | "
            f"{shape} | {v} | {r['model_seconds']:.2f} | {r['pipeline_seconds']:.2f} | "
            f"{r['peak_rss_gib']:.2f} | {r['params'] / 1e6:.2f} M |"
        )
    print(
        f"\nmixer overhead: model {report['mixer_overhead_model']:+.1%}, "
        f"pipeline {report['mixer_overhead_pipeline']:+.1%}, model interleaved (min of "
        f"{args.repeats}) {report['mixer_overhead_interleaved']:+.1%}"
    )
    print(
        "network GFLOPs per volume: "
        + ", ".join(f"{v} {by[v]['model_flops'] / 1e9:.2f}" for v in VARIANTS)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
