"""Table of `bench_sizes.sh`: per size, parameters, GFLOP per 240 x 240 x 155 volume, training
seconds per step and held-out MAE / PSNR.

Two step times: ``s/step run`` from the run's log (wall time of the whole stage: a busy machine
shows), and with ``--time N`` the median of N isolated steps of F (forward, L1 backward, Adam;
batch 16 of 64^2 slices, 1 thread), measured here and now.

Usage: python benchmarks/bench_sizes_table.py OUT SIZE [SIZE ...] [--time N]
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

from lift3d.bench import count_flops
from lift3d.models.registry import build_translation_model

BRATS_SLICES, BRATS_SIDE = 155, 240


def gflop_per_volume(model: torch.nn.Module, use_mixer: bool) -> float:
    """Forward GFLOP of one 240 x 240 x 155 volume, counted on 2 slices (cost is linear in D)."""
    x = torch.zeros(1, 1, 2, BRATS_SIDE, BRATS_SIDE)
    with torch.no_grad():
        flops, _ = count_flops(lambda: model(x, use_mixer=use_mixer))
    return flops / 2 * BRATS_SLICES / 1e9


def step_seconds(model: torch.nn.Module, repeats: int) -> float:
    """Median seconds of one training step of F alone: batch 16 of 64^2 slices, L1, Adam."""
    unet = model.translator.train()
    opt = torch.optim.Adam(unet.parameters(), 1e-4)
    x = torch.rand(16, 1, 64, 64).contiguous(memory_format=torch.channels_last)
    y = torch.rand(16, 1, 64, 64)
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up
        start = time.perf_counter()
        loss = (unet(x) - y).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def row(out: Path, size: str, time_steps: int = 0) -> dict:
    torch.manual_seed(0)
    model = build_translation_model(size, 1).eval()
    log = (out / f"run-{size}" / "logs" / "translator.jsonl").read_text().splitlines()
    last = json.loads(log[-1])
    result = json.loads((out / f"eval-{size}" / "summary.json").read_text())
    summary = result["summary"]
    return {
        "size": size,
        "params_F": sum(p.numel() for p in model.translator.parameters()),
        "params_all": sum(p.numel() for p in model.parameters()),
        "gflop_F": gflop_per_volume(model, use_mixer=False),
        "gflop_lift": gflop_per_volume(model, use_mixer=True),
        "steps": last["step"],
        "s_per_step": last["seconds"] / last["step"],
        "s_per_step_isolated": step_seconds(model, time_steps) if time_steps else None,
        "mae": summary["mae"],
        "mae_std": summary.get("mae_std", float("nan")),
        "psnr": summary["psnr"],
        "psnr_std": summary.get("psnr_std", float("nan")),
        "n_cases": summary["n_cases"],
        "case_mae": {c: v["mae"] for c, v in sorted(result["cases"].items())},
    }


def main(argv: list[str]) -> int:
    time_steps = 0
    if "--time" in argv:
        i = argv.index("--time")
        time_steps = int(argv[i + 1])
        argv = argv[:i] + argv[i + 2 :]
    out, sizes = Path(argv[0]), argv[1:]
    torch.set_num_threads(1)
    rows = [row(out, s, time_steps) for s in sizes]
    print("PHANTOM data (realistic MR->CT phantom, 64^3); 2D arm (no mixer)")
    print(
        "| size | params F (M) | params F+M (M) | GFLOP/vol F | GFLOP/vol F+M | steps "
        "| s/step run | s/step isolated | held-out MAE (HU) | held-out PSNR (dB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        iso = r["s_per_step_isolated"]
        print(
            f"| {r['size']} | {r['params_F'] / 1e6:.2f} | {r['params_all'] / 1e6:.2f} "
            f"| {r['gflop_F']:.0f} | {r['gflop_lift']:.0f} | {r['steps']} "
            f"| {r['s_per_step']:.2f} | {'-' if iso is None else f'{iso:.2f}'} "
            f"| {r['mae']:.1f} ± {r['mae_std']:.1f} "
            f"| {r['psnr']:.2f} ± {r['psnr_std']:.2f} |"
        )
    print("held-out MAE (HU) per case (the same cases for every size):")
    for r in rows:
        print(f"  {r['size']:>6}: " + "  ".join(f"{c} {v:.1f}" for c, v in r["case_mae"].items()))
    (out / "sizes.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
