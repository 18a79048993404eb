"""A preprocessed on-disk store: model-space arrays as memory-mapped ``.npy`` files.

Training reads a case's model-space arrays ``(D, H, W)`` many times; decoding a ``.nii.gz`` and
preprocessing it costs far more than a training step, and keeping every decoded case in memory
(``data.cache``) grows with the dataset (~150 MB per BraTS case, ~190 GB for BraTS 2023). The
store writes each case once, per dataset and preprocessing setting, as plain ``.npy`` files;
datasets map them read-only per read (as ``np.load(mmap_mode="r")`` does, with random-access
advice) and copy out only the slice they need, so process memory stays bounded whatever the number of cases, and later runs never decode
the sources again (the role of MONAI's PersistentDataset, with memory maps).

Layout of a store folder (``data.store``)::

    STORE/<settings key>/settings.json     the preprocessing settings, for people
    STORE/<settings key>/manifest.json     the trusted index: one entry per built case
    STORE/<settings key>/cases/<case>-<paths>.<sources>.<modality>.npy

Trust and invalidation:

- The folder is keyed on everything that changes the arrays (`store_settings`: model grid,
  spacing, slice axis, modalities and their kinds, the MR percentiles and the CT window, the
  lift3d version and the store format). Other settings use another folder; nothing is shared.
- Each entry records its source files' identity: resolved path, size and ``mtime_ns``. A case
  whose sources changed (rewritten, touched, replaced, a mask added) is preprocessed again
  before use; its old files are deleted. Size and mtime, not a content hash: hashing BraTS 2023
  (~5,000 files, ~15 GB compressed) would read the whole dataset at every training start, the
  cost the store exists to avoid; size + mtime is what make and rsync trust. A file rewritten
  with the same size and then given its old mtime back (``touch -r``) is not noticed: delete
  the store folder to force a rebuild.
- A build writes each array to a temporary name and renames it; the manifest is written after
  the files it lists (every 30 s during a long build, and at the end), also through a rename.
  A build that fails (full disk, killed) leaves at most files that no manifest lists; a later
  run rebuilds those cases and removes the temporary files of dead writers. A file whose size
  differs from its manifest entry is not trusted either.
- Concurrent builders (two runs on the same data, DDP ranks) take an exclusive lock on the
  settings folder; the second waits, then finds the cases built. Reading a complete store takes
  no lock, so a store on a read-only file system works.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import mmap
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lift3d.constants import CT_WINDOW_HU, MR_PERCENTILES
from lift3d.data.layouts import Case
from lift3d.errors import InputError
from lift3d.utils import (
    atomic_path,
    atomic_write_text,
    clean_stale_temps,
    folder_lock,
    write_error,
)
from lift3d.version import __version__

log = logging.getLogger(__name__)

STORE_FORMAT = 1  # bump when the layout of a store folder changes
AUTO = "auto"  # data.store value: a store beside the dataset
AUTO_SUFFIX = ".lift3d-store"  # DATA -> DATA.lift3d-store
MANIFEST = "manifest.json"
SETTINGS = "settings.json"
LOCK = ".lift3d-store.lock"
MANIFEST_EVERY_S = 30.0  # during a build, the manifest is rewritten at most this often

# Preprocessed arrays of one case, and its PreprocessRecord.to_dict().
Computed = tuple[dict[str, np.ndarray], dict[str, Any]]


def resolve_store_dir(store: str, data_root: str | Path) -> Path | None:
    """The store folder of a ``data.store`` value.

    Args:
        store: ``""`` (no store), ``"auto"`` (``DATA.lift3d-store`` beside the dataset folder or
            manifest file `data_root`) or a folder.
        data_root: the dataset (``data.root``).

    Returns:
        The folder, or None when the store is off.
    """
    if not store:
        return None
    if store == AUTO:
        root = Path(data_root).expanduser().resolve()
        return root.parent / f"{root.name}{AUTO_SUFFIX}"
    return Path(store).expanduser()


def store_settings(
    modalities: Sequence[str],
    kinds: Mapping[str, str],
    shape: Sequence[int],
    slice_axis: str,
    spacing_mm: Sequence[float] | None,
) -> dict[str, Any]:
    """Everything that changes a case's model-space arrays (the store folder's key)."""
    return {
        "format": STORE_FORMAT,
        "lift3d": __version__,  # preprocessing code may change between versions
        "modalities": list(modalities),  # the MR set also decides the foreground (crop, scale)
        "kinds": {m: kinds[m] for m in sorted(kinds)},
        "shape": [int(s) for s in shape],
        "slice_axis": slice_axis,
        "spacing_mm": None if spacing_mm is None else [float(s) for s in spacing_mm],
        "mr_percentiles": list(MR_PERCENTILES),
        "ct_window_hu": list(CT_WINDOW_HU),
    }


def _digest(value: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:n]


def source_identity(paths: Mapping[str, Path]) -> dict[str, list]:
    """Modality -> [resolved path, size, mtime_ns] of the files a case is built from."""
    out = {}
    for modality, path in sorted(paths.items()):
        try:
            st = Path(path).stat()
        except OSError as exc:
            raise InputError(f"cannot read a source file ({exc.strerror})", path) from None
        out[modality] = [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]
    return out


def _entry_key(case: Case, identity: Mapping[str, list]) -> str:
    """Case id + the digest of its source paths: two datasets with one case id do not collide."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", case.case_id)
    return f"{safe}-{_digest({m: v[0] for m, v in identity.items()}, 8)}"


class CaseStore:
    """An opened store: file names and records of a list of cases, no voxel data.

    Args:
        folder: the settings folder.
        entries: one manifest entry per case, in dataset order.
    """

    def __init__(self, folder: Path, entries: Sequence[Mapping[str, Any]]) -> None:
        self.folder = Path(folder)
        self.entries = list(entries)

    def __len__(self) -> int:
        return len(self.entries)

    def record(self, index: int) -> dict[str, Any]:
        """The case's `PreprocessRecord.to_dict()`."""
        return self.entries[index]["record"]

    def _path(self, index: int, modality: str) -> Path:
        return self.folder / "cases" / self.entries[index]["files"][modality]["name"]

    def open(self, index: int, modality: str) -> np.ndarray:
        """A read-only memory map of one (D, H, W) array; nothing is read until indexed.

        Drop it after use: the mapping (and the pages read through it) goes with the object.
        The map is advised random access: a page fault reads that page, not the kernel's
        read-around window (megabytes per fault on some disks: a 240 x 240 slice of a store
        larger than the page cache then cost ~14 MB of disk reads per item).

        Raises:
            InputError: the file is gone or damaged (the store changed under a running job).
        """
        info = self.entries[index]["files"][modality]
        path = self._path(index, modality)
        try:
            array = _map_npy(path)
        except (OSError, ValueError) as exc:
            raise InputError(
                f"data store file unreadable ({type(exc).__name__}); it was changed or removed "
                "while in use: run again to rebuild it",
                path,
            ) from None
        if array.shape != tuple(info["shape"]) or array.dtype.str != info["dtype"]:
            raise InputError("data store file does not match its manifest entry", path)
        return array

    def read_planes(self, index: int, modality: str, lo: int, hi: int) -> np.ndarray:
        """Planes ``lo .. hi - 1`` along D, copied out: (hi - lo, H, W), only those bytes read.

        The range is asked for in one go (``MADV_WILLNEED``) before it is copied, instead of
        one page fault per page.
        """
        array = self.open(index, modality)
        mm = array.base
        plane = array[0].nbytes
        if isinstance(mm, mmap.mmap) and hasattr(mmap, "MADV_WILLNEED") and hi > lo:
            start = len(mm) - array.nbytes + lo * plane  # the header comes first
            aligned = start - start % mmap.PAGESIZE
            with contextlib.suppress(OSError):
                mm.madvise(mmap.MADV_WILLNEED, aligned, start + (hi - lo) * plane - aligned)
        return np.array(array[lo:hi])


def _map_npy(path: Path) -> np.ndarray:
    """Memory-map a C-order ``.npy`` read-only with random-access advice."""
    with open(path, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        if major == 1:
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        offset = f.tell()
        if fortran or dtype.hasobject:
            raise ValueError("not a C-order numeric array")
        size = offset + int(np.prod(shape)) * dtype.itemsize
        if os.fstat(f.fileno()).st_size != size:
            raise ValueError("truncated")
        mm = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)
    if hasattr(mmap, "MADV_RANDOM"):
        mm.madvise(mmap.MADV_RANDOM)
    return np.ndarray(shape, dtype, buffer=mm, offset=offset)


def _read_manifest(folder: Path, settings: Mapping[str, Any]) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:  # damaged: rebuilt, never trusted
        log.warning("ignoring unreadable data store manifest %s (%s)", path, type(exc).__name__)
        return {}
    if manifest.get("settings") != dict(settings) or not isinstance(manifest.get("cases"), dict):
        log.warning("ignoring data store manifest %s written for other settings", path)
        return {}
    return manifest["cases"]


def _entry_valid(folder: Path, entry: Mapping[str, Any] | None, identity: Mapping) -> bool:
    if entry is None or entry.get("sources") != identity:
        return False
    for info in entry["files"].values():
        try:
            if (folder / "cases" / info["name"]).stat().st_size != info["bytes"]:
                return False
        except OSError:
            return False
    return True


def _write_array(path: Path, array: np.ndarray) -> int:
    """Write one ``.npy`` atomically (temp name, rename); return its size in bytes."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
        size = tmp.stat().st_size
    return size


def _store_dtype(array: np.ndarray, kind: str) -> np.ndarray:
    """Masks and small labels as uint8 (a quarter of the bytes) when that is exact."""
    if kind in ("mask", "label") and array.size and array.min() >= 0 and array.max() <= 255:
        small = array.astype(np.uint8)
        if np.array_equal(small, array):
            return small
    return np.ascontiguousarray(array, dtype=np.float32)


def _build_case(
    folder: Path, case: Case, key: str, identity: Mapping, kinds: Mapping[str, str], computed
) -> dict[str, Any]:
    arrays, record = computed
    files = {}
    for modality, array in arrays.items():
        array = _store_dtype(array, kinds.get(modality, "mr"))
        name = f"{key}.{_digest(identity, 8)}.{modality}.npy"
        size = _write_array(folder / "cases" / name, array)
        files[modality] = {
            "name": name,
            "shape": list(array.shape),
            "dtype": array.dtype.str,
            "bytes": size,
        }
    return {"case_id": case.case_id, "sources": identity, "files": files, "record": record}


def _write_manifest(folder: Path, settings: Mapping[str, Any], cases: Mapping) -> None:
    text = json.dumps({"settings": settings, "cases": cases}, sort_keys=True)
    atomic_write_text(folder / MANIFEST, text)


def _remove_unlisted(folder: Path, cases: Mapping[str, Mapping]) -> None:
    """Delete files no entry lists (a rebuilt case's old files; a failed build's leftovers)."""
    listed = {f["name"] for e in cases.values() for f in e["files"].values()}
    for path in (folder / "cases").glob("*.npy"):
        if path.name not in listed and not path.name.startswith("."):
            with contextlib.suppress(OSError):
                path.unlink()


def open_store(
    store_dir: str | Path,
    cases: Sequence[Case],
    sources: Callable[[Case], Mapping[str, Path]],
    settings: Mapping[str, Any],
    compute: Callable[[Case], Computed],
    *,
    skip_bad: bool = False,
    progress: bool | None = None,
) -> tuple[CaseStore, list[Case]]:
    """Open the store of `cases`, building what is missing or out of date first.

    Args:
        store_dir: the store folder (`resolve_store_dir`); created if needed.
        cases: the dataset's cases.
        sources: case -> modality -> file, the files its arrays are built from.
        settings: `store_settings` of the dataset.
        compute: case -> (model-space arrays by modality, record dict); decodes the sources.
        skip_bad: leave out a case whose files fail to decode or check (with a warning)
            instead of raising.
        progress: tqdm bar while building (default: when stderr is a terminal).

    Returns:
        (store, cases): the opened store and the cases it holds, in the given order (all of
        them unless `skip_bad` dropped some).

    Raises:
        InputError: a source file is unreadable or invalid; the store cannot be written (full
            disk, permission): nothing half-written is trusted by a later run.
    """
    folder = Path(store_dir) / _digest(dict(settings))
    identities = [source_identity(sources(case)) for case in cases]
    keys = [_entry_key(case, ident) for case, ident in zip(cases, identities)]
    listed = _read_manifest(folder, settings)
    todo = [
        i
        for i, (key, ident) in enumerate(zip(keys, identities))
        if not _entry_valid(folder, listed.get(key), ident)
    ]
    bad: set[int] = set()
    if todo:
        listed, bad = _build(
            folder, cases, keys, identities, settings, compute, todo, skip_bad, progress
        )
    kept = [i for i in range(len(cases)) if i not in bad]
    store = CaseStore(folder, [listed[keys[i]] for i in kept])
    return store, [cases[i] for i in kept]


def _build(
    folder: Path,
    cases: Sequence[Case],
    keys: Sequence[str],
    identities: Sequence[Mapping],
    settings: Mapping[str, Any],
    compute: Callable[[Case], Computed],
    todo: Sequence[int],
    skip_bad: bool,
    progress: bool | None,
) -> tuple[dict[str, Any], set[int]]:
    from tqdm.auto import tqdm

    try:
        (folder / "cases").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(exc, folder) from None
    # one builder at a time; a second one waits and then reuses what the first wrote
    with folder_lock(folder, wait=True, name=LOCK):
        listed = _read_manifest(folder, settings)  # another builder may have finished meanwhile
        todo = [i for i in todo if not _entry_valid(folder, listed.get(keys[i]), identities[i])]
        if not todo:
            return listed, set()
        clean_stale_temps(folder / "cases", recursive=False)
        if not (folder / SETTINGS).exists():
            atomic_write_text(folder / SETTINGS, json.dumps(dict(settings), indent=2) + "\n")
        log.info("data store %s: preprocessing %d of %d cases", folder, len(todo), len(cases))
        kinds = settings.get("kinds", {})
        bad: set[int] = set()
        tty = sys.stderr.isatty() if progress is None else progress
        last_write = time.monotonic()
        for i in tqdm(todo, desc="data store", unit="case", disable=not tty, dynamic_ncols=True):
            try:
                computed = compute(cases[i])
            except InputError as exc:
                if not skip_bad:
                    raise
                log.warning("skipping case %s: %s", cases[i].case_id, exc)
                bad.add(i)
                continue
            listed[keys[i]] = _build_case(folder, cases[i], keys[i], identities[i], kinds, computed)
            if time.monotonic() - last_write > MANIFEST_EVERY_S:
                _write_manifest(folder, settings, listed)
                last_write = time.monotonic()
        _write_manifest(folder, settings, listed)
        _remove_unlisted(folder, listed)
    return listed, bad
