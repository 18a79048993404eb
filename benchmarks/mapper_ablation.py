"""LiFT vs the no-mapper ablation, with the mapper stage retrained over several seeds.

Protocol of BENCHMARKS.md ("Unconditional generation"): the encoder E and the slice generator G
of one finished `lift3d train generate` run are kept; only the mapper stage is retrained (a copy
of the run without its mapper checkpoints, `lift3d train generate --resume` with `--set`
overrides and ``train.seed`` = each seed). Every model (and the no-mapper ablation of the same
G) samples ``--n`` volumes with generation seed 0 (or each of ``--gen-seeds``, the scores then
averaged over them) and is scored against each held-out reference
folder with three evaluation encoders (files reused when they exist, else trained and saved),
on the reference grid and optionally on a second grid (``--grid 32 32 32``: the model grid of
the demo config). Prints, per reference set and grid, the change of each metric vs the
no-mapper arm per training seed and pooled (mean over the three encoders' KIDs). Samples carry
the model's output detail (`lift3d.inference.detail`) and intensity map as its config says
(``--[no-]detail``, ``--[no-]intensity-map`` override); each run uses its own calibration
(printed; the mapper runs' training splits differ with their seed, so the noise levels differ
slightly between runs).

    python benchmarks/mapper_ablation.py --base RUN --data TRAIN_DIR --config CFG \\
        --ref F=held_out_a --ref C=held_out_b --work abl --tag cos800 --seeds 0 1 2 \\
        --grid 32 32 32 -- mapper.steps=800 mapper.lr_schedule=cosine

With ``--runs RUN ...`` instead of ``--base``, nothing is trained: each finished run (e.g. the
whole pipeline trained with another seed, as `benchmarks/gpu_seed_runs.sh` makes them) is
compared with its own no-mapper arm.

One draw of 96 volumes is a noisy measure of the LiFT arm: its volumes share a code along depth,
so it holds fewer independent slices than the no-mapper arm, and its per-plane KID moves ~3x more
between generation seeds (axial KID, one model, ten seeds: sd 17 % of the mean vs 5 % without the
mapper, equal means; ``docs/journal/2026-11-28-axial-kid-draws.md``). ``--gen-seeds 0 1 2 3``
averages that out before a +-10 % criterion is read.

Slow on a CPU (one 800-step mapper stage: ~8 min on one core at the demo size). Everything
lands under ``--work``; finished pieces are skipped on a rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from lift3d.constants import PLANES

KEYS = (*(f"kid_{p}" for p in PLANES), "increment_distance")
# Reported with their spread over models (mean +- sd of the models' encoder-averaged values).
SPREAD_KEYS = (
    *(f"{m}_{p}" for m in ("kid", "fid") for p in PLANES),
    "increment_distance",
    "histogram_distance",
)
ENCODER_SEEDS = (1234, 99, 7)


def train_mapper(base: Path, run: Path, data: Path, config: Path, seed: int, sets: list[str]):
    """Retrain the mapper stage of `base` into `run` (skipped when `run` is finished)."""
    if (run / "model.safetensors").exists() and (run / "checkpoints/mapper/done").exists():
        return
    if not run.exists():
        ignore = shutil.ignore_patterns("mapper", "mapper*.jsonl", "model.safetensors")
        shutil.copytree(base, run, ignore=ignore)
    cmd = [sys.executable, "-m", "lift3d.cli", "train", "generate", "--data", str(data)]
    cmd += ["--out", str(run), "--config", str(config), "--resume", "--set"]
    cmd += [f"train.seed={seed}", *sets]
    with open(run.parent / f"{run.name}.log", "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)


def score(
    samples: Path,
    ref: Path,
    enc_dir: Path,
    grid: tuple[int, ...] | None,
    encoders: int = len(ENCODER_SEEDS),
) -> list[dict]:
    """One summary per evaluation encoder (the first `encoders` of ENCODER_SEEDS)."""
    from lift3d.evaluation import evaluate_generation

    tag = "ref" if grid is None else "x".join(map(str, grid))
    rows = []
    for es in ENCODER_SEEDS[:encoders]:
        enc = enc_dir / f"enc_{ref.name}_{tag}_{es}.safetensors"
        kw = {} if grid is None else {"eval_shape": grid}
        r = evaluate_generation(samples, ref, eval_encoder=enc, encoder_seed=es, **kw)
        rows.append({k: v for k, v in r["summary"].items() if isinstance(v, float)})
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", type=Path, help="finished train-generate run (mapper retrained)")
    p.add_argument("--data", type=Path, help="its training data")
    p.add_argument("--config", type=Path, help="its config")
    p.add_argument(
        "--runs",
        type=Path,
        nargs="+",
        help="instead of --base: finished runs (e.g. whole pipelines trained with different "
        "seeds), each compared with its own no-mapper arm",
    )
    p.add_argument("--ref", action="append", required=True, help="NAME=held-out folder")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--tag", required=True, help="name of this mapper variant")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--n", type=int, default=96, help="samples per model")
    p.add_argument(
        "--gen-seeds",
        type=int,
        nargs="+",
        default=[0],
        help="generation seeds per model (each draws --n volumes; scores averaged over them)",
    )
    p.add_argument("--grid", type=int, nargs=3, help="second evaluation grid (S A R)")
    p.add_argument(
        "--encoders",
        type=int,
        choices=range(1, len(ENCODER_SEEDS) + 1),
        default=len(ENCODER_SEEDS),
        help=f"evaluation encoders per score (the first of {ENCODER_SEEDS}; scores cached per "
        "count)",
    )
    p.add_argument(
        "--detail",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="sample with (--no-detail: without) the output detail, noise at the training "
        "data's noise level (default: as the model's config says, like `lift3d generate`)",
    )
    p.add_argument(
        "--intensity-map",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="sample with (--no-intensity-map: without) each arm's intensity map (default: as "
        "the model's config says, like `lift3d generate`)",
    )
    p.add_argument("--json", type=Path, help="also write every score and change to this file")
    p.add_argument("sets", nargs="*", help="--set overrides of the mapper stage")
    a = p.parse_args()
    if not a.runs and not (a.base and a.data and a.config):
        p.error("give --runs, or --base, --data and --config")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from lift3d.inference.generate import generate_volumes

    a.work.mkdir(parents=True, exist_ok=True)
    refs = dict(r.split("=", 1) for r in a.ref)
    grids = [None] + ([tuple(a.grid)] if a.grid else [])
    # arm name -> (run, use_mapper, sample folder name, name of the no-mapper arm it is paired with)
    arms: dict[str, tuple[Path, bool, str, str]] = {}
    if a.runs:
        for run in a.runs:
            label = run.resolve().name
            arms[f"nomap {label}"] = (run, False, f"nomap_{a.tag}_{label}", f"nomap {label}")
            arms[f"{a.tag} {label}"] = (run, True, f"{a.tag}_{label}", f"nomap {label}")
    else:
        arms["no-mapper"] = (a.base, False, f"nomap_{a.base.name}", "no-mapper")
        for seed in a.seeds:
            run = a.work / "runs" / f"{a.tag}_s{seed}"
            run.parent.mkdir(exist_ok=True)
            train_mapper(a.base, run, a.data, a.config, seed, a.sets)
            arms[f"{a.tag} seed {seed}"] = (run, True, f"{a.tag}_seed_{seed}", "no-mapper")
    scores: dict[tuple[str, str, str], dict[str, float]] = {}
    for name, (run, mapper, folder, _) in arms.items():
        rows_by_key: dict[str, list[dict]] = {}
        for gen_seed in a.gen_seeds:
            draw = folder + (f"_g{gen_seed}" if gen_seed else "")
            for name_, flag in (("detail", a.detail), ("map", a.intensity_map)):
                if flag is not None:  # None: the model's default, no suffix
                    draw += f"_{name_}" if flag else f"_no{name_}"
            samples = a.work / "samples" / draw
            if not samples.exists():
                generate_volumes(
                    run, a.n, samples, seed=gen_seed, use_mapper=mapper, detail=a.detail,
                    intensity_map=a.intensity_map, progress=False,
                )  # fmt: skip
            info = json.loads((samples / "generation.json").read_text())
            detail = info["detail"]
            print(f"{name}, generation seed {gen_seed}: output detail "
                  f"{detail['sigma'] if detail['applied'] else 'off'}, intensity map "
                  f"{info['intensity_map']['applied'] or 'off'}")  # fmt: skip
            for ref_name, ref in refs.items():
                for grid in grids:
                    key = f"{ref_name}_{'ref' if grid is None else 'x'.join(map(str, grid))}"
                    enc_tag = "" if a.encoders == len(ENCODER_SEEDS) else f"_enc{a.encoders}"
                    cache = samples / f"scores_{key}{enc_tag}.json"
                    if not cache.exists():
                        rows = score(samples, Path(ref), a.work / "encoders", grid, a.encoders)
                        cache.write_text(json.dumps(rows, indent=1))
                    rows_by_key.setdefault(key, []).extend(json.loads(cache.read_text()))
        for ref_name in refs:
            for grid in grids:
                key = f"{ref_name}_{'ref' if grid is None else 'x'.join(map(str, grid))}"
                rows = rows_by_key[key]  # every encoder x generation seed
                scores[(name, ref_name, key)] = {
                    k: float(np.mean([r[k] for r in rows])) for k in SPREAD_KEYS
                }
    summary: dict[str, dict] = {}
    for ref_name in refs:
        for grid in grids:
            key = f"{ref_name}_{'ref' if grid is None else 'x'.join(map(str, grid))}"
            print(f"\n{ref_name}, grid {key.split('_', 1)[1]} (change vs the paired no-mapper arm)")
            print("| model | " + " | ".join(KEYS) + " |\n|---|" + "---:|" * len(KEYS))
            changes = []
            for name, (_, mapper, _, paired) in arms.items():
                m = scores[(name, ref_name, key)]
                if not mapper:
                    print(f"| {name} | " + " | ".join(f"{m[k]:.4f}" for k in KEYS) + " |")
                    continue
                base = scores[(paired, ref_name, key)]
                ch = [100 * (m[k] - base[k]) / base[k] for k in KEYS]
                changes.append(ch)
                print(
                    f"| {name} | "
                    + " | ".join(f"{m[k]:.4f} ({c:+.0f}%)" for k, c in zip(KEYS, ch))
                    + " |"
                )
            mean, sd = np.mean(changes, axis=0), np.std(changes, axis=0)
            print("| mean change | " + " | ".join(f"{c:+.0f}%" for c in mean) + " |")
            print("| sd of change | " + " | ".join(f"{c:.0f}%" for c in sd) + " |")
            spread_table(arms, scores, ref_name, key)
            summary.setdefault(key, {})["change_mean"] = dict(zip(KEYS, mean.tolist()))
            summary[key]["change_sd"] = dict(zip(KEYS, sd.tolist()))
    if a.json:
        rows = [
            {"arm": n, "ref": r, "grid": k.split("_", 1)[1], **v} for (n, r, k), v in scores.items()
        ]
        a.json.write_text(json.dumps({"scores": rows, "summary": summary}, indent=1))
    return 0


def spread_table(arms: dict, scores: dict, ref_name: str, key: str) -> None:
    """Absolute values, mean +- sd over models, for the mapper arms and the no-mapper arms."""
    print(f"\n{ref_name}, grid {key.split('_', 1)[1]}: mean +- sd over models (absolute)")
    print("| arms | " + " | ".join(SPREAD_KEYS) + " |\n|---|" + "---:|" * len(SPREAD_KEYS))
    for label, want in (("LiFT", True), ("no-mapper", False)):
        vals = [scores[(n, ref_name, key)] for n, (_, m, _, _) in arms.items() if m == want]
        cells = []
        for k in SPREAD_KEYS:
            x = np.array([v[k] for v in vals])
            cells.append(f"{x.mean():.4g} +- {x.std():.2g}")
        print(f"| {label} (n={len(vals)}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    raise SystemExit(main())
