"""Inference cost of LiFT vs the cWDM-configured 3D wavelet diffusion reference.

Runs `lift3d bench` (warm-up, then the median of >= 5 timed runs per system, FLOPs from
`torch.utils.flop_counter`, per-system peak memory) and prints Markdown rows for BENCHMARKS.md,
or turns an existing JSON into those rows. Only numbers from the same machine are compared.

    python benchmarks/bench_cost.py --size quick --json bench_quick.json
    python benchmarks/bench_cost.py --size brats --threads 2 --json bench_brats.json
    python benchmarks/bench_cost.py --from-json bench_brats.json --machine "2-core CPU (shared)"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def markdown_rows(result: dict[str, Any], machine: str = "") -> str:
    """Two Markdown tables: per-system cost, and reference / LiFT ratios."""
    machine = machine or f"{result['device_name']}, {result['threads']} threads"
    size = result.get("size", "?") + (" same-grid" if result.get("same_grid") else "")
    lines = [
        "| machine | size | system | shape (D,H,W) | s / volume | TFLOP / volume | peak GiB | params |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for s in result["systems"]:
        shape = "x".join(str(v) for v in s["shape"])
        lines.append(
            f"| {machine} | {size} | {s['name']} | {shape} | {s['seconds_per_volume']:.4g} | "
            f"{s['flops_per_volume'] / 1e12:.4g} | {s['peak_bytes'] / 1024**3:.2f} | "
            f"{s['params'] / 1e6:.2f} M |"
        )
    lines += ["", "| machine | size | ratio | FLOPs | seconds |", "|---|---|---|---:|---:|"]
    for key, r in result["ratios"].items():
        lines.append(f"| {machine} | {size} | {key} | {r['flops']:.4g}x | {r['seconds']:.4g}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from-json", type=Path, help="format an existing `lift3d bench` JSON")
    parser.add_argument("--machine", default="", help="machine label for the rows")
    args, bench_args = parser.parse_known_args(argv)
    if args.from_json is None:
        from lift3d.cli import main as lift3d_main

        if "--json" not in bench_args:
            parser.error("pass --json PATH (forwarded to lift3d bench) or --from-json PATH")
        code = lift3d_main(["bench", *bench_args])
        if code:
            return code
        args.from_json = Path(bench_args[bench_args.index("--json") + 1])
    print(markdown_rows(json.loads(args.from_json.read_text()), args.machine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
