"""Volumes on the evaluation grid of generation scoring: the generated files of a folder (and
how ``lift3d generate`` made them), the reference or floor files of a dataset or folder, and each
volume read in RAS and put on the common grid (:func:`prepare_volume`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lift3d.data.discovery import discover_cases
from lift3d.data.preprocess import to_model_space
from lift3d.data.volume import read_volume, reorient
from lift3d.errors import InputError
from lift3d.evaluation.common import image_files
from lift3d.metrics.image import normalise_mr


def read_ras(path: Path) -> np.ndarray:
    """The image at `path` as a RAS-ordered (R, A, S) array."""
    return reorient(read_volume(path), "RAS").array


def read_ras_grid(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The image at `path` as a RAS-ordered array and its voxel spacing (mm)."""
    volume = reorient(read_volume(path), "RAS")
    return volume.array, volume.spacing


def prepare_volume(array_ras: np.ndarray, eval_shape: Sequence[int]) -> np.ndarray:
    """RAS (X, Y, Z) array -> (D=S, H=A, W=R) float32 in [0, 1] on `eval_shape`."""
    arr = np.ascontiguousarray(to_model_space(np.asarray(array_ras, dtype=np.float32), "axial"))
    arr = normalise_mr(arr, arr != 0).astype(np.float32)
    t = torch.from_numpy(arr)[None, None]
    if tuple(arr.shape) != tuple(eval_shape):
        t = F.interpolate(
            t, size=tuple(int(s) for s in eval_shape), mode="trilinear", align_corners=False
        )
    return t[0, 0].numpy()


def generated_files(pred_dir: Path) -> tuple[list[Path], str | None]:
    """The generated volumes of `pred_dir` (first modality when several were generated).

    Reads ``generation.json`` (written by `lift3d generate`) when present.

    Returns:
        (files, modality or None).
    """
    meta_path = pred_dir / "generation.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        modality = meta.get("modalities", [None])[0]
        files = [pred_dir / s["files"][modality] for s in meta.get("samples", [])]
        return [f for f in files if f.is_file()], modality
    return image_files(pred_dir), None


def generation_info(pred_dir: Path) -> dict[str, Any] | None:
    """How `lift3d generate` made the volumes of `pred_dir` (None without generation.json):
    model, seed, mapper flag, output detail and intensity map, so a summary says which arm it
    scored."""
    meta_path = Path(pred_dir) / "generation.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    detail = meta.get("detail") or {}
    return {
        "model": meta.get("model"),
        "seed": meta.get("seed"),
        "use_mapper": meta.get("use_mapper"),
        "n": meta.get("n"),
        "detail": bool(detail.get("applied")),
        "detail_sigma": detail.get("sigma"),
        # written before the map existed: None (G's raw intensities)
        "intensity_map": (meta.get("intensity_map") or {}).get("applied"),
    }


def reference_files(ref_dir: Path, modality: str | None) -> list[tuple[str, Path]]:
    """(case id, file) of the reference volumes: a BraTS/SynthRAD/manifest dataset (its
    `modality`, default t1n / mr) or a plain folder of image files.

    Raises:
        InputError: a dataset case lacks the modality.
    """
    files = image_files(ref_dir)
    if files:
        return [(f.name.split(".")[0], f) for f in files]
    cases = discover_cases(ref_dir, validate="header", required=())
    out = []
    for case in cases:
        mod = (
            modality
            if modality in case.paths
            else next((m for m in ("t1n", "mr") if m in case.paths), None)
        )
        if mod is None:
            raise InputError(
                f"reference case {case.case_id} has no {modality or 't1n/mr'} image", case.root
            )
        out.append((case.case_id, case.paths[mod]))
    return out
