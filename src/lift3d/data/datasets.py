"""Training datasets: whole volumes and 2D slices in model space, with a preprocessing cache.

`VolumeDataset` turns validated `Case` objects into model tensors ``(1, D, H, W)`` in [0, 1]
through `lift3d.data.preprocess.preprocess_case`. Decoding a ``.nii.gz`` and preprocessing it
costs far more than a training step on small grids, so the result is kept, in one of three ways:

- ``store_dir`` (``data.store``): the preprocessed on-disk store (`lift3d.data.store`), built
  once per dataset and preprocessing setting; every read opens a memory map and copies out what
  it needs, so the dataset holds no voxel data and memory stays bounded at any dataset size.
- ``cache=True``: in memory after the first access (small datasets; grows with the dataset).
- ``cache_dir``: uncompressed ``.npz`` files keyed on the source files (path, size, mtime) and
  the preprocessing settings, read whole into memory (the role of MONAI's PersistentDataset).

`SliceDataset` serves 2D slices of those volumes with their depth position s in [0, 1]. It
needs no volume at construction (the slice count is the model grid's), and reads volumes
through the volume dataset's cache; from a store it reads only the slices it returns.

With a DataLoader, pass ``collate_fn=collate_volumes`` (records and case ids stay lists). The
in-memory cache lives in each worker process, so use ``persistent_workers=True`` or a
``cache_dir`` when ``num_workers > 0``.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lift3d.data import preprocess
from lift3d.data.discovery import load_case
from lift3d.data.layouts import LABEL_MODALITIES, MASK_MODALITIES, Case
from lift3d.data.preprocess import MODEL_AXES
from lift3d.data.store import CaseStore, open_store, store_settings
from lift3d.data.volume import Volume
from lift3d.errors import InputError
from lift3d.utils import atomic_path
from lift3d.version import __version__

log = logging.getLogger(__name__)

MASK_KEY = "mask"  # item key of the foreground mask, always present
SLICE_AXES = ("axial", "coronal", "sagittal")
CACHE_FORMAT = 1  # bump when the on-disk cache layout changes


def default_kind(modality: str) -> str:
    """Preprocessing kind of a modality name: ``ct``, ``label``, ``mask`` or ``mr``."""
    name = modality.lower()
    if name == "ct":
        return "ct"
    if name in LABEL_MODALITIES:
        return "label"
    if name in MASK_MODALITIES:
        return "mask"
    return "mr"


def foreground_volume(volumes: Mapping[str, Volume], kinds: Mapping[str, str]) -> Volume:
    """A 0/1 foreground on the source grid when a case has no mask file.

    MR (skull-stripped BraTS): voxels non-zero in any MR modality. CT only: above -500 HU (not
    air). Otherwise everything.
    """
    ref = next(iter(volumes.values()))
    mr = [v.array for m, v in volumes.items() if kinds.get(m) == "mr"]
    ct = [v.array for m, v in volumes.items() if kinds.get(m) == "ct"]
    if mr:
        fg = np.logical_or.reduce([a != 0 for a in mr])
    elif ct:
        fg = np.logical_or.reduce([a > -500 for a in ct])
    else:
        fg = np.ones(ref.shape, bool)
    return ref.with_array(fg.astype(np.uint8))


def _safe_name(case_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", case_id)


def _file_identity(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


class VolumeDataset(Dataset):
    """Preprocessed whole volumes, one item per case.

    Args:
        cases: validated cases (`lift3d.data.discovery.discover_cases`).
        modalities: modality names to return, e.g. ``("mr", "ct")`` or the BraTS four.
        shape: model grid (D, H, W) in voxels.
        slice_axis: ``axial`` | ``coronal`` | ``sagittal``: the anatomical axis along D.
        spacing_mm: resample to this voxel size in mm first (one value, or one per R, A, S
            axis); None keeps the source spacing.
        kinds: modality -> ``mr`` | ``ct`` | ``label`` | ``mask``; missing names use
            `default_kind`.
        cache: keep preprocessed arrays in memory after the first access (ignored with
            `store_dir`).
        cache_dir: also keep them on disk here (reused by later runs with the same settings).
        store_dir: the on-disk store folder (`lift3d.data.store.resolve_store_dir`): built here,
            before the first item, for cases not yet in it; items are then read from memory
            maps and nothing is held in memory.
        skip_bad: with `store_dir`, leave out (with a warning) a case whose files fail to decode or
            check while the store is built, instead of raising.
        progress: tqdm bar while building the store (default: on a terminal).

    Items:
        ``{"case_id": str, "<mod>": FloatTensor (1, D, H, W) in [0, 1], "mask": (1, D, H, W)
        0/1 foreground, "record": PreprocessRecord.to_dict()}``.
    """

    def __init__(
        self,
        cases: Sequence[Case],
        modalities: Sequence[str],
        shape: Sequence[int],
        slice_axis: str = "axial",
        spacing_mm: float | Sequence[float] | None = None,
        kinds: Mapping[str, str] | None = None,
        cache: bool = True,
        cache_dir: str | Path | None = None,
        store_dir: str | Path | None = None,
        skip_bad: bool = False,
        progress: bool | None = None,
    ) -> None:
        if slice_axis not in SLICE_AXES:
            raise ValueError(f"slice_axis must be one of {SLICE_AXES}, got {slice_axis!r}")
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape must be 3 positive sizes (D, H, W), got {tuple(shape)}")
        if not modalities:
            raise ValueError("modalities must name at least one modality")
        self.cases = list(cases)
        self.modalities = tuple(m for m in modalities if m != MASK_KEY)
        self.shape = tuple(int(s) for s in shape)
        self.slice_axis = slice_axis
        if spacing_mm is not None:
            spacing_mm = np.broadcast_to(np.asarray(spacing_mm, dtype=float), (3,))
        self.spacing_mm = None if spacing_mm is None else tuple(float(s) for s in spacing_mm)
        self.kinds = {m: (kinds or {}).get(m, default_kind(m)) for m in self.modalities}
        self.kinds[MASK_KEY] = "mask"
        self.cache = cache
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self._memory: dict[int, tuple[dict[str, np.ndarray], dict]] = {}
        for case in self.cases:  # cheap: file lists only, no decoding
            for modality in self.modalities:
                if modality not in case.paths:
                    raise InputError(
                        f"modality {modality!r} is missing", case.expected_path(modality)
                    )
        self.store: CaseStore | None = None
        if store_dir is not None:
            self.store, self.cases = open_store(
                store_dir,
                self.cases,
                self._sources,
                store_settings(
                    self.modalities, self.kinds, self.shape, self.slice_axis, self.spacing_mm
                ),
                self._compute,
                skip_bad=skip_bad,
                progress=progress,
            )

    def __len__(self) -> int:
        return len(self.cases)

    # ------------------------------------------------------------------ preprocessing + cache

    def _settings(self) -> dict:

        return {
            "format": CACHE_FORMAT,
            "lift3d": __version__,
            "modalities": list(self.modalities),
            "shape": list(self.shape),
            "slice_axis": self.slice_axis,
            "spacing_mm": self.spacing_mm,
            "kinds": self.kinds,
        }

    def _cache_path(self, case: Case) -> Path:
        assert self.cache_dir is not None
        sources = {m: _file_identity(p) for m, p in sorted(case.paths.items())}
        key = json.dumps({"settings": self._settings(), "sources": sources}, sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return self.cache_dir / f"{_safe_name(case.case_id)}-{digest}.npz"

    def _sources(self, case: Case) -> dict[str, Path]:
        """The files a case's arrays are built from (its mask file too, when it has one)."""
        wanted = [*self.modalities, MASK_KEY] if MASK_KEY in case.paths else self.modalities
        return {m: case.paths[m] for m in wanted}

    def _compute(self, case: Case) -> tuple[dict[str, np.ndarray], dict]:

        wanted = list(self.modalities)
        if MASK_KEY in case.paths:
            wanted.append(MASK_KEY)
        volumes = load_case(case, wanted)
        if MASK_KEY not in volumes:
            volumes[MASK_KEY] = foreground_volume(volumes, self.kinds)
        arrays, record = preprocess.preprocess_case(
            volumes,
            shape=self.shape,
            kinds={m: self.kinds[m] for m in volumes},
            slice_axis=self.slice_axis,
            spacing_mm=self.spacing_mm,
            foreground=volumes[MASK_KEY].array > 0,
        )
        arrays = {m: np.ascontiguousarray(a, dtype=np.float32) for m, a in arrays.items()}
        record_dict = record.to_dict() if hasattr(record, "to_dict") else dict(record)
        return arrays, record_dict

    def _read_disk(self, path: Path) -> tuple[dict[str, np.ndarray], dict] | None:
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k[2:]: data[k] for k in data.files if k.startswith("a_")}
                record = json.loads(str(data["record"]))
        except Exception as exc:  # a damaged cache entry is rebuilt, never fatal
            log.warning("ignoring unreadable cache file %s (%s)", path, type(exc).__name__)
            return None
        if not all(m in arrays for m in (*self.modalities, MASK_KEY)):
            return None
        return arrays, record

    def _write_disk(self, path: Path, arrays: dict[str, np.ndarray], record: dict) -> None:

        buffer = io.BytesIO()
        payload = {f"a_{m}": a for m, a in arrays.items()}
        np.savez(buffer, record=np.array(json.dumps(record)), **payload)
        with atomic_path(path) as tmp:
            tmp.write_bytes(buffer.getvalue())

    def load_arrays(self, index: int) -> tuple[dict[str, np.ndarray], dict]:
        """Preprocessed (D, H, W) float32 arrays and the record dict of case `index`.

        The arrays are shared with the cache: copy before modifying them. From a store they are
        read-only memory maps (a mask may be uint8): index them and let them go.
        """
        if self.store is not None:
            arrays = {m: self.store.open(index, m) for m in (*self.modalities, MASK_KEY)}
            return arrays, self.store.record(index)
        if index in self._memory:
            return self._memory[index]
        case = self.cases[index]
        result = None
        disk_path = self._cache_path(case) if self.cache_dir is not None else None
        if disk_path is not None and disk_path.exists():
            result = self._read_disk(disk_path)
        if result is None:
            result = self._compute(case)
            if disk_path is not None:
                self._write_disk(disk_path, *result)
        if self.cache:
            self._memory[index] = result
        return result

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} cases")
        arrays, record = self.load_arrays(index)
        item: dict[str, Any] = {"case_id": self.cases[index].case_id}
        for modality in (*self.modalities, MASK_KEY):
            volume = np.array(arrays[modality], dtype=np.float32)  # a copy, also of a memory map
            item[modality] = torch.from_numpy(volume).unsqueeze(0)  # (1, D, H, W)
        item["record"] = copy.deepcopy(record)
        return item


class SliceDataset(Dataset):
    """2D slices of a `VolumeDataset`, with the slice's depth position.

    Args:
        volume_dataset: the volumes; its cache serves repeated reads of a case.
        axis: model-array axis to slice along: 0 (D, the dataset's slice axis; default), 1 (H)
            or 2 (W), or an anatomical plane name (``axial`` | ``coronal`` | ``sagittal``),
            mapped to the model axis that runs across that plane.
        modalities: subset of the volume dataset's modalities (default: all).
        context: k > 0 gives each modality as a slab of the slice and its k neighbours on each
            side, (1, 2k + 1, H', W'), neighbours beyond the volume's ends repeating the edge
            slice (as `lift3d.models.lift.slice_context` does for whole volumes); the mask
            stays the centre slice. 0: single slices.

    Items:
        ``{"case_id", "<mod>": (1, H', W'), "mask": (1, H', W'), "depth": s in [0, 1] (0 at
        index 0, 1 at the last slice), "index": slice index, "case_index": int}``.
    """

    def __init__(
        self,
        volume_dataset: VolumeDataset,
        axis: int | str = 0,
        modalities: Sequence[str] | None = None,
        context: int = 0,
    ) -> None:
        if context < 0:
            raise ValueError(f"context must be >= 0, got {context}")
        if isinstance(axis, str):
            if axis not in SLICE_AXES:
                raise ValueError(f"axis must be 0, 1, 2 or one of {SLICE_AXES}, got {axis!r}")
            # the plane's normal as a RAS axis (sagittal: R, coronal: A, axial: S) -> model axis
            axis = MODEL_AXES[volume_dataset.slice_axis].index(SLICE_AXES[::-1].index(axis))
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2 (of D, H, W), got {axis}")
        modalities = volume_dataset.modalities if modalities is None else tuple(modalities)
        unknown = [m for m in modalities if m not in volume_dataset.modalities]
        if unknown:
            raise ValueError(f"modalities {unknown} not in the volume dataset")
        self.volumes = volume_dataset
        self.axis = axis
        self.modalities = tuple(modalities)
        self.num_slices = volume_dataset.shape[axis]
        self.context = context
        self._last: tuple[int, tuple[dict[str, np.ndarray], dict]] | None = None

    def __len__(self) -> int:
        return len(self.volumes) * self.num_slices

    def _arrays(self, case_index: int) -> dict[str, np.ndarray]:
        store = getattr(self.volumes, "store", None)
        if self.volumes.cache or store is not None:  # a store: memory maps, opened per read
            return self.volumes.load_arrays(case_index)[0]
        if self._last is None or self._last[0] != case_index:  # no cache: keep one volume
            self._last = (case_index, self.volumes.load_arrays(case_index))
        return self._last[1][0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} slices")
        case_index, slice_index = divmod(index, self.num_slices)
        if getattr(self.volumes, "store", None) is not None and self.axis == 0:
            return self._from_store(case_index, slice_index)
        arrays = self._arrays(case_index)
        item: dict[str, Any] = {"case_id": self.volumes.cases[case_index].case_id}
        for modality in (*self.modalities, MASK_KEY):
            if self.context and modality != MASK_KEY:
                k = self.context
                idx = np.clip(
                    np.arange(slice_index - k, slice_index + k + 1), 0, self.num_slices - 1
                )
                slab = np.moveaxis(np.take(arrays[modality], idx, axis=self.axis), self.axis, 0)
                slab = np.ascontiguousarray(slab, dtype=np.float32)
                item[modality] = torch.from_numpy(slab).unsqueeze(0)
                continue
            plane = np.take(arrays[modality], slice_index, axis=self.axis)
            plane = np.ascontiguousarray(plane, dtype=np.float32)
            item[modality] = torch.from_numpy(plane).unsqueeze(0)
        item["depth"] = slice_index / (self.num_slices - 1) if self.num_slices > 1 else 0.0
        item["index"] = slice_index
        item["case_index"] = case_index
        return item

    def _from_store(self, case_index: int, slice_index: int) -> dict[str, Any]:
        """The item of slice `slice_index`, reading only its planes from the store."""
        store = self.volumes.store
        assert store is not None
        k, n = self.context, self.num_slices
        lo, hi = max(0, slice_index - k), min(n, slice_index + k + 1)
        item: dict[str, Any] = {"case_id": self.volumes.cases[case_index].case_id}
        for modality in (*self.modalities, MASK_KEY):
            if k and modality != MASK_KEY:
                planes = store.read_planes(case_index, modality, lo, hi)
                idx = np.clip(np.arange(slice_index - k, slice_index + k + 1), 0, n - 1) - lo
                slab = np.ascontiguousarray(planes[idx], dtype=np.float32)  # (2k + 1, H, W)
                item[modality] = torch.from_numpy(slab).unsqueeze(0)
                continue
            plane = store.read_planes(case_index, modality, slice_index, slice_index + 1)[0]
            item[modality] = torch.from_numpy(plane.astype(np.float32, copy=False)).unsqueeze(0)
        item["depth"] = slice_index / (n - 1) if n > 1 else 0.0
        item["index"] = slice_index
        item["case_index"] = case_index
        return item


def collate_volumes(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch dataset items: tensors stacked, numbers to tensors, everything else as lists.

    `torch.utils.data.default_collate` would try to merge the per-case ``record`` dicts key by
    key (and fail when their lists differ in length); here they stay a list of dicts.
    """
    if not items:
        return {}
    batch: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if all(isinstance(v, torch.Tensor) for v in values):
            batch[key] = torch.stack(values)
        elif all(isinstance(v, bool) for v in values):
            batch[key] = list(values)
        elif all(isinstance(v, int) for v in values):
            batch[key] = torch.tensor(values, dtype=torch.long)
        elif all(isinstance(v, int | float) for v in values):
            batch[key] = torch.tensor(values, dtype=torch.float32)
        else:
            batch[key] = list(values)
    return batch


def split_cases(
    cases: Sequence[Case], val_fraction: float, seed: int = 0
) -> tuple[list[Case], list[Case]]:
    """Deterministic train/validation split (same cases, fraction and seed -> same split).

    Cases are ordered by case_id first, so the split does not depend on discovery order. With
    ``val_fraction > 0`` and at least two cases, validation gets at least one case and training
    keeps at least one.

    Returns:
        (train, val), each sorted by case_id.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ordered = sorted(cases, key=lambda c: c.case_id)
    n = len(ordered)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    elif n < 2:
        n_val = 0
    order = np.random.default_rng(seed).permutation(n)
    val_idx = set(order[:n_val].tolist())
    train = [c for i, c in enumerate(ordered) if i not in val_idx]
    val = [c for i, c in enumerate(ordered) if i in val_idx]
    return train, val
