"""`lift3d phantom`: write a seeded synthetic head-phantom dataset (BraTS or SynthRAD layout)."""

from __future__ import annotations

import argparse

HELP = (
    "Write a seeded synthetic multi-modal head-phantom dataset (t1n/t1c/t2w/t2f + seg, or "
    "mr/ct/mask) in the BraTS 2023 or SynthRAD2023 task 1 layout, for demos and tests. "
    "Same seed, same bytes. Phantom data shows a mechanism works, never clinical quality."
)
EXAMPLE = (
    "lift3d phantom --layout brats --cases 8 --shape 64 64 64 --seed 0 --out data/phantom_brats"
)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _grid_size(text: str) -> int:
    from lift3d.data.synthetic import MIN_SIZE

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < MIN_SIZE:
        raise argparse.ArgumentTypeError(f"each size must be at least {MIN_SIZE}, got {value}")
    return value


def _spacing(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of mm, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"each spacing must be a positive size in mm, got {text}")
    return value


def _multislice(values: list[str] | None) -> tuple[str, ...] | None:
    """--multislice: None (the kind's default), () for 'none', else the sequences."""
    if values is None:
        return None
    return () if [v.lower() for v in values] == ["none"] else tuple(values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kind",
        choices=("basic", "realistic"),
        default="realistic",
        help="realistic (default): cortical bone and air both dark in MR, sinuses and mastoid air "
        "cells next to bone, fatty marrow, partial volume, bias field, Rician noise, varied "
        "anatomy, interleaved 2D MR stacks (--multislice); basic: every tissue distinguishable "
        "in one MR slice (the demo's data)",
    )
    parser.add_argument(
        "--layout",
        choices=("brats", "synthrad"),
        default="brats",
        help="brats: OUT/<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz (skull-stripped MR); "
        "synthrad: OUT/Task1/brain/<case>/{mr,ct,mask}.nii.gz (whole head, CT in HU). "
        "Default: brats",
    )
    parser.add_argument(
        "--cases", type=_positive_int, default=4, help="number of subjects (default: 4)"
    )
    parser.add_argument(
        "--shape",
        type=_grid_size,
        nargs=3,
        metavar=("X", "Y", "Z"),
        default=[64, 64, 64],
        help="voxel grid as stored in the files (BraTS size: 240 240 155; default: 64 64 64)",
    )
    parser.add_argument(
        "--spacing",
        type=_spacing,
        nargs=3,
        metavar=("SX", "SY", "SZ"),
        default=[1.0, 1.0, 1.0],
        help="voxel size in mm, e.g. 1 1 2.5 for thick axial slices (default: 1 1 1)",
    )
    parser.add_argument(
        "--multislice",
        nargs="+",
        metavar="MOD",
        help="--kind realistic: MR sequences acquired as interleaved 2D slice stacks (head motion "
        "between the two packages, slice cross-talk), or 'none'. Default: t1n t2w t2f (2D in "
        "most BraTS protocols; t1c is 3D). The synthrad layout's MR is the t1c: "
        "--multislice t1c models a 2D spin-echo MR",
    )
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    parser.add_argument("--out", required=True, help="output folder (absent or empty)")
    parser.add_argument(
        "--no-tumour", dest="tumour", action="store_false", help="healthy subjects (no glioma)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing output folder's dataset"
    )


def run(args: argparse.Namespace) -> int:
    import sys
    import time

    from lift3d.data.synthetic import write_phantom_dataset
    from lift3d.utils import check_output_path

    out = check_output_path(args.out, overwrite=args.overwrite)
    start = time.perf_counter()
    files = write_phantom_dataset(
        out,
        layout=args.layout,
        cases=args.cases,
        shape=tuple(args.shape),
        seed=args.seed,
        tumour=args.tumour,
        kind=args.kind,
        spacing=tuple(args.spacing),
        multislice=_multislice(args.multislice),
        overwrite=args.overwrite,
        progress=sys.stderr.isatty(),
    )
    seconds = time.perf_counter() - start
    shape = "x".join(str(s) for s in args.shape)
    print(
        f"wrote {args.cases} {args.kind} phantom case(s) ({args.layout} layout, {shape} voxels, "
        f"seed {args.seed}, {len(files)} files) to {out} in {seconds:.1f} s"
    )
    print(f"next: lift3d inspect {out}")
    return 0
