"""The model folder: what a trained lift3d model is on disk, written and read in one place.

``lift3d train translate|generate --out RUN`` makes ``RUN``; ``lift3d translate``,
``synthesize-missing`` and ``generate`` read it with `load_model`.

```
RUN/
  model.safetensors   final weights; header metadata {"format", "task", "subtask", "config"}:
                      the model is rebuilt from this config alone (like nanoGPT's model_args)
  config.yaml         the same resolved config, for people and for `--config RUN/config.yaml`
  run.json            task, subtask, package/torch versions, seed, device, command line;
                      generation: "stages_done", the stages trained so far (below)
  reference.json      generation only: the reference grid and intensity record, the split,
                      the output-detail calibration (`lift3d.inference.detail`)
  metrics.json        translation only: the last validation scores
```

A folder of the other task, a folder written by a lift3d without the ``format`` header, or a
newer format than this lift3d reads is refused with a one-line `InputError` saying what to do.

A generation run writes its folder twice: after the generator stage (``"stages_done":
["encoder", "generator"]``; the mapper T in the weights is untrained) and after the mapper stage
(all three stages). E and G are frozen while T trains, so the first folder already samples the
final no-mapper ablation (``lift3d generate --no-mapper``) while T trains; reading it for the
mapper (``use_mapper=True``, the default) is refused with a one-line `InputError`. A folder
without ``"stages_done"`` (older lift3d, translation) is finished. The weights are written
before ``run.json`` names the stage, each file atomically, so a reader in another process sees
a folder that is at least as trained as its ``run.json`` says.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
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
GENERATION_STAGES = ("encoder", "generator", "mapper")
STAGES_KEY = "stages_done"


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

    @property
    def stages_done(self) -> list[str]:
        """The trained stages of a generation folder (`stages_done`); [] for translation."""
        return trained_stages(self.run) if self.task == "generate" else []

    @property
    def mapper_trained(self) -> bool:
        """Generation: the mapper stage is trained (the folder is final)."""
        return "mapper" in self.stages_done


def trained_stages(run: dict[str, Any]) -> list[str]:
    """The generation stages a ``run.json`` says are trained: its ``"stages_done"``, or all of
    them when it has none (a folder written before the field existed is finished)."""
    done = run.get(STAGES_KEY)
    return list(GENERATION_STAGES) if done is None else [str(s) for s in done]


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
    stages: Sequence[str] | None = None,
) -> Path:
    """Write the model into `run_dir`: weights with their config, ``config.yaml``,
    ``run.json`` fields and, for generation, ``reference.json``.

    The weights are written (atomically) before ``run.json``, so a reader that sees a stage
    named in ``run.json`` loads weights at least that far trained.

    Args:
        model: the unwrapped model (a `TranslationModel` or `GenerationModel`) matching `cfg`.
        cfg: its `TranslateConfig` or `GenerateConfig`.
        run_dir: the run folder (created when missing).
        reference: generation only: the ``reference.json`` content.
        run_info: extra ``run.json`` fields.
        stages: generation only: the stages trained so far (``run.json["stages_done"]``);
            default all of `GENERATION_STAGES` (the final folder).

    Returns:
        `run_dir` as a Path.
    """
    task = "translate" if isinstance(cfg, TranslateConfig) else "generate"
    subtask = cfg.task if task == "translate" else "generate"
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if stages is not None and task != "generate":
        raise ValueError("stages: a generation folder only")
    if task == "generate":
        stages = list(GENERATION_STAGES if stages is None else stages)
        unknown = [s for s in stages if s not in GENERATION_STAGES]
        if unknown:
            raise ValueError(f"unknown generation stage(s) {unknown}")
    save_config(cfg, run_dir / CONFIG_FILE)
    if reference is not None:
        atomic_write_text(
            run_dir / REFERENCE_FILE, json.dumps(reference, indent=1, default=_json_default)
        )
    meta = {"format": FORMAT_VERSION, "task": task, "subtask": subtask}
    save_weights(model, run_dir / WEIGHTS_FILE, {**meta, "config": config_to_dict(cfg)})
    fields = {} if stages is None else {STAGES_KEY: stages}
    update_run_json(
        run_dir,
        task=task,
        subtask=subtask,
        lift3d_version=__version__,
        torch_version=torch.__version__,
        **(run_info or {}),
        **fields,
    )
    return run_dir


def read_model_folder(model_dir: str | Path, task: str, *, use_mapper: bool = True) -> ModelFolder:
    """Check that `model_dir` is a finished model folder of `task` and read its metadata.

    Args:
        model_dir: the folder.
        task: "translate" | "generate".
        use_mapper: generation: the caller samples with the trajectory mapper, so the mapper
            stage must be trained; False accepts a folder written after the generator stage
            (E and G final, the no-mapper ablation).

    Raises:
        InputError: not a folder, not a lift3d model folder, of the other task (named),
            training not finished (for the mapper: its stage not trained yet), an older or
            newer format, unreadable metadata.
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
    if task == "generate":
        _check_stages(model_dir, trained_stages(run), use_mapper)
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


def _check_stages(model_dir: Path, done: list[str], use_mapper: bool) -> None:
    """Refuse a generation folder whose stages do not cover what the caller samples with."""
    if "generator" not in done:
        raise InputError(
            "generation training has not finished its generator stage yet (run.json "
            f"stages_done: {done}); wait for it or resume it with 'lift3d train generate "
            "--resume'",
            model_dir,
        )
    if use_mapper and "mapper" not in done:
        raise InputError(
            "the mapper stage is not trained yet (this folder holds E and G only); sample the "
            "no-mapper ablation with --no-mapper, or wait for training to finish (or resume it "
            "with 'lift3d train generate --resume')",
            model_dir,
        )


def load_model(
    model_dir: str | Path,
    task: str,
    device: str = "cpu",
    use_mixer: bool = True,
    *,
    use_mapper: bool = True,
) -> tuple[nn.Module, ModelFolder]:
    """Rebuild a model from its folder (no flags needed) and load the final weights.

    Args:
        model_dir: the folder.
        task: "translate" | "generate".
        device: torch device.
        use_mixer: translation: build the z-mixer.
        use_mapper: generation: as in `read_model_folder` (False: a folder whose mapper stage
            is not trained yet loads too; its mapper weights are untrained).

    Returns:
        (model in eval mode on `device`, the checked `ModelFolder`).
    """
    folder = read_model_folder(model_dir, task, use_mapper=use_mapper)
    cfg = folder.config
    if task == "translate" and cfg.model.mixer_levels is None:
        # the registry's default may have changed since training (small: 3 -> 2 levels)
        cfg = copy.deepcopy(cfg)
        cfg.model.mixer_levels = _mixer_levels(folder.weights)
    model = build_model(task, cfg, use_mixer=use_mixer)
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


def _mixer_levels(weights: Path) -> int | None:
    """Number of z-mixer levels in a translation weights file (None: no mixer weights)."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), "pt") as f:
            levels = {int(k.split(".")[1]) for k in f.keys() if k.startswith("mixers.")}
    except Exception:  # unreadable: load_weights reports it with its own message
        return None
    return max(levels) + 1 if levels else None


def _json_default(obj: Any) -> Any:
    """numpy scalars and arrays in reference.json."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
