"""Generation cost of unconditional LiFT: seconds per sampled volume (G + trajectory mapper).

nanoGPT-style: build the model (random weights: the cost does not depend on them), warm up,
then time `model.sample(1)` several times and report the median, with FLOPs per volume
(`torch.utils.flop_counter`), parameters and the process's peak resident memory. Targets
(issue 4): a 64^3 volume under 1 s and a 240x240x155 volume under 15 s on the CPU.

    python benchmarks/bench_generate.py --threads 1 --json bench_generate.json
    python benchmarks/bench_generate.py --shape 155 240 240 --size small --repeats 3

Only numbers from the same machine are compared; on a shared machine say so.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from lift3d.models.registry import build_generation_model

DEFAULT_CASES = [("small", (64, 64, 64)), ("small", (155, 240, 240)), ("base", (155, 240, 240))]


def bench_one(
    size: str, shape: tuple[int, int, int], repeats: int, use_mapper: bool, device: str
) -> dict[str, Any]:
    model = build_generation_model(size, 1, shape).to(device).eval()
    gen = torch.Generator().manual_seed(0)
    model.sample(1, gen, use_mapper=use_mapper)  # warm-up
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        model.sample(1, gen, use_mapper=use_mapper)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    with FlopCounterMode(display=False) as counter:
        model.sample(1, gen, use_mapper=use_mapper)
    sampling_params = sum(
        p.numel() for p in (*model.generator.parameters(), *model.mapper.parameters())
    )
    return {
        "size": size,
        "shape": list(shape),
        "use_mapper": use_mapper,
        "seconds_per_volume": statistics.median(times),
        "seconds_all": times,
        "flops_per_volume": int(counter.get_total_flops()),
        "params_sampling": int(sampling_params),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--shape", type=int, nargs=3, metavar=("D", "H", "W"), help="one shape only"
    )
    parser.add_argument("--size", default="small", help="model size with --shape (default small)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-mapper", action="store_true", help="time the ablation instead")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cases = [(args.size, tuple(args.shape))] if args.shape else DEFAULT_CASES
    results = [bench_one(s, shp, args.repeats, not args.no_mapper, args.device) for s, shp in cases]
    out = {
        "torch_version": torch.__version__,
        "device": args.device,
        "device_name": torch.cuda.get_device_name(0)
        if args.device.startswith("cuda")
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "results": results,
    }
    print("| size | shape (D,H,W) | mapper | s / volume (median) | GFLOP / volume | params |")
    print("|---|---|---|---:|---:|---:|")
    for r in results:
        shape = "x".join(map(str, r["shape"]))
        print(
            f"| {r['size']} | {shape} | {r['use_mapper']} | {r['seconds_per_volume']:.3f} | "
            f"{r['flops_per_volume'] / 1e9:.1f} | {r['params_sampling'] / 1e6:.2f} M |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
