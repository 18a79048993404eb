"""`lift3d report`: a self-contained HTML page of a run or evaluation folder."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = (
    "Build a self-contained HTML report (images embedded) from a run or evaluation folder: "
    "tri-planar views of input/output/target/|error|, metric tables side by side, error per "
    "slice along z, training curves, and the data/encoder/machine behind each number."
)
EXAMPLE = "lift3d report runs/missing_eval --out report.html"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "src", type=Path, metavar="RUN_OR_EVAL_DIR", help="run or evaluation folder"
    )
    parser.add_argument(
        "--out", type=Path, help="HTML file to write (default RUN_OR_EVAL_DIR/report.html)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report")


def run(args: argparse.Namespace) -> int:
    from lift3d.errors import InputError
    from lift3d.report.html import build_report
    from lift3d.utils import check_output_path

    if not args.src.is_dir():
        raise InputError("not a folder (expected a run or evaluation folder)", args.src)
    out = args.out if args.out is not None else args.src / "report.html"
    if out.suffix.lower() not in (".html", ".htm"):
        raise InputError("the report must be an .html file", out)
    if out.is_dir():
        raise InputError("is a folder; give the .html file to write", out)
    check_output_path(out, overwrite=args.overwrite)
    figures = out.with_name(f"{out.stem}_figures")
    if figures.exists() and any(figures.iterdir()) and not args.overwrite:
        raise InputError("figure folder already exists; pass --overwrite to replace it", figures)
    path = build_report(args.src, out)
    print(f"report: {path}  (figures in {figures}/)")
    return 0
