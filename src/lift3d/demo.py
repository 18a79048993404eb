"""End-to-end demo on the built-in phantom (what `make demo` runs).

Every step goes through the real `lift3d` command line (`lift3d.cli.main`), so the demo exercises
exactly what a user runs:

1. write a phantom training set (16 cases) and a held-out set (4 cases) in the SynthRAD layout,
   and a BraTS-layout set for unconditional generation (``--kind basic``: the phantom the
   demo's configs and its time budget were set on; the realistic phantom, the CLI's default,
   is where benchmarks/bench_ablation.sh compares 2D, 2.5D and LiFT);
2. `lift3d inspect` the training set;
3. `lift3d train translate --task mr2ct` (a small model, a few minutes on a CPU);
4. `lift3d translate` the held-out cases with and without the z-mixer;
5. `lift3d evaluate` both and print them side by side; then the 2.5D arm: the same translator
   config trained with one neighbouring MR slice on each side as input channels
   (``model.context_slices=1``, no mixer), scored the same way, and the three arms (2D, 2.5D,
   LiFT) printed in one table;
6. `lift3d train generate` + `lift3d generate` with and without the trajectory mapper, evaluated
   (per-plane KID / FID, increment distances, MS-SSIM diversity of both arms and of the held-out
   phantoms);
7. `lift3d report` for each run.

With two or more CPU cores (``--jobs auto``) the translation half (steps 1-5) and the generation
half (step 6) run at the same time as two processes, each with half of the cores. `lift3d train
generate` writes its model folder once after the generator and decoder stages (the mapper stage
freezes E, G and the decoder, so the no-mapper arm is final then) and again after the mapper
stage. So the translation process does its half, then trains and scores the 2.5D arm, then waits
for that first folder (the generation process trains on every core from about then:
`ALL_CORES_FROM`) and samples and scores the no-mapper arm from it (``generate --no-mapper``,
``evaluate``: this trains the shared evaluation encoder) while the generation process trains the
mapper; the generation process samples and scores the mapper arm (its ``evaluate`` loads the
shared encoder, or waits for it), with every core once the translation process is done, and
prints both arms' tables and writes the report. Its log is printed when both are done.
``--jobs 1`` runs every step in turn (2.5D arm after the mixer ablation, mapper arm before the
no-mapper arm), with the same outputs. Training picks a GPU by itself when there is one.

Results on the phantom show that a mechanism works, never clinical quality.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lift3d.cli import main as lift3d_main
from lift3d.errors import InputError
from lift3d.utils import atomic_write_text, tune_allocator

log = logging.getLogger("lift3d.demo")


def _run(step: str, argv: list[str]) -> None:
    print(f"\n$ lift3d {' '.join(argv)}", flush=True)
    t0, c0 = time.perf_counter(), _cpu_seconds()
    code = lift3d_main(argv)
    if code != 0:
        raise SystemExit(f"demo step '{step}' failed with exit code {code}")
    # CPU seconds beside wall seconds: on a shared machine the wall time says little.
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    print(f"[{step}: {wall:.1f} s, CPU {cpu:.1f} s]", flush=True)


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished child processes (data-loader workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _config(name: str) -> str:
    """Path of a packaged config (configs/ in a checkout)."""
    from lift3d.configs import config_path

    return str(config_path(name))


def run_demo(
    out: Path, *, quick: bool = False, skip_generate: bool = False, jobs: int = 1
) -> dict[str, Path]:
    """Run the whole demo into `out` (created; must not exist unless empty).

    Args:
        out: demo folder.
        quick: tiny sizes and few steps (used by the slow test); the default is the real demo.
        skip_generate: leave out the unconditional part.
        jobs: 2 runs the generation half in a second process alongside the translation half
            (its log, ``OUT/generate.log``, is printed when both are done), the no-mapper arm
            scored by this process after its own half and the 2.5D arm, while the other trains
            the mapper (`run_no_mapper_arm`); 1 runs everything in turn.

    Returns:
        The main output paths (evaluation JSONs, reports).
    """
    out.mkdir(parents=True, exist_ok=True)
    threads = _threads(jobs)
    child = None
    if jobs > 1 and not skip_generate:
        log_path = out / "generate.log"
        print(
            f"generation half: a second process alongside the translation half, "
            f"{threads} thread(s) each (log: {log_path}); the translation process then scores "
            "the no-mapper arm while the generation process trains the mapper, then trains the "
            "2.5D translation arm",
            flush=True,
        )
        argv = [sys.executable, "-m", "lift3d.demo", "--out", str(out), "--part", "generate"]
        argv += ["--split", "--threads", str(threads)] + (["--quick"] if quick else [])
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        with open(log_path, "w") as log_file:
            child = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    paths: dict[str, Path] = {}
    try:
        paths.update(run_translation(out, quick=quick, threads=threads))
        # the 2.5D arm first: the generation process's first model folder is minutes away
        paths.update(run_context_arm(out, quick=quick, threads=threads))
        if child is not None:
            run_no_mapper_arm(out, child, quick=quick, threads=threads)
            atomic_write_text(out / TRANSLATION_DONE, "done\n")
            code = child.wait()
    except BaseException:  # a failed step, Ctrl-C or a timeout: no orphaned second half
        if child is not None:
            failed_alone = child.poll() not in (None, 0)
            child.kill()
            child.wait()
            if failed_alone:  # the generation half's own error is in its log
                _print_generation_log(out)
        raise
    if child is not None:
        _print_generation_log(out)
        if code != 0:
            raise SystemExit(f"demo generation half failed with exit code {code}")
        paths.update(generation_paths(out))
    elif not skip_generate:
        paths.update(run_generation(out, quick=quick, threads=threads))
    print(
        "\nDemo outputs (open the .nii.gz files in ITK-SNAP / 3D Slicer, the .html in a browser):"
    )
    print(f"  data:         {out / 'data'}")
    print(f"  predictions:  {out / 'predictions'}")
    if not skip_generate:
        print(f"  generated:    {out / 'generated'}")
    for key, value in paths.items():
        print(f"  {key + ':':<22}{value}")
    return paths


def _print_generation_log(out: Path) -> None:
    path = out / "generate.log"
    if path.is_file():
        print(f"\n--- generation half (ran alongside; {path}) ---", flush=True)
        print(path.read_text(), end="", flush=True)


def _threads(jobs: int) -> int:
    """CPU threads per concurrent half: the cores shared evenly (at least 1)."""
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


def _sizes(quick: bool) -> tuple[str, str, list[str]]:
    """(training cases, held-out cases, phantom shape)."""
    return ("4", "2", ["32", "32", "32"]) if quick else ("16", "4", ["64"] * 3)


def _train_mr2ct(step: str, data: Path, run: Path, config: str, threads: int, *sets: str) -> None:
    """`lift3d train translate --task mr2ct` on the demo's SynthRAD-layout training phantoms."""
    _run(
        step,
        [
            "train",
            "translate",
            "--task",
            "mr2ct",
            "--data",
            str(data / "synthrad_train"),
            "--out",
            str(run),
            "--config",
            config,
            "--set",
            f"train.num_threads={threads}",
            *sets,
        ],
    )


def _translate_and_score(
    label: str, data: Path, run: Path, pred: Path, ev: Path, extra: list[str]
) -> Path:
    """`lift3d translate` the held-out phantoms with `run` into `pred` (plus `extra` flags) and
    `lift3d evaluate` them into `ev`; returns the summary JSON."""
    _run(
        f"translate ({label})",
        [
            "translate",
            "--model",
            str(run),
            "--input",
            str(data / "synthrad_test"),
            "--output",
            str(pred),
            *extra,
        ],
    )
    _run(
        f"evaluate ({label})",
        [
            "evaluate",
            "--task",
            "mr2ct",
            "--pred",
            str(pred),
            "--ref",
            str(data / "synthrad_test"),
            "--out",
            str(ev),
            "--label",
            label,
        ],
    )
    return ev / "summary.json"


def run_translation(out: Path, *, quick: bool = False, threads: int = 1) -> dict[str, Path]:
    """Steps 1-5: the SynthRAD-layout phantoms, the MR -> CT model and its mixer ablation."""
    import torch

    torch.set_num_threads(threads)
    n_train, n_test, shape = _sizes(quick)
    data = out / "data"
    tr_cfg = _config("translate_tiny.yaml" if quick else "translate_demo.yaml")
    paths: dict[str, Path] = {}
    # 1-2. data
    _run(
        "phantom (train)",
        [
            "phantom",
            "--kind",
            "basic",
            "--layout",
            "synthrad",
            "--cases",
            n_train,
            "--shape",
            *shape,
            "--seed",
            "0",
            "--out",
            str(data / "synthrad_train"),
        ],
    )
    _run(
        "phantom (held-out)",
        [
            "phantom",
            "--kind",
            "basic",
            "--layout",
            "synthrad",
            "--cases",
            n_test,
            "--shape",
            *shape,
            "--seed",
            "1",
            "--out",
            str(data / "synthrad_test"),
        ],
    )
    _run("inspect", ["inspect", str(data / "synthrad_train")])

    # 3-5. paired translation, MR -> CT
    run = out / "runs" / "mr2ct"
    _train_mr2ct("train translate", data, run, tr_cfg, threads)
    results = {}
    for variant, extra in (("mixer", []), ("no-mixer", ["--no-mixer"])):
        pred = out / "predictions" / f"mr2ct_{variant}"
        ev = run / "eval" / variant
        results[variant] = _translate_and_score(variant, data, run, pred, ev, extra)
    paths["mr2ct_eval_mixer"] = results["mixer"]
    paths["mr2ct_eval_no_mixer"] = results["no-mixer"]
    _print_comparison(
        "MR->CT on held-out PHANTOM cases: LiFT (mixer) vs the no-mixer ablation (2D translator alone)",
        results["mixer"],
        results["no-mixer"],
        "mixer",
        "no-mixer",
    )
    _run("report (mr2ct)", ["report", str(run), "--out", str(run / "report.html"), "--overwrite"])
    paths["mr2ct_report"] = run / "report.html"

    return paths


# The rows of the 2D / 2.5D / LiFT table: accuracy, through-plane coherence, per-plane PSNR.
ARM_METRICS = (
    "mae",
    "psnr",
    "ssim",
    "dz_mae",
    "dz_corr",
    "zgrad_ratio",
    "psnr_axial",
    "psnr_coronal",
    "psnr_sagittal",
)


def run_context_arm(out: Path, *, quick: bool = False, threads: int = 1) -> dict[str, Path]:
    """Step 5, the 2.5D arm: the demo's translator config trained with one neighbouring MR slice
    on each side as input channels (``model.context_slices=1``; no mixer stage), translated and
    scored on the same held-out cases, then printed beside the 2D and LiFT arms of
    `run_translation` (whose evaluations it reads)."""
    import torch

    from lift3d.evaluation import arms_table

    torch.set_num_threads(threads)
    data = out / "data"
    tr_cfg = _config("translate_tiny.yaml" if quick else "translate_demo.yaml")
    run = out / "runs" / "mr2ct_2.5d"
    print("\n--- MR->CT, 2.5D arm (one neighbouring slice on each side as input) ---", flush=True)
    _train_mr2ct(
        "train translate (2.5D)",
        data,
        run,
        tr_cfg,
        threads,
        "model.context_slices=1",
        "mixer.steps=0",
    )
    pred = out / "predictions" / "mr2ct_2.5d"
    summary = _translate_and_score("2.5D", data, run, pred, run / "eval", ["--no-mixer"])
    lift_evals = out / "runs" / "mr2ct" / "eval"
    arms = {
        "2D": lift_evals / "no-mixer" / "summary.json",
        "2.5D": summary,
        "LiFT (2D + mixer)": lift_evals / "mixer" / "summary.json",
    }
    print("\nMR->CT on held-out PHANTOM cases: 2D, 2.5D and LiFT (mean ± sd over cases)")
    print(arms_table({k: json.loads(v.read_text()) for k, v in arms.items()}, ARM_METRICS))
    print(
        "2D: the translator alone (--no-mixer); LiFT: the same translator with its z-mixer; "
        "2.5D: a translator with one neighbouring MR slice on each side as input channels "
        "(model.context_slices=1), no mixer. dz_mae / dz_corr compare the slice-to-slice "
        "changes with the reference's, zgrad_ratio is best at 1. The demo's basic phantom has "
        "unambiguous slices; on the realistic phantom with interleaved 2D MR, where a 2D model "
        "flickers, 2.5D beats this two-stage LiFT on every score, and LiFT with F and mixer "
        "trained together from the start beat 2.5D for two of three training seeds "
        "(BENCHMARKS.md, 'Translation on the phantom')."
    )
    return {"mr2ct_eval_2.5d": summary}


def generation_paths(out: Path) -> dict[str, Path]:
    """The report of the generation half (written by `run_generation`)."""
    return {"generate_report": out / "runs" / "generate" / "report.html"}


# The translation process writes this (OUT/<name>) when it has scored the no-mapper arm
# (--jobs 2); the generation process waits for it before its tables and report.
NO_MAPPER_DONE = "no_mapper_arm.json"
# ... and this when it has no more work (the 2.5D arm scored): its cores are free from then on.
TRANSLATION_DONE = "translation_process_done"
POLL_S = 2.0

# The generation process of --jobs 2 trains on every core from these steps on (stage -> first
# step; stages not named stay on their share): when, on the 2-core CPU they were measured on
# (f4e2697), the translation process waits for the model folder written after the generator
# and decoder stages (from encoder step ~690 since `small` mixes two levels), so both of those
# stages take every core. The mapper stage (120 steps) ends before the translation process
# has scored the no-mapper arm, so it keeps one thread: two threads beside a busy process are
# slower than one (mapper 0.97 vs 0.58 s/step), so the schedule errs late. Fixed steps, not the
# other process's state: CPU results depend on the thread count, and a schedule that does not
# depend on timing keeps the demo's numbers the same in every run (elsewhere it only costs
# speed).
ALL_CORES_FROM = {"encoder": 720, "generator": 0, "decoder": 0}


def _demo_thread_policy(threads: int) -> Callable[[str, int], int]:
    """Thread policy of the generation process (``--jobs 2``; `ALL_CORES_FROM`)."""
    cores = max(threads, os.cpu_count() or 1)

    def policy(stage: str, step: int) -> int:
        first = ALL_CORES_FROM.get(stage)
        return cores if first is not None and step >= first else threads

    return policy


@dataclass
class _GenerationPlan:
    """What the generation half works with (both of its processes derive the same plan)."""

    data: Path
    run: Path
    config: str
    shape: list[str]
    n_train: str
    n_test: str
    n_samples: str
    grids: dict[str, list[str]]  # name -> --eval-shape values ([] = the phantoms' own grid)


def _generation_plan(out: Path, quick: bool) -> _GenerationPlan:
    from lift3d.config import GenerateConfig, load_config

    n_train, _, shape = _sizes(quick)
    # Generation: held-out phantoms and samples per arm (KID from a handful of volumes is
    # mostly noise), and the model grid of the generate config (also an evaluation grid).
    # 96 samples per arm: KID from 32 moved by tens of percent between sample sets (docs/journal/
    # 2026-11-26-generation-32-seeds-and-detail.md); sampling and scoring them costs seconds.
    n_test, n_samples = ("2", "3") if quick else ("12", "96")
    config = _config("generate_tiny.yaml" if quick else "generate_demo.yaml")
    model_grid = [str(int(v)) for v in load_config(GenerateConfig, config).data.shape]
    # Scored with one evaluation encoder shared by both arms on the phantoms' own grid, and
    # again on the model's grid when the config models a coarser one (both arms share G's
    # resolution there, so that comparison isolates what the mapper changes).
    grids = {"reference grid": []}
    if model_grid != shape:
        grids[f"model grid {'x'.join(model_grid)}"] = model_grid
    return _GenerationPlan(
        data=out / "data",
        run=out / "runs" / "generate",
        config=config,
        shape=shape,
        n_train=n_train,
        n_test=n_test,
        n_samples=n_samples,
        grids=grids,
    )


def run_generation(
    out: Path, *, quick: bool = False, threads: int = 1, split: bool = False
) -> dict[str, Path]:
    """Step 6: the BraTS-layout phantoms, the unconditional model and its mapper ablation.

    Args:
        out: demo folder.
        quick: smoke-test sizes.
        threads: CPU threads.
        split: the second process of ``--jobs 2``: the no-mapper arm is scored by the
            translation process (`run_no_mapper_arm`, from the model folder written after the
            generator stage, while this process trains the mapper); this one scores the mapper
            arm, then waits for ``OUT/no_mapper_arm.json`` before the tables and the report.
    """
    import torch

    torch.set_num_threads(threads)
    plan = _generation_plan(out, quick)
    # 6. unconditional generation
    for step, cases, seed, folder in (
        ("phantom (brats)", plan.n_train, "2", "brats_train"),
        ("phantom (brats held-out)", plan.n_test, "3", "brats_test"),
    ):
        _run(
            step,
            [
                "phantom",
                "--kind",
                "basic",
                "--layout",
                "brats",
                "--cases",
                cases,
                "--shape",
                *plan.shape,
                "--seed",
                seed,
                "--out",
                str(plan.data / folder),
            ],
        )
    from lift3d.training import engine

    if split:  # take the cores the translation process leaves idle (`ALL_CORES_FROM`)
        engine.thread_policy = _demo_thread_policy(threads)
    try:
        _run(
            "train generate",
            [
                "train",
                "generate",
                "--data",
                str(plan.data / "brats_train"),
                "--out",
                str(plan.run),
                "--config",
                plan.config,
                "--set",
                f"train.num_threads={threads}",
            ],
        )
    finally:
        engine.thread_policy = None
    if not split:
        gres = _score_arm(out, plan, "mapper")
        no_mapper = _score_arm(out, plan, "no-mapper")
    else:
        gres = _score_arm(out, plan, "mapper", idle_cores_after=out)
        no_mapper = _wait_for_no_mapper_arm(out)
    for grid in plan.grids:
        _print_comparison(
            f"Unconditional generation on PHANTOM data, scored on the {grid}: "
            "LiFT (mapper) vs no-mapper",
            gres[grid],
            no_mapper[grid],
            "mapper",
            "no-mapper",
        )
    print(
        "\nHow to read these tables: increment_distance compares how slices change along "
        "each axis, the coherence the mapper adds; coronal/sagittal KID and FID compare "
        "reformatted slices (cuts across the generated slices) with the held-out phantoms, "
        "where independently sampled slices show as stripes; zgrad_ratio is how much the "
        "volumes change from slice to slice relative to the held-out phantoms (best at 1). "
        "msssim_diversity is the mean "
        "pairwise 3D MS-SSIM among one arm's samples (lower = more diverse; the papers' "
        "diversity score), read against msssim_diversity_reference, the same among the "
        "held-out phantoms (_gap: arm - reference); '<score> / floor' rows divide a score by "
        "the same score of the 16 real training phantoms against the same held-out set (1 = "
        "as close as real data; real_vs_generated.png beside each summary.json shows real "
        "slices beside generated ones); the fid_medicalnet / fid_radimagenet "
        "rows of published tables need the weights files (README, 'Comparing with "
        "published numbers'). This is one short run scored "
        "with one evaluation encoder on 12 phantoms, and its numbers move with the seed. "
        f"Compare the montages in {out / 'generated'} and see BENCHMARKS.md, 'Unconditional "
        "generation', for results over seeds, encoders and held-out sets."
    )
    _run(
        "report (generate)",
        ["report", str(plan.run), "--out", str(plan.run / "report.html"), "--overwrite"],
    )
    return generation_paths(out)


def _score_arm(
    out: Path,
    plan: _GenerationPlan,
    variant: str,
    *,
    idle_cores_after: Path | None = None,
) -> dict[str, Path]:
    """`lift3d generate` one arm ("mapper" | "no-mapper") and `lift3d evaluate` it on every
    grid of the plan; returns grid -> summary.json.

    The first evaluation on a grid trains the evaluation encoder and saves it
    (``--eval-encoder``); the other arm's loads it (or waits for it when both run at once).
    `idle_cores_after`: the demo folder, when the other process may finish its work meanwhile;
    once it has (``OUT/translation_process_done``), the remaining steps use every core.
    """
    import torch

    gen = out / "generated" / variant
    extra = ["--no-mapper"] if variant == "no-mapper" else []

    def claim_idle_cores() -> None:
        cores = os.cpu_count() or 1
        if idle_cores_after is None or torch.get_num_threads() >= cores:
            return
        if (idle_cores_after / TRANSLATION_DONE).is_file():
            torch.set_num_threads(cores)
            print(f"(the translation process is done: {cores} threads from here)", flush=True)

    claim_idle_cores()
    _run(
        f"generate ({variant})",
        [
            "generate",
            "--model",
            str(plan.run),
            "--n",
            plan.n_samples,
            "--seed",
            "0",
            "--out",
            str(gen),
            *extra,
        ],
    )
    summaries = {}
    for grid, eval_shape in plan.grids.items():
        tag = "" if not eval_shape else "_model_grid"
        ev = plan.run / "eval" / f"{variant}{tag}"
        shape_args = ["--eval-shape", *eval_shape] if eval_shape else []
        claim_idle_cores()
        _run(
            f"evaluate ({variant}, {grid})",
            [
                "evaluate",
                "--task",
                "generate",
                "--pred",
                str(gen),
                "--ref",
                str(plan.data / "brats_test"),
                "--out",
                str(ev),
                "--label",
                variant,
                "--eval-encoder",
                str(plan.run / "eval" / f"eval_encoder{tag}.safetensors"),
                # the real-vs-real floor: the training phantoms scored the same way
                "--floor",
                str(plan.data / "brats_train"),
                *shape_args,
            ],
        )
        summaries[grid] = ev / "summary.json"
    return summaries


def run_no_mapper_arm(
    out: Path, child: subprocess.Popen, *, quick: bool = False, threads: int = 1
) -> dict[str, Path]:
    """``--jobs 2``, in the translation process once its half and the 2.5D arm are done: wait
    until the generation process has written the model folder after the generator and decoder
    stages, sample and score the no-mapper arm from it (E, G and the decoder are final: the
    mapper stage freezes them) while that process trains the mapper, then write
    ``OUT/no_mapper_arm.json`` for it.

    Raises:
        SystemExit: the generation process exited before the generator stage was done.
    """
    import torch

    from lift3d.model_folder import read_model_folder

    torch.set_num_threads(threads)
    plan = _generation_plan(out, quick)
    print(
        "\n--- generation half, no-mapper arm (scored here while the generation process trains "
        "the mapper) ---",
        flush=True,
    )
    t0, said = time.perf_counter(), False
    while True:
        try:
            read_model_folder(plan.run, "generate", use_mapper=False)
            break
        except InputError as exc:
            code = child.poll()
            if code is not None:
                raise SystemExit(
                    f"demo generation half exited (code {code}) before its generator stage was "
                    f"done ({exc}); see {out / 'generate.log'}"
                ) from None
            if not said:
                print(
                    "waiting for the generation process to finish its generator and decoder "
                    f"stages ({plan.run / 'run.json'}, stages_done) ...",
                    flush=True,
                )
                said = True
        time.sleep(POLL_S)
    if said:
        print(
            f"generator and decoder stages done (waited {time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    summaries = _score_arm(out, plan, "no-mapper")
    record = {grid: str(path) for grid, path in summaries.items()}
    atomic_write_text(out / NO_MAPPER_DONE, json.dumps({"summaries": record}, indent=1))
    return summaries


def _wait_for_no_mapper_arm(out: Path) -> dict[str, Path]:
    """In the generation process of ``--jobs 2``: wait for the translation process's
    ``OUT/no_mapper_arm.json``; fail if that process is gone (no orphan waits forever)."""
    path, parent = out / NO_MAPPER_DONE, os.getppid()
    t0, said = time.perf_counter(), False
    while not path.is_file():
        if os.getppid() != parent:
            raise SystemExit("demo: the translation process is gone; stopping the generation half")
        if not said:
            print(
                "waiting for the no-mapper arm (scored by the translation process) ...", flush=True
            )
            said = True
        time.sleep(POLL_S)
    if said:
        print(f"no-mapper arm scored (waited {time.perf_counter() - t0:.0f} s)", flush=True)
    return {grid: Path(p) for grid, p in json.loads(path.read_text())["summaries"].items()}


def _print_comparison(title: str, a: Path, b: Path, label_a: str, label_b: str) -> None:
    from lift3d.evaluation import compare_summaries

    summary_a = json.loads(a.read_text())
    summary_b = json.loads(b.read_text())
    print(f"\n{title}")
    print(compare_summaries(summary_a, summary_b, (label_a, label_b)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lift3d.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="demo_out", help="demo folder (default: demo_out)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for smoke tests")
    parser.add_argument(
        "--skip-generate", action="store_true", help="leave out the unconditional-generation part"
    )
    parser.add_argument("--fresh", action="store_true", help="delete OUT first")
    parser.add_argument(
        "--jobs",
        default="auto",
        choices=("auto", "1", "2"),
        help="2: the translation and generation halves run at the same time, each with half of "
        "the CPU cores (the translation process then scores the no-mapper arm while the other "
        "trains the mapper); 1: one after the other; auto (default): 2 with two or more cores",
    )
    parser.add_argument(
        "--part", choices=("translate", "generate"), help="run one half only (into OUT)"
    )
    parser.add_argument(
        "--split",
        action="store_true",
        help="with --part generate: leave the no-mapper arm to the translation process and wait "
        "for its OUT/no_mapper_arm.json before the tables (the second process of --jobs 2)",
    )
    parser.add_argument(
        "--threads", type=int, help="CPU threads (default: the cores shared between the halves)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:  # as `lift3d train` does: freed tensor memory is reused, not page-faulted again
        tune_allocator()
    except InputError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    jobs = int(args.jobs) if args.jobs != "auto" else (2 if (os.cpu_count() or 1) >= 2 else 1)
    if args.part:  # one half into an existing folder (the second process of --jobs 2)
        threads = args.threads or _threads(1)
        if args.part == "translate":
            run_translation(out, quick=args.quick, threads=threads)
            run_context_arm(out, quick=args.quick, threads=threads)
        else:
            run_generation(out, quick=args.quick, threads=threads, split=args.split)
        return 0
    if out.exists() and any(out.iterdir()):
        if not args.fresh:
            print(
                f"{out} exists from an earlier demo; rerun with --fresh to start over "
                "(make demo does)",
                file=sys.stderr,
            )
            return 2
        shutil.rmtree(out)
    t0 = time.perf_counter()
    run_demo(out, quick=args.quick, skip_generate=args.skip_generate, jobs=jobs)
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"\nDemo finished in {time.perf_counter() - t0:.0f} s ({jobs} process(es){load}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
