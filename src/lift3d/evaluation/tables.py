"""Plain-text tables of evaluate JSON results: one run's summary, or two runs side by side."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from lift3d.constants import PHANTOM_NOTE
from lift3d.evaluation.common import finite

LOWER_IS_BETTER = (
    "mae",
    "mse",
    "zgrad_error",
    "dz_mae",
    "histogram_distance",
    "increment_distance",
)
TARGET_ONE = ("zgrad_ratio",)  # best at 1.0
TARGET_ZERO = ("msssim_diversity_gap",)  # best at 0 (as diverse as the reference)
# Read against the reference, not better one way: diversity of one set, and the reference's own.
NO_BETTER = ("msssim_diversity", "ssim_diversity")
NEEDS = "needs "  # a score that needs an input it did not get, e.g. "needs --medicalnet PATH"


def _needs(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(NEEDS)


def _metric_names(summary: dict[str, Any]) -> list[str]:
    return [
        k
        for k, v in summary.items()
        if not k.endswith("_std")
        and not k.startswith("n_")  # counts (n_cases, n_reference), not metrics
        and (v is None or isinstance(v, int | float) or _needs(v))
        and not isinstance(v, bool)
    ]


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if _needs(value):
        return value
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
        lines.append(PHANTOM_NOTE)
    rows = [[name, _mean_std(summary, name)] for name in _metric_names(summary)]
    lines.append(_table(["metric", "mean ± std"], rows))
    return "\n".join(lines)


def _better(name: str, a: float, b: float) -> int | None:
    """-1 if a is better, 1 if b is better, 0 if equal/unknown, None if neither way is better."""
    if name in NO_BETTER or name.endswith("_reference"):
        return None
    if a == b:
        return 0
    if name in TARGET_ONE + TARGET_ZERO:
        target = 1.0 if name in TARGET_ONE else 0.0
        da, db = abs(a - target), abs(b - target)
        return 0 if da == db else (-1 if da < db else 1)
    lower = name.startswith(LOWER_IS_BETTER + ("kid_", "fid_", "mmd_"))
    return (-1 if a < b else 1) if lower else (-1 if a > b else 1)


def comparison_rows(
    a: dict[str, Any], b: dict[str, Any], labels: Sequence[str] = ("A", "B")
) -> list[dict[str, Any]]:
    """Per metric: means, stds, difference b - a, relative change (%) and the better label.

    A score that needs an input (``"needs --medicalnet PATH"``) keeps its text and has no
    difference; diversity scores have no better side (they are read against the reference).

    Args:
        a, b: evaluate JSON dicts (or just their ``summary``).
        labels: the names of a and b in the rows.
    """
    sa = a.get("summary", a)
    sb = b.get("summary", b)
    rows = []
    for name in _metric_names(sa):
        if name not in sb:
            continue
        va, vb = sa.get(name), sb.get(name)
        ma = va if _needs(va) else finite(va)
        mb = vb if _needs(vb) else finite(vb)
        numbers = not (_needs(ma) or _needs(mb) or ma is None or mb is None)
        diff = mb - ma if numbers else None
        rel = None if diff is None or ma == 0 else 100.0 * diff / abs(ma)
        better = None
        if diff is not None:
            better = {-1: labels[0], 1: labels[1], 0: "=", None: None}[_better(name, ma, mb)]
        rows.append(
            {
                "metric": name,
                labels[0]: ma,
                f"{labels[0]}_std": finite(sa.get(f"{name}_std")),
                labels[1]: mb,
                f"{labels[1]}_std": finite(sb.get(f"{name}_std")),
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
        needs = _needs(r[la]) or _needs(r[lb])
        diff = ("" if needs else "n/a") if r["diff"] is None else f"{r['diff']:+.4g}"
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
        lines.append(PHANTOM_NOTE)
    header = ["metric", la, lb, f"{lb} - {la}", "change", "better"]
    lines.append(_table(header, rows))
    return "\n".join(lines)
