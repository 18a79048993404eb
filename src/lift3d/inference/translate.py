"""Apply a trained LiFT translation model: MR -> CT in HU, or a missing BraTS modality.

(LiFT, arXiv 2605.19060; METHOD.md variant 2.) A model folder from ``lift3d train translate``
holds ``config.yaml``, ``run.json`` (task "translate", subtask "mr2ct" | "missing") and
``model.safetensors``. Each input is preprocessed exactly as in training
(`lift3d.data.preprocess.preprocess_case`: RAS, optional resampling, model grid, intensity
window), translated in overlapping z-chunks (bounded memory, chunk-independent result), and
restored onto the input's exact grid (`restore_volume`): same shape, same affine, HU for CT.

The model grid (``data.shape``) grows to the input's field of view where the input is larger, so
nothing is cropped away. MR intensities are normalised on a foreground: the case's ``mask`` when
there is one (SynthRAD ships ``mask.nii.gz``; training used it), else the non-zero MR voxels.

Inputs are checked by `lift3d.data.discovery.check_volume_data` in file and folder mode alike
(finite, not constant, 3D, a mask not empty); only the files inference reads are checked (a
case's reference CT is not). A result with NaN or Inf voxels is never written.

Precision (`lift3d.inference.precision`): the network runs in the bundle's precision (fp32, or
bf16 autocast: ``auto`` is bf16 on CUDA, fp32 on the CPU); its output is cast to float32 before
clamping and restoring, so the written volume is float32 on the source grid either way.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lift3d.constants import BRATS_MODALITIES, SCT_FILE
from lift3d.data.datasets import default_kind
from lift3d.data.discovery import load_case, read_checked, validate_case
from lift3d.data.layouts import Case, DiscoveryResult, list_cases
from lift3d.data.preprocess import CT_WINDOW_HU, preprocess_case, restore_volume, to_model_space
from lift3d.data.volume import Volume, image_suffix, write_volume
from lift3d.errors import InputError
from lift3d.inference.precision import (
    compile_blocks,
    inference_mode,
    resolve_precision,
    translation_blocks,
)
from lift3d.model_folder import load_model, read_model_folder
from lift3d.models.lift import make_input, task_modalities
from lift3d.utils import atomic_write_text, resolve_device

log = logging.getLogger(__name__)

MISSING_OUTPUT_WINDOW = (0.0, 1.0)  # a synthesised MR modality is written on the [0, 1] scale


@dataclass
class TranslationBundle:
    """A loaded translation model and what it expects.

    Attributes:
        model: the `TranslationModel` (eval mode, on `device`).
        cfg: its `TranslateConfig`.
        task: "mr2ct" | "missing".
        slots: input modality slots (["mr"] or the four BraTS modalities).
        target: fixed target ("ct") or None (missing: whichever slot is absent).
        device: torch device string.
        model_dir: the model folder.
        precision: resolved inference precision, "fp32" | "bf16".
        chunk_size: z-chunk (output slices) of the forward pass; None: the config's
            ``model.chunk_size`` (0 = whole volume).
    """

    model: Any
    cfg: Any
    task: str
    slots: list[str]
    target: str | None
    device: str
    model_dir: Path
    precision: str = "fp32"
    chunk_size: int | None = None


def read_run_info(model_dir: str | Path) -> dict[str, Any]:
    """run.json of a translation model folder; InputError unless it is one (names the task)."""
    return read_model_folder(model_dir, "translate").run


def load_translation_model(
    model_dir: str | Path,
    device: str = "auto",
    precision: str = "fp32",
    *,
    compile: bool = False,
    chunk_size: int | None = None,
) -> TranslationBundle:
    """Load a translation model folder.

    Args:
        model_dir: the model folder.
        device: auto | cpu | cuda[:i].
        precision: auto | fp32 | bf16 (`lift3d.inference.precision`).
        compile: `torch.compile` the translator's convolution blocks (meant for CUDA).
        chunk_size: z-chunk of the forward pass (None: the config's; 0: whole volume).

    Raises:
        InputError: missing folder or files, a model from another task, unreadable weights,
            a precision the device cannot run, a negative chunk size.
    """
    device = resolve_device(device)
    try:
        precision = resolve_precision(precision, device)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if chunk_size is not None and chunk_size < 0:
        raise InputError(f"--chunk-size must be >= 0, got {chunk_size}")
    model, folder = load_model(model_dir, "translate", device)
    if compile:
        compile_blocks(model, translation_blocks(device))
    cfg = folder.config
    slots, target = task_modalities(cfg.task)
    return TranslationBundle(
        model, cfg, cfg.task, slots, target, device, folder.path, precision, chunk_size
    )


# ------------------------------------------------------------------ one case


def _check_geometry(volume: Volume, path: Path | None) -> None:
    spacing = np.asarray(volume.spacing)
    if not np.all(np.isfinite(volume.affine)) or np.any(spacing < 1e-6):
        raise InputError("image geometry is unreadable (degenerate affine / zero spacing)", path)
    if abs(np.linalg.det(volume.affine[:3, :3])) < 1e-12:
        raise InputError("image geometry is unreadable (singular affine)", path)


def _inference_shape(train_shape: tuple[int, ...], full_shape: tuple[int, ...], multiple: int):
    """Training grid, enlarged (H, W to a multiple of the U-Net stride) where the input's
    model-space field of view is larger."""
    d = max(train_shape[0], full_shape[0])
    hw = [max(t, -(-f // multiple) * multiple) for t, f in zip(train_shape[1:], full_shape[1:])]
    return (d, *hw)


@torch.no_grad()
def translate_volumes(
    bundle: TranslationBundle,
    volumes: dict[str, Volume],
    target: str | None = None,
    *,
    mask: Volume | None = None,
    use_mixer: bool = True,
) -> Volume:
    """Translate one case.

    Args:
        bundle: from `load_translation_model`.
        volumes: mr2ct: {"mr": Volume}; missing: the three present BraTS modalities.
        target: missing: the modality to synthesise (default: the one absent from `volumes`).
        mask: optional foreground on the inputs' grid (MR normalisation and field-of-view centre,
            as in training).
        use_mixer: False gives the no-mapper ablation (per-slice translator only).

    Returns:
        The synthesised volume on the inputs' grid (shape, affine, NIfTI header of the first
        input); CT in HU, a missing MR modality on the [0, 1] scale.

    Raises:
        InputError: modality names or count do not match the model, grids differ (the mask's
            too), bad geometry.
    """

    cfg = bundle.cfg
    names = sorted(volumes)
    if bundle.target is not None:  # mr2ct
        if names != bundle.slots:
            raise InputError(
                f"this {bundle.task} model takes {bundle.slots}, got modalities {names}",
                next(iter(volumes.values())).path if volumes else None,
            )
        target = bundle.target
    else:
        unknown = [n for n in names if n not in bundle.slots]
        absent = [s for s in bundle.slots if s not in volumes]
        if unknown or len(volumes) != len(bundle.slots) - 1:
            raise InputError(
                f"the missing-modality model takes 3 of {bundle.slots}, got {names}",
                next(iter(volumes.values())).path if volumes else None,
            )
        if target is not None and target != absent[0]:
            raise InputError(f"target {target!r} is among the inputs; absent is {absent[0]!r}")
        target = absent[0]
    for vol in volumes.values():
        _check_geometry(vol, vol.path)
    ref = volumes[names[0]]
    if mask is not None and not mask.same_grid(ref):
        raise InputError(f"mask is not on the grid of the input {ref.path}", mask.path)
    kinds = {m: default_kind(m) for m in volumes}
    inputs = dict(volumes)
    if mask is not None:
        inputs["mask"] = mask
        kinds["mask"] = "mask"
    foreground = None if mask is None else np.asarray(mask.array) > 0
    train_shape = tuple(int(s) for s in cfg.data.shape)

    def prepare(shape: tuple[int, ...]):
        return preprocess_case(
            inputs,
            shape=shape,
            kinds=kinds,
            slice_axis=cfg.data.slice_axis,
            spacing_mm=cfg.data.spacing_mm,
            foreground=foreground,
        )

    arrays, record = prepare(train_shape)
    full = to_model_space(np.empty(record.resampled_shape, bool), record.slice_axis).shape
    shape = _inference_shape(train_shape, full, bundle.model.translator.multiple)
    if shape != train_shape:
        log.info(
            "input field of view %s exceeds the model grid %s; using %s", full, train_shape, shape
        )
        arrays, record = prepare(shape)

    device = bundle.device
    batch = {m: torch.from_numpy(arrays[m])[None, None].to(device) for m in volumes}
    missing = None
    if bundle.target is None:
        for slot in bundle.slots:  # zero-filled slot; make_input zeroes it again
            batch.setdefault(slot, torch.zeros_like(next(iter(batch.values()))))
        missing = torch.tensor([bundle.slots.index(target)], device=device)
    x = make_input(bundle.task, batch, missing)
    chunk = cfg.model.chunk_size if bundle.chunk_size is None else bundle.chunk_size
    with inference_mode(device, bundle.precision):
        pred = bundle.model(x, use_mixer=use_mixer, chunk_size=chunk or 0)
    pred = pred.float().clamp(0.0, 1.0)[0, 0].cpu().numpy()  # (D, H, W), float32 from bf16 too

    window = CT_WINDOW_HU if target == "ct" else MISSING_OUTPUT_WINDOW
    record.intensity[target] = {
        "kind": default_kind(target),
        "window": list(window),
        "dtype": "<f4",
    }
    restored = restore_volume(pred, record, target)
    return ref.with_array(restored.array.astype(np.float32))


# ------------------------------------------------------------------ files and datasets


def find_mask_beside(path: Path) -> Path | None:
    """SynthRAD convention: ``mask.nii.gz`` / ``mask.mha`` in the input file's folder."""
    for name in ("mask.nii.gz", "mask.nii", "mask.mha", "mask.mhd"):
        candidate = path.parent / name
        if candidate.is_file() and candidate.resolve() != path.resolve():
            return candidate
    return None


def brats_modality_of(path: Path) -> str | None:
    """``BraTS-GLI-00000-000-t1n.nii.gz`` -> ``t1n`` (None if the name has no BraTS suffix)."""

    stem = path.name[: -len(image_suffix(path))] if image_suffix(path) else path.name
    for m in BRATS_MODALITIES:
        if stem.lower().endswith(f"-{m}") or stem.lower() == m:
            return m
    return None


def read_inputs(bundle: TranslationBundle, paths: list[Path]) -> dict[str, Volume]:
    """Read input files and name them by modality (mr2ct: the one file is "mr"; missing: by the
    BraTS suffix ``-t1n`` ...), each checked as a dataset's files are (`read_checked`).
    InputError for a count or names the model does not take, or a bad volume."""
    if bundle.target is not None:
        if len(paths) != 1:
            raise InputError(f"the {bundle.task} model takes one MR volume, got {len(paths)} files")
        return {"mr": read_checked(paths[0], "mr")}
    named: dict[str, Volume] = {}
    for p in paths:
        mod = brats_modality_of(p)
        if mod is None:
            raise InputError(
                "cannot tell the modality from the file name (expected -t1n, -t1c, -t2w or -t2f)", p
            )
        if mod in named:
            raise InputError(f"modality {mod} given twice", p)
        named[mod] = read_checked(p, mod)
    if len(named) != len(bundle.slots) - 1:
        raise InputError(
            f"the missing-modality model takes 3 of {bundle.slots}, got {sorted(named)}"
        )
    return named


def output_name(task: str, case_id: str, target: str) -> str:
    """Folder-mode file name: ``sct.nii.gz`` (mr2ct) or ``<case_id>-<mod>.nii.gz`` (missing)."""
    return SCT_FILE if task == "mr2ct" else f"{case_id}-{target}.nii.gz"


def plan_dataset(
    bundle: TranslationBundle, root: Path, target: str | None = None, skip_bad: bool = False
) -> DiscoveryResult:
    """Cases of a dataset folder and the target each gets (no file is opened).

    mr2ct: every case (one without an ``mr`` fails when it is checked). missing: a case with
    exactly one BraTS modality absent gets that one; a complete case needs `target` (a
    modality, or ``cycle``: case i in case-id order gets modality i mod 4, the held-out
    evaluation setting).

    Args:
        bundle: the model.
        root: dataset folder.
        target: missing-modality models: ``--target``.
        skip_bad: leave out (with a warning) a case that misses more than one modality, instead
            of failing.

    Returns:
        ``[(case, target), ...]`` in case-id order, with ``.skipped`` ``[(case_id, error)]``.

    Raises:
        InputError: the dataset has no usable case, a case misses more than one modality, or a
            complete case with no `target`.
    """
    layout, cases = list_cases(root)
    cases.sort(key=lambda c: c.case_id)
    if bundle.target is not None:
        plan = [(c, bundle.target) for c in cases]
        if not plan:
            raise InputError("no cases found", root)
        return DiscoveryResult(plan, root=root, layout=layout)
    if layout != "brats":
        raise InputError(
            f"the missing-modality model needs a BraTS-layout dataset, found {layout}", root
        )
    plan, skipped = [], []
    for i, case in enumerate(cases):
        absent = [s for s in bundle.slots if s not in case.paths]
        try:
            if len(absent) > 1:
                raise InputError(
                    f"case lacks {len(absent)} modalities ({', '.join(absent)}); one model "
                    "input may be missing, not more",
                    case.root,
                )
            if absent and target not in (None, "cycle") and target != absent[0]:
                raise InputError(f"case lacks {absent[0]}, not --target {target}", case.root)
        except InputError as exc:
            if not skip_bad:
                raise
            log.warning("skipping case %s: %s", case.case_id, exc)
            skipped.append((case.case_id, exc))
            continue
        if absent:
            plan.append((case, absent[0]))
        elif target is None:
            raise InputError(
                "case already has all four modalities; pass --target MOD (or "
                "--target cycle) to synthesise one of them from the other three",
                case.root,
            )
        else:
            plan.append((case, bundle.slots[i % 4] if target == "cycle" else target))
    if not plan:
        raise InputError(f"no cases to translate ({len(skipped)} skipped as bad)", root)
    return DiscoveryResult(plan, root=root, layout=layout, skipped=skipped)


def input_modalities(bundle: TranslationBundle, target: str) -> list[str]:
    """The modalities the model reads to produce `target`."""
    return ["mr"] if bundle.target is not None else [s for s in bundle.slots if s != target]


def inference_case(bundle: TranslationBundle, case: Case, target: str) -> Case:
    """`case` with only the files inference reads: the model's inputs and the mask.

    Other files of the case (the reference CT, a segmentation) are neither checked nor read,
    so a problem in one of them does not stop inference.
    """
    keep = {*input_modalities(bundle, target), "mask"}
    return dataclasses.replace(case, paths={m: p for m, p in case.paths.items() if m in keep})


def check_inference_case(bundle: TranslationBundle, case: Case, target: str) -> Case:
    """Check the files inference reads from `case` (headers and voxel data, as `load_case`
    does) and return the restricted case (`inference_case`).

    Raises:
        InputError: an input or the mask is missing, unreadable, on another grid, non-finite,
            constant or empty.
    """
    used = inference_case(bundle, case, target)
    validate_case(used, input_modalities(bundle, target))
    return used


def translate_case(
    bundle: TranslationBundle, case: Any, target: str, use_mixer: bool = True
) -> Volume:
    """Translate one discovered `Case` (its mask, when present, is the foreground).

    Only the model's inputs and the mask are read (`inference_case`), each checked as in file
    mode.
    """

    case = inference_case(bundle, case, target)
    volumes = load_case(case, input_modalities(bundle, target))
    mask = load_case(case, ["mask"])["mask"] if "mask" in case.paths else None
    return translate_volumes(bundle, volumes, target, mask=mask, use_mixer=use_mixer)


def translate_dataset(
    bundle: TranslationBundle,
    root: Path,
    out_dir: Path,
    *,
    target: str | None = None,
    use_mixer: bool = True,
    progress: bool = True,
    skip_bad: bool = False,
    overwrite: bool = False,
) -> list[Path]:
    """Folder mode: ``OUT/<case_id>/sct.nii.gz`` or ``OUT/<case_id>/<case_id>-<mod>.nii.gz``.

    Every case's inputs are checked before the first one is translated, so a bad case stops
    the run before anything is written (with `skip_bad`: it is left out, with a warning, and
    listed under ``skipped`` in ``OUT/translation.json``). Also writes ``OUT/translation.json``
    (model, mixer flag, case -> file, target, skipped cases).

    Args:
        bundle: the model.
        root: dataset folder.
        out_dir: output folder (checked by the caller with `check_output_path`).
        target: missing-modality models: ``--target``.
        use_mixer: False gives the no-mapper ablation.
        progress: tqdm bar.
        skip_bad: leave out cases whose inputs are bad instead of failing.
        overwrite: replace existing outputs (else every output file is created exclusively:
            one that appears meanwhile, e.g. from another run, is an error).

    Returns:
        The written volume files.

    Raises:
        InputError: a bad case (unless `skip_bad`), no case left, an output that exists, or an
            output that cannot be written.
    """
    from tqdm.auto import tqdm

    plan = plan_dataset(bundle, root, target, skip_bad=skip_bad)
    skipped: dict[str, str] = {cid: exc.problem for cid, exc in plan.skipped}
    checked = []
    for case, tgt in plan:
        try:
            checked.append((check_inference_case(bundle, case, tgt), tgt))
        except InputError as exc:
            if not skip_bad:
                raise
            log.warning("skipping case %s: %s", case.case_id, exc)
            skipped[case.case_id] = str(exc)
    if not checked:
        raise InputError(f"no case could be translated ({len(skipped)} skipped as bad)", root)
    written, cases = [], {}
    for case, tgt in tqdm(checked, desc="translate", disable=not progress, unit="case"):
        try:
            vol = translate_case(bundle, case, tgt, use_mixer)
        except InputError as exc:
            if not skip_bad:
                raise
            log.warning("skipping case %s: %s", case.case_id, exc)
            skipped[case.case_id] = str(exc)
            continue
        path = out_dir / case.case_id / output_name(bundle.task, case.case_id, tgt)
        write_volume(vol, path, overwrite=overwrite, require_finite=True)
        written.append(path)
        cases[case.case_id] = {"file": str(path), "target": tgt, "source": str(case.root)}
    if skipped:
        log.warning(
            "skipped %d of %d case(s) with problems (--skip-bad)",
            len(skipped),
            len(plan) + len(plan.skipped),
        )
    info = {
        "model": str(bundle.model_dir),
        "task": bundle.task,
        "use_mixer": use_mixer,
        "input": str(root),
        "cases": cases,
        "skipped": skipped,
    }
    atomic_write_text(out_dir / "translation.json", json.dumps(info, indent=1), overwrite=overwrite)
    return written
