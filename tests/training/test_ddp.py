"""Two CPU processes (gloo) under torchrun train through the engine's Fabric DDP path."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lift3d.config import TrainConfig
from lift3d.models.weights import load_weights
from lift3d.training.engine import Engine
from lift3d.utils import seed_everything

SCRIPT = Path(__file__).with_name("ddp_script.py")
BATCH = 4  # per process
STEPS = 8


def _load_script():
    spec = importlib.util.spec_from_file_location("lift3d_ddp_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weights(script, path: Path) -> dict[str, torch.Tensor]:
    model = script.build_model()
    load_weights(model, path)
    return model.state_dict()


def _dataset_loss(script, model) -> float:
    ds = script.RegressionDataset()
    with torch.no_grad():
        return float(((model(ds.x) - ds.y) ** 2).mean())


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(SCRIPT),
        "--out",
        str(out),
        "--batch",
        str(BATCH),
        "--steps",
        str(STEPS),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_ranks_end_identical_and_loss_decreases(ddp_run):
    script = _load_script()
    rank0 = _weights(script, ddp_run / "straight_rank0.safetensors")
    rank1 = _weights(script, ddp_run / "straight_rank1.safetensors")
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    seed_everything(0)  # what Engine() does before the script builds its model
    initial = script.build_model()
    trained = script.build_model()
    trained.load_state_dict(rank0)
    assert _dataset_loss(script, trained) < 0.5 * _dataset_loss(script, initial)
    run = json.loads((ddp_run / "straight" / "run.json").read_text())
    assert run["world_size"] == 2


def test_only_rank0_writes(ddp_run):
    run_dir = ddp_run / "straight"
    records = [json.loads(line) for line in (run_dir / "logs/main.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    log = (run_dir / "log.txt").read_text()
    for step in (STEPS // 2, STEPS):
        assert log.count(f"saved checkpoint {run_dir}/checkpoints/main/step_{step:07d}") == 1
    assert log.count("finished at step") == 1
    ckpt = json.loads((run_dir / "checkpoints/main/step_0000008.json").read_text())
    assert ckpt["data"]["world_size"] == 2
    assert len(ckpt["rng"]) == 2  # every rank's RNG state, gathered to rank 0


def test_ddp_resume_matches_straight_run(ddp_run):
    script = _load_script()
    straight = _weights(script, ddp_run / "straight_rank0.safetensors")
    for rank in (0, 1):
        resumed = _weights(script, ddp_run / f"resumed_rank{rank}.safetensors")
        for key in straight:
            assert torch.equal(straight[key], resumed[key]), (rank, key)
    log = (ddp_run / "resumed" / "log.txt").read_text()
    assert "resumed from step_0000004.json" in log


def test_ddp_equals_single_process_with_double_batch(ddp_run, tmp_path):
    """Per-rank batch b on 2 ranks sees the same global batches as one process with 2b.

    The mean loss over 2b samples has the average of the two per-rank gradients as its gradient,
    which is what DDP all-reduces; only the float summation order differs, so the weights agree
    to float32 rounding, not bitwise.
    """
    script = _load_script()
    ddp = _weights(script, ddp_run / "straight_rank0.safetensors")
    single = script.train(tmp_path / "single", 2 * BATCH, STEPS)
    for key, value in single.state_dict().items():
        torch.testing.assert_close(value, ddp[key], rtol=1e-5, atol=1e-6)
    # The comparison is meaningful: the weights moved far more than the tolerance.
    seed_everything(0)
    initial = script.build_model().state_dict()
    initial_gap = max(float((ddp[k] - initial[k]).abs().max()) for k in ddp)
    assert initial_gap > 1e-2


def test_single_process_engine_uses_no_ddp(tmp_path):
    engine = Engine(TrainConfig(device="cpu"), tmp_path / "run")
    assert engine.world_size == 1 and engine.rank == 0
    assert not torch.distributed.is_initialized()
