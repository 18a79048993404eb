"""Table of `bench_ablation.sh`: 2D, LiFT, 2.5D and LiFT-2.5D on the held-out cases, mean +- sd
over training seeds, with each arm's cost (forward GFLOP per 240 x 240 x 155 volume, training
seconds of its run). PHANTOM results: they show whether a mechanism works, never clinical quality.

Usage: python benchmarks/ablation_table.py OUT --context K --seeds S [S ...] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from lift3d.bench import count_flops
from lift3d.model_folder import load_model

BRATS_SLICES, BRATS_SIDE = 155, 240
METRICS = {
    "mr2ct": ("mae", "psnr", "ssim", "dz_mae", "dz_corr", "zgrad_ratio"),
    "missing": ("psnr", "ssim", "mse", "dz_mae", "dz_corr", "zgrad_ratio"),
}
PLANES = ("psnr_axial", "psnr_coronal", "psnr_sagittal")


def gflop_per_volume(run: Path, use_mixer: bool) -> float:
    """Forward GFLOP of one 240 x 240 x 155 volume, counted on 8 slices (linear in D)."""
    model, _ = load_model(run, "translate")
    x = torch.zeros(1, model.in_channels, 8, BRATS_SIDE, BRATS_SIDE)
    with torch.no_grad():
        flops, _ = count_flops(lambda: model(x, use_mixer=use_mixer))
    return flops / 8 * BRATS_SLICES / 1e9


def arms(context: int) -> dict[str, tuple[str, str]]:
    """Arm name -> (run tag, mixer or no-mixer): runs ``run-<tag>-s<seed>``, evaluations
    ``eval-<tag>-<mixer>-s<seed>``."""
    return {
        "2D": ("c0", "no-mixer"),
        "LiFT (2D + mixer)": ("c0", "mixer"),
        f"2.5D (k={context})": (f"c{context}", "no-mixer"),
        f"LiFT-2.5D (k={context} + mixer)": (f"c{context}", "mixer"),
        "LiFT joint (F + mixer trained together)": ("joint", "mixer"),
    }


def fmt(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--context", type=int, required=True)
    parser.add_argument("--seeds", nargs="+", required=True)
    parser.add_argument("--json", help="also write the per-seed numbers here")
    args = parser.parse_args()
    out = Path(args.out)
    first = json.loads(next(out.glob("eval-*/summary.json")).read_text())
    task = first.get("task", "mr2ct")
    keys = (*METRICS.get(task, METRICS["mr2ct"]), *PLANES)
    rows, raw = [], {}
    for name, (tag, mixer) in arms(args.context).items():
        per_seed = []
        for seed in args.seeds:
            path = out / f"eval-{tag}-{mixer}-s{seed}" / "summary.json"
            if path.is_file():
                summary = json.loads(path.read_text())
                per_seed.append(summary.get("summary", summary))
        if not per_seed:
            continue
        run = out / f"run-{tag}-s{args.seeds[0]}"
        seconds = [
            float((out / f"run-{tag}-s{s}" / "train_seconds.txt").read_text())
            for s in args.seeds
            if (out / f"run-{tag}-s{s}" / "train_seconds.txt").is_file()
        ]
        cost = gflop_per_volume(run, mixer == "mixer") if run.is_dir() else float("nan")
        values = {k: [float(s[k]) for s in per_seed if s.get(k) is not None] for k in keys}
        raw[name] = {"n_seeds": len(per_seed), "gflop_brats": cost, **values}
        digits = {"mae": 1, "dz_mae": 1 if task == "mr2ct" else 4, "mse": 4, "ssim": 4}
        digits.update(dz_corr=3, zgrad_ratio=3)
        cells = [fmt(values[k], digits.get(k, 2)) for k in keys]
        train = f"{statistics.fmean(seconds):.0f}" if seconds else "-"
        rows.append([name, str(len(per_seed)), *cells, f"{cost:.0f}", train])
    print(f"PHANTOM results, task {task}, held-out cases of {out / 'test'}; mean ± sd over seeds")
    header = ["arm", "seeds", *keys, "GFLOP / BraTS vol", "train s (run incl. mixer)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    base = raw["2D"]
    for name, values in raw.items():
        if name == "2D" or not values["dz_mae"] or not base["dz_mae"]:
            continue
        change = statistics.fmean(values["dz_mae"]) / statistics.fmean(base["dz_mae"]) - 1
        planes = ", ".join(
            f"{k.split('_')[1]} {statistics.fmean(values[k]) - statistics.fmean(base[k]):+.2f} dB"
            for k in PLANES
            if values[k] and base[k]
        )
        print(f"{name} vs 2D: dz_mae {100 * change:+.1f} %; PSNR {planes}")
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
