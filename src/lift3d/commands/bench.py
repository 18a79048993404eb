"""`lift3d bench`: inference cost of LiFT vs a cWDM-configured 3D wavelet diffusion reference."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HELP = (
    "Measure per-volume wall time, FLOPs, peak memory and parameters of LiFT translation / "
    "generation and of a cWDM-configured 3D wavelet diffusion reference (1000, 2 and 1 steps), "
    "side by side on one device."
)
EXAMPLE = "lift3d bench --size quick --json BENCH_quick.json"

DEFAULT_CHUNK = 32  # the translation configs' model.chunk_size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--size",
        choices=("quick", "brats"),
        default="quick",
        help="quick: 64^3 for every system (about a minute on 2 CPU cores); brats: reference on "
        "224x224x160 (wavelet grid 112x112x80), LiFT on 240x240x155",
    )
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        metavar=("D", "H", "W"),
        help="LiFT volume shape (model space, D = slice axis); the reference uses it rounded up "
        "to multiples of 32",
    )
    parser.add_argument(
        "--same-grid",
        action="store_true",
        help="run LiFT on the reference's volume grid (brats: 224x224x160)",
    )
    parser.add_argument("--model-size", default="base", help="LiFT registry size (default base)")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per system (>= 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and inputs")
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="every system, the reference included, runs in this precision (bf16: autocast, "
        "float32 weights; default fp32)",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK,
        metavar="N",
        help=f"LiFT translation z-chunk in output slices, as 'lift3d translate' runs it "
        f"(default {DEFAULT_CHUNK}; 0 = the whole volume in one slice batch)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile every system (LiFT's blocks as --compile of translate / generate "
        "picks them for the device, the reference's U-Net)",
    )


def format_table(result: dict[str, Any]) -> str:
    """The printed table: one row per system, then the cost ratios."""
    gib = 1024**3
    precision = result.get("precision", "fp32")  # JSON written before --precision: fp32
    lines = [
        f"lift3d bench on {result['device_name']} ({result['device']}, {result['threads']} "
        f"threads), {precision}, torch {result['torch_version']}, lift3d "
        f"{result['lift3d_version']}",
        f"{'system':<26} {'shape (D,H,W)':<16} {'s/volume':>11} {'TFLOPs':>10} "
        f"{'TFLOP/s':>8} {'%peak':>6} {'peak GiB':>9} {'+GiB':>7} {'params':>11}",
    ]
    for s in result["systems"]:
        shape = "x".join(str(v) for v in s["shape"])
        rate = s.get("tflops_per_s")
        if rate is None:  # older JSON
            rate = s["flops_per_volume"] / max(s["seconds_per_volume"], 1e-12) / 1e12
        frac = s.get("peak_fraction")
        lines.append(
            f"{s['name']:<26} {shape:<16} {s['seconds_per_volume']:>11.4g} "
            f"{s['flops_per_volume'] / 1e12:>10.4g} {rate:>8.3g} "
            f"{'-' if frac is None else f'{100 * frac:.1f}':>6} {s['peak_bytes'] / gib:>9.3f} "
            f"{(s['peak_bytes'] - (s['baseline_bytes'] or 0)) / gib:>7.3f} "
            f"{s['params']:>11,}"
        )
    stepped = [s for s in result["systems"] if "steps" in s]
    if stepped:
        s = stepped[0]
        lines.append(
            f"reference: measured {s['seconds_per_step']:.4g} s and "
            f"{s['flops_per_step'] / 1e12:.4g} TFLOP per sampling step; per-volume = measured "
            "per-step cost x steps (1000 = cWDM; 1-2 = one-step WFM-like peer). Random weights: "
            "a cost stand-in, not a trained model."
        )
    lines.append("cost ratios (reference / LiFT); efficiency = seconds ratio / FLOP ratio:")
    for key, r in result["ratios"].items():
        eff = r.get("efficiency", r["seconds"] / max(r["flops"], 1e-12))
        lines.append(
            f"  {key:<52} FLOPs {r['flops']:>10.4g}x   seconds {r['seconds']:>10.4g}x   "
            f"efficiency {eff:>5.2f}"
        )
    for skipped in result.get("skipped", []):
        lines.append(f"skipped: {skipped}")
    lines.append(
        f"peak = {result['systems'][0]['memory_kind'] if result['systems'] else '?'} "
        "(whole-process RSS on CPU incl. the torch runtime, +GiB = above the process before "
        "the system was built; allocator peak on GPU); "
        f"load average {result.get('loadavg_1m_start')} -> {result.get('loadavg_1m_end')}"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import torch

    from lift3d import bench
    from lift3d.errors import InputError
    from lift3d.utils import atomic_write_text, check_output_path, resolve_device, seed_everything

    if args.json is not None:
        check_output_path(args.json, overwrite=args.overwrite)
    if args.repeats < bench.MIN_REPEATS:
        raise InputError(f"--repeats must be >= {bench.MIN_REPEATS}, got {args.repeats}")
    if args.chunk_size < 0:
        raise InputError(f"--chunk-size must be >= 0, got {args.chunk_size}")
    if args.threads is not None:
        if args.threads < 1:
            raise InputError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if (
        args.precision == "bf16"
        and device.startswith("cuda")
        and not torch.cuda.is_bf16_supported()
    ):
        raise InputError("this CUDA device does not support bf16; use --precision fp32")
    seed_everything(args.seed)

    shapes = bench.SIZES[args.size]
    lift_shape, ref_shape = shapes["lift"], shapes["reference"]
    if args.shape is not None:
        if min(args.shape) < 1:
            raise InputError(f"--shape sides must be positive, got {args.shape}")
        lift_shape = tuple(args.shape)
        ref_shape = bench.reference_shape_for(lift_shape)
    if args.same_grid:
        lift_shape = ref_shape
    systems, skipped = bench.default_systems(
        lift_shape,
        ref_shape,
        model_size=args.model_size,
        chunk_size=args.chunk_size,
        compile=args.compile,
    )
    result = bench.run_benchmark(
        systems, device=device, repeats=args.repeats, precision=args.precision
    )
    result.update(
        size=args.size,
        same_grid=bool(args.same_grid),
        model_size=args.model_size,
        chunk_size=args.chunk_size,
        compile=bool(args.compile),
    )
    result["skipped"] = skipped
    print(format_table(result))
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n", overwrite=args.overwrite)
        print(f"wrote {args.json}")
    return 0
