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


def ratio_cell(summary: dict[str, Any], name: str) -> str:
    """The ratio of `name` to its real-vs-real floor (``3.21×``; KID also with the difference),
    or where the floor is at or below zero the difference generated - floor (``Δ +0.154``);
    "" without a floor score."""
    ratios = summary.get("ratio_to_floor") or {}
    if name not in ratios:
        return ""
    diff = ((summary.get("floor") or {}).get("difference") or {}).get(name)
    if ratios[name] is not None:
        cell = f"{float(ratios[name]):.2f}×"
        # A KID floor near zero gives a large ratio from little: the difference beside it.
        return f"{cell} (Δ {diff:+.3g})" if name.startswith("kid_") and diff is not None else cell
    return "n/a" if diff is None else f"Δ {diff:+.3g}"


# Below this many references, the printed floor note says the ratios read low: FID and the
# increment distance are biased upward at small sample counts, the floor shares the bias, and
# with 12 references it pulls every ratio toward 1 (the same samples: FID / floor 1.0-2.0x
# against 12-reference sets, 2.3-3.5x against 48; docs/journal/2026-11-29-decoder-critic-weight.md).
FEW_REFERENCES = 32


def floor_lines(summary: dict[str, Any]) -> list[str]:
    """What the floor columns are: the real set, the counts, subsampling, the ratios left out,
    and a warning when the references are few (`FEW_REFERENCES`)."""
    floor = summary.get("floor")
    if not isinstance(floor, dict):
        return []
    n = floor.get("n")
    refs = summary.get("n_reference")
    lines = [
        f"floor: {n} real volumes of {floor.get('dir')} scored against the same "
        f"{refs} references with the same evaluation encoder; ratio = "
        f"generated / floor at {n} volumes each (1 = as close to the references as real data)"
    ]
    if isinstance(refs, int) and refs < FEW_REFERENCES:
        lines.append(
            f"few references ({refs} < {FEW_REFERENCES}): FID and the increment distance are "
            "biased upward at small counts and the floor shares that bias, which pulls every "
            "ratio toward 1; check targets against 48 or more references"
        )
    sub = floor.get("subsampled")
    if isinstance(sub, dict):
        lines.append(
            f"equal counts: the {sub.get('set')} set was subsampled {sub.get('from')} -> "
            f"{sub.get('to')} volumes (seed {sub.get('seed')})"
            + (
                f"; ratios use the mean generated score over {sub.get('subsets', 1)} disjoint "
                f"subsets of {sub.get('to')} (diversity: the first; floor.generated_scores, their "
                "std over the subsets in floor.generated_scores_std), the mean ± std column all "
                "generated volumes"
                if sub.get("set") == "generated"
                else ""
            )
        )
    none = [k for k, v in (summary.get("ratio_to_floor") or {}).items() if v is None]
    if none:
        why = (
            "; KID is an unbiased estimate and goes below 0 when two sets are as close as it "
            "can resolve"
            if any(k.startswith("kid_") for k in none)
            else ""
        )
        lines.append(
            f"{', '.join(none)}: the floor is <= 0, so no ratio: the column shows "
            f"Δ = generated - floor instead{why}"
        )
    return lines


def format_summary(result: dict[str, Any]) -> str:
    """The printed table: one row per metric, mean ± std over cases; with a real-vs-real floor
    (``--floor``) also the floor's score and the ratio to it."""
    summary = result["summary"]
    title = f"{result.get('label', '')}: task {result.get('task')}, {summary.get('n_cases')} cases"
    lines = [title]
    if result.get("phantom"):
        lines.append(PHANTOM_NOTE)
    names = _metric_names(summary)
    floor = summary.get("floor")
    if isinstance(floor, dict):
        scores = floor.get("scores") or {}
        rows = [
            [
                name,
                _mean_std(summary, name),
                _mean_std(scores, name) if name in scores else "",
                ratio_cell(summary, name),
            ]
            for name in names
        ]
        lines.append(_table(["metric", "mean ± std", "floor", "ratio to floor"], rows))
        lines += floor_lines(summary)
    else:
        rows = [[name, _mean_std(summary, name)] for name in names]
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
    ra, rb = sa.get("ratio_to_floor") or {}, sb.get("ratio_to_floor") or {}
    for name in [n for n in ra if n in rb]:
        va, vb = finite(ra[name]), finite(rb[name])
        diff = None if va is None or vb is None else vb - va
        better = None
        if diff is not None:  # 1 is the floor: diversity is best there, distances below it
            if name in NO_BETTER:
                da, db = abs(va - 1.0), abs(vb - 1.0)
            else:
                da, db = va, vb
            better = "=" if da == db else (labels[0] if da < db else labels[1])
        rows.append(
            {
                "metric": f"{name} / floor",
                labels[0]: va,
                f"{labels[0]}_std": None,
                labels[1]: vb,
                f"{labels[1]}_std": None,
                "diff": diff,
                "rel_percent": None if diff is None or va == 0 else 100.0 * diff / abs(va),
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
        if r["metric"].endswith(" / floor"):  # ratios to the real-vs-real floor
            name = r["metric"].removesuffix(" / floor")
            cells = [ratio_cell(sa, name), ratio_cell(sb, name)]
        else:
            cells = [_mean_std(sa, r["metric"]), _mean_std(sb, r["metric"])]
        rows.append([r["metric"], *cells, diff, rel, r["better"] or ""])
    lines = []
    if a.get("phantom") or b.get("phantom"):
        lines.append(PHANTOM_NOTE)
    header = ["metric", la, lb, f"{lb} - {la}", "change", "better"]
    lines.append(_table(header, rows))
    if any(r[0].endswith(" / floor") for r in rows):
        lines.append(
            "<score> / floor: the score over the same score of a real set (--floor) at the same "
            "sample count; 1 = as close to the references as real data (diversity: as diverse)"
        )
    return "\n".join(lines)


def arms_table(results: dict[str, dict[str, Any]], metrics: Sequence[str] | None = None) -> str:
    """Several evaluations side by side (e.g. 2D, 2.5D, LiFT): one column per arm, mean ± std
    over cases, the best arm of each metric named in the last column.

    Args:
        results: arm label -> evaluate JSON dict (or just its ``summary``), in column order.
        metrics: rows, in order; default the metrics every arm has, in the first arm's order.

    Returns:
        A plain-text table (with the phantom note when any result is from phantoms).
    """
    if not results:
        raise ValueError("arms_table needs at least one result")
    labels = list(results)
    summaries = {k: v.get("summary", v) for k, v in results.items()}
    if metrics is None:
        first = summaries[labels[0]]
        metrics = [m for m in _metric_names(first) if all(m in s for s in summaries.values())]
    rows = []
    for name in metrics:
        values = {k: finite(s.get(name)) for k, s in summaries.items()}
        if all(v is None for v in values.values()):
            continue
        best: list[str] = []
        for label, value in values.items():
            if value is None:
                continue
            if not best or _better(name, values[best[0]], value) == 1:
                best = [label]
            elif _better(name, values[best[0]], value) == 0:
                best.append(label)
        no_side = _better(name, 0.0, 1.0) is None
        winner = "" if no_side or len(best) == len(labels) else " = ".join(best)
        rows.append([name, *(_mean_std(summaries[k], name) for k in labels), winner])
    lines = [PHANTOM_NOTE] if any(r.get("phantom") for r in results.values()) else []
    lines.append(_table(["metric", *labels, "best"], rows))
    return "\n".join(lines)
