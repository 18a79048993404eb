"""Paired tasks (mr2ct, missing): pair predictions with references and score every case.

Pairs prediction and reference files by case id, checks each prediction lies on its reference
grid, computes the task's image metrics (:mod:`lift3d.metrics.image`) and the through-plane
coherence metrics (:mod:`lift3d.metrics.consistency`, on RAS-reoriented arrays) per case, and
summarises them (mean ± std over cases).

Prediction layouts (those of ``lift3d translate`` folder mode):

- ``mr2ct``: ``PRED/<case_id>/sct.nii.gz`` (any supported image suffix), scored against the
  SynthRAD case's ``ct`` inside its ``mask`` (or ``--mask-name``), source = the case's ``mr``.
- ``missing``: ``PRED/<case_id>/<case_id>-<mod>.nii.gz`` for a BraTS modality ``mod``, scored
  against the BraTS case's ``<mod>`` over its brain (non-zero) region (or ``--mask-name``).
  A case with predictions for several modalities gives one entry per modality, keyed
  ``<case_id>-<mod>``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lift3d.constants import BRATS_MODALITIES, SCT_STEM
from lift3d.data.discovery import discover_cases, read_checked
from lift3d.data.volume import Volume, read_volume, reorient
from lift3d.errors import InputError
from lift3d.evaluation.common import check_folder, finite, image_files, image_stem
from lift3d.metrics import consistency, image

log = logging.getLogger(__name__)

IMAGE_METRICS = {"mr2ct": ("mae", "psnr", "ssim"), "missing": ("psnr", "ssim", "mse")}
COHERENCE_METRICS = (
    "zgrad_error",
    "zgrad_ratio",
    "dz_mae",
    "dz_corr",
    "psnr_axial",
    "psnr_coronal",
    "psnr_sagittal",
    "ssim_axial",
    "ssim_coronal",
    "ssim_sagittal",
)
GRID_ATOL_MM = 1e-3


# ---------------------------------------------------------------- pairing


def find_predictions(pred_dir: Path, task: str) -> dict[str, tuple[str, str | None, Path]]:
    """Entry key -> (case_id, modality or None, prediction file) for a prediction folder.

    Raises:
        InputError: no prediction in the task's layout (module docstring).
    """
    found: dict[str, list[tuple[str | None, Path]]] = {}
    for case_dir in sorted(p for p in pred_dir.iterdir() if p.is_dir()):
        if case_dir.name.startswith("."):
            continue
        files = {image_stem(p): p for p in image_files(case_dir)}
        case_id = case_dir.name
        if task == "mr2ct":
            if SCT_STEM in files:
                found[case_id] = [(None, files[SCT_STEM])]
        else:
            hits = [
                (stem[len(case_id) + 1 :], path)
                for stem, path in files.items()
                if stem.startswith(case_id + "-") and stem[len(case_id) + 1 :] in BRATS_MODALITIES
            ]
            if hits:
                found[case_id] = hits
    if not found:
        expected = "<case_id>/sct.nii.gz" if task == "mr2ct" else "<case_id>/<case_id>-<mod>.nii.gz"
        raise InputError(f"no predictions found (expected {expected})", pred_dir)
    entries = {}
    for case_id, hits in found.items():
        for modality, path in hits:
            key = case_id if len(hits) == 1 else f"{case_id}-{modality}"
            entries[key] = (case_id, modality, path)
    return entries


def prediction_coverage(
    task: str, pred_dir: str | Path, ref_dir: str | Path
) -> tuple[list[str], list[str]]:
    """Which reference cases have no prediction, and which predicted cases no reference.

    Returns:
        (missing, extra): sorted case ids. `missing`: reference cases with no prediction file
        (missing: with none for any modality); `extra`: prediction folders whose case is not
        in the reference dataset.

    Raises:
        InputError: a folder missing or empty, no prediction in the task's layout.
    """
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    check_folder(pred_dir, "prediction")
    check_folder(ref_dir, "reference")
    predicted = {cid for cid, _, _ in find_predictions(pred_dir, task).values()}
    layout = "synthrad" if task == "mr2ct" else "brats"
    refs = {c.case_id for c in discover_cases(ref_dir, layout=layout, validate=False)}
    return sorted(refs - predicted), sorted(predicted - refs)


def pair_cases(
    task: str, pred_dir: str | Path, ref_dir: str | Path, mask_name: str | None = None
) -> list[dict[str, Any]]:
    """Pair every prediction with its reference (and mask and source) by case id.

    Returns:
        One dict per entry: ``key, case_id, modality, pred, ref, mask, source`` (paths or None),
        sorted by key.

    Raises:
        InputError: a folder missing or empty, no case in common, a reference or mask file missing.
    """
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    check_folder(pred_dir, "prediction")
    check_folder(ref_dir, "reference")
    preds = find_predictions(pred_dir, task)
    layout = "synthrad" if task == "mr2ct" else "brats"
    refs = {c.case_id: c for c in discover_cases(ref_dir, layout=layout, validate=False)}
    common = sorted(k for k, (cid, _, _) in preds.items() if cid in refs)
    if not common:
        raise InputError(
            f"no case in common between the predictions ({len(preds)}) and the references "
            f"({len(refs)}) under {ref_dir}",
            pred_dir,
        )
    unmatched = sorted({cid for cid, _, _ in preds.values() if cid not in refs})
    if unmatched:
        log.warning("%d predicted case(s) have no reference: %s", len(unmatched), unmatched[:5])
    pairs = []
    for key in common:
        case_id, modality, pred = preds[key]
        case = refs[case_id]
        target = "ct" if task == "mr2ct" else modality
        if target not in case.paths:
            raise InputError(
                f"reference {target!r} for case {case_id} not found", case.expected_path(target)
            )
        name = mask_name if mask_name is not None else ("mask" if task == "mr2ct" else None)
        mask = case.paths.get(name) if name else None
        if mask_name is not None and mask is None:
            raise InputError(f"mask {mask_name!r} not found", case.expected_path(mask_name))
        if task == "mr2ct" and mask is None:
            log.warning("case %s has no mask: scoring the whole volume", case_id)
        source = case.paths.get("mr") if task == "mr2ct" else None
        pairs.append(
            {
                "key": key,
                "case_id": case_id,
                "modality": modality,
                "pred": pred,
                "ref": case.paths[target],
                "mask": mask,
                "source": source,
            }
        )
    return pairs


# ---------------------------------------------------------------- per-case metrics


def _load_on_grid(path: Path, ref: Volume, what: str) -> Volume:
    vol = read_volume(path) if what != "mask" else read_checked(path, "mask")
    if vol.shape != ref.shape:
        raise InputError(f"{what} shape {vol.shape} differs from the reference {ref.shape}", path)
    if not vol.same_grid(ref, GRID_ATOL_MM):
        diff = float(np.abs(vol.affine - ref.affine).max())
        raise InputError(
            f"{what} is not on the reference grid: affine differs by {diff:.4g} mm "
            f"(tolerance {GRID_ATOL_MM} mm; reference {ref.path})",
            path,
        )
    if vol.array.dtype.kind in "fc" and not np.all(np.isfinite(vol.array)):
        raise InputError(f"{what} has NaN or Inf voxels", path)
    return vol


def ras_coherence_metrics(
    pred: np.ndarray,
    target: np.ndarray,
    mask: np.ndarray,
    data_range: float,
    affine: np.ndarray,
    crop: int = 0,
) -> tuple[dict[str, float], np.ndarray]:
    """Coherence metrics of a prepared pair stored in file order: reorient to RAS, then score.

    Args:
        pred, target: (I, J, K) prepared images in file order.
        mask: (I, J, K) region.
        data_range: intensity range for PSNR / SSIM.
        affine: (4, 4) voxel -> RAS mm of the grid; the arrays are reoriented to RAS (lossless
            permute/flip) so the slice axis is the world's axial axis whatever the file's axes.
        crop: in-plane border crop for the per-slice SSIM.

    Returns:
        :func:`lift3d.metrics.consistency.coherence_metrics` of the RAS arrays: (metrics,
        (S,) per-axial-slice mean absolute error, inferior to superior).
    """
    arrays = (pred, target, np.asarray(mask) > 0)
    p, t, m = (reorient(Volume(np.asarray(a), affine), "RAS").array for a in arrays)
    return consistency.coherence_metrics(p, t, m, data_range, crop=crop)


def score_pair(task: str, pair: dict[str, Any]) -> tuple[dict[str, float], np.ndarray]:
    """Image + coherence metrics of one prediction/reference pair (see module docstring).

    Returns:
        (metrics, z_profile): metric name -> value, and the per-axial-slice mean absolute error
        (HU for mr2ct, [0, 1] scale for missing; inferior to superior).
    """
    # The reference is checked as training data is (finite, not constant, 3D); the region
    # (mask) must not be empty. A prediction only needs to be finite and on the reference grid.
    ref = read_checked(pair["ref"], "ct" if task == "mr2ct" else pair["modality"])
    pred = _load_on_grid(pair["pred"], ref, "prediction")
    mask = None
    if pair["mask"] is not None:
        mask = _load_on_grid(pair["mask"], ref, "mask").array > 0
    if task == "mr2ct":
        metrics = image.synthrad_metrics(pred.array, ref.array, mask)
        region = np.ones(ref.shape, bool) if mask is None else mask
        p, t = image.synthrad_prepare(pred.array, ref.array, region)
        data_range, crop = image.HU_RANGE, image.SYNTHRAD_SSIM_CROP
    else:
        metrics = image.brasyn_metrics(pred.array, ref.array, mask)
        p, t, region = image.brasyn_prepare(pred.array, ref.array, mask)
        data_range, crop = 1.0, 0
    coherence, profile = ras_coherence_metrics(p, t, region, data_range, ref.affine, crop)
    metrics.update(coherence)
    return metrics, profile


def score_cases(
    task: str, pairs: Sequence[dict[str, Any]], progress: bool = True
) -> dict[str, dict[str, Any]]:
    """Score every pair: entry key -> metrics, resolved file paths, ``modality`` (missing) and
    ``z_profile`` (per-axial-slice mean absolute error, None where a slice has no mask).

    Args:
        task: ``mr2ct`` | ``missing``.
        pairs: :func:`pair_cases` output.
        progress: show a tqdm bar (only on a TTY).
    """
    from tqdm.auto import tqdm

    cases = {}
    bar = tqdm(
        pairs, desc=f"evaluate {task}", unit="case", disable=not (progress and sys.stderr.isatty())
    )
    for pair in bar:
        bar.set_postfix_str(pair["key"])
        metrics, profile = score_pair(task, pair)
        entry: dict[str, Any] = {k: metrics[k] for k in IMAGE_METRICS[task] + COHERENCE_METRICS}
        for name in ("pred", "ref", "mask", "source"):
            entry[name] = None if pair[name] is None else str(Path(pair[name]).resolve())
        if task == "missing":
            entry["modality"] = pair["modality"]
        entry["z_profile"] = [finite(v) for v in profile]
        cases[pair["key"]] = entry
    return cases


# ---------------------------------------------------------------- summaries


def summarise(cases: dict[str, dict[str, Any]], metrics: Sequence[str]) -> dict[str, Any]:
    """``{<metric>: mean, <metric>_std: sample std (ddof=1; 0 for one case), "n_cases"}``.

    Non-finite values (e.g. PSNR = inf for a slice reproduced exactly, NaN for an empty mask)
    are left out of a metric's mean; a metric with no finite value gets None.
    """
    summary: dict[str, Any] = {}
    for name in metrics:
        values = [float(c[name]) for c in cases.values() if finite(c.get(name)) is not None]
        if values:
            summary[name] = float(np.mean(values))
            summary[f"{name}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        else:
            summary[name] = summary[f"{name}_std"] = None
    summary["n_cases"] = len(cases)
    return summary


def summarise_paired(
    task: str, cases: dict[str, dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(summary over all cases, extra keys): ``{"by_modality": {mod: summary}}`` when the cases
    cover several modalities (missing), else ``{}``."""
    names = IMAGE_METRICS[task] + COHERENCE_METRICS
    extra = {}
    modalities = sorted({c["modality"] for c in cases.values() if c.get("modality")})
    if len(modalities) > 1:
        extra["by_modality"] = {
            m: summarise({k: c for k, c in cases.items() if c.get("modality") == m}, names)
            for m in modalities
        }
    return summarise(cases, names), extra
