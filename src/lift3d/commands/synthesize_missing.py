"""`lift3d synthesize-missing`: write the one missing modality of a BraTS case."""

from __future__ import annotations

import argparse

from lift3d.commands import (
    add_model_run_arguments,
    add_precision_arguments,
    warn_if_no_mixer_is_not_2d,
)

HELP = (
    "Find the one missing modality (t1n, t1c, t2w or t2f) of a BraTS case folder and synthesise "
    "it from the other three with a missing-modality model ('lift3d train translate --task "
    "missing'). Writes <case_id>-<mod>.nii.gz on the case's grid, into the case folder (the "
    "BraSyn convention; existing files are never replaced without --overwrite) or into --out."
)
EXAMPLE = "lift3d synthesize-missing --model runs/missing --case BraTS-GLI-00001-000"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="RUN", help="missing-modality model")
    parser.add_argument("--case", required=True, metavar="DIR", help="BraTS case folder")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: the case folder)")
    add_precision_arguments(parser)
    add_model_run_arguments(parser, "replace an existing output", ablation="mixer")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lift3d.constants import BRATS_MODALITIES
    from lift3d.data.layouts import list_cases
    from lift3d.data.volume import write_volume
    from lift3d.errors import InputError
    from lift3d.inference.translate import (
        load_translation_model,
        output_name,
        read_run_info,
        translate_case,
    )
    from lift3d.utils import check_output_path

    case_dir = Path(args.case)
    if not case_dir.is_dir():
        raise InputError("case folder not found", case_dir)
    run_info = read_run_info(args.model)
    if run_info.get("subtask") not in (None, "missing"):
        raise InputError(
            f"model is a {run_info.get('subtask')} model; synthesize-missing needs one trained "
            "with --task missing",
            args.model,
        )
    layout, cases = list_cases(case_dir, "brats")
    if len(cases) != 1:
        raise InputError(f"expected one BraTS case folder, found {len(cases)} cases", case_dir)
    case = cases[0]
    absent = [m for m in BRATS_MODALITIES if m not in case.paths]
    if not absent:
        raise InputError("case already has all four modalities; nothing is missing", case_dir)
    if len(absent) > 1:
        raise InputError(
            f"case lacks {len(absent)} modalities ({', '.join(absent)}); exactly one may be missing",
            case_dir,
        )
    target = absent[0]
    out_dir = Path(args.out) if args.out else case.root
    out = out_dir / output_name("missing", case.case_id, target)
    check_output_path(out, inputs=list(case.paths.values()), overwrite=args.overwrite)
    if args.out:
        check_output_path(out_dir, inputs=[case_dir], overwrite=True)
    bundle = load_translation_model(args.model, args.device, args.precision, compile=args.compile)
    if bundle.task != "missing":
        raise InputError(
            f"model is a {bundle.task} model, not a missing-modality model", args.model
        )
    if args.no_mixer:
        warn_if_no_mixer_is_not_2d(bundle.cfg, args.model)
    vol = translate_case(bundle, case, target, use_mixer=not args.no_mixer)
    write_volume(vol, out, overwrite=args.overwrite, require_finite=True)
    print(f"wrote {out} (synthesised {target})")
    return 0
