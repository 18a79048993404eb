"""Helpers shared by the evaluation modules: image files of a folder, folder checks, finite values."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lift3d.data.volume import image_suffix
from lift3d.errors import InputError


def image_files(folder: Path) -> list[Path]:
    """The visible image files (.nii.gz, .nii, .mha, ...) directly in `folder`, sorted by name."""
    return [
        p
        for p in sorted(folder.iterdir())
        if image_suffix(p) and p.is_file() and not p.name.startswith(".")
    ]


def image_stem(path: Path) -> str:
    """The file name without its image suffix (``case.nii.gz`` -> ``case``)."""
    return path.name[: -len(image_suffix(path))]


def check_folder(path: Path, what: str) -> None:
    """Raise InputError unless `path` is a folder with at least one visible entry."""
    if not path.exists():
        raise InputError(f"{what} folder not found", path)
    if not path.is_dir():
        raise InputError(f"{what} must be a folder", path)
    if not any(p for p in path.iterdir() if not p.name.startswith(".")):
        raise InputError(f"{what} folder is empty", path)


def finite(value: Any) -> float | None:
    """`value` as a float, or None for None, NaN and +-inf (JSON null, left out of means)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
