"""`lift3d evaluate`: score predictions against references, or compare two evaluations."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lift3d.constants import EVALUATE_TASKS, FLOOR_SUBSETS
from lift3d.errors import InputError

HELP = (
    "Score a folder of predictions against a reference dataset: SynthRAD2023 MAE/PSNR/SSIM "
    "(--task mr2ct), BraSyn PSNR/SSIM/MSE (--task missing), FID/KID and increment statistics "
    "(--task generate) with MS-SSIM diversity and, given the weights files, MedicalNet 3D FID "
    "and RadImageNet 2.5D FID (--medicalnet, --radimagenet), plus through-plane coherence "
    "(per-plane PSNR/SSIM, z-gradient error). "
    "Writes a per-case CSV and a summary JSON and prints mean ± std per metric; for generate "
    "also a montage of real beside generated slices, and with --floor DIR every score's "
    "real-vs-real floor and the ratio to it. "
    "--compare A.json B.json prints two evaluations side by side instead."
)
EXAMPLE = "lift3d evaluate --task mr2ct --pred runs/sct --ref data/SynthRAD2023 --out runs/sct_eval"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task",
        choices=EVALUATE_TASKS,
        help="mr2ct: PRED/<case>/sct.nii.gz vs a SynthRAD dataset; missing: "
        "PRED/<case>/<case>-<mod>.nii.gz vs a BraTS dataset; generate: generated volumes vs "
        "held-out real ones",
    )
    parser.add_argument("--pred", help="prediction folder (as written by lift3d translate)")
    parser.add_argument("--ref", help="reference dataset folder (SynthRAD or BraTS layout)")
    parser.add_argument("--out", help="output folder for cases.csv and summary.json")
    parser.add_argument("--json", help="also write the summary JSON to this file")
    parser.add_argument("--label", help="name of this run in tables (default: the --pred name)")
    parser.add_argument(
        "--mask-name",
        help="reference modality used as the scoring region (default: 'mask' for mr2ct, the "
        "non-zero reference voxels for missing)",
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("A_JSON", "B_JSON"),
        help="print two evaluate JSON files side by side (with B - A) and exit",
    )
    parser.add_argument(
        "--eval-encoder",
        metavar="PATH",
        help="--task generate: evaluation encoder file (.safetensors, identity in .json beside "
        "it); loaded when it exists, else trained on the reference volumes and saved there, so "
        "several evaluations (e.g. LiFT and --no-mapper) share one feature space; the real "
        "sets' scores (reference diversity, --floor) are kept in PATH's .scores/ folder beside it "
        "and reused by the next evaluation",
    )
    parser.add_argument(
        "--eval-shape",
        nargs=3,
        type=int,
        metavar=("S", "A", "R"),
        help="--task generate: grid (superior, anterior, right voxels) both sides are resampled "
        "to before scoring (default: the first reference volume's, each axis capped at 64). "
        "Use the model's own grid to compare models at their resolution (e.g. 32 32 32 for the "
        "demo config); an --eval-encoder file is tied to the grid it was trained on",
    )
    parser.add_argument(
        "--floor",
        metavar="DIR",
        help="--task generate: a second real set on the generated grid (e.g. the training "
        "volumes) scored against the same --ref with the same evaluation encoder and at the same "
        "sample count (the larger set is subsampled, seeded; a larger generated set is scored in up "
        f"to {FLOOR_SUBSETS} disjoint subsets of the floor's size and their mean compared); every score is also "
        "reported as a ratio to this real-vs-real floor (1 = as close to the references as real "
        "data)",
    )
    parser.add_argument(
        "--medicalnet",
        metavar="PATH",
        help="--task generate: MedicalNet ResNet-50 weights (resnet_50_23dataset.pth) for the 3D "
        "FID / MMD of WDM-style tables; nothing is downloaded",
    )
    parser.add_argument(
        "--radimagenet",
        metavar="PATH",
        help="--task generate: RadImageNet ResNet-50 weights (RadImageNet-ResNet50_notop.pth) "
        "for MAISI's 2.5D FID / MMD; nothing is downloaded",
    )
    parser.add_argument(
        "--diversity-pairs",
        type=int,
        metavar="N",
        help="--task generate: score at most N pairs per set for MS-SSIM / SSIM diversity "
        "(seeded random subset; default 100)",
    )
    parser.add_argument("--labels", nargs=2, metavar=("A", "B"), help="column names for --compare")
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="mr2ct/missing: score the predictions there are when some reference cases have "
        "none (listed as missing_predictions in the summary); without it that is an error",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def _load_json(path: str) -> dict:
    """An evaluate JSON file (one with a ``summary``), or InputError."""
    p = Path(path)
    if not p.is_file():
        raise InputError("evaluation JSON not found", p)
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"not a readable JSON file ({exc.__class__.__name__})", p) from None
    if not isinstance(data, dict) or not isinstance(data.get("summary"), dict):
        raise InputError("not a lift3d evaluate JSON (no 'summary')", p)
    return data


def run(args: argparse.Namespace) -> int:
    from lift3d import evaluation as ev  # torch and the data stack: loaded only when run
    from lift3d.utils import check_output_path

    if args.compare:
        a, b = (_load_json(p) for p in args.compare)
        print(ev.compare_summaries(a, b, args.labels))
        return 0
    missing = [f"--{n}" for n in ("task", "pred", "ref") if getattr(args, n) is None]
    if missing:
        raise InputError(f"missing {', '.join(missing)} (or use --compare A.json B.json)")
    inputs = [Path(args.pred), Path(args.ref)]
    floor = getattr(args, "floor", None)
    if floor is not None:
        if args.task != "generate":
            raise InputError("--floor only applies to --task generate")
        inputs.append(Path(floor))
    if args.out:
        check_output_path(args.out, inputs=inputs, overwrite=args.overwrite)
    if args.json:
        check_output_path(args.json, inputs=inputs, overwrite=args.overwrite)
    options: dict | None = None
    if getattr(args, "eval_encoder", None):
        if args.task != "generate":
            raise InputError("--eval-encoder only applies to --task generate")
        if not Path(args.eval_encoder).exists():  # trained and written there
            check_output_path(args.eval_encoder, inputs=inputs)
        options = {"eval_encoder": args.eval_encoder}
    if getattr(args, "eval_shape", None):
        if args.task != "generate":
            raise InputError("--eval-shape only applies to --task generate")
        if min(args.eval_shape) < 8:
            raise InputError(f"--eval-shape sizes must be at least 8, got {args.eval_shape}")
        options = {**(options or {}), "eval_shape": tuple(args.eval_shape)}
    for name in ("medicalnet", "radimagenet", "diversity_pairs"):
        value = getattr(args, name, None)
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if args.task != "generate":
            raise InputError(f"{flag} only applies to --task generate")
        if name == "diversity_pairs" and value < 1:
            raise InputError(f"{flag} must be at least 1, got {value}")
        if name != "diversity_pairs" and not Path(value).is_file():
            raise InputError(f"{flag} weights file not found", value)
        options = {**(options or {}), name: value}
    if args.task == "generate":
        if floor is not None:
            options = {**(options or {}), "floor_dir": floor}
        montage = ev.montage_paths(args.out, args.json)
        for path in montage:
            check_output_path(path, inputs=inputs, overwrite=args.overwrite)
        if montage:
            options = {**(options or {}), "montage": montage, "overwrite": args.overwrite}
    result = ev.evaluate_folder(
        args.task,
        args.pred,
        args.ref,
        label=args.label,
        mask_name=args.mask_name,
        generate_options=options,
        allow_missing=args.allow_missing,
    )
    written = ev.write_results(result, args.out, args.json, overwrite=args.overwrite)
    print(ev.format_summary(result))
    for key, what in (
        ("missing_predictions", "reference case(s) without a prediction, not scored"),
        ("extra_predictions", "predicted case(s) without a reference, not scored"),
    ):
        ids = result["summary"].get(key) or []
        if ids:
            print(f"{len(ids)} {what}: {', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}")
    written += [Path(p) for p in (result["summary"].get("montage") or {}).get("files", [])]
    for path in written:
        print(f"wrote {path}")
    if args.out:
        from lift3d.report.html import write_run_report  # matplotlib: only when a report is due

        report = write_run_report(args.out)
        if report is not None:
            print(f"report: {report}")
    return 0
