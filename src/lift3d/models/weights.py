"""A module's weights alone, as one safetensors file (``model.safetensors``, encoder files).

`save_weights` writes ``state_dict`` plus JSON metadata in the file header; `load_weights` fills
a module built with the same shapes and returns the metadata. The training engine's step
checkpoints (`lift3d.training.checkpoint`) reuse `save_tensors` / `load_tensors`.

Every file carries the SHA-256 of its tensors (names, dtypes, shapes and bytes, in name order)
in the header metadata (``sha256``); `load_tensors` recomputes it, so a damaged file (a flipped
bit, a truncated copy) is refused with a one-line `InputError` instead of loading wrong weights.
Files written before the checksum existed load without the check.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from lift3d.errors import InputError
from lift3d.utils import atomic_path

CHECKSUM_KEY = "sha256"


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


def tensors_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of named tensors: names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def _save_error(exc: SafetensorError) -> OSError:
    """safetensors reports I/O failures (a full disk ...) as its own error type."""
    text = str(exc)
    found = re.search(r"os error (\d+)|code: (\d+)", text)
    if found:
        code = int(found.group(1) or found.group(2))
        return OSError(code, os.strerror(code))
    return OSError(errno.EIO, f"safetensors could not write the file ({text[:200]})")


def save_tensors(
    tensors: dict[str, torch.Tensor],
    path: Path,
    metadata: dict[str, str],
    *,
    overwrite: bool | None = None,
) -> str:
    """Write named tensors and string metadata to a safetensors file (temp name, then rename).

    The metadata gets the tensors' checksum (`tensors_checksum`) under ``sha256``.

    Args:
        tensors: name -> tensor.
        path: output file.
        metadata: string values stored in the header.
        overwrite: as in `lift3d.utils.atomic_path`.

    Returns:
        The checksum.

    Raises:
        InputError: the file cannot be written (permission, read-only, full disk), or exists
            and `overwrite` is False.
    """
    tensors = _unshared(tensors)
    checksum = tensors_checksum(tensors)
    with atomic_path(path, overwrite=overwrite) as tmp:
        try:
            save_file(tensors, str(tmp), metadata={**metadata, CHECKSUM_KEY: checksum})
        except SafetensorError as exc:
            raise _save_error(exc) from None
    return checksum


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Named tensors (on the CPU) and the raw string metadata of a safetensors file.

    The stored checksum, when the file has one, is verified.

    Raises:
        InputError: the file is missing, not a readable safetensors file, or damaged (its
            tensors do not match the stored checksum).
    """
    if not path.is_file():
        raise InputError("weights file not found", path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open API)
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise InputError(f"not a readable safetensors file ({reason})", path) from None
    expected = metadata.get(CHECKSUM_KEY)
    if expected is not None and tensors_checksum(tensors) != expected:
        raise InputError(
            "weights file is damaged: its tensors do not match the stored checksum "
            "(copy it again or retrain)",
            path,
        )
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
        if k == CHECKSUM_KEY:
            continue
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def save_weights(
    module: nn.Module,
    path: str | Path,
    metadata: dict[str, Any] | None = None,
    *,
    overwrite: bool | None = None,
) -> Path:
    """Write a module's ``state_dict`` to a safetensors file (atomically, with a checksum).

    Args:
        module: the model (unwrapped).
        path: output ``.safetensors`` file.
        metadata: JSON-able values stored (JSON-encoded) in the file header.
        overwrite: as in `lift3d.utils.atomic_path`.

    Returns:
        `path` as a Path.
    """
    path = Path(path)
    meta = {str(k): json.dumps(v) for k, v in (metadata or {}).items()}
    save_tensors(dict(module.state_dict()), path, meta, overwrite=overwrite)
    return path


def state_dict_mismatch(
    expected: dict[str, torch.Tensor],
    tensors: dict[str, torch.Tensor],
    optional: tuple[str, ...] = (),
) -> str | None:
    """Why `tensors` cannot fill a module whose ``state_dict()`` is `expected`, or None.

    Args:
        expected: the module's state dict.
        tensors: the tensors read from a file.
        optional: key suffixes a file may lack (e.g. ``num_batches_tracked``).

    Returns:
        ``"missing keys [...]; unexpected keys [...]"`` or ``"'k' has shape (..), the model
        expects (..)"``; None when every key and shape fits.
    """
    missing = sorted(k for k in expected if k not in tensors and not k.endswith(optional))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        return "; ".join(parts)
    for key, value in expected.items():  # the model's order
        if key in tensors and tuple(tensors[key].shape) != tuple(value.shape):
            return (
                f"{key!r} has shape {tuple(tensors[key].shape)}, the model expects "
                f"{tuple(value.shape)}"
            )
    return None


def load_weights(
    module: nn.Module, path: str | Path, mismatch_hint: str | None = None
) -> dict[str, Any]:
    """Load weights written by `save_weights` (or the ``model.*`` part of a step checkpoint).

    Args:
        module: the model to fill in place; keys and shapes must match exactly.
        path: ``.safetensors`` file.
        mismatch_hint: what to do when the weights do not fit `module` (appended to the error).

    Returns:
        The metadata stored with the weights (JSON values decoded).

    Raises:
        InputError: missing, unreadable or damaged file (checksum), missing or unexpected keys,
            shape mismatch.
    """
    path = Path(path)
    tensors, raw_meta = load_tensors(path)
    expected = module.state_dict()
    if set(tensors) != set(expected) and any(k.startswith("model.") for k in tensors):
        stripped = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        if set(stripped) >= set(expected):
            tensors = stripped
    problem = state_dict_mismatch(expected, tensors)
    if problem:
        hint = f"; {mismatch_hint}" if mismatch_hint else ""
        raise InputError(f"weights do not fit this model: {problem}{hint}", path)
    module.load_state_dict(tensors, strict=True)
    return _decode_metadata(raw_meta)
