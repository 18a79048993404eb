"""Checkpoint files of the training engine, and final-weight export.

A checkpoint of stage ``S`` at step ``k`` is a pair of files in ``run_dir/checkpoints/S/``:

- ``step_000000k.safetensors``: every tensor: model weights (prefix ``model.``), optimiser state
  (``optim.``), scheduler state (``sched.``) and RNG states (``rng.``).
- ``step_000000k.json``: everything else: resolved config, step, optimiser param groups and
  non-tensor state (tensors replaced by ``{"__tensor__": name}`` references), RNG states, data
  order position, package version.

Both are written through a temporary name and a rename, the JSON last, so a pair counts as a
checkpoint only when its JSON exists: a run killed mid-write leaves at most an orphan weight file
that `list_checkpoints` ignores and `clean_incomplete` removes. The weight file carries the
checksum of its tensors (`lift3d.models.weights`), repeated in the JSON (``weights_sha256``);
`load_checkpoint` verifies both, so a damaged pair is refused and `--resume` falls back to the
previous intact checkpoint.

Final weights alone (``final.safetensors``, ``model.safetensors``) are written with
`lift3d.models.weights.save_weights`.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lift3d.errors import InputError
from lift3d.models.weights import CHECKSUM_KEY, load_tensors, save_tensors
from lift3d.utils import atomic_write_text

logger = logging.getLogger(__name__)

STEP_PATTERN = re.compile(r"^step_(\d{7,})\.json$")
DONE_MARKER = "done"
FINAL_NAME = "final"


def step_name(step: int) -> str:
    """File stem of the checkpoint at `step` (``step_0000042``)."""
    return f"step_{step:07d}"


# --------------------------------------------------------------------------- state encoding


def encode_state(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Split a nested state (dicts, lists, tuples, tensors, arrays, scalars) into JSON + tensors.

    Tensors are moved into `tensors` under dotted names starting with `prefix` and replaced by
    ``{"__tensor__": name}``; dicts with non-string keys (e.g. optimiser state keyed by parameter
    index) and tuples are tagged so `decode_state` rebuilds them exactly.

    Raises:
        TypeError: a value that is neither JSON-able nor a tensor/array.
    """
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu()
        return {"__tensor__": prefix}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        plain = all(isinstance(k, str) and not k.startswith("__") for k in obj)
        if plain:
            return {k: encode_state(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
        return {
            "__items__": [
                [
                    encode_state(k, f"{prefix}.k{i}", tensors),
                    encode_state(v, f"{prefix}.{k}", tensors),
                ]
                for i, (k, v) in enumerate(obj.items())
            ]
        }
    if isinstance(obj, tuple):
        return {"__tuple__": [encode_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix!r} in a checkpoint")


def decode_state(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of `encode_state`."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
        if "__items__" in obj:
            return {decode_state(k, tensors): decode_state(v, tensors) for k, v in obj["__items__"]}
        if "__tuple__" in obj:
            return tuple(decode_state(v, tensors) for v in obj["__tuple__"])
        return {k: decode_state(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode_state(v, tensors) for v in obj]
    return obj


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data))


# --------------------------------------------------------------------------- step checkpoints


def save_checkpoint(
    ckpt_dir: str | Path, step: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> Path:
    """Write one checkpoint pair atomically: tensors first, then the JSON that completes it.

    Args:
        ckpt_dir: the stage's checkpoint folder.
        step: optimiser steps done.
        tensors: flat name -> tensor map (``model.*``, ``optim.*``, ...).
        meta: JSON-able metadata (config, step, optimiser skeleton, RNG, data position).

    Returns:
        Path of the JSON file.
    """
    ckpt_dir = Path(ckpt_dir)
    stem = step_name(step)
    weights = ckpt_dir / f"{stem}.safetensors"
    checksum = save_tensors(tensors, weights, {"format": "lift3d-checkpoint"})
    json_path = ckpt_dir / f"{stem}.json"
    _write_json(
        json_path,
        {**meta, "step": step, "weights": weights.name, "weights_sha256": checksum},
    )
    return json_path


def list_checkpoints(ckpt_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in `ckpt_dir` as ``(step, json_path)``, oldest first."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = []
    for path in ckpt_dir.iterdir():
        m = STEP_PATTERN.match(path.name)
        if m and path.with_suffix(".safetensors").is_file():
            found.append((int(m.group(1)), path))
    return sorted(found)


def load_checkpoint(json_path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read and verify a checkpoint pair: ``(meta, tensors)``.

    Raises:
        InputError: unreadable JSON, a missing, unreadable or damaged weight file, or a weight
            file that is not the one the JSON was written with.
    """
    json_path = Path(json_path)
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"unreadable checkpoint metadata ({exc})", json_path) from None
    if not isinstance(meta, dict) or "step" not in meta:
        raise InputError("checkpoint metadata has no step", json_path)
    weights = json_path.with_suffix(".safetensors")
    tensors, raw = load_tensors(weights)
    expected = meta.get("weights_sha256")
    if expected is not None and raw.get(CHECKSUM_KEY) != expected:
        raise InputError("weight file does not belong to its checkpoint metadata", weights)
    return meta, tensors


def prune_checkpoints(ckpt_dir: str | Path, keep_last: int) -> list[int]:
    """Delete all but the newest `keep_last` checkpoints (``keep_last <= 0`` keeps all).

    The JSON goes first, so a pair interrupted while being deleted is merely incomplete.

    Returns:
        Steps deleted.
    """
    if keep_last <= 0:
        return []
    removed = []
    for step, json_path in list_checkpoints(ckpt_dir)[:-keep_last]:
        json_path.unlink(missing_ok=True)
        json_path.with_suffix(".safetensors").unlink(missing_ok=True)
        removed.append(step)
    return removed


def clean_incomplete(ckpt_dir: str | Path) -> list[Path]:
    """Remove temporary files and weight files without their JSON (left by a killed run)."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    removed = []
    for path in ckpt_dir.iterdir():
        orphan = (
            path.name.startswith("step_")
            and path.suffix == ".safetensors"
            and not path.with_suffix(".json").exists()
        )
        if path.name.startswith(".") or orphan:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
