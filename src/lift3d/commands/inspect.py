"""`lift3d inspect`: report a dataset's layout, cases, shapes, spacings, intensities and problems."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

HELP = (
    "Report a dataset's detected layout (BraTS 2023, SynthRAD2023 task 1 or a CSV/JSON "
    "manifest), case count, modalities, shapes, spacings, orientations and intensity ranges, "
    "and list every problem found (missing modality, shape or affine mismatch, non-3D, NaN/Inf, "
    "constant or unreadable files). Exit code 0 when the dataset is clean, 2 when any problem "
    "was found (with --skip-bad: only when no case is usable). Writes nothing."
)
EXAMPLE = "lift3d inspect data/phantom_brats --json > inspect.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DIR", help="dataset folder, case folder or manifest file")
    parser.add_argument(
        "--layout",
        default="auto",
        choices=("auto", "brats", "synthrad", "manifest"),
        help="dataset layout (default: auto-detect)",
    )
    parser.add_argument(
        "--required",
        nargs="+",
        metavar="MOD",
        default=None,
        help="modalities every case must have (default: BraTS t1n t1c t2w t2f; SynthRAD mr ct; "
        "manifest: all its columns). E.g. a BraSyn validation set: --required t1n t1c t2w",
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON only")
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="bad cases are listed but tolerated: exit 0 if at least one case is usable",
    )
    parser.add_argument(
        "--header-only",
        action="store_true",
        help="read file headers only (fast; no NaN/constant/truncation checks, no intensities)",
    )


def _fmt_shape(shape) -> str:
    return "x".join(str(s) for s in shape)


def _fmt_spacing(spacing) -> str:
    return "x".join(f"{s:.3g}" for s in spacing)


def _fmt_num(value: float | None) -> str:
    return "?" if value is None else f"{value:.6g}"


def _counts(counter: Counter) -> dict[str, int]:
    return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


def inspect_dataset(
    root: str | Path,
    layout: str = "auto",
    required: list[str] | None = None,
    check_data: bool = True,
) -> dict[str, Any]:
    """Collect facts and every problem of a dataset (library function behind `lift3d inspect`).

    Args:
        root: dataset folder, case folder or manifest file.
        layout: ``auto`` | ``brats`` | ``synthrad`` | ``manifest``.
        required: modalities every case must have; None = the layout's default.
        check_data: decode voxels (intensity ranges, NaN/constant/truncation checks).

    Returns:
        A JSON-serialisable summary (see the keys below); ``problems`` lists every problem.

    Raises:
        InputError: the dataset itself cannot be read (missing, empty, unknown layout, bad
            manifest); per-case problems are listed instead.
    """
    from tqdm import tqdm

    from lift3d.data.discovery import check_case
    from lift3d.data.layouts import default_required, list_cases
    from lift3d.data.synthetic import PHANTOM_NOTE, is_phantom_dataset

    root = Path(root)
    layout, cases = list_cases(root, layout)
    cases.sort(key=lambda c: c.case_id)
    required = list(default_required(layout, cases) if required is None else required)
    modalities, regions = Counter(), Counter()
    shapes, spacings, orientations = Counter(), Counter(), Counter()
    intensity: dict[str, dict[str, list]] = {}
    case_rows, problems = [], []
    progress = tqdm(cases, desc="inspect", unit="case", disable=not sys.stderr.isatty())
    for case in progress:
        report = check_case(case, required, check_data=check_data)
        modalities.update(list(case.paths))
        if case.region:
            regions[case.region] += 1
        files = {}
        for modality, info in report.files.items():
            shapes[_fmt_shape(info.shape)] += 1
            spacings[_fmt_spacing(info.spacing)] += 1
            orientations[info.orientation] += 1
            files[modality] = {
                "path": str(info.path),
                "shape": list(info.shape),
                "spacing_mm": [round(s, 6) for s in info.spacing],
                "orientation": info.orientation,
                "dtype": info.dtype,
                "min": info.min,
                "max": info.max,
            }
            if info.min is not None and info.min == info.min:  # skip NaN (all non-finite)
                stats = intensity.setdefault(modality, {"min": [], "max": []})
                stats["min"].append(info.min)
                stats["max"].append(info.max)
        case_problems = [
            {
                "case_id": case.case_id,
                "path": str(p.path) if p.path else None,
                "problem": p.problem,
                "message": str(p),
            }
            for p in report.problems
        ]
        problems.extend(case_problems)
        case_rows.append(
            {
                "case_id": case.case_id,
                "region": case.region,
                "files": files,
                "problems": [p["message"] for p in case_problems],
            }
        )
    phantom = is_phantom_dataset(root)
    num_bad = sum(1 for row in case_rows if row["problems"])
    return {
        "root": str(root),
        "layout": layout,
        "phantom": phantom,
        "phantom_note": PHANTOM_NOTE if phantom else None,
        "num_cases": len(cases),
        "num_valid": len(cases) - num_bad,
        "num_bad": num_bad,
        "required": required,
        "modalities": _counts(modalities),
        "regions": _counts(regions),
        "shapes": _counts(shapes),
        "spacings_mm": _counts(spacings),
        "orientations": _counts(orientations),
        "intensity": {
            m: {
                "min": min(s["min"]),
                "max": max(s["max"]),
                "case_min_range": [min(s["min"]), max(s["min"])],
                "case_max_range": [min(s["max"]), max(s["max"])],
            }
            for m, s in intensity.items()
        },
        "data_checked": check_data,
        "cases": case_rows,
        "problems": problems,
    }


def _print_text(summary: dict[str, Any]) -> None:
    def counted(counts: dict[str, int], unit: str) -> str:
        return ", ".join(f"{k} ({v} {unit})" for k, v in counts.items()) or "-"

    lines = [f"dataset       {summary['root']}"]
    if summary["phantom"]:
        lines.append(f"              {summary['phantom_note']}")
    lines += [
        f"layout        {summary['layout']}",
        f"cases         {summary['num_cases']} ({summary['num_valid']} valid, "
        f"{summary['num_bad']} with problems)",
    ]
    if summary["regions"]:
        lines.append(f"regions       {counted(summary['regions'], 'cases')}")
    lines += [
        f"modalities    {counted(summary['modalities'], 'cases')}; required: "
        f"{', '.join(summary['required']) or '-'}",
        f"shapes        {counted(summary['shapes'], 'files')}",
        f"spacings mm   {counted(summary['spacings_mm'], 'files')}",
        f"orientations  {counted(summary['orientations'], 'files')}",
    ]
    if summary["intensity"]:
        lines.append("intensities   modality: overall min .. max  (per-case max from .. to)")
        for m, s in summary["intensity"].items():
            lo, hi = s["case_max_range"]
            lines.append(
                f"  {m:<11} {_fmt_num(s['min'])} .. {_fmt_num(s['max'])}  "
                f"({_fmt_num(lo)} .. {_fmt_num(hi)})"
            )
    elif not summary["data_checked"]:
        lines.append("intensities   not read (--header-only)")
    if summary["problems"]:
        lines.append(f"problems      {len(summary['problems'])}:")
        lines += [f"  {p['case_id']}: {p['message']}" for p in summary["problems"]]
    else:
        lines.append("problems      none")
    print("\n".join(lines))


def run(args: argparse.Namespace) -> int:
    summary = inspect_dataset(
        args.data, layout=args.layout, required=args.required, check_data=not args.header_only
    )
    try:
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            _print_text(summary)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `lift3d inspect DIR | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    problems = summary["problems"]
    if not problems:
        return 0
    first = problems[0]["message"]
    if args.skip_bad and summary["num_valid"] > 0:
        print(
            f"lift3d inspect: warning: {summary['num_bad']} of {summary['num_cases']} cases have "
            f"problems and would be skipped (--skip-bad); first: {first}",
            file=sys.stderr,
        )
        return 0
    print(
        f"lift3d inspect: error: {len(problems)} problem(s) in {summary['num_bad']} of "
        f"{summary['num_cases']} cases; first: {first}",
        file=sys.stderr,
    )
    return 2
