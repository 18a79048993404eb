"""`lift3d generate`: sample new 3D volumes from a trained unconditional LiFT model."""

from __future__ import annotations

import argparse

from lift3d.commands import add_precision_arguments

HELP = (
    "Sample N new volumes from a model trained with 'lift3d train generate'. Writes one "
    "sample_XXXX.nii.gz per sample on the training data's reference grid (one file per modality, "
    "sample_XXXX-<mod>.nii.gz, when several modalities were trained jointly), a tri-planar "
    "montage.png and generation.json. --no-mapper samples every slice's latent independently "
    "(the ablation without the trajectory mapper); it also works on a folder whose training has "
    "finished the generator stage but not yet the mapper stage (E and G are final by then)."
)
EXAMPLE = "lift3d generate --model runs/gen --n 8 --out runs/gen_samples --seed 1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, metavar="RUN", help="model folder (lift3d train generate)"
    )
    parser.add_argument("--n", type=int, default=4, help="number of volumes to sample (default 4)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument(
        "--no-mapper",
        action="store_true",
        help="ablation: independent latent per slice instead of the trajectory mapper (works "
        "as soon as training has finished the generator stage)",
    )
    parser.add_argument(
        "--detail",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add (--no-detail: leave out) the output detail: white noise at the training "
        "data's noise level, measured when the model was trained, which the latent generator's "
        "decoder cannot draw (the same noise for LiFT and --no-mapper at one seed). Default: as "
        "the model's config says (detail.sample_detail; on in generate_demo and generate_brats)",
    )
    parser.add_argument(
        "--intensity-map",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="histogram-match (--no-intensity-map: do not) each MR sample's foreground to the "
        "training data: one monotone curve per arm, measured on the arm's own samples when the "
        "model was trained. Default: as the model's config says (detail.sample_intensity_map; "
        "on in generate_demo and generate_brats). --no-detail --no-intensity-map writes G's raw "
        "output",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    add_precision_arguments(parser)
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing output folder"
    )


def run(args: argparse.Namespace) -> int:
    from lift3d.errors import InputError
    from lift3d.inference.generate import generate_volumes
    from lift3d.model_folder import read_model_folder
    from lift3d.utils import check_output_path, resolve_device

    if args.n <= 0:
        raise InputError(f"--n must be a positive number of samples, got {args.n}")
    # A bad model folder (or, without --no-mapper, a mapper not trained yet) fails before the
    # output is touched.
    read_model_folder(args.model, "generate", use_mapper=not args.no_mapper)
    check_output_path(args.out, inputs=[args.model], overwrite=args.overwrite)
    device = resolve_device(args.device)
    files = generate_volumes(
        args.model,
        args.n,
        args.out,
        seed=args.seed,
        use_mapper=not args.no_mapper,
        detail=args.detail,
        intensity_map=args.intensity_map,
        device=device,
        overwrite=args.overwrite,
        precision=args.precision,
        compile=args.compile,
    )
    print(f"wrote {len(files)} volume(s) and montage.png to {args.out}")
    return 0
