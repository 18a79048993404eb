"""Scale check of the preprocessed on-disk store (`lift3d.data.store`) at BraTS size.

For each ``--cases N`` (default 50 and 200) a BraTS-layout dataset of N cases of 240 x 240 x 155
voxels (t1n, t1c, t2w, t2f, ``.nii.gz``) is laid out, then three worker processes run one after
another, so each peak RSS (``VmHWM``, includes the torch runtime) is its own:

- ``build``: discover the cases (headers only) and build the store at the `translate_missing`
  model grid (160 x 240 x 240, axial): build seconds, seconds per case, store bytes on disk;
- ``sample``: open the built store and draw every slice once in random order through a
  ``DataLoader`` (batch 16, no workers, `collate_volumes`), as the translator stage does:
  slices per second, peak RSS, RSS before the epoch and the bytes read from disk (with
  ``--cold`` the store is evicted from the page cache first, as if it were larger than memory);
- ``step`` (first N only): the translator's training step on the CPU, the `translate_missing`
  config (``base`` model, batch 16 slices of 240 x 240, fp32), timed after one warm-up step,
  on batches read from the store: steps and slices per second.

Cheap cases: writing one 240 x 240 x 155 phantom takes ~12 s, so ``--base`` distinct phantoms
(default 2) are written once and every case folder holds symbolic links to one of them. Each
case is still decoded, preprocessed and written to the store on its own (its own store files),
so build time, store size and sampling are those of N distinct cases; only the sources' page
cache is shared. The store of N is deleted after its sample run, the whole work folder at the
end (``--keep`` keeps it). Check ``df -h`` first: the store takes ~157 MB per case.

    OMP_NUM_THREADS=1 python benchmarks/bench_store.py --work DIR --cases 50 200 \\
        --threads 1 --json bench_store.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MODALITIES = ("t1n", "t1c", "t2w", "t2f")
SOURCE_SHAPE = (240, 240, 155)
CONFIG = "translate_missing"


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    return 0


def _peak_rss() -> int:
    """This process's peak RSS: ``VmHWM`` (``ru_maxrss`` would carry the parent's over exec)."""
    return _status("VmHWM")


def _rss() -> int:
    return _status("VmRSS")


def _disk_read_bytes() -> int:
    """Bytes this process caused to be fetched from storage (``/proc/self/io``)."""
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    return 0


def _drop_page_cache(store_dir: Path) -> None:
    """Evict the store's files from the page cache: the epoch reads from disk, as it does when
    the store is larger than the machine's memory."""
    for path in store_dir.rglob("*.npy"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _dataset(root: Path, store_dir: Path) -> Any:
    from lift3d.config import TranslateConfig, load_config
    from lift3d.configs import config_path
    from lift3d.data.datasets import VolumeDataset
    from lift3d.data.discovery import discover_cases

    cfg = load_config(TranslateConfig, config_path(CONFIG), [])
    cases = discover_cases(root, "brats", required=MODALITIES, validate="header")
    return VolumeDataset(
        cases, MODALITIES, cfg.data.shape, cfg.data.slice_axis, store_dir=store_dir, progress=False
    )


def run_build(root: Path, store_dir: Path) -> dict[str, Any]:
    start = time.perf_counter()
    ds = _dataset(root, store_dir)
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in store_dir.rglob("*") if p.is_file())
    return {
        "cases": len(ds),
        "build_s": seconds,
        "build_s_per_case": seconds / len(ds),
        "store_bytes": size,
        "store_bytes_per_case": size / len(ds),
        "build_peak_rss": _peak_rss(),
    }


def run_sample(root: Path, store_dir: Path, batch: int, cold: bool) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader

    from lift3d.data.datasets import SliceDataset, collate_volumes

    start = time.perf_counter()
    ds = _dataset(root, store_dir)  # complete: opened, nothing built
    open_s = time.perf_counter() - start
    slices = SliceDataset(ds)
    loader = DataLoader(
        slices,
        batch_size=batch,
        shuffle=True,
        collate_fn=collate_volumes,
        generator=torch.Generator().manual_seed(0),
    )
    if cold:
        _drop_page_cache(store_dir)
    rss_before = _rss()
    rss_max_sampled = rss_before
    n = 0
    read_before = _disk_read_bytes()
    start = time.perf_counter()
    for i, item in enumerate(loader):
        n += item["mask"].shape[0]
        if i % 50 == 0:
            rss_max_sampled = max(rss_max_sampled, _rss())
    seconds = time.perf_counter() - start
    disk = _disk_read_bytes() - read_before
    return {
        "cases": len(ds),
        "cold": cold,
        "disk_read_bytes": disk,
        "disk_read_bytes_per_slice": disk / n,
        "open_s": open_s,
        "slices": n,
        "epoch_s": seconds,
        "slices_per_s": n / seconds,
        "rss_before_epoch": rss_before,
        "rss_max_sampled": rss_max_sampled,
        "sample_peak_rss": _peak_rss(),
    }


def run_step(root: Path, store_dir: Path, steps: int) -> dict[str, Any]:
    import torch

    from lift3d.config import TranslateConfig, load_config
    from lift3d.configs import config_path
    from lift3d.data.datasets import SliceDataset, collate_volumes
    from lift3d.losses.translation import slice_loss
    from lift3d.models.lift import make_input, select_target
    from lift3d.models.registry import translation_model_from_config

    cfg = load_config(TranslateConfig, config_path(CONFIG), [])
    batch_size = cfg.translator.batch_size
    slices = SliceDataset(_dataset(root, store_dir))
    torch.manual_seed(0)
    model = translation_model_from_config(cfg)
    model.train()
    opt = torch.optim.AdamW(model.translator.parameters(), lr=cfg.translator.lr)
    order = torch.randperm(len(slices)).tolist()
    times = []
    for step in range(steps + 1):  # step 0 warms up
        picks = order[step * batch_size : (step + 1) * batch_size]
        batch = collate_volumes([slices[i] for i in picks])
        start = time.perf_counter()
        missing = torch.randint(0, 4, (batch_size,))
        x = make_input("missing", batch, missing)  # (B, 8, 1, H, W)
        y = select_target("missing", batch, missing)
        pred = model(x, use_mixer=False, chunk_size=0)
        loss = slice_loss(pred[:, :, 0], y[:, :, 0], cfg.translator.ssim_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step:
            times.append(time.perf_counter() - start)
    per_step = sum(times) / len(times)
    return {
        "model_size": cfg.model.size,
        "batch_slices": batch_size,
        "slice_hw": list(cfg.data.shape[1:]),
        "timed_steps": len(times),
        "step_s": per_step,
        "steps_per_s": 1.0 / per_step,
        "train_slices_per_s": batch_size / per_step,
        "step_peak_rss": _peak_rss(),
    }


def _worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    root, store_dir = Path(args.root), Path(args.store)
    if args.phase == "build":
        out = run_build(root, store_dir)
    elif args.phase == "sample":
        out = run_sample(root, store_dir, args.batch, args.cold)
    else:
        out = run_step(root, store_dir, args.steps)
    print("RESULT " + json.dumps(out), flush=True)


def _spawn(phase: str, root: Path, store_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--phase", phase, "--root", str(root), "--store"]
    cmd += [str(store_dir), "--threads", str(args.threads), "--batch", str(args.batch)]
    cmd += ["--steps", str(args.steps)] + (["--cold"] if args.cold else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"{phase} worker failed ({proc.returncode})")
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT ") :])
    print(f"  {phase}: {json.dumps(result)}", flush=True)
    return result


def make_sources(work: Path, n_base: int) -> list[Path]:
    """Write `n_base` BraTS-size phantoms once; return their case folders."""
    from lift3d.data.synthetic import write_phantom_dataset

    base = work / "base"
    if not base.is_dir():
        start = time.perf_counter()
        write_phantom_dataset(base, "brats", cases=n_base, shape=SOURCE_SHAPE, seed=0)
        print(f"wrote {n_base} phantoms in {time.perf_counter() - start:.0f} s", flush=True)
    return sorted(p for p in base.iterdir() if p.is_dir())


def make_dataset(root: Path, bases: list[Path], n: int) -> None:
    """N BraTS case folders whose files link to the base phantoms (case k -> base k % len)."""
    for k in range(n):
        case_id = f"BraTS-GLI-{k:05d}-000"
        folder = root / case_id
        folder.mkdir(parents=True, exist_ok=True)
        src = bases[k % len(bases)]
        for modality in MODALITIES:
            (folder / f"{case_id}-{modality}.nii.gz").symlink_to(
                src / f"{src.name}-{modality}.nii.gz"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, help="folder for the generated data and stores")
    p.add_argument("--cases", type=int, nargs="+", default=[50, 200])
    p.add_argument("--base", type=int, default=2, help="distinct phantoms behind the cases")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=16, help="slices per batch while sampling")
    p.add_argument("--steps", type=int, default=3, help="timed training steps (0: skip)")
    p.add_argument("--keep", action="store_true", help="keep the generated data")
    p.add_argument(
        "--cold", action="store_true", help="evict the store from the page cache before sampling"
    )
    p.add_argument("--json", type=Path)
    p.add_argument("--phase", choices=("build", "sample", "step"), help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.phase:
        _worker(args)
        return
    if args.work is None:
        p.error("--work is required")
    import torch

    from lift3d.version import __version__

    args.work.mkdir(parents=True, exist_ok=True)
    bases = make_sources(args.work, args.base)
    runs = []
    try:
        for i, n in enumerate(args.cases):
            root, store_dir = args.work / f"data{n}", args.work / f"store{n}"
            shutil.rmtree(root, ignore_errors=True)
            shutil.rmtree(store_dir, ignore_errors=True)
            make_dataset(root, bases, n)
            print(f"{n} cases", flush=True)
            run = {"n": n, "build": _spawn("build", root, store_dir, args)}
            run["sample"] = _spawn("sample", root, store_dir, args)
            if i == 0 and args.steps:
                run["step"] = _spawn("step", root, store_dir, args)
            runs.append(run)
            shutil.rmtree(store_dir, ignore_errors=True)
            shutil.rmtree(root, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)
    result = {
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores",
        "threads": args.threads,
        "load_average": os.getloadavg(),
        "torch": torch.__version__,
        "lift3d": __version__,
        "config": CONFIG,
        "source_shape": list(SOURCE_SHAPE),
        "runs": runs,
    }
    if len(runs) >= 2:
        peaks = [r["sample"]["sample_peak_rss"] for r in runs]
        result["sample_peak_rss_ratio_max_min"] = max(peaks) / min(peaks)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
