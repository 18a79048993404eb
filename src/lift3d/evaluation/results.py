"""The evaluate JSON (ARCHITECTURE.md): score a prediction folder of any task, and write it.

:func:`evaluate_folder` dispatches to the paired tasks (:mod:`lift3d.evaluation.paired`) or to
generation (:mod:`lift3d.evaluation.generation`) and adds the provenance every result carries
(data, machine, lift3d version); :func:`write_results` writes ``cases.csv`` and ``summary.json``.
"""

from __future__ import annotations

import csv
import io
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lift3d.constants import EVALUATE_TASKS, PHANTOM_NOTE
from lift3d.data.synthetic import is_phantom_dataset
from lift3d.errors import InputError
from lift3d.evaluation.common import check_folder, finite
from lift3d.evaluation.generation import evaluate_generation
from lift3d.evaluation.paired import (
    pair_cases,
    prediction_coverage,
    score_cases,
    summarise_paired,
)
from lift3d.utils import atomic_write_text
from lift3d.version import __version__


def machine_info() -> str:
    """One line: platform, CPU model and GPU name (or none)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = "none"
    try:
        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except Exception:  # a broken driver: the report still gets written
        pass
    return f"{platform.platform()}; CPU: {cpu}; GPU: {gpu}"


def evaluate_folder(
    task: str,
    pred_dir: str | Path,
    ref_dir: str | Path,
    *,
    label: str | None = None,
    mask_name: str | None = None,
    progress: bool = True,
    generate_options: dict[str, Any] | None = None,
    allow_missing: bool = False,
) -> dict[str, Any]:
    """Score every prediction in `pred_dir` against `ref_dir`; return the evaluate JSON dict.

    Args:
        task: ``mr2ct`` | ``missing`` | ``generate``.
        pred_dir: prediction folder (layouts in :mod:`lift3d.evaluation.paired`; for generate,
            ``lift3d generate`` output).
        ref_dir: reference dataset (SynthRAD layout for mr2ct, BraTS for missing).
        label: a name for this run in tables (default: the prediction folder's name).
        mask_name: reference modality to use as the region (default: mr2ct ``mask``,
            missing: the non-zero reference voxels).
        progress: show a tqdm bar (only on a TTY).
        generate_options: extra keyword arguments of
            :func:`lift3d.evaluation.generation.evaluate_generation` (``--task generate``
            only), e.g. ``{"eval_encoder": path}``.
        allow_missing: paired tasks: score the predictions there are even when some
            reference cases have none (else that is an error). Either way the summary lists
            ``missing_predictions`` (reference cases without one) and ``extra_predictions``
            (predicted cases without a reference, not scored).

    Returns:
        The JSON of ARCHITECTURE.md ("evaluate JSON"); per case also ``modality`` (missing) and
        ``z_profile`` (per-axial-slice mean absolute error, None where a slice has no mask).

    Raises:
        InputError: bad folders, no common case, reference cases without a prediction (unless
            `allow_missing`), a prediction (or mask) off the reference grid.
    """
    if task not in EVALUATE_TASKS:
        raise InputError(f"unknown task {task!r}; use one of {', '.join(EVALUATE_TASKS)}")
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    if task == "generate":
        check_folder(pred_dir, "prediction")
        check_folder(ref_dir, "reference")
        phantom = is_phantom_dataset(ref_dir) or is_phantom_dataset(pred_dir)
        result = dict(evaluate_generation(pred_dir, ref_dir, **(generate_options or {})))
        cases = result.pop("cases", {})
        if "summary" in result:  # {"cases", "summary", ...extra} or a bare summary dict
            summary, extra = result.pop("summary"), result
        else:
            summary, extra = result, {}
    else:
        pairs = pair_cases(task, pred_dir, ref_dir, mask_name)
        missing, unmatched = prediction_coverage(task, pred_dir, ref_dir)
        if missing and not allow_missing:
            shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
            raise InputError(
                f"{len(missing)} reference case(s) have no prediction ({shown}); pass "
                "--allow-missing to score the others",
                pred_dir,
            )
        phantom = is_phantom_dataset(ref_dir) or is_phantom_dataset(pred_dir)
        cases = score_cases(task, pairs, progress)
        summary, extra = summarise_paired(task, cases)
        summary["missing_predictions"] = missing
        summary["extra_predictions"] = unmatched
    return {
        "task": task,
        "label": label or pred_dir.name,
        "pred_dir": str(pred_dir.resolve()),
        "ref_dir": str(ref_dir.resolve()),
        "data": PHANTOM_NOTE if phantom else "user data",
        "phantom": bool(phantom),
        "machine": machine_info(),
        "lift3d_version": __version__,
        "cases": cases,
        "summary": summary,
        **extra,
    }


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return finite(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def to_json(result: dict[str, Any]) -> str:
    """Strict JSON text (inf / NaN written as null)."""
    return json.dumps(_json_safe(result), indent=2, allow_nan=False) + "\n"


def to_csv(result: dict[str, Any]) -> str:
    """Per-case CSV: ``case_id`` then every scalar metric, then the file paths."""
    cases = result["cases"]
    paths = ("pred", "ref", "mask", "source")
    columns: list[str] = []
    for entry in cases.values():
        for k, v in entry.items():
            if k not in columns and k not in paths and not isinstance(v, list | dict):
                columns.append(k)
    columns += [p for p in paths if any(p in e for e in cases.values())]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["case_id", *columns])
    for key, entry in cases.items():
        row = []
        for c in columns:
            v = entry.get(c)
            row.append("" if v is None else (repr(float(v)) if isinstance(v, float) else v))
        writer.writerow([key, *row])
    return buf.getvalue()


def write_results(
    result: dict[str, Any],
    out_dir: str | Path | None = None,
    json_path: str | Path | None = None,
    *,
    overwrite: bool | None = None,
) -> list[Path]:
    """Write ``out_dir/cases.csv`` + ``out_dir/summary.json`` and/or `json_path`, atomically.

    `overwrite` as in `lift3d.utils.atomic_path` (False: each file is created exclusively).
    """
    written = []
    text = to_json(result)
    if out_dir is not None:
        out_dir = Path(out_dir)
        atomic_write_text(out_dir / "cases.csv", to_csv(result), overwrite=overwrite)
        atomic_write_text(out_dir / "summary.json", text, overwrite=overwrite)
        written += [out_dir / "cases.csv", out_dir / "summary.json"]
    if json_path is not None:
        atomic_write_text(json_path, text, overwrite=overwrite)
        written.append(Path(json_path))
    return written
