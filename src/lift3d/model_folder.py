"""The model folder: what a trained lift3d model is on disk, written and read in one place.

``lift3d train translate|generate --out RUN`` makes ``RUN``; ``lift3d translate``,
``synthesize-missing`` and ``generate`` read it with `load_model`.

```
RUN/
  model.safetensors   final weights; header metadata {"format", "task", "subtask", "config"}:
                      the model is rebuilt from this config alone (like nanoGPT's model_args)
  config.yaml         the same resolved config, for people and for `--config RUN/config.yaml`
  run.json            task, subtask, package/torch versions, seed, device, command line
  reference.json      generation only: the reference grid and intensity record, the split,
                      the output-detail calibration (`lift3d.inference.detail`)
  metrics.json        translation only: the last validation scores
```

A folder of the other task, a folder written by a lift3d without the ``format`` header, or a
newer format than this lift3d reads is refused with a one-line `InputError` saying what to do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lift3d.config import (
    GenerateConfig,
    TranslateConfig,
    config_from_dict,
    config_to_dict,
    save_config,
)
from lift3d.errors import InputError
from lift3d.models.registry import generation_model_from_config, translation_model_from_config
from lift3d.models.weights import load_weights, read_metadata, save_weights
from lift3d.utils import atomic_write_text
from lift3d.version import __version__

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
REFERENCE_FILE = "reference.json"
METRICS_FILE = "metrics.json"

CONFIG_CLASSES: dict[str, type] = {"translate": TranslateConfig, "generate": GenerateConfig}


@dataclass
class ModelFolder:
    """A checked model folder (weights not loaded).

    Attributes:
        path: the folder.
        task: "translate" | "generate".
        subtask: "mr2ct" | "missing" | "generate".
        config: the stored `TranslateConfig` or `GenerateConfig`.
        run: ``run.json``.
        reference: ``reference.json`` (generation), else None.
    """

    path: Path
    task: str
    subtask: str
    config: Any
    run: dict[str, Any]
    reference: dict[str, Any] | None

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS_FILE


def update_run_json(run_dir: str | Path, **fields: Any) -> None:
    """Merge `fields` into ``run_dir/run.json`` (created when missing)."""
    path = Path(run_dir) / RUN_FILE
    info = json.loads(path.read_text()) if path.is_file() else {}
    info.update(fields)
    atomic_write_text(path, json.dumps(info, indent=1))


def build_model(task: str, cfg: Any, use_mixer: bool = True) -> nn.Module:
    """A randomly initialised model of `task` from its config (what `load_model` fills)."""
    if task == "translate":
        return translation_model_from_config(cfg, use_mixer=use_mixer)
    return generation_model_from_config(cfg)


def save_model(
    model: nn.Module,
    cfg: Any,
    run_dir: str | Path,
    *,
    reference: dict[str, Any] | None = None,
    run_info: dict[str, Any] | None = None,
) -> Path:
    """Write the final model into `run_dir`: weights with their config, ``config.yaml``,
    ``run.json`` fields and, for generation, ``reference.json``.

    Args:
        model: the unwrapped model (a `TranslationModel` or `GenerationModel`) matching `cfg`.
        cfg: its `TranslateConfig` or `GenerateConfig`.
        run_dir: the run folder (created when missing).
        reference: generation only: the ``reference.json`` content.
        run_info: extra ``run.json`` fields.

    Returns:
        `run_dir` as a Path.
    """
    task = "translate" if isinstance(cfg, TranslateConfig) else "generate"
    subtask = cfg.task if task == "translate" else "generate"
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / CONFIG_FILE)
    update_run_json(
        run_dir,
        task=task,
        subtask=subtask,
        lift3d_version=__version__,
        torch_version=torch.__version__,
        **(run_info or {}),
    )
    if reference is not None:
        atomic_write_text(
            run_dir / REFERENCE_FILE, json.dumps(reference, indent=1, default=_json_default)
        )
    meta = {"format": FORMAT_VERSION, "task": task, "subtask": subtask}
    save_weights(model, run_dir / WEIGHTS_FILE, {**meta, "config": config_to_dict(cfg)})
    return run_dir


def read_model_folder(model_dir: str | Path, task: str) -> ModelFolder:
    """Check that `model_dir` is a finished model folder of `task` and read its metadata.

    Raises:
        InputError: not a folder, not a lift3d model folder, of the other task (named),
            training not finished, an older or newer format, unreadable metadata.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise InputError("model folder not found", model_dir)
    run_json = model_dir / RUN_FILE
    if not run_json.is_file():
        raise InputError("not a lift3d model folder (no run.json)", model_dir)
    try:
        run = json.loads(run_json.read_text())
    except (OSError, json.JSONDecodeError):
        raise InputError("run.json is not readable JSON", run_json) from None
    if run.get("task") != task:
        sub = run.get("subtask")
        raise InputError(
            f"model folder is from task {run.get('task')!r}{f' ({sub})' if sub else ''}, "
            f"not {task!r}; train one with 'lift3d train {task}'",
            model_dir,
        )
    required = (WEIGHTS_FILE, REFERENCE_FILE) if task == "generate" else (WEIGHTS_FILE,)
    for name in required:
        if not (model_dir / name).is_file():
            raise InputError(f"model folder lacks {name} (training not finished?)", model_dir)
    meta = read_metadata(model_dir / WEIGHTS_FILE)
    version = meta.get("format")
    if version is None or "config" not in meta:
        raise InputError(
            f"model folder written by an older lift3d (no format header in {WEIGHTS_FILE}); "
            f"retrain it with 'lift3d train {task} --config {model_dir / CONFIG_FILE}'",
            model_dir,
        )
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InputError(
            f"model format {version!r} is newer than this lift3d reads ({FORMAT_VERSION}); "
            "upgrade lift3d",
            model_dir,
        )
    cfg = config_from_dict(CONFIG_CLASSES[task], meta["config"])
    subtask = cfg.task if task == "translate" else "generate"
    if run.get("subtask") not in (None, subtask):
        raise InputError(
            f"run.json says subtask {run.get('subtask')!r} but the weights say {subtask!r}",
            model_dir,
        )
    reference = None
    if task == "generate":
        try:
            reference = json.loads((model_dir / REFERENCE_FILE).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(
                f"{REFERENCE_FILE} is not readable ({type(exc).__name__})", model_dir
            ) from None
    return ModelFolder(model_dir, task, subtask, cfg, run, reference)


def load_model(
    model_dir: str | Path, task: str, device: str = "cpu", use_mixer: bool = True
) -> tuple[nn.Module, ModelFolder]:
    """Rebuild a model from its folder (no flags needed) and load the final weights.

    Returns:
        (model in eval mode on `device`, the checked `ModelFolder`).
    """
    folder = read_model_folder(model_dir, task)
    model = build_model(task, folder.config, use_mixer=use_mixer)
    size = folder.config.model.size
    new_base = task == "translate" and size == "base"
    changed = " ('base' is a residual U-Net since 2026-11)" if new_base else ""
    hint = (
        f"its config's model size {size!r} builds a different network in this lift3d{changed}; "
        f"retrain with 'lift3d train {task} --config {folder.path / CONFIG_FILE}', or load it "
        "with the lift3d that trained it"
    )
    load_weights(model, folder.weights, mismatch_hint=hint)
    return model.to(device).eval(), folder


def _json_default(obj: Any) -> Any:
    """numpy scalars and arrays in reference.json."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
