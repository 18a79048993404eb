"""Scores of real sets shared by several generation evaluations (a small on-disk cache).

Two evaluations that share an evaluation encoder (``lift3d evaluate --task generate
--eval-encoder FILE``, e.g. LiFT and ``--no-mapper``) score the same real sets the same way: the
references' own MS-SSIM / SSIM diversity and, with ``--floor``, the floor set against the
references. Those scores depend only on the real files, the encoder and the settings, so the
first evaluation writes them beside the encoder file (``FILE`` without its suffix +
``.scores/``) and the next one reads them instead of recomputing.

A cached entry is used only when its whole key matches: the files (resolved path, size,
modification time in ns), the encoder's identity (its weights hash included), the settings
and the lift3d version; anything else is recomputed. Entries are written atomically; two
evaluations computing the same entry at once write the same content.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from lift3d.utils import atomic_write_text
from lift3d.version import __version__

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
# Identity fields that say where an encoder was loaded from or saved to, not what it is.
_WHERE = ("loaded_from", "saved_to")


def cache_folder(eval_encoder: str | Path | None) -> Path | None:
    """The cache folder of an ``--eval-encoder`` file (None without one)."""
    if eval_encoder is None:
        return None
    path = Path(eval_encoder)
    return path.with_name(path.stem + ".scores")


def file_identity(paths: Iterable[str | Path]) -> list[list[Any]]:
    """[resolved path, size, mtime_ns] of each file, in order."""
    out = []
    for p in paths:
        path = Path(p).resolve()
        st = path.stat()
        out.append([str(path), int(st.st_size), int(st.st_mtime_ns)])
    return out


def encoder_key(identity: Mapping[str, Any]) -> dict[str, Any]:
    """The encoder identity without where it was loaded from or saved to."""
    return {k: v for k, v in identity.items() if k not in _WHERE}


def cached_scores(
    folder: Path | None, key: Mapping[str, Any], compute: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """``compute()``, or its earlier result from `folder` when one was stored under `key`.

    Args:
        folder: the cache folder (:func:`cache_folder`); None computes without caching.
        key: JSON-serialisable description of everything the scores depend on.
        compute: returns the scores (a JSON-serialisable dict).
    """
    if folder is None:
        return compute()
    full = {"format": CACHE_FORMAT, "lift3d": __version__, **key}
    text = json.dumps(full, sort_keys=True, default=str)
    path = folder / f"{hashlib.sha256(text.encode()).hexdigest()[:24]}.json"
    if path.is_file():
        try:
            entry = json.loads(path.read_text())
            if json.dumps(entry.get("key"), sort_keys=True, default=str) == text:
                log.info("reusing %s scores from %s", key.get("what", "cached"), path)
                return entry["scores"]
        except (OSError, json.JSONDecodeError, AttributeError):
            pass  # unreadable or another key: recompute and replace it
    scores = compute()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"key": json.loads(text), "scores": scores}, indent=1, default=float)
        atomic_write_text(path, body, overwrite=True)
    except OSError as exc:  # a cache that cannot be written costs time, never a result
        log.warning("could not write the score cache %s (%s)", path, exc)
    return scores
