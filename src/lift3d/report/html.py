"""Self-contained HTML report of a run or evaluation folder (`lift3d report`).

The page embeds every image as a base64 PNG (the same PNGs are also written into a folder beside
the HTML) and shows what exists in the folder, skipping what does not:

- provenance: data (PHANTOM label when it is), encoder, machine, lift3d version of each number;
- metric tables from every ``summary.json`` found (``lift3d evaluate``), side by side, so
  variants such as mixer vs no-mixer or mapper vs no-mapper sit in neighbouring columns, and
  for generation the feature extractor (file SHA-256) of every score;
- for generation with a real-vs-real floor (``--floor``): each score, the floor's and the ratio;
  and the montage of real beside generated slices (three planes) that evaluate wrote;
- tri-planar views (axial / coronal / sagittal through the centre and through the worst-error
  slice) of input, output, target and |error| for one case per variant;
- mean |error| per slice index along z for each variant (inter-slice flicker made visible);
- training-loss curves from ``logs/*.jsonl``; ``metrics.json`` and ``run.json`` of a run folder.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lift3d.constants import PHANTOM_NOTE
from lift3d.data.synthetic import is_phantom_dataset
from lift3d.errors import InputError
from lift3d.report import figures as F
from lift3d.report.figures import load_ras, slice_error_profile
from lift3d.utils import atomic_write_text
from lift3d.version import __version__

log = logging.getLogger(__name__)

MAX_PROFILE_CASES = 8


@dataclass
class Evaluation:
    """One ``summary.json`` from `lift3d evaluate` and where it lives."""

    path: Path
    label: str
    data: dict[str, Any]

    @property
    def summary(self) -> dict[str, Any]:
        return self.data.get("summary", {}) or {}

    @property
    def cases(self) -> dict[str, dict[str, Any]]:
        return self.data.get("cases", {}) or {}

    def resolve(self, value: str | None) -> Path | None:
        """A case path as stored; relative paths are tried from the summary's folder."""
        if not value:
            return None
        path = Path(value)
        if not path.is_absolute() and not path.exists():
            path = self.path.parent / path
        return path if path.exists() else None


@dataclass
class ReportParts:
    """What `build_report` found and made; also returned for tests and callers."""

    evaluations: list[Evaluation] = field(default_factory=list)
    logs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    run_info: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# discovery


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read JSON ({exc})", path) from exc


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a killed run
        if isinstance(rec, dict):
            records.append(rec)
    return records


def find_evaluations(src: Path) -> list[Evaluation]:
    """Every ``summary.json`` under `src` (itself included), labelled uniquely."""
    found = []
    seen: set[str] = set()
    for path in sorted(src.rglob("summary.json")):
        data = _read_json(path)
        if not isinstance(data, dict) or "summary" not in data:
            continue
        rel = path.parent.relative_to(src).as_posix()
        label = str(data.get("label") or (rel if rel != "." else src.name))
        if label in seen:
            label = f"{label} ({rel})"
        seen.add(label)
        found.append(Evaluation(path, label, data))
    return found


def find_logs(src: Path) -> dict[str, list[dict[str, Any]]]:
    """``logs/*.jsonl`` under `src`, keyed ``<stage>`` (or ``<run>/<stage>`` for nested runs)."""
    logs = {}
    for path in sorted(src.rglob("logs/*.jsonl")):
        run = path.parent.parent.relative_to(src).as_posix()
        key = path.stem if run == "." else f"{run}/{path.stem}"
        records = _read_jsonl(path)
        if records:
            logs[key] = records
    return logs


def _is_phantom_root(root: str | None) -> bool:
    """True when `root` is a dataset folder carrying the phantom marker (or inside one)."""
    if not root or not Path(root).exists():
        return False
    try:
        return bool(is_phantom_dataset(root))
    except (ImportError, OSError, ValueError):
        return False


def _is_phantom(evaluation: Evaluation) -> bool:
    data = evaluation.data
    return bool(data.get("phantom")) or _is_phantom_root(data.get("ref_dir") or data.get("data"))


def _parse_yaml(text: str) -> dict[str, Any]:
    if not text:
        return {}
    import yaml

    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _config_encoder(config: Mapping[str, Any]) -> str | None:
    """``key=value`` for string settings of a config whose key names an encoder."""
    found = []
    for section, values in config.items():
        if isinstance(values, Mapping):
            found += [
                f"{section}.{k}={v}"
                for k, v in values.items()
                if "encoder" in k and isinstance(v, str)
            ]
        elif "encoder" in section and isinstance(values, str):
            found.append(f"{section}={values}")
    return ", ".join(found) or None


def _encoder(data: Mapping[str, Any]) -> str | None:
    """The feature encoder a summary or config names, if any (searched one level deep)."""
    for key in ("eval_encoder", "encoder"):
        if isinstance(data.get(key), str):
            return data[key]
    for value in data.values():
        if isinstance(value, Mapping):
            for key in ("eval_encoder", "encoder"):
                if isinstance(value.get(key), str):
                    return value[key]
    return None


# ---------------------------------------------------------------------------------------------
# figures


def _case_arrays(
    ev: Evaluation, case_id: str
) -> tuple[dict[str, np.ndarray], tuple[float, float, float], np.ndarray | None] | None:

    entry = ev.cases.get(case_id, {})
    pred_path, ref_path = ev.resolve(entry.get("pred")), ev.resolve(entry.get("ref"))
    if pred_path is None or ref_path is None:
        return None
    pred, spacing = load_ras(pred_path)
    ref, _ = load_ras(ref_path)
    if pred.shape != ref.shape:
        return None
    panels: dict[str, np.ndarray] = {}
    source_path = _input_path(ev, entry, ref_path)
    if source_path is not None:
        source, _ = load_ras(source_path)
        if source.shape == ref.shape:
            panels[f"input ({_modality_name(source_path)})"] = source
    panels.update(output=pred, target=ref, **{"|error|": np.abs(pred - ref)})
    mask_path = ev.resolve(entry.get("mask"))
    mask = None
    if mask_path is not None:
        mask_arr, _ = load_ras(mask_path)
        mask = mask_arr > 0 if mask_arr.shape == ref.shape else None
    return panels, spacing, mask


def _profile(ev: Evaluation, case_ids: Sequence[str]) -> tuple[np.ndarray, int, str] | None:
    """Mean over up to MAX_PROFILE_CASES cases of the per-slice |error| along z.

    Uses evaluate's per-case ``z_profile`` (its scoring region and intensity scale) when every
    case has one, else computes it from the volumes (all voxels, file intensities).

    Returns:
        (profile, number of cases, where it came from) or None.
    """

    ids = list(case_ids[:MAX_PROFILE_CASES])
    stored = [ev.cases.get(c, {}).get("z_profile") for c in ids]
    if ids and all(isinstance(p, list) and p for p in stored):
        rows = [np.array([np.nan if v is None else v for v in p], float) for p in stored]
        rows = [r for r in rows if len(r) == len(rows[0])]
        with warnings.catch_warnings():  # all-NaN slices (outside every mask) stay NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(np.stack(rows), axis=0)
        return mean, len(rows), "evaluate z_profile (scoring region, metric scale)"
    profiles = []
    for case_id in ids:
        entry = ev.cases.get(case_id, {})
        pred_path, ref_path = ev.resolve(entry.get("pred")), ev.resolve(entry.get("ref"))
        if pred_path is None or ref_path is None:
            continue
        pred, _ = load_ras(pred_path)
        ref, _ = load_ras(ref_path)
        if pred.shape != ref.shape or (profiles and len(profiles[0]) != pred.shape[2]):
            continue
        profiles.append(slice_error_profile(pred, ref))
    if not profiles:
        return None
    return np.nanmean(np.stack(profiles), axis=0), len(profiles), "all voxels, file intensities"


def _input_path(ev: Evaluation, entry: Mapping[str, Any], ref_path: Path) -> Path | None:
    """The case's input volume: ``source`` when evaluate stored one; for a missing-modality
    evaluation (no single source), the first other BraTS modality beside the reference."""
    source = ev.resolve(entry.get("source"))
    if source is not None:
        return source
    modality = entry.get("modality")
    if not modality or not ref_path.name.endswith(f"-{modality}{_suffix(ref_path)}"):
        return None
    stem = ref_path.name[: -len(f"-{modality}{_suffix(ref_path)}")]
    for other in ("t1n", "t1c", "t2w", "t2f"):
        candidate = ref_path.with_name(f"{stem}-{other}{_suffix(ref_path)}")
        if other != modality and candidate.is_file():
            return candidate
    return None


def _suffix(path: Path) -> str:
    return ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix


def _modality_name(path: Path) -> str:
    name = path.name[: -len(_suffix(path))]
    return name.rsplit("-", 1)[-1] if "-" in name else name


def _slug(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_" else "_" for c in text)
    return keep.strip("_")[:60] or "item"


# ---------------------------------------------------------------------------------------------
# HTML


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return html.escape(str(value))
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], cls: str) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{_fmt(v) if not isinstance(v, _Raw) else v}</td>" for v in row)
        + "</tr>"
        for row in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


class _Raw(str):
    """Table cell text already escaped."""


def metrics_table(evaluations: Sequence[Evaluation]) -> str:
    """Metric rows x variant columns, ``mean ± std`` where the summary has ``<metric>_std``."""
    names: list[str] = []
    for ev in evaluations:
        for key, value in ev.summary.items():
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            needs = isinstance(value, str) and value.startswith("needs ")  # a missing input
            if (
                (numeric or needs)
                and not key.endswith("_std")
                and key != "n_cases"
                and key not in names
            ):
                names.append(key)
    rows = []
    for name in names + ["n_cases"]:
        row: list[Any] = [name]
        for ev in evaluations:
            mean, std = ev.summary.get(name), ev.summary.get(f"{name}_std")
            if mean is None:
                row.append(_Raw("&ndash;"))
            elif isinstance(std, (int, float)):
                row.append(_Raw(f"{_fmt(mean)} &plusmn; {_fmt(std)}"))
            else:
                row.append(mean)
        rows.append(row)
    return _table(["metric"] + [ev.label for ev in evaluations], rows, "metrics")


def extractors_table(evaluations: Sequence[Evaluation]) -> str | None:
    """The feature space of every score (``summary["feature_extractors"]``, generation): one row
    per evaluation and extractor with its file and SHA-256, or what it needs; None without."""
    rows = []
    for ev in evaluations:
        found = ev.summary.get("feature_extractors")
        if not isinstance(found, Mapping):
            continue
        for kind, ident in found.items():
            if not isinstance(ident, Mapping):
                continue
            sha = ident.get("file_sha256") or ident.get("weights_sha256")
            rows.append(
                [
                    ev.label,
                    ident.get("name", kind),
                    ident.get("file") or ident.get("status") or "-",
                    sha or "-",
                    ", ".join(str(s) for s in ident.get("scores", [])) or "-",
                ]
            )
        settings = ev.summary.get("msssim")
        if isinstance(settings, Mapping) and "scales" in settings:
            rows.append(
                [
                    ev.label,
                    "MS-SSIM diversity settings",
                    f"{settings.get('scales')} scales, window {settings.get('window')}, "
                    f"grid {settings.get('grid')}",
                    "-",
                    f"{settings.get('pairs')} of {settings.get('pairs_total')} pairs "
                    f"(reference {settings.get('reference_pairs')} of "
                    f"{settings.get('reference_pairs_total')}), seed {settings.get('seed')}",
                ]
            )
    if not rows:
        return None
    return _table(["variant", "feature extractor", "file", "SHA-256", "scores"], rows, "extractors")


def floor_table(ev: Evaluation) -> str | None:
    """Generated score, real-vs-real floor and ratio per score of a generation evaluation with
    ``summary["floor"]``; where the floor is at or below zero the difference and why."""
    floor, ratios = ev.summary.get("floor"), ev.summary.get("ratio_to_floor")
    if not isinstance(floor, Mapping) or not isinstance(ratios, Mapping):
        return None
    scores = floor.get("scores") or {}
    matched = floor.get("generated_scores")
    generated = matched if isinstance(matched, Mapping) else ev.summary
    differences, notes = floor.get("difference") or {}, floor.get("notes") or {}
    rows = []
    for name, ratio in ratios.items():
        cell = "n/a" if ratio is None else _Raw(f"{float(ratio):.2f}&times;")
        rows.append(
            [
                name,
                generated.get(name),
                scores.get(name),
                cell,
                differences.get(name, _Raw("&ndash;")),
                notes.get(name, ""),
            ]
        )
    sub = floor.get("subsampled")
    counts = f"{html.escape(str(floor.get('n')))} volumes per set"
    if isinstance(sub, Mapping):
        what = f"{sub.get('set')} set subsampled {sub.get('from')} -> {sub.get('to')}"
        if sub.get("set") == "generated" and sub.get("subsets", 1) > 1:
            what += f" in {sub.get('subsets')} disjoint subsets, whose mean score is compared"
        counts += f"; the {html.escape(what)} (seed {html.escape(str(sub.get('seed')))})"
    header = ["score", "generated", "floor", "ratio", "generated - floor", "note"]
    return (
        f"<h3>{html.escape(ev.label)}</h3>"
        f'<p class="note">floor: real volumes of {html.escape(str(floor.get("dir")))} scored '
        "against the same references with the same evaluation encoder; "
        f"{counts}. Ratio = generated / floor (1 = as close to the references as real "
        "data); where the floor is at or below zero only the difference means something.</p>"
        + _table(header, rows, "floor")
    )


def montage_file(ev: Evaluation) -> Path | None:
    """The real-vs-generated montage evaluate wrote for `ev` (``summary["montage"]``): a file
    of that name beside the summary, else the path as written; None when neither exists."""
    montage = ev.summary.get("montage")
    if not isinstance(montage, Mapping):
        return None
    for value in montage.get("files") or []:
        beside = ev.path.parent / Path(str(value)).name
        if beside.is_file():
            return beside
    for value in montage.get("files") or []:
        found = ev.resolve(str(value))
        if found is not None and found.is_file():
            return found
    return None


def _img(data: bytes, alt: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
th,td{border:1px solid #bbb;padding:3px 8px;text-align:right;font-size:0.9em}
th:first-child,td:first-child{text-align:left}
.phantom{background:#fff3cd;border:1px solid #e0c060;padding:0.6em 1em;font-weight:bold}
.note{color:#666;font-size:0.9em}
img{max-width:100%;border:1px solid #ddd;margin:0.3em 0}
"""


def build_report(
    src_dir: str | Path, out_html: str | Path, figures_dir: str | Path | None = None
) -> Path:
    """Build the HTML report of a run or evaluation folder.

    Args:
        src_dir: a run folder (``logs/``, ``run.json``, ``metrics.json``, evaluations below it) or
            an evaluation folder (``summary.json``), or a folder holding several of either.
        out_html: the page to write (atomically).
        figures_dir: where the PNGs go; default ``<out_html stem>_figures/`` beside the page
            (earlier PNGs in it are removed).

    Returns:
        `out_html` as a Path.

    Raises:
        InputError: `src_dir` is missing or holds no summary, log, metrics or run file.
    """

    src = Path(src_dir)
    out_html = Path(out_html)
    if not src.is_dir():
        raise InputError("not a folder (expected a run or evaluation folder)", src)
    parts = ReportParts(evaluations=find_evaluations(src), logs=find_logs(src))
    if (src / "run.json").is_file():
        parts.run_info = _read_json(src / "run.json")
    if (src / "metrics.json").is_file():
        parts.metrics = _read_json(src / "metrics.json")
    config_text = (src / "config.yaml").read_text() if (src / "config.yaml").is_file() else ""
    config = _parse_yaml(config_text)
    if not (parts.evaluations or parts.logs or parts.run_info or parts.metrics):
        raise InputError(
            "no summary.json (lift3d evaluate), logs/*.jsonl, run.json or metrics.json found", src
        )
    fig_dir = Path(figures_dir) if figures_dir else out_html.with_name(f"{out_html.stem}_figures")
    if fig_dir.is_dir():  # stale figures of an earlier report; nothing else is touched
        for old in fig_dir.glob("*.png"):
            old.unlink()
    pngs: dict[str, bytes] = {}

    def add_figure(name: str, fig: Any) -> bytes:
        data = F.figure_png(fig)
        parts.figures[name] = F.write_png(data, fig_dir / f"{name}.png")
        pngs[name] = data
        return data

    sections: list[str] = []

    # provenance -------------------------------------------------------------------------------
    prov_rows = []
    for ev in parts.evaluations:
        d = ev.data
        data_label = str(d.get("data", "?")) + (" [PHANTOM]" if _is_phantom(ev) else "")
        prov_rows.append(
            [
                ev.label,
                d.get("task", "?"),
                data_label,
                _encoder(ev.summary) or _encoder(d) or "-",
                d.get("machine", "?"),
                d.get("lift3d_version", "?"),
                ev.path.relative_to(src).as_posix(),
            ]
        )
    run_phantom = False
    if parts.run_info or config:
        r = parts.run_info
        data_root = (config.get("data") or {}).get("root") if isinstance(config, dict) else None
        run_phantom = _is_phantom_root(data_root)
        machine = " / ".join(
            str(r[k]) for k in ("hostname", "host", "device_name", "device") if r.get(k)
        )
        prov_rows.append(
            [
                "training run",
                str(r.get("task", "?")) + (f" ({r['subtask']})" if r.get("subtask") else ""),
                str(data_root or "-") + (" [PHANTOM]" if run_phantom else ""),
                _config_encoder(config) or _encoder(r) or "-",
                machine or "?",
                r.get("lift3d_version", r.get("version", "?")),
                "run.json, config.yaml",
            ]
        )
    if prov_rows:
        sections.append(
            "<h2>Where each number comes from</h2>"
            + _table(
                ["variant", "task", "data", "encoder", "machine", "lift3d", "file"],
                prov_rows,
                "provenance",
            )
        )

    # metric tables ----------------------------------------------------------------------------
    if parts.evaluations:
        sections.append("<h2>Metrics (lift3d evaluate)</h2>" + metrics_table(parts.evaluations))
        extractors = extractors_table(parts.evaluations)
        if extractors is not None:
            sections.append("<h2>Feature extractor of each score</h2>" + extractors)
        floors = [t for t in map(floor_table, parts.evaluations) if t is not None]
        if floors:
            sections.append(
                "<h2>Real-vs-real floor (lift3d evaluate --floor)</h2>" + "".join(floors)
            )
        montages = []
        for ev in parts.evaluations:
            path = montage_file(ev)
            if path is None:
                continue
            data = path.read_bytes()
            name = f"montage_{_slug(ev.label)}"
            parts.figures[name] = F.write_png(data, fig_dir / f"{name}.png")
            pngs[name] = data
            rows = (ev.summary.get("montage") or {}).get("rows") or {}
            shown = "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in rows.items())
            montages.append(
                f"<h3>{html.escape(ev.label)}</h3>"
                f'<p class="note">centre cuts along each axis on the evaluation grid, '
                f"intensities as scored. {html.escape(shown)}</p>"
                + _img(data, f"real and generated slices {ev.label}")
            )
        if montages:
            sections.append("<h2>Real beside generated slices</h2>" + "".join(montages))
    if isinstance(parts.metrics, dict) and parts.metrics:
        flat = [(k, v) for k, v in parts.metrics.items() if not isinstance(v, (dict, list))]
        if flat:
            sections.append(
                "<h2>Run metrics (metrics.json)</h2>"
                + _table(["key", "value"], flat, "run-metrics")
            )

    # tri-planar views -------------------------------------------------------------------------
    views = []
    common = [c for c in (parts.evaluations[0].cases if parts.evaluations else {})]
    for ev in parts.evaluations:
        shared = [c for c in common if c in ev.cases] or sorted(ev.cases)
        if not shared:
            continue
        case_id = shared[0]
        loaded = _case_arrays(ev, case_id)
        if loaded is None:
            parts.notes.append(
                f"{ev.label}: volumes of case {case_id} not found or not on one grid"
            )
            continue
        panels, spacing, mask = loaded
        fig, idx = F.triplanar_figure(panels, spacing, mask=mask, title=f"{ev.label} - {case_id}")
        data = add_figure(f"triplanar_{_slug(ev.label)}_{_slug(case_id)}", fig)
        views.append(
            f"<h3>{html.escape(ev.label)}: case {html.escape(case_id)}</h3>"
            f'<p class="note">centre slices (x, y, z) = {idx["centre"]}; worst-error slices = '
            f"{idx['worst']} (RAS voxel indices)</p>"
            + _img(data, f"tri-planar {ev.label} {case_id}")
        )
    if views:
        sections.append(
            "<h2>Tri-planar views: input, output, target, |error|</h2>" + "".join(views)
        )

    # z profiles -------------------------------------------------------------------------------
    profiles, counts = {}, []
    for ev in parts.evaluations:
        result = _profile(ev, sorted(ev.cases))
        if result is not None:
            profiles[ev.label] = result[0]
            counts.append(f"{ev.label}: {result[1]} case(s), {result[2]}")
    if profiles:
        data = add_figure("z_error_profile", F.profile_figure(profiles))
        sections.append(
            "<h2>Error per slice along z</h2>"
            '<p class="note">mean |output - target| of each axial slice, averaged over '
            f"{html.escape('; '.join(counts))}. Jumps between neighbouring slices are "
            "inter-slice flicker.</p>" + _img(data, "mean error per slice along z")
        )

    # loss curves ------------------------------------------------------------------------------
    if parts.logs:
        fig = F.loss_figure(parts.logs)
        if fig is not None:
            data = add_figure("training_curves", fig)
            last_rows = []
            for stage, recs in parts.logs.items():
                last = recs[-1]
                loss = next((last[k] for k in last if "loss" in k), None)
                last_rows.append(
                    [stage, len(recs), last.get("step", "-"), loss if loss is not None else "-"]
                )
            sections.append(
                "<h2>Training curves (logs/*.jsonl)</h2>"
                + _img(data, "training loss curves")
                + _table(["log", "records", "last step", "last loss"], last_rows, "logs")
            )

    if config_text:
        sections.append(f"<h2>Run configuration</h2><pre>{html.escape(config_text)}</pre>")
    if parts.notes:
        sections.append(
            "<h2>Notes</h2><ul>"
            + "".join(f"<li>{html.escape(n)}</li>" for n in parts.notes)
            + "</ul>"
        )

    phantom = run_phantom or any(_is_phantom(ev) for ev in parts.evaluations)
    banner = f'<p class="phantom">{html.escape(PHANTOM_NOTE)}</p>' if phantom else ""
    stamp = _dt.datetime.now().isoformat(timespec="seconds")
    page = (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>lift3d report: {html.escape(src.name)}</title><style>{_CSS}</style></head><body>"
        f"<h1>lift3d report: {html.escape(src.name)}</h1>{banner}"
        f'<p class="note">source {html.escape(str(src.resolve()))}; built {stamp} by lift3d '
        f"{html.escape(__version__)}; figures also in {html.escape(fig_dir.name)}/</p>"
        + "".join(sections)
        + "</body></html>\n"
    )
    atomic_write_text(out_html, page)
    log.debug("report: %s (%d figures)", out_html, len(pngs))
    return out_html


def write_run_report(src_dir: str | Path) -> Path | None:
    """Build ``src_dir/report.html`` at the end of a training or evaluation command.

    A report is a convenience: a failure to build it is logged, never raised, so it cannot
    fail the command that produced the results.

    Returns:
        The report path, or None if it could not be built.
    """
    import logging

    out = Path(src_dir) / "report.html"
    try:
        return build_report(src_dir, out)
    except Exception as exc:  # noqa: BLE001 - see docstring
        logging.getLogger(__name__).warning("could not build the report in %s: %s", src_dir, exc)
        return None
