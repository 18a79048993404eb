"""Score a folder of predictions against a reference dataset (what `lift3d evaluate` runs).

Pairs prediction and reference files by case id, checks each prediction lies on its reference
grid, computes the task's image metrics (:mod:`lift3d.metrics.image`) and the through-plane
coherence metrics (:mod:`lift3d.metrics.consistency`) per case, and builds the evaluate JSON of
ARCHITECTURE.md. Also formats the summary table and the side-by-side comparison of two runs
(e.g. mixer vs ``--no-mixer``).

Prediction layouts (those of ``lift3d translate`` folder mode):

- ``mr2ct``: ``PRED/<case_id>/sct.nii.gz`` (any supported image suffix), scored against the
  SynthRAD case's ``ct`` inside its ``mask`` (or ``--mask-name``), source = the case's ``mr``.
- ``missing``: ``PRED/<case_id>/<case_id>-<mod>.nii.gz`` for a BraTS modality ``mod``, scored
  against the BraTS case's ``<mod>`` over its brain (non-zero) region (or ``--mask-name``).
  A case with predictions for several modalities gives one entry per modality, keyed
  ``<case_id>-<mod>``.
"""

from __future__ import annotations

import json
import logging
import math
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lift3d.errors import InputError

log = logging.getLogger(__name__)

TASKS = ("mr2ct", "missing", "generate")
IMAGE_METRICS = {"mr2ct": ("mae", "psnr", "ssim"), "missing": ("psnr", "ssim", "mse")}
COHERENCE_METRICS = (
    "zgrad_error",
    "zgrad_ratio",
    "psnr_axial",
    "psnr_coronal",
    "psnr_sagittal",
    "ssim_axial",
    "ssim_coronal",
    "ssim_sagittal",
)
LOWER_IS_BETTER = ("mae", "mse", "zgrad_error", "histogram_distance", "increment_distance")
TARGET_ONE = ("zgrad_ratio",)  # best at 1.0
GRID_ATOL_MM = 1e-3
SCT_NAME = "sct"
PHANTOM_FALLBACK_NOTE = "PHANTOM data (synthetic; shows a mechanism works, not clinical quality)"


# ---------------------------------------------------------------- pairing


def _image_files(folder: Path) -> dict[str, Path]:
    """Image stem -> file for the image files directly in `folder`."""
    from lift3d.data.volume import image_suffix

    out = {}
    for p in sorted(folder.iterdir()):
        suffix = image_suffix(p)
        if suffix and p.is_file() and not p.name.startswith("."):
            out[p.name[: -len(suffix)]] = p
    return out


def _check_folder(path: Path, what: str) -> None:
    if not path.exists():
        raise InputError(f"{what} folder not found", path)
    if not path.is_dir():
        raise InputError(f"{what} must be a folder", path)
    if not any(p for p in path.iterdir() if not p.name.startswith(".")):
        raise InputError(f"{what} folder is empty", path)


def find_predictions(pred_dir: Path, task: str) -> dict[str, tuple[str, str | None, Path]]:
    """Entry key -> (case_id, modality or None, prediction file) for a prediction folder."""
    from lift3d.data.discovery import BRATS_MODALITIES

    found: dict[str, list[tuple[str | None, Path]]] = {}
    for case_dir in sorted(p for p in pred_dir.iterdir() if p.is_dir()):
        if case_dir.name.startswith("."):
            continue
        files = _image_files(case_dir)
        case_id = case_dir.name
        if task == "mr2ct":
            if SCT_NAME in files:
                found[case_id] = [(None, files[SCT_NAME])]
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
    from lift3d.data.discovery import discover_cases

    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    _check_folder(pred_dir, "prediction")
    _check_folder(ref_dir, "reference")
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


def _load_on_grid(path: Path, ref, what: str):
    from lift3d.data.volume import read_volume

    vol = read_volume(path)
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


def score_pair(task: str, pair: dict[str, Any]) -> tuple[dict[str, float], np.ndarray]:
    """Image + coherence metrics of one prediction/reference pair (see module docstring).

    Returns:
        (metrics, z_profile): metric name -> value, and the per-axial-slice mean absolute error
        (HU for mr2ct, [0, 1] scale for missing; inferior to superior).
    """
    from lift3d.data.volume import read_volume
    from lift3d.metrics import consistency, image

    ref = read_volume(pair["ref"])
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
    coherence, profile = consistency.coherence_metrics(
        p, t, region, data_range, affine=ref.affine, crop=crop
    )
    metrics.update(coherence)
    return metrics, profile


# ---------------------------------------------------------------- the evaluate JSON


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
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except Exception:  # no torch / broken driver: the report still gets written
        pass
    return f"{platform.platform()}; CPU: {cpu}; GPU: {gpu}"


def _phantom(*paths: Path) -> bool:
    from lift3d.data.synthetic import is_phantom_dataset

    return any(is_phantom_dataset(p) for p in paths)


def phantom_note() -> str:
    try:
        from lift3d.data.synthetic import PHANTOM_NOTE

        return PHANTOM_NOTE
    except ImportError:
        return PHANTOM_FALLBACK_NOTE


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def summarise(cases: dict[str, dict[str, Any]], metrics: Sequence[str]) -> dict[str, Any]:
    """``{<metric>: mean, <metric>_std: sample std (ddof=1; 0 for one case), "n_cases"}``.

    Non-finite values (e.g. PSNR = inf for a slice reproduced exactly, NaN for an empty mask)
    are left out of a metric's mean; a metric with no finite value gets None.
    """
    summary: dict[str, Any] = {}
    for name in metrics:
        values = [float(c[name]) for c in cases.values() if _finite(c.get(name)) is not None]
        if values:
            summary[name] = float(np.mean(values))
            summary[f"{name}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        else:
            summary[name] = summary[f"{name}_std"] = None
    summary["n_cases"] = len(cases)
    return summary


def evaluate_folder(
    task: str,
    pred_dir: str | Path,
    ref_dir: str | Path,
    *,
    label: str | None = None,
    mask_name: str | None = None,
    progress: bool = True,
    generate_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score every prediction in `pred_dir` against `ref_dir`; return the evaluate JSON dict.

    Args:
        task: ``mr2ct`` | ``missing`` | ``generate``.
        pred_dir: prediction folder (layout in the module docstring).
        ref_dir: reference dataset (SynthRAD layout for mr2ct, BraTS for missing).
        label: a name for this run in tables (default: the prediction folder's name).
        mask_name: reference modality to use as the region (default: mr2ct ``mask``,
            missing: the non-zero reference voxels).
        progress: show a tqdm bar (only on a TTY).
        generate_options: extra keyword arguments of
            `lift3d.metrics.distribution.evaluate_generation` (``--task generate`` only), e.g.
            ``{"eval_encoder": path}``.

    Returns:
        The JSON of ARCHITECTURE.md ("evaluate JSON"); per case also ``modality`` (missing) and
        ``z_profile`` (per-axial-slice mean absolute error, None where a slice has no mask).

    Raises:
        InputError: bad folders, no common case, a prediction (or mask) off the reference grid.
    """
    import sys

    from tqdm.auto import tqdm

    import lift3d

    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    phantom = None
    if task == "generate":
        _check_folder(pred_dir, "prediction")
        _check_folder(ref_dir, "reference")
        phantom = _phantom(ref_dir, pred_dir)
        from lift3d.metrics.distribution import evaluate_generation

        result = dict(evaluate_generation(pred_dir, ref_dir, **(generate_options or {})))
        cases = result.pop("cases", {})
        if "summary" in result:  # {"cases", "summary", ...extra} or a bare summary dict
            summary, extra = result.pop("summary"), result
        else:
            summary, extra = result, {}
    else:
        pairs = pair_cases(task, pred_dir, ref_dir, mask_name)
        phantom = _phantom(ref_dir, pred_dir)
        cases = {}
        bar = tqdm(
            pairs,
            desc=f"evaluate {task}",
            unit="case",
            disable=not (progress and sys.stderr.isatty()),
        )
        for pair in bar:
            bar.set_postfix_str(pair["key"])
            metrics, profile = score_pair(task, pair)
            names = IMAGE_METRICS[task] + COHERENCE_METRICS
            entry: dict[str, Any] = {k: metrics[k] for k in names}
            for name in ("pred", "ref", "mask", "source"):
                entry[name] = None if pair[name] is None else str(Path(pair[name]).resolve())
            if task == "missing":
                entry["modality"] = pair["modality"]
            entry["z_profile"] = [_finite(v) for v in profile]
            cases[pair["key"]] = entry
        summary = summarise(cases, IMAGE_METRICS[task] + COHERENCE_METRICS)
        extra = {}
        modalities = sorted({c["modality"] for c in cases.values() if c.get("modality")})
        if len(modalities) > 1:
            extra["by_modality"] = {
                m: summarise(
                    {k: c for k, c in cases.items() if c.get("modality") == m},
                    IMAGE_METRICS[task] + COHERENCE_METRICS,
                )
                for m in modalities
            }
    return {
        "task": task,
        "label": label or pred_dir.name,
        "pred_dir": str(pred_dir.resolve()),
        "ref_dir": str(ref_dir.resolve()),
        "data": phantom_note() if phantom else "user data",
        "phantom": bool(phantom),
        "machine": machine_info(),
        "lift3d_version": lift3d.__version__,
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
        return _finite(obj)
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
    import csv
    import io

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
    result: dict[str, Any], out_dir: str | Path | None = None, json_path: str | Path | None = None
) -> list[Path]:
    """Write ``out_dir/cases.csv`` + ``out_dir/summary.json`` and/or `json_path`, atomically."""
    from lift3d.utils import atomic_write_text

    written = []
    text = to_json(result)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "cases.csv", to_csv(result))
        atomic_write_text(out_dir / "summary.json", text)
        written += [out_dir / "cases.csv", out_dir / "summary.json"]
    if json_path is not None:
        atomic_write_text(json_path, text)
        written.append(Path(json_path))
    return written


# ---------------------------------------------------------------- tables


def _metric_names(summary: dict[str, Any]) -> list[str]:
    return [
        k
        for k, v in summary.items()
        if not k.endswith("_std")
        and not k.startswith("n_")  # counts (n_cases, n_reference), not metrics
        and (v is None or isinstance(v, int | float))
        and not isinstance(v, bool)
    ]


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.3f}"
    return f"{value:.4f}"


def _mean_std(summary: dict[str, Any], name: str) -> str:
    mean, std = summary.get(name), summary.get(f"{name}_std")
    # No spread to show when there is none (e.g. KID when every subset is the whole set).
    return _fmt(mean) if std is None or std == 0 else f"{_fmt(mean)} ± {_fmt(std)}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def format_summary(result: dict[str, Any]) -> str:
    """The printed table: one row per metric, mean ± std over cases."""
    summary = result["summary"]
    title = f"{result.get('label', '')}: task {result.get('task')}, {summary.get('n_cases')} cases"
    lines = [title]
    if result.get("phantom"):
        lines.append(phantom_note())
    rows = [[name, _mean_std(summary, name)] for name in _metric_names(summary)]
    lines.append(_table(["metric", "mean ± std"], rows))
    return "\n".join(lines)


def _better(name: str, a: float, b: float) -> int:
    """-1 if a is better, 1 if b is better, 0 if equal/unknown."""
    if a == b:
        return 0
    if name in TARGET_ONE:
        da, db = abs(a - 1.0), abs(b - 1.0)
        return 0 if da == db else (-1 if da < db else 1)
    lower = name.startswith(LOWER_IS_BETTER + ("kid_", "fid_"))
    return (-1 if a < b else 1) if lower else (-1 if a > b else 1)


def comparison_rows(
    a: dict[str, Any], b: dict[str, Any], labels: Sequence[str] = ("A", "B")
) -> list[dict[str, Any]]:
    """Per metric: means, stds, difference b - a, relative change (%) and the better label."""
    sa = a.get("summary", a)
    sb = b.get("summary", b)
    rows = []
    for name in _metric_names(sa):
        if name not in sb:
            continue
        ma, mb = _finite(sa.get(name)), _finite(sb.get(name))
        diff = None if ma is None or mb is None else mb - ma
        rel = None if diff is None or ma == 0 else 100.0 * diff / abs(ma)
        better = None
        if diff is not None:
            better = {-1: labels[0], 1: labels[1], 0: "="}[_better(name, ma, mb)]
        rows.append(
            {
                "metric": name,
                labels[0]: ma,
                f"{labels[0]}_std": _finite(sa.get(f"{name}_std")),
                labels[1]: mb,
                f"{labels[1]}_std": _finite(sb.get(f"{name}_std")),
                "diff": diff,
                "rel_percent": rel,
                "better": better,
            }
        )
    return rows


def compare_summaries(
    a: dict[str, Any], b: dict[str, Any], labels: Sequence[str] | None = None
) -> str:
    """Side-by-side table of two evaluations (e.g. mixer vs no-mixer) with the differences.

    Args:
        a, b: evaluate JSON dicts (or just their ``summary``).
        labels: column names; default the results' ``label`` fields (or A, B).

    Returns:
        A plain-text table: metric, mean ± std of each, b - a, relative change, better side.
    """
    if labels is None:
        labels = (a.get("label") or "A", b.get("label") or "B")
        if labels[0] == labels[1]:
            labels = (f"{labels[0]} (A)", f"{labels[1]} (B)")
    la, lb = labels
    sa, sb = a.get("summary", a), b.get("summary", b)
    rows = []
    for r in comparison_rows(a, b, labels):
        rel = "" if r["rel_percent"] is None else f"{r['rel_percent']:+.1f}%"
        diff = "n/a" if r["diff"] is None else f"{r['diff']:+.4g}"
        rows.append(
            [
                r["metric"],
                _mean_std(sa, r["metric"]),
                _mean_std(sb, r["metric"]),
                diff,
                rel,
                r["better"] or "",
            ]
        )
    lines = []
    if a.get("phantom") or b.get("phantom"):
        lines.append(phantom_note())
    header = ["metric", la, lb, f"{lb} - {la}", "change", "better"]
    lines.append(_table(header, rows))
    return "\n".join(lines)
