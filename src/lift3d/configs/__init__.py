"""Packaged YAML configs (``configs/`` in a checkout is a link to this folder).

`lift3d train ... --config NAME` accepts a path or the name of a file here
(``translate_demo`` or ``translate_demo.yaml``).
"""

from __future__ import annotations

from pathlib import Path

from lift3d.errors import InputError

CONFIG_DIR = Path(__file__).resolve().parent


def available_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def config_path(name_or_path: str | Path) -> Path:
    """Resolve a config file path or the name of a packaged config.

    Raises:
        InputError: neither a file nor a packaged config name.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    packaged = CONFIG_DIR / name
    if packaged.is_file() and len(path.parts) == 1:
        return packaged
    raise InputError(
        f"config not found (not a file, nor a packaged config: {', '.join(available_configs())})",
        name_or_path,
    )
