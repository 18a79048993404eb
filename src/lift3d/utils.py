"""Small shared helpers: atomic writes, output-location checks, seeding, device choice."""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from lift3d.errors import InputError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temporary name keeps the full suffix (``.nii.gz`` stays ``.nii.gz``) so writers that
    pick a format from the extension still work. Nothing is left behind on failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=suffix, dir=path.parent)  # fmt: skip
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text to `path` through a temporary file and a rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _is_within(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def check_output_path(
    out: str | Path,
    *,
    inputs: Sequence[str | Path] = (),
    overwrite: bool = False,
) -> Path:
    """Validate an output location before any work starts.

    Args:
        out: file or folder the command will write.
        inputs: input files or dataset folders; `out` may not lie inside (or be) any of them,
            so inputs are never overwritten.
        overwrite: allow replacing an existing output.

    Returns:
        `out` as a Path.

    Raises:
        InputError: the output lies inside an input, or exists and `overwrite` is False.
    """
    out = Path(out)
    for inp in inputs:
        inp = Path(inp)
        if out.resolve() == inp.resolve() or (inp.is_dir() and _is_within(out, inp)):
            raise InputError(f"output path lies inside the input {inp}; choose another", out)
    if out.exists() and not overwrite:
        if out.is_dir() and not any(out.iterdir()):
            return out
        raise InputError("output already exists; pass --overwrite to replace it", out)
    return out


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch RNGs (all devices)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(device: str = "auto") -> str:
    """Map ``auto|cpu|cuda|cuda:N`` to a concrete torch device string.

    Raises:
        InputError: CUDA was asked for but is not available.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but no CUDA device is available")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise InputError(f"unknown device {device!r}; use auto, cpu or cuda")
    return device
