"""Tiny 2-process data-parallel training run, launched by tests/training/test_ddp.py via torchrun.

Not a test module. Every rank trains the same regression MLP twice under the engine's DDP path:
straight for ``--steps`` steps, and in a second run folder stopped half-way then resumed by a
fresh Engine/model/optimiser. Each rank then writes its weights to ``OUT/<run>_rank<r>.safetensors``
so the test can compare ranks, runs and a single-process run with twice the batch.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from torch import nn

from lift3d.config import TrainConfig
from lift3d.models.weights import save_weights
from lift3d.training.engine import Engine

NUM_SAMPLES = 32
IN_FEATURES = 6


class RegressionDataset(torch.utils.data.Dataset):
    """Fixed noisy linear targets: item {"x": (6,), "y": (1,)}."""

    def __init__(self, num_samples: int = NUM_SAMPLES) -> None:
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(num_samples, IN_FEATURES, generator=g)
        w = torch.randn(IN_FEATURES, 1, generator=g)
        self.y = self.x @ w + 0.05 * torch.randn(num_samples, 1, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


def build_model() -> nn.Module:
    return nn.Sequential(nn.Linear(IN_FEATURES, 16), nn.Tanh(), nn.Linear(16, 1))


def step_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # A mean over the batch: DDP's gradient average over equal shards equals the full-batch mean.
    return {"loss": ((model(batch["x"]) - batch["y"]) ** 2).mean()}


def train(run_dir: Path, batch_size: int, steps: int, stop_after: int | None = None) -> nn.Module:
    """One fit of the regression model (same seed and init in every process)."""
    cfg = TrainConfig(
        device="cpu",
        seed=0,
        batch_size=batch_size,
        lr=0.05,
        grad_clip=0.0,
        log_every=1,
        val_every=0,
        ckpt_every=max(1, steps // 2),
        keep_last=0,
    )
    engine = Engine(cfg, run_dir, task="ddp-test")
    model = build_model()  # built after Engine() seeded the RNGs: same init everywhere
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    return engine.fit(
        "main", model, optimizer, RegressionDataset(), step_fn, steps, stop_after=stop_after
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rank = int(os.environ.get("RANK", "0"))
    straight = train(args.out / "straight", args.batch, args.steps)
    train(args.out / "resumed", args.batch, args.steps, stop_after=args.steps // 2)
    resumed = train(args.out / "resumed", args.batch, args.steps)
    save_weights(straight, args.out / f"straight_rank{rank}.safetensors")
    save_weights(resumed, args.out / f"resumed_rank{rank}.safetensors")


if __name__ == "__main__":
    main()
