"""Make a model folder from a run's step checkpoint, to score a run at an earlier step.

Usage: python benchmarks/checkpoint_folder.py RUN STAGE STEP OUT
  e.g. python benchmarks/checkpoint_folder.py runs/a translator 100 runs/a-step100
"""

from __future__ import annotations

import sys
from pathlib import Path

from lift3d.config import TranslateConfig, load_config
from lift3d.model_folder import CONFIG_FILE, build_model, save_model
from lift3d.models.weights import load_weights


def main(argv: list[str]) -> int:
    run, stage, step, out = Path(argv[0]), argv[1], int(argv[2]), Path(argv[3])
    cfg = load_config(TranslateConfig, run / CONFIG_FILE)
    model = build_model("translate", cfg)
    load_weights(model, run / "checkpoints" / stage / f"step_{step:07d}.safetensors")
    save_model(model, cfg, out, run_info={"checkpoint": f"{stage} step {step}"})
    print(f"model folder of {run} at {stage} step {step}: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
