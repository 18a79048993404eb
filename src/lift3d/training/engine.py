"""Training engine shared by every lift3d model (LiFT translators, trajectory models, mappers).

One place for: device choice, precision (bf16/fp16 mixed on GPU through Lightning Fabric),
seeding, CPU threads, logging (``log.txt``, ``logs/<stage>.jsonl``), a tqdm progress bar,
periodic validation, gradient clipping, checkpoints with exact resume, and multi-process data
parallel training (Fabric ``ddp``; gloo on CPU, nccl on CUDA) when launched under ``torchrun``.

    engine = Engine(cfg.train, run_dir, full_config=cfg, task="translate")
    model = engine.fit("translator", model, optimizer, dataset,
                       step_fn=lambda model, batch: {"loss": ...}, max_steps=1000)

Exact resume: the engine builds the DataLoader itself. Epoch ``e`` visits a permutation drawn
from a generator seeded by ``(seed, e)`` (`EpochSampler`), the same on every rank, which each
rank shards like ``DistributedSampler``. A checkpoint stores the epoch and the batches already
consumed in it plus every rank's Python/NumPy/torch RNG state, so ``N`` steps straight and
``N/2`` steps + kill + resume + ``N/2`` steps give the same weights on CPU. Randomness drawn
inside DataLoader worker processes (``num_workers > 0``; the workers persist across epochs) is
seeded once per `fit` call (a resume reseeds) but not resumed mid-epoch.

Precision: ``train.precision`` goes to Fabric (`resolve_precision`): ``bf16-mixed`` autocasts
forward passes to bf16 on CUDA and on the CPU alike (on a CPU with bf16 matrix units it is
faster; elsewhere slower), ``32`` keeps float32; ``auto`` is bf16 on CUDA and 32 on the CPU.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import shlex
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from lift3d.config import TrainConfig, config_to_dict, save_config
from lift3d.errors import InputError
from lift3d.models.weights import load_weights, save_weights
from lift3d.training import checkpoint as ckpt
from lift3d.utils import (
    atomic_write_text,
    cpu_has_amx_bf16,
    resolve_device,
    seed_everything,
    write_error,
)
from lift3d.version import __version__

logger = logging.getLogger(__name__)
_progress_logger = logging.getLogger("lift3d.training.progress")

StepFn = Callable[[nn.Module, Any], dict[str, Any]]
ValidateFn = Callable[[nn.Module, int], "dict[str, Any] | None"]

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "64-true")
PREFETCH_FACTOR = 4  # batches each DataLoader worker keeps ready

# A caller that shares the CPU with another process of its own (``make demo``'s two halves) may
# set `thread_policy`: ``thread_policy(stage, step)`` is asked before every training step and
# returns the intra-op thread count for it (None: leave it), so a stage can take the cores the
# other process leaves idle. A function of (stage, step) only keeps runs repeatable: CPU results
# depend on the thread count, so it must not depend on timing.
thread_policy: Callable[[str, int], int | None] | None = None


def _apply_thread_policy(stage: str, step: int) -> None:
    """Set torch's intra-op threads to what `thread_policy` asks for step `step` of `stage`."""
    if thread_policy is None:
        return
    n = thread_policy(stage, step)
    if n is not None and n > 0 and n != torch.get_num_threads():
        torch.set_num_threads(n)
        logger.info("thread policy: %d CPU thread(s) from %s step %d", n, stage, step)


def mix_seed(*parts: Any) -> int:
    """A stable 63-bit seed from any parts (``mix_seed(seed, "data", epoch)``)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def resolve_precision(precision: str, device: str) -> str:
    """Map ``train.precision`` to a Fabric precision string.

    ``auto`` is ``bf16-mixed`` on CUDA devices that support bf16 (else ``16-mixed``) and
    ``32-true`` on CPU. ``bf16-if-fast`` is ``bf16-mixed`` where bf16 is the faster choice (a
    CUDA device with bf16, a CPU with AMX-BF16: `lift3d.utils.cpu_has_amx_bf16`) and ``32-true``
    elsewhere: for configs whose numbers were checked in both precisions (the demo's
    generation), so a CPU without bf16 tile units does not pay for emulated bf16.

    Raises:
        InputError: unknown value, or fp16 asked for on CPU.
    """
    cuda = device.startswith("cuda")
    p = str(precision)
    if p == "auto":
        if cuda:
            return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        return "32-true"
    if p == "bf16-if-fast":
        fast = torch.cuda.is_bf16_supported() if cuda else cpu_has_amx_bf16()
        return "bf16-mixed" if fast else "32-true"
    p = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed", "64": "64-true"}.get(p, p)
    if p not in PRECISIONS:
        raise InputError(
            f"config key 'train.precision': unknown value {precision!r}; "
            f"use auto, 32, bf16-mixed, bf16-if-fast or 16-mixed"
        )
    if p == "16-mixed" and not cuda:
        raise InputError(
            "train.precision=16-mixed needs a CUDA device; use 32 or bf16-mixed on CPU"
        )
    return p


class EpochSampler(Sampler[int]):
    """Seeded, sharded, resumable sample order (``DistributedSampler`` with a start offset).

    Epoch ``e`` visits ``randperm(n)`` from a generator seeded with ``mix_seed(seed, e)``,
    identical on every rank. It is padded by wrapping to a multiple of `world_size` and rank ``r``
    takes positions ``r, r + world_size, ...``, so with a per-rank batch ``b`` the ranks together
    see exactly the batches of size ``world_size * b`` a single process would.

    Args:
        num_samples: dataset length.
        seed: the run seed.
        rank: this process's rank.
        world_size: number of processes.
    """

    def __init__(self, num_samples: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        assert num_samples > 0 and 0 <= rank < world_size
        self.num_samples = num_samples
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.skip = 0

    @property
    def per_rank(self) -> int:
        """Samples each rank visits per epoch."""
        return math.ceil(self.num_samples / self.world_size)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch and the number of this rank's samples already consumed in it."""
        self.epoch = epoch
        self.skip = skip

    def epoch_order(self, epoch: int) -> list[int]:
        """This rank's full index order for `epoch`."""
        g = torch.Generator()
        g.manual_seed(mix_seed(self.seed, "data", epoch))
        order = torch.randperm(self.num_samples, generator=g).tolist()
        total = self.per_rank * self.world_size
        while len(order) < total:
            order += order[: total - len(order)]
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_order(self.epoch)[self.skip :])

    def __len__(self) -> int:
        return max(0, self.per_rank - self.skip)


class _StepModule(nn.Module):
    """Runs ``step_fn(model, batch)`` as a forward pass, so DDP hooks and autocast wrap it."""

    def __init__(self, model: nn.Module, step_fn: StepFn) -> None:
        super().__init__()
        self.model = model
        self.step_fn = step_fn

    def forward(self, batch: Any) -> dict[str, Any]:
        return self.step_fn(self.model, batch)


class _Diverged(Exception):
    """A non-finite loss at `step` (turned into a one-line `InputError` by `Engine._train`)."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"loss {value} at step {step}")
        self.step = step
        self.value = value


@dataclass
class _Position:
    step: int = 0  # optimiser steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of `epoch` already consumed (per rank)
    seconds: float = 0.0  # training wall time, summed over sessions


def get_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA, when initialised) RNG states."""
    cuda = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = torch.cuda.get_rng_state_all()
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": cuda,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states from `get_rng_state` (CUDA states only when the device count matches)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].to(torch.uint8))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in cuda])


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.detach().float().item())
    if isinstance(value, int | float | np.number) and not isinstance(value, bool):
        return float(value)
    return None


class _LogFileHandler(logging.FileHandler):
    """``log.txt``: a record that cannot be written (a full disk) is dropped without the
    traceback `logging` would print; the next write of the run reports the problem."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging API)
        pass


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Engine:
    """Shared training loop: device, precision, seeding, logs, checkpoints, resume, DDP.

    Args:
        train_cfg: the ``train`` section of the task config.
        run_dir: run folder; gets ``config.yaml``, ``run.json``, ``log.txt``, ``logs/`` and
            ``checkpoints/<stage>/``.
        full_config: the resolved task config (a dataclass), stored in the run folder and in
            every checkpoint.
        task: task name recorded in ``run.json`` (e.g. ``"translate"``).
        find_unused_parameters: passed to DDP for models whose step leaves some trainable
            parameters without gradient.
        show_progress: force the progress bar on/off; default: on for rank 0 when stderr is a TTY.

    Launched under ``torchrun`` (``WORLD_SIZE > 1``) the engine trains with Fabric's ``ddp``
    strategy; only rank 0 writes files, every rank reads checkpoints on resume.
    """

    def __init__(
        self,
        train_cfg: TrainConfig,
        run_dir: str | Path,
        full_config: Any = None,
        task: str = "",
        *,
        find_unused_parameters: bool = False,
        show_progress: bool | None = None,
    ) -> None:
        from lightning_fabric import Fabric
        from lightning_fabric.strategies import DDPStrategy

        self.cfg = train_cfg
        self.run_dir = Path(run_dir)
        self.full_config = full_config
        self.task = task
        self.show_progress = show_progress
        if train_cfg.num_threads > 0:
            torch.set_num_threads(train_cfg.num_threads)
        device = resolve_device(train_cfg.device)
        self.precision = resolve_precision(train_cfg.precision, device)
        cuda = device.startswith("cuda")
        if cuda:
            torch.set_float32_matmul_precision("high")  # TF32 matmuls for the fp32 parts
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size > 1:
            local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
            strategy: Any = DDPStrategy(
                process_group_backend="nccl" if cuda else "gloo",
                find_unused_parameters=find_unused_parameters,
            )
            devices: Any = local
            num_nodes = max(1, world_size // local)
        else:
            strategy, num_nodes = "auto", 1
            devices = [int(device.split(":")[1])] if cuda and ":" in device else 1
        self.fabric = Fabric(
            accelerator="cuda" if cuda else "cpu",
            strategy=strategy,
            devices=devices,
            num_nodes=num_nodes,
            precision=self.precision,
        )
        self.fabric.launch()
        self.device = str(self.fabric.device)
        self.rank = self.fabric.global_rank
        self.world_size = self.fabric.world_size
        self._file_handler: logging.Handler | None = None
        seed_everything(train_cfg.seed)
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._write_run_files()
        self.fabric.barrier()
        with self._logging():
            logger.info(
                "run %s: task %s, device %s, precision %s, %d process(es), seed %d",
                self.run_dir,
                task or "-",
                self.device,
                self.precision,
                self.world_size,
                train_cfg.seed,
            )

    # ------------------------------------------------------------------ run folder and logs

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only process that writes files."""
        return self.rank == 0

    def config_dict(self) -> dict[str, Any]:
        """The resolved config as a plain dict (``{"train": ...}`` when no full config)."""
        if self.full_config is not None:
            return config_to_dict(self.full_config)
        return {"train": config_to_dict(self.cfg)}

    def _write_run_files(self) -> None:
        if self.full_config is not None:
            save_config(self.full_config, self.run_dir / "config.yaml")
        else:
            save_config(self.cfg, self.run_dir / "config.yaml")
        session = {
            "time": _now(),
            "hostname": socket.gethostname(),
            "command": shlex.join(sys.argv),
            "argv": list(sys.argv),
        }
        run_json = self.run_dir / "run.json"
        info: dict[str, Any] = {}
        if run_json.is_file():
            with contextlib.suppress(OSError, json.JSONDecodeError):
                info = json.loads(run_json.read_text())
        if info:
            info.setdefault("resumed", []).append(session)
        else:
            info = {
                "lift3d_version": __version__,
                "torch_version": torch.__version__,
                "python_version": sys.version.split()[0],
                "task": self.task,
                "seed": self.cfg.seed,
                "device": self.device,
                "device_name": torch.cuda.get_device_name(self.fabric.device)
                if self.device.startswith("cuda")
                else "cpu",
                "precision": self.precision,
                "world_size": self.world_size,
                "hostname": session["hostname"],
                "command": session["command"],
                "argv": session["argv"],
                "start_time": session["time"],
            }
        atomic_write_text(run_json, json.dumps(info, indent=1))

    @contextlib.contextmanager
    def _logging(self) -> Iterator[None]:
        """Send the ``lift3d`` loggers to ``run_dir/log.txt`` (rank 0); quiet other ranks."""
        pkg = logging.getLogger("lift3d")
        old_level = pkg.level
        handler = None
        if self.is_main:
            if pkg.getEffectiveLevel() > logging.INFO:
                pkg.setLevel(logging.INFO)
            try:
                handler = _LogFileHandler(self.run_dir / "log.txt", encoding="utf-8")
            except OSError as exc:
                raise write_error(exc, self.run_dir / "log.txt") from None
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
            pkg.addHandler(handler)
        else:
            pkg.setLevel(logging.WARNING)
        self._file_handler = handler
        try:
            yield
        finally:
            if handler is not None:
                pkg.removeHandler(handler)
                handler.close()
            self._file_handler = None
            pkg.setLevel(old_level)

    def _progress(self, message: str, console: bool) -> None:
        """A progress line: always to log.txt; to the console only when `console`."""
        if not self.is_main:
            return
        if console:
            _progress_logger.info(message)
        elif self._file_handler is not None:
            record = logging.makeLogRecord(
                {"name": _progress_logger.name, "levelno": logging.INFO, "levelname": "INFO"}
            )
            record.msg = message
            self._file_handler.handle(record)

    def _append_jsonl(self, name: str, record: dict[str, Any]) -> None:
        if not self.is_main:
            return
        path = self.run_dir / "logs" / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record, default=str) + "\n")
        except OSError as exc:
            raise write_error(exc, path) from None

    def _truncate_logs(self, stage: str, step: int) -> None:
        """Drop log lines past `step` (written after the checkpoint a resume starts from)."""
        if not self.is_main:
            return
        for name in (f"{stage}.jsonl", f"{stage}_val.jsonl"):
            path = self.run_dir / "logs" / name
            if not path.is_file():
                continue
            kept = []
            for line in path.read_text().splitlines():
                with contextlib.suppress(json.JSONDecodeError, AttributeError):
                    if json.loads(line).get("step", 0) <= step:
                        kept.append(line)
            atomic_write_text(path, "".join(line + "\n" for line in kept))

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        stage: str,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        dataset: Dataset,
        step_fn: StepFn,
        max_steps: int | None = None,
        batch_size: int | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        validate_fn: ValidateFn | None = None,
        scheduler: Any = None,
        *,
        stop_after: int | None = None,
        num_workers: int = 0,
    ) -> nn.Module:
        """Train `model` for one stage, resuming from the stage's newest checkpoint if any.

        Args:
            stage: stage name; checkpoints go to ``run_dir/checkpoints/<stage>/``.
            model: the model (its parameters in `optimizer`); trained in place.
            optimizer: a torch optimiser over the trainable parameters.
            dataset: map-style dataset; the engine builds the DataLoader (seeded order).
            step_fn: ``step_fn(model, batch) -> {"loss": scalar tensor, ...}``; the batch is on
                the engine's device; other scalar entries are logged.
            max_steps: optimiser steps of the stage (default ``train.max_steps``); 0 leaves
                the model as it is.
            batch_size: per-process batch size (default ``train.batch_size``).
            collate_fn: DataLoader collate function (default: torch's).
            validate_fn: ``validate_fn(model, step) -> {"metric": value} | None``, run on rank 0
                every ``train.val_every`` steps and at the end, under ``no_grad`` and eval mode,
                without disturbing the training RNG streams.
            scheduler: optional LR scheduler, stepped after every optimiser step and
                checkpointed.
            stop_after: stop after this step without finishing the stage (a checkpoint is
                written); a later `fit` resumes. For time-limited jobs and tests.
            num_workers: DataLoader worker processes.

        Returns:
            The (unwrapped) trained model. For a stage already finished (``done`` marker), its
            final weights are loaded into `model` and it is returned at once.
        """
        max_steps = self.cfg.max_steps if max_steps is None else int(max_steps)
        batch_size = self.cfg.batch_size if batch_size is None else int(batch_size)
        if max_steps < 0:
            raise InputError(f"stage {stage!r}: steps must be >= 0, got {max_steps}")
        if batch_size < 1:
            raise InputError(f"stage {stage!r}: batch size must be >= 1, got {batch_size}")
        stage_dir = self.run_dir / "checkpoints" / stage
        with self._logging():
            if max_steps == 0:
                logger.info("stage %s: 0 steps, nothing to train", stage)
                seed_everything(mix_seed(self.cfg.seed, "after", stage))
                return model
            if (stage_dir / ckpt.DONE_MARKER).exists():
                load_weights(model, stage_dir / f"{ckpt.FINAL_NAME}.safetensors")
                model.to(self.fabric.device)
                logger.info("stage %s already finished; loaded its final weights", stage)
                seed_everything(mix_seed(self.cfg.seed, "after", stage))
                return model
            finished = self._train(
                stage,
                stage_dir,
                model,
                optimizer,
                dataset,
                step_fn,
                max_steps,
                batch_size,
                collate_fn,
                validate_fn,
                scheduler,
                stop_after,
                num_workers,
            )
            if finished:
                # The RNG state after a stage does not depend on whether it was trained or
                # skipped, so a multi-stage pipeline resumed later builds the same next model.
                seed_everything(mix_seed(self.cfg.seed, "after", stage))
        return model

    def _train(
        self,
        stage: str,
        stage_dir: Path,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        dataset: Dataset,
        step_fn: StepFn,
        max_steps: int,
        batch_size: int,
        collate_fn: Callable[[list[Any]], Any] | None,
        validate_fn: ValidateFn | None,
        scheduler: Any,
        stop_after: int | None,
        num_workers: int,
    ) -> bool:
        num_samples = len(dataset)  # type: ignore[arg-type]
        if num_samples == 0:
            raise InputError(f"stage {stage!r}: the training dataset is empty")
        cfg = self.cfg
        fmodule, fopt = self.fabric.setup(_StepModule(model, step_fn), optimizer)
        sampler = EpochSampler(num_samples, cfg.seed, self.rank, self.world_size)
        pos = _Position()
        val_every = cfg.val_every
        if self._resume(stage, stage_dir, model, optimizer, scheduler, pos, batch_size, sampler):
            self._truncate_logs(stage, pos.step)
        else:
            seed_everything(mix_seed(cfg.seed, "train", stage, self.rank))
        target = max_steps if stop_after is None else min(int(stop_after), max_steps)

        from tqdm.auto import tqdm

        tty = sys.stderr.isatty() if self.show_progress is None else self.show_progress
        bar = tqdm(
            total=max_steps,
            initial=min(pos.step, max_steps),
            desc=stage,
            disable=not (self.is_main and tty),
            dynamic_ncols=True,
        )
        sums: dict[str, torch.Tensor] = {}
        count = 0
        session_start, session_steps = time.perf_counter(), 0
        seconds_before = pos.seconds
        loader = self._loader(dataset, sampler, batch_size, collate_fn, num_workers, pos.epoch)
        try:
            while pos.step < target:
                sampler.set_epoch(pos.epoch, pos.batch_in_epoch * batch_size)
                for batch in loader:
                    _apply_thread_policy(stage, pos.step)
                    scalars = self._train_step(stage, fmodule, fopt, scheduler, batch, pos.step)
                    pos.step += 1
                    pos.batch_in_epoch += 1
                    session_steps += 1
                    pos.seconds = seconds_before + time.perf_counter() - session_start
                    for key, value in scalars.items():
                        sums[key] = sums[key] + value if key in sums else value
                    count += 1
                    bar.update(1)
                    last = pos.step == target
                    if pos.step % max(1, cfg.log_every) == 0 or last:
                        record = self._log_window(stage, pos, sums, count, optimizer)
                        sums, count = {}, 0
                        bar.set_postfix(loss=f"{record['loss']:.4g}", refresh=False)
                        eta = (target - pos.step) * (time.perf_counter() - session_start)
                        eta /= max(1, session_steps)
                        self._progress(
                            f"{stage} step {pos.step}/{max_steps} loss {record['loss']:.5g} "
                            f"lr {record['lr']:.3g} eta {eta:.0f}s",
                            console=bar.disable,
                        )
                    if validate_fn is not None and (
                        (val_every > 0 and pos.step % val_every == 0)
                        or (pos.step == max_steps and val_every > 0)
                    ):
                        self._validate(stage, model, validate_fn, pos)
                    if (cfg.ckpt_every > 0 and pos.step % cfg.ckpt_every == 0) or last:
                        self._save(stage, stage_dir, model, optimizer, scheduler, pos, batch_size)
                    if pos.step >= target:
                        break
                else:
                    pos.epoch += 1
                    pos.batch_in_epoch = 0
        except _Diverged as exc:
            raise self._diverged(stage, stage_dir, exc) from None
        finally:
            bar.close()
        if pos.step < max_steps:
            logger.info("stage %s stopped at step %d of %d", stage, pos.step, max_steps)
            return False
        self._finish(stage, stage_dir, model, pos)
        return True

    def _loader(
        self,
        dataset: Dataset,
        sampler: EpochSampler,
        batch_size: int,
        collate_fn: Callable[[list[Any]], Any] | None,
        num_workers: int,
        epoch: int,
    ) -> DataLoader:
        """The stage's DataLoader, built once per `fit` call and iterated once per epoch
        (the sampler's `set_epoch` picks the epoch's order before each pass).

        Pinned memory on CUDA (asynchronous host-to-device copies); with workers, the workers
        persist across epochs (no start-up per epoch) and each keeps `PREFETCH_FACTOR` batches
        ready, so the device does not wait on data loading. Worker processes are seeded once per
        `fit` call from ``(seed, first epoch, rank)``; lift3d's datasets draw no randomness in
        them.
        """
        workers = num_workers > 0
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=collate_fn,
            num_workers=num_workers,
            pin_memory=self.device.startswith("cuda"),
            persistent_workers=workers,
            prefetch_factor=PREFETCH_FACTOR if workers else None,
            # Own generator: creating an iterator must not draw from the global RNG.
            generator=torch.Generator().manual_seed(
                mix_seed(self.cfg.seed, "loader", epoch, self.rank)
            ),
        )

    def _diverged(self, stage: str, stage_dir: Path, exc: _Diverged) -> InputError:
        """The one-line error for a non-finite loss at step N, naming the last good checkpoint.

        The weights after N - 1 steps gave the non-finite loss, so a checkpoint of step N - 1
        holds bad weights: it is removed (a ``--resume`` would diverge again at once) and the
        last good checkpoint is the newest of step N - 2 or earlier.
        """
        good, bad = [], []
        for step, json_path in ckpt.list_checkpoints(stage_dir):
            (good if step <= exc.step - 2 else bad).append((step, json_path))
        if self.is_main:
            for _, json_path in bad:  # JSON first: a half-removed pair is merely incomplete
                json_path.unlink(missing_ok=True)
                json_path.with_suffix(".safetensors").unlink(missing_ok=True)
        removed = (
            f" (removed {', '.join(p.stem for _, p in bad)}: its weights gave it)" if bad else ""
        )
        if good:
            step, json_path = good[-1]
            last = (
                f"last good checkpoint {json_path.with_suffix('.safetensors')} (step {step})"
                f"{removed}; lower the learning rate and run again with --resume"
            )
        else:
            last = f"no good checkpoint before it{removed}; lower the learning rate"
        return InputError(
            f"stage {stage!r}: loss is {exc.value} at step {exc.step}, training diverged; "
            f"{last} (or check the data)",
            self.run_dir,
        )

    def _train_step(
        self,
        stage: str,
        fmodule: nn.Module,
        fopt: Any,
        scheduler: Any,
        batch: Any,
        step: int,
    ) -> dict[str, torch.Tensor]:
        fmodule.train()
        batch = self.fabric.to_device(batch)
        out = fmodule(batch)
        if not isinstance(out, dict) or "loss" not in out:
            raise TypeError("step_fn must return a dict with a scalar 'loss' tensor")
        loss = out["loss"]
        if not torch.isfinite(loss.detach()).all():
            raise _Diverged(step + 1, loss.detach().float().item())
        fopt.zero_grad(set_to_none=True)
        self.fabric.backward(loss)
        scalars: dict[str, torch.Tensor] = {}
        if self.cfg.grad_clip > 0:
            norm = self.fabric.clip_gradients(
                fmodule, fopt, max_norm=self.cfg.grad_clip, error_if_nonfinite=False
            )
            if norm is not None:
                scalars["grad_norm"] = norm.detach().float()
        fopt.step()
        if scheduler is not None:
            scheduler.step()
        for key, value in out.items():
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                scalars[key] = value.detach().float().reshape(())
            elif _scalar(value) is not None:
                scalars[key] = torch.tensor(_scalar(value), device=self.fabric.device)
        return scalars

    def _log_window(
        self,
        stage: str,
        pos: _Position,
        sums: dict[str, torch.Tensor],
        count: int,
        optimizer: torch.optim.Optimizer,
    ) -> dict[str, Any]:
        """Mean of each scalar over the window (and over ranks), appended to the stage log."""
        keys = sorted(sums)
        means = torch.stack([sums[k].to(self.fabric.device) for k in keys]) / max(1, count)
        if self.world_size > 1:
            means = self.fabric.all_reduce(means, reduce_op="mean")
        record: dict[str, Any] = {"step": pos.step, "epoch": pos.epoch}
        record.update(zip(keys, means.tolist()))
        record["lr"] = float(optimizer.param_groups[0]["lr"])
        record["seconds"] = round(pos.seconds, 3)
        self._append_jsonl(f"{stage}.jsonl", record)
        return record

    def _validate(
        self,
        stage: str,
        model: nn.Module,
        validate_fn: ValidateFn,
        pos: _Position,
    ) -> None:
        if not self.is_main:
            return
        rng = get_rng_state()  # validation must not shift the training random streams
        was_training = model.training
        model.eval()
        start = time.perf_counter()
        try:
            with torch.no_grad(), self.fabric.autocast():
                metrics = validate_fn(model, pos.step)
        finally:
            model.train(was_training)
            set_rng_state(rng)
        if not metrics:
            return
        record: dict[str, Any] = {"step": pos.step}
        for key, value in metrics.items():
            num = _scalar(value)
            record[key] = num if num is not None else value
        record["seconds"] = round(time.perf_counter() - start, 3)
        self._append_jsonl(f"{stage}_val.jsonl", record)
        shown = " ".join(
            f"{k} {v:.5g}" for k, v in record.items() if k != "step" and isinstance(v, float)
        )
        logger.info("%s validation at step %d: %s", stage, pos.step, shown)

    # ------------------------------------------------------------------ checkpoints

    def _gather(self, obj: Any) -> list[Any]:
        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def _save(
        self,
        stage: str,
        stage_dir: Path,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        pos: _Position,
        batch_size: int,
    ) -> None:
        rngs = self._gather(get_rng_state())  # collective: every rank takes part
        if self.is_main:
            tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
            meta: dict[str, Any] = {
                "format": "lift3d-checkpoint",
                "lift3d_version": __version__,
                "torch_version": torch.__version__,
                "task": self.task,
                "stage": stage,
                "time": _now(),
                "seconds": pos.seconds,
                "config": self.config_dict(),
                "data": {
                    "epoch": pos.epoch,
                    "batch_in_epoch": pos.batch_in_epoch,
                    "batch_size": batch_size,
                    "world_size": self.world_size,
                    "seed": self.cfg.seed,
                },
                "optimizer": ckpt.encode_state(optimizer.state_dict(), "optim", tensors),
                "scheduler": None
                if scheduler is None
                else ckpt.encode_state(scheduler.state_dict(), "sched", tensors),
                "rng": [ckpt.encode_state(r, f"rng.{i}", tensors) for i, r in enumerate(rngs)],
                # fp16 loss-scaler state (empty for other precisions)
                "precision": ckpt.encode_state(
                    self.fabric.strategy.precision.state_dict(), "precision", tensors
                ),
            }
            path = ckpt.save_checkpoint(stage_dir, pos.step, tensors, meta)
            removed = ckpt.prune_checkpoints(stage_dir, self.cfg.keep_last)
            logger.info(
                "saved checkpoint %s%s",
                path.with_suffix(".safetensors"),
                f" (removed steps {removed})" if removed else "",
            )
        self.fabric.barrier()

    def _resume(
        self,
        stage: str,
        stage_dir: Path,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        pos: _Position,
        batch_size: int,
        sampler: EpochSampler,
    ) -> bool:
        if self.is_main:
            for path in ckpt.clean_incomplete(stage_dir):
                logger.warning("removed incomplete checkpoint file %s", path)
        self.fabric.barrier()
        found = ckpt.list_checkpoints(stage_dir)
        if not found:
            return False
        damaged: list[InputError] = []
        for candidate in reversed(found):  # the newest intact checkpoint
            step, json_path = candidate
            try:
                meta, tensors = ckpt.load_checkpoint(json_path)
            except InputError as exc:
                logger.warning("stage %s: skipping damaged checkpoint %s", stage, exc)
                damaged.append(exc)
                continue
            break
        else:
            raise InputError(
                f"stage {stage!r}: no intact checkpoint to resume from ({len(found)} damaged; "
                f"newest: {damaged[0].problem}); delete the stage folder to restart the stage",
                stage_dir,
            )
        weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        try:
            model.load_state_dict(weights, strict=True)
            optimizer.load_state_dict(ckpt.decode_state(meta["optimizer"], tensors))
        except (RuntimeError, ValueError, KeyError) as exc:
            raise InputError(
                f"checkpoint does not fit this model/optimiser ({str(exc).splitlines()[0]})",
                json_path,
            ) from None
        if meta.get("precision"):
            self.fabric.strategy.precision.load_state_dict(
                ckpt.decode_state(meta["precision"], tensors)
            )
        if scheduler is not None and meta.get("scheduler") is not None:
            scheduler.load_state_dict(ckpt.decode_state(meta["scheduler"], tensors))
        data = meta["data"]
        pos.step = int(meta["step"])
        pos.epoch = int(data["epoch"])
        pos.seconds = float(meta.get("seconds", 0.0))
        old_global = int(data["batch_size"]) * int(data["world_size"])
        new_global = batch_size * self.world_size
        pos.batch_in_epoch = int(data["batch_in_epoch"])
        if old_global != new_global or data.get("seed") != self.cfg.seed:
            # Keep the epoch and the fraction of it consumed; the order is no longer exact.
            pos.batch_in_epoch = pos.batch_in_epoch * old_global // new_global
            logger.warning(
                "stage %s: batch size, process count or seed changed since the checkpoint; "
                "resuming at the same epoch, but the data order differs from an unbroken run",
                stage,
            )
        rngs = meta.get("rng") or []
        if len(rngs) == self.world_size:
            set_rng_state(ckpt.decode_state(rngs[self.rank], tensors))
        else:
            logger.warning(
                "stage %s: RNG state saved for %d processes; reseeding", stage, len(rngs)
            )
            seed_everything(mix_seed(self.cfg.seed, "resume", stage, pos.step, self.rank))
        if meta.get("config") != self.config_dict():
            logger.warning("stage %s: config differs from the one in %s", stage, json_path.name)
        if damaged:
            logger.warning(
                "stage %s: resumed from %s (step %d), the newest intact checkpoint",
                stage,
                json_path.name,
                step,
            )
        else:
            logger.info("stage %s: resumed from %s (step %d)", stage, json_path.name, step)
        return True

    def _finish(
        self,
        stage: str,
        stage_dir: Path,
        model: nn.Module,
        pos: _Position,
    ) -> None:
        if self.is_main:
            info = {
                "stage": stage,
                "step": pos.step,
                "task": self.task,
                "lift3d_version": __version__,
                "torch_version": torch.__version__,
                "time": _now(),
                "seconds": round(pos.seconds, 3),
                "config": self.config_dict(),
            }
            final = stage_dir / f"{ckpt.FINAL_NAME}.safetensors"
            save_weights(model, final, {k: info[k] for k in ("stage", "step", "task")})
            atomic_write_text(final.with_suffix(".json"), json.dumps(info, indent=1))
            atomic_write_text(stage_dir / ckpt.DONE_MARKER, info["time"] + "\n")
            logger.info("stage %s finished at step %d; final weights %s", stage, pos.step, final)
        self.fabric.barrier()
