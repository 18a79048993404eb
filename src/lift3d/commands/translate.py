"""`lift3d translate`: apply a trained translation model to a volume or a whole dataset."""

from __future__ import annotations

import argparse

from lift3d.commands import (
    add_model_run_arguments,
    add_precision_arguments,
    warn_if_no_mixer_is_not_2d,
)

HELP = (
    "Translate with a model from 'lift3d train translate'. File mode (mr2ct): --input mr.nii.gz "
    "--output sct.nii.gz writes the synthetic CT in HU on the input's exact grid (a mask.nii.gz "
    "beside the input, or --mask, is used as in training). Folder mode: --input DATASET --output "
    "DIR writes DIR/<case_id>/sct.nii.gz (mr2ct) or DIR/<case_id>/<case_id>-<mod>.nii.gz "
    "(missing modality; --target MOD or cycle for complete cases). --no-mixer runs the per-slice "
    "translator alone (the no-mapper ablation)."
)
EXAMPLE = "lift3d translate --model runs/mr2ct --input 1BA001/mr.nii.gz --output 1BA001_sct.nii.gz"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="RUN", help="model folder")
    parser.add_argument(
        "--input",
        required=True,
        nargs="+",
        metavar="PATH",
        help="an MR file (mr2ct), three BraTS modality files (missing), or a dataset folder",
    )
    parser.add_argument(
        "--output", required=True, metavar="PATH", help="output file (file mode) or folder"
    )
    parser.add_argument("--mask", metavar="FILE", help="file mode: foreground mask of the input")
    parser.add_argument(
        "--target",
        metavar="MOD",
        help="missing-modality model: modality to synthesise in complete cases "
        "(t1n, t1c, t2w, t2f, or cycle: case i gets modality i mod 4)",
    )
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="folder mode: leave out cases with bad inputs (warned, listed in translation.json) "
        "instead of stopping",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        metavar="N",
        help="z-chunk of the forward pass in output slices (default: the model's "
        "model.chunk_size; 0 = the whole volume at once, more memory)",
    )
    add_precision_arguments(parser)
    add_model_run_arguments(parser, "replace existing outputs", ablation="mixer")


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from lift3d.data.discovery import read_checked
    from lift3d.data.volume import image_suffix, write_volume
    from lift3d.errors import InputError
    from lift3d.inference.translate import (
        find_mask_beside,
        load_translation_model,
        read_inputs,
        read_run_info,
        translate_dataset,
        translate_volumes,
    )
    from lift3d.utils import check_output_path

    inputs = [Path(p) for p in args.input]
    for p in inputs:
        if not p.exists():
            raise InputError("input not found", p)
    read_run_info(args.model)  # a bad model folder fails before anything else
    folder_mode = len(inputs) == 1 and inputs[0].is_dir()
    out = Path(args.output)
    if folder_mode:
        if image_suffix(out):
            raise InputError("folder mode writes a folder; --output must not be an image file", out)
        if args.mask:
            raise InputError("--mask applies to file mode; dataset cases use their own mask file")
    else:
        if not image_suffix(out):
            raise InputError("file mode: --output must be an image file (.nii.gz, .nii, .mha)", out)
        if any(p.is_dir() for p in inputs):
            raise InputError("give either one dataset folder or image files, not both")
        if args.skip_bad:
            raise InputError("--skip-bad applies to folder mode (a dataset folder as --input)")
    check_output_path(out, inputs=[*inputs, args.model], overwrite=args.overwrite)
    bundle = load_translation_model(
        args.model,
        args.device,
        args.precision,
        compile=args.compile,
        chunk_size=args.chunk_size,
    )
    use_mixer = not args.no_mixer
    if not use_mixer:
        warn_if_no_mixer_is_not_2d(bundle.cfg, args.model)
    target = args.target
    if target is not None and bundle.target is not None:
        raise InputError(f"--target applies to missing-modality models; this one is {bundle.task}")
    if target is not None and target not in (*bundle.slots, "cycle"):
        raise InputError(
            f"--target must be one of {', '.join(bundle.slots)} or cycle, got {target!r}"
        )

    if folder_mode:
        written = translate_dataset(
            bundle,
            inputs[0],
            out,
            target=target,
            use_mixer=use_mixer,
            progress=sys.stderr.isatty(),
            skip_bad=args.skip_bad,
            overwrite=args.overwrite,
        )
        print(f"wrote {len(written)} volume(s) under {out}")
        return 0

    volumes = read_inputs(bundle, inputs)
    mask_path = Path(args.mask) if args.mask else None
    if mask_path is None and bundle.target is not None:
        mask_path = find_mask_beside(inputs[0])
    mask = read_checked(mask_path, "mask") if mask_path is not None else None
    vol = translate_volumes(
        bundle, volumes, target if target != "cycle" else None, mask=mask, use_mixer=use_mixer
    )
    write_volume(vol, out, overwrite=args.overwrite, require_finite=True)
    print(f"wrote {out}")
    return 0
