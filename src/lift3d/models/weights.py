"""A module's weights alone, as one safetensors file (``model.safetensors``, encoder files).

`save_weights` writes ``state_dict`` plus JSON metadata in the file header; `load_weights` fills
a module built with the same shapes and returns the metadata. The training engine's step
checkpoints (`lift3d.training.checkpoint`) reuse `save_tensors` / `load_tensors`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from lift3d.errors import InputError
from lift3d.utils import atomic_path


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors with no two sharing memory (safetensors refuses shared storage)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if t.numel() and key in seen:
            t = t.clone()
        seen.add(key)
        out[name] = t
    return out


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Write named tensors and string metadata to a safetensors file (temp name, then rename)."""
    with atomic_path(path) as tmp:
        save_file(_unshared(tensors), str(tmp), metadata=metadata)


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Named tensors (on the CPU) and the raw string metadata of a safetensors file.

    Raises:
        InputError: the file is missing or not a readable safetensors file.
    """
    if not path.is_file():
        raise InputError("weights file not found", path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open API)
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise InputError(f"not a readable safetensors file ({exc})", path) from None
    return tensors, metadata


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON-decoded header metadata of a weights file, without reading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise InputError("weights file not found", path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = dict(f.metadata() or {})
    except Exception as exc:
        raise InputError(f"not a readable safetensors file ({exc})", path) from None
    return _decode_metadata(raw)


def _decode_metadata(raw: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def save_weights(
    module: nn.Module, path: str | Path, metadata: dict[str, Any] | None = None
) -> Path:
    """Write a module's ``state_dict`` to a safetensors file (atomically).

    Args:
        module: the model (unwrapped).
        path: output ``.safetensors`` file.
        metadata: JSON-able values stored (JSON-encoded) in the file header.

    Returns:
        `path` as a Path.
    """
    path = Path(path)
    meta = {str(k): json.dumps(v) for k, v in (metadata or {}).items()}
    save_tensors(dict(module.state_dict()), path, meta)
    return path


def load_weights(module: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load weights written by `save_weights` (or the ``model.*`` part of a step checkpoint).

    Args:
        module: the model to fill in place; keys and shapes must match exactly.
        path: ``.safetensors`` file.

    Returns:
        The metadata stored with the weights (JSON values decoded).

    Raises:
        InputError: missing or unreadable file, missing or unexpected keys, shape mismatch.
    """
    path = Path(path)
    tensors, raw_meta = load_tensors(path)
    expected = module.state_dict()
    if set(tensors) != set(expected) and any(k.startswith("model.") for k in tensors):
        stripped = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        if set(stripped) >= set(expected):
            tensors = stripped
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        raise InputError(f"weights do not fit this model: {'; '.join(parts)}", path)
    for key, value in expected.items():
        if tuple(tensors[key].shape) != tuple(value.shape):
            raise InputError(
                f"weights do not fit this model: {key!r} has shape {tuple(tensors[key].shape)}, "
                f"the model expects {tuple(value.shape)}",
                path,
            )
    module.load_state_dict(tensors, strict=True)
    return _decode_metadata(raw_meta)
