"""Unconditional generation (``lift3d evaluate --task generate``): generated vs held-out volumes.

Both sides are put on a common evaluation grid (:func:`prepare_volume`: reoriented to RAS, in
model space D=S, H=A, W=R, normalised by the 0.5/99.5 percentiles of their non-zero voxels,
resampled to ``eval_shape``), cut into slices along each plane and described by the evaluation
encoder (:mod:`lift3d.evaluation.encoder`). The distances are those of
:mod:`lift3d.metrics.distribution` (lower is better):

- ``fid_<plane>``, ``kid_<plane>``: Frechet distance and KID of slice features; ``kid_*_std`` is
  the std over KID subsets, ``fid_*_std`` the std over bootstrap resamples of the generated
  volumes;
- ``increment_distance_<plane>``: Frechet distance of feature increments along the plane's axis,
  scale-free; ``increment_distance`` is the mean over planes;
- ``histogram_distance``: Wasserstein-1 distance of the foreground intensity histograms;
- ``zgrad_ratio``: mean through-plane (axial-axis) voxel difference of the generated volumes
  over that of the references, foreground only (:func:`zgrad_ratio_sets`; 1 = as much change
  from slice to slice as real data; not a distance: best at 1).

Beside them, the scores of published 3D-generation tables (README, "Comparing with published
numbers"):

- ``msssim_diversity``: mean pairwise 3D MS-SSIM among the generated volumes (7x7x7 window,
  :mod:`lift3d.metrics.diversity`; lower = more diverse), ``msssim_diversity_reference`` the
  same among the reference volumes and ``msssim_diversity_gap`` their difference (generated -
  reference; 0 = as diverse as real data); ``ssim_diversity[_reference]`` the same with SSIM.
  ``summary["msssim"]`` records the window, scales, weights and pairs scored (at most
  ``diversity_pairs`` per set, seeded);
- ``fid_medicalnet``, ``mmd_medicalnet``, ``fid_radimagenet[_<plane>]``,
  ``mmd_radimagenet[_<plane>]``: FID / MMD on pretrained features
  (:mod:`lift3d.evaluation.extractors`), or ``"needs --medicalnet PATH"`` /
  ``"needs --radimagenet PATH"`` without the weights file.

``summary["feature_extractors"]`` names the feature space of every score: the evaluation
encoder (SHA-256 of its weights), the pretrained networks (SHA-256 of their files) and the
voxel-space scores.

With ``floor_dir`` (``--floor DIR``) a second real set is scored the same way and every score
gets its real-vs-real floor (:mod:`lift3d.evaluation.floor`): ``summary["floor"]`` (the set, the
sample counts, its scores, the differences) and ``summary["ratio_to_floor"]``. A montage of
real beside generated centre cuts in the three planes is written where ``montage`` says.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lift3d.constants import DHW_PLANE_AXIS, PLANES
from lift3d.data.preprocess import to_model_space
from lift3d.errors import InputError
from lift3d.evaluation.common import check_folder
from lift3d.evaluation.encoder import EVAL_ENCODER_SEED, EVAL_ENCODER_STEPS, eval_encoder_for
from lift3d.evaluation.extractors import load_extractors, pretrained_scores
from lift3d.evaluation.floor import (
    MONTAGE_VOLUMES,
    compare_to_floor,
    floor_files,
    floor_metric_names,
    generated_subsets,
    is_number,
    match_counts,
    read_floor,
    write_montage,
)
from lift3d.evaluation.score_cache import (
    cache_folder,
    cached_scores,
    encoder_key,
    file_identity,
)
from lift3d.evaluation.volumes import (  # noqa: F401 - also imported from here
    generated_files,
    generation_info,
    prepare_volume,
    read_ras,
    read_ras_grid,
    reference_files,
)
from lift3d.metrics.distribution import histogram_distance, plane_distances, zgrad_ratio_sets
from lift3d.metrics.diversity import (
    DIVERSITY_MAX_PAIRS,
    DIVERSITY_SIGMA,
    DIVERSITY_WINDOW,
    diversity,
)

EVAL_GRID_CAP = 64  # default grid: the first reference's shape, each axis capped here


# ------------------------------------------------------------------ features and metrics


@torch.no_grad()
def plane_features(
    enc: torch.nn.Module, vols: Sequence[np.ndarray], plane: str, max_slices: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Slice features and increments along one plane.

    Args:
        enc: evaluation encoder (``embed``: (N, 1, h, w) -> (N, F)).
        vols: (D, H, W) volumes in [0, 1].
        plane: axial | coronal | sagittal.
        max_slices: evenly spaced cut positions per volume (each with its +1 neighbour).

    Returns:
        (features (V * M, F), increments (V * M, F)), volume-major.
    """
    feats, incs = [], []
    for v in vols:
        t = torch.from_numpy(np.ascontiguousarray(v)).movedim(DHW_PLANE_AXIS[plane], 0)[:, None]
        n = t.shape[0]  # t: (S, 1, h, w)
        pos = np.unique(np.linspace(0, n - 2, min(max_slices, n - 1)).round().astype(int))
        f = enc.embed(t[pos]).numpy()
        f_next = enc.embed(t[pos + 1]).numpy()
        feats.append(f)
        incs.append(f_next - f)
    return np.concatenate(feats), np.concatenate(incs)


# (features (V * M, F), increments (V * M, F)) of V volumes, volume-major (:func:`plane_features`)
FeatureSet = tuple[np.ndarray, np.ndarray]


def volume_rows(features: FeatureSet, n_volumes: int, idx: Sequence[int]) -> FeatureSet:
    """The rows of volumes `idx` in a volume-major feature set of `n_volumes` volumes (the
    features those volumes get on their own: each volume's cuts are embedded alone)."""
    f, inc = features
    per = f.shape[0] // n_volumes
    rows = np.concatenate([np.arange(i * per, (i + 1) * per) for i in idx])
    return f[rows], inc[rows]


def distribution_metrics(
    gen: Sequence[np.ndarray],
    ref: Sequence[np.ndarray],
    enc: torch.nn.Module,
    *,
    max_slices: int = 32,
    kid_subsets: int = 20,
    kid_subset_size: int = 200,
    bootstrap: int = 10,
    seed: int = 0,
    kid_by_volume: bool = True,
    features: Mapping[str, tuple[FeatureSet, FeatureSet]] | None = None,
) -> dict[str, float]:
    """All generation metrics between generated and reference volumes on one grid.

    Args:
        gen: (D, H, W) generated volumes in [0, 1].
        ref: (D, H, W) reference volumes in [0, 1].
        enc: evaluation encoder (``embed``), e.g. an `EvalDescriptor`.
        max_slices: cuts per volume and plane.
        kid_subsets, kid_subset_size, bootstrap, kid_by_volume: see
            :func:`lift3d.metrics.distribution.plane_distances`.
        seed: RNG seed of KID subsets and bootstrap.
        features: ``{plane: ((gen features, gen increments), (ref features, ref
            increments))}`` already computed (:func:`plane_features` of these volumes with
            `enc` and `max_slices`, e.g. rows of a larger set's: :func:`volume_rows`); None
            computes them.

    Returns:
        {"fid_<plane>", "fid_<plane>_std", "kid_<plane>", "kid_<plane>_std",
        "increment_distance_<plane>", "increment_distance", "histogram_distance",
        "zgrad_ratio"}.

    Raises:
        InputError: fewer than 2 volumes on either side.
    """
    if len(gen) < 2 or len(ref) < 2:
        raise InputError(
            f"need at least 2 generated and 2 reference volumes, got {len(gen)} and {len(ref)}"
        )
    out: dict[str, float] = {}
    rng = np.random.default_rng(seed)
    for plane in PLANES:
        if features is not None:
            (gf, gi), (rf, ri) = features[plane]
        else:
            gf, gi = plane_features(enc, gen, plane, max_slices)
            rf, ri = plane_features(enc, ref, plane, max_slices)
        dist = plane_distances(
            gf,
            rf,
            gi,
            ri,
            n_gen=len(gen),
            n_ref=len(ref),
            rng=rng,
            kid_subsets=kid_subsets,
            kid_subset_size=kid_subset_size,
            bootstrap=bootstrap,
            seed=seed,
            kid_by_volume=kid_by_volume,
        )
        out[f"fid_{plane}"], out[f"fid_{plane}_std"] = dist["fid"], dist["fid_std"]
        out[f"kid_{plane}"], out[f"kid_{plane}_std"] = dist["kid"], dist["kid_std"]
        out[f"increment_distance_{plane}"] = dist["increment_distance"]
    out["increment_distance"] = float(np.mean([out[f"increment_distance_{p}"] for p in PLANES]))
    out["histogram_distance"] = histogram_distance(gen, ref)
    out["zgrad_ratio"] = zgrad_ratio_sets(gen, ref)
    return out


def diversity_metrics(
    gen: Sequence[np.ndarray],
    ref: Sequence[np.ndarray],
    *,
    max_pairs: int = DIVERSITY_MAX_PAIRS,
    seed: int = 0,
    reference: Callable[[], dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """MS-SSIM and SSIM diversity of the generated and of the reference volumes.

    Args:
        gen: (D, H, W) generated volumes in [0, 1] on the evaluation grid.
        ref: (D, H, W) reference volumes on the same grid.
        max_pairs: pairs scored per set at most (seeded random subset).
        seed: pair RNG seed.
        reference: returns the references' :func:`diversity` (e.g. from a score cache);
            None computes it here.

    Returns:
        (scores, settings): ``msssim_diversity`` (+ ``_std`` over pairs),
        ``msssim_diversity_reference`` (+ ``_std``), ``msssim_diversity_gap``,
        ``ssim_diversity`` (+ ``_std``), ``ssim_diversity_reference`` (+ ``_std``); settings:
        window, sigma, scales, weights, data range, pairs scored and in all per set, seed.
        On a grid smaller than the window every score reads ``"needs --eval-shape ..."``.
    """
    grid = [int(s) for s in np.asarray(gen[0]).shape]
    if min(grid) < DIVERSITY_WINDOW:  # tiny grids: no window fits
        needs = f"needs --eval-shape of at least {DIVERSITY_WINDOW} per axis"
        names = ("msssim_diversity", "msssim_diversity_reference", "msssim_diversity_gap")
        names += ("ssim_diversity", "ssim_diversity_reference")
        return dict.fromkeys(names, needs), {"grid": grid, "status": needs}
    g = diversity(gen, max_pairs=max_pairs, seed=seed)
    r = reference() if reference is not None else diversity(ref, max_pairs=max_pairs, seed=seed)
    scores = {
        "msssim_diversity": g["msssim"],
        "msssim_diversity_std": g["msssim_std"],
        "msssim_diversity_reference": r["msssim"],
        "msssim_diversity_reference_std": r["msssim_std"],
        "msssim_diversity_gap": g["msssim"] - r["msssim"],
        "ssim_diversity": g["ssim"],
        "ssim_diversity_std": g["ssim_std"],
        "ssim_diversity_reference": r["ssim"],
        "ssim_diversity_reference_std": r["ssim_std"],
    }
    settings = {
        "implementation": "monai.metrics.MultiScaleSSIMMetric / SSIMMetric, 3D (separable window)",
        "window": [DIVERSITY_WINDOW] * 3,
        "kernel": "gaussian",
        "sigma": DIVERSITY_SIGMA,
        "data_range": 1.0,
        "scales": g["scales"],
        "weights": g["weights"],
        "grid": grid,
        "max_pairs": int(max_pairs),
        "pairs": g["pairs"],
        "pairs_total": g["pairs_total"],
        "reference_pairs": r["pairs"],
        "reference_pairs_total": r["pairs_total"],
        "seed": seed,
    }
    return scores, settings


def feature_extractors(
    encoder_identity: dict[str, Any], pretrained: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The feature space of every score: ``{"eval_encoder", "voxels", "medicalnet",
    "radimagenet"}``, each with a ``name`` and the ``scores`` it made (files: ``file_sha256``;
    the evaluation encoder: ``weights_sha256``)."""
    planes = [f"{m}_{p}" for m in ("fid", "kid", "increment_distance") for p in PLANES]
    return {
        "eval_encoder": {
            "name": encoder_identity.get("name", "evaluation encoder"),
            "weights_sha256": encoder_identity.get("weights_sha256"),
            "scores": [*planes, "increment_distance"],
        },
        "voxels": {
            "name": "none (voxel intensities on the evaluation grid)",
            "scores": [
                "histogram_distance",
                "zgrad_ratio",
                "msssim_diversity",
                "msssim_diversity_reference",
                "msssim_diversity_gap",
                "ssim_diversity",
                "ssim_diversity_reference",
            ],
        },
        **pretrained,
    }


def set_scores(
    vols: Sequence[np.ndarray],
    ref: Sequence[np.ndarray],
    enc: torch.nn.Module,
    extractors: dict[str, Any],
    *,
    max_slices: int = 32,
    seed: int = 0,
    diversity_pairs: int = DIVERSITY_MAX_PAIRS,
    with_diversity: bool = True,
    features: Mapping[str, tuple[FeatureSet, FeatureSet]] | None = None,
) -> dict[str, Any]:
    """The scores one set gets against the references, as the floor compares them: the
    :func:`distribution_metrics`, the set's own MS-SSIM / SSIM diversity (on grids the window
    fits, unless `with_diversity` is False) and the pretrained FID / MMD whose weights were
    given; `features` as in :func:`distribution_metrics`."""
    out: dict[str, Any] = distribution_metrics(
        vols, ref, enc, max_slices=max_slices, seed=seed, features=features
    )
    if with_diversity and min(np.asarray(vols[0]).shape) >= DIVERSITY_WINDOW:
        d = diversity(vols, max_pairs=diversity_pairs, seed=seed)
        out.update(
            msssim_diversity=d["msssim"],
            msssim_diversity_std=d["msssim_std"],
            ssim_diversity=d["ssim"],
            ssim_diversity_std=d["ssim_std"],
        )
    if extractors:
        scores, _ = pretrained_scores(vols, ref, extractors, seed=seed)
        out.update({k: v for k, v in scores.items() if not isinstance(v, str)})
    return out


def floor_block(
    gen: Sequence[np.ndarray],
    floor: Sequence[np.ndarray],
    ref: Sequence[np.ndarray],
    enc: torch.nn.Module,
    extractors: dict[str, Any],
    summary: dict[str, Any],
    *,
    gen_subsets: Sequence[Sequence[int]],
    seed: int,
    cache: Callable[[Callable[[], dict[str, Any]]], dict[str, Any]] | None = None,
    features: Mapping[str, tuple[FeatureSet, FeatureSet]] | None = None,
    **kw: Any,
) -> tuple[dict[str, Any], dict[str, float | None]]:
    """Score the floor set like the generated set, at equal sample counts.

    Args:
        gen, ref: (D, H, W) generated and reference volumes on the evaluation grid.
        floor: the floor volumes on that grid, already as many as each generated subset.
        enc: the evaluation encoder the generated set was scored with.
        extractors: pretrained extractors (as for the generated set).
        summary: the generated set's scores (all its volumes).
        gen_subsets: the generated volumes matched with the floor: ``[all]`` when no subsampling
            was needed, else disjoint subsets of the floor's count
            (:func:`lift3d.evaluation.floor.generated_subsets`) whose mean score is compared
            (diversity: the first subset's).
        seed: seed of the scores' random subsets.
        cache: ``cache(compute)`` returns the floor set's scores, computed or stored earlier
            (`lift3d.evaluation.score_cache`); None computes them.
        features: ``{plane: (features of all of `gen`, features of `ref`)}``
            (:func:`plane_features`), so the subsets reuse their rows instead of embedding their
            volumes again; None embeds each subset.
        kw: ``max_slices``, ``diversity_pairs`` of :func:`set_scores`.

    Returns:
        (floor block, ratio_to_floor). The block holds ``scores`` (floor vs references),
        ``generated_scores`` (the generated set's at the matched count: its summary unless it
        was subsampled, else the mean over the subsets), ``generated_scores_std`` (their std
        over the subsets, when there are several), ``difference`` (generated - floor) and
        ``notes`` (why a ratio is None).
    """

    def compute() -> dict[str, Any]:
        return set_scores(floor, ref, enc, extractors, seed=seed, **kw)

    floor_scores = cache(compute) if cache is not None else compute()
    spread: dict[str, float] = {}
    if len(gen_subsets) == 1 and len(gen_subsets[0]) == len(gen):
        gen_scores = summary
    else:
        # Diversity (pairwise MS-SSIM within the set, as costly as the rest) from the first
        # subset only: it varies far less between subsets than FID.
        def subset_features(idx: Sequence[int]) -> dict[str, tuple[FeatureSet, FeatureSet]] | None:
            if features is None:
                return None
            return {p: (volume_rows(g, len(gen), idx), r) for p, (g, r) in features.items()}

        per_subset = [
            set_scores(
                [gen[i] for i in idx],
                ref,
                enc,
                extractors,
                seed=seed,
                with_diversity=k == 0,
                features=subset_features(idx),
                **kw,
            )
            for k, idx in enumerate(gen_subsets)
        ]
        gen_scores, spread = {}, {}
        for name in per_subset[0]:
            values = [s[name] for s in per_subset if name in s]
            if all(is_number(v) for v in values):
                gen_scores[name] = float(np.mean(values))
                if len(values) > 1:
                    spread[name] = float(np.std(values))
    names = [n for n in floor_metric_names(gen_scores) if n in floor_scores]
    compared = compare_to_floor(gen_scores, floor_scores, names)
    block = {
        "scores": {
            k: v for k, v in floor_scores.items() if k in names or k.removesuffix("_std") in names
        },
        "generated_scores": (
            "summary (all generated volumes)"
            if gen_scores is summary
            else {k: gen_scores[k] for k in names}
        ),
        "difference": compared["difference"],
        "notes": compared["notes"],
    }
    if len(gen_subsets) > 1:
        block["generated_scores_std"] = {k: spread[k] for k in names if k in spread}
    return block, compared["ratio"]


def evaluate_generation(
    pred_dir: str | Path,
    ref_dir: str | Path,
    *,
    eval_shape: Sequence[int] | None = None,
    encoder_path: str | Path | None = None,
    encoder_seed: int = EVAL_ENCODER_SEED,
    encoder_steps: int = EVAL_ENCODER_STEPS,
    save_encoder: str | Path | None = None,
    eval_encoder: str | Path | None = None,
    max_slices: int = 32,
    seed: int = 0,
    medicalnet: str | Path | None = None,
    radimagenet: str | Path | None = None,
    diversity_pairs: int = DIVERSITY_MAX_PAIRS,
    floor_dir: str | Path | None = None,
    montage: Sequence[str | Path] = (),
    overwrite: bool | None = None,
) -> dict[str, Any]:
    """Score generated volumes against held-out real ones (``lift3d evaluate --task generate``).

    Args:
        pred_dir: folder of generated volumes (``lift3d generate`` output).
        ref_dir: held-out reference dataset (BraTS/SynthRAD/manifest) or folder of images.
        eval_shape: common evaluation grid (D, H, W); None: the first reference volume's
            (S, A, R) shape, each axis capped at 64.
        encoder_path: a saved evaluation encoder; None trains one on the reference volumes.
        encoder_seed: seed of a freshly trained evaluation encoder.
        encoder_steps: its training steps.
        save_encoder: write the trained evaluation encoder here (reuse via `encoder_path`).
        eval_encoder: load the evaluation encoder from this file when it exists, else train
            one and save it there (``lift3d evaluate --eval-encoder``); so several evaluations
            share one feature space.
        max_slices: cuts per volume and plane.
        seed: RNG seed of KID subsets, bootstrap, MMD subsets, diversity pairs and of the
            subsampling that gives the generated and floor sets equal counts.
        medicalnet: MedicalNet ResNet-50 weights file (``resnet_50_23dataset.pth``): adds
            ``fid_medicalnet`` / ``mmd_medicalnet``.
        radimagenet: RadImageNet ResNet-50 weights file: adds the 2.5D FID / MMD.
        diversity_pairs: MS-SSIM / SSIM pairs scored per set at most.
        floor_dir: a second real set (dataset or folder of images, on the generated volumes'
            grid, e.g. the training set) scored against the same references with the same
            encoder at equal counts: adds ``summary["floor"]`` and ``summary["ratio_to_floor"]``.
        montage: PNG files to write the montage to (centre cuts in the three planes of up to
            4 real volumes, the floor's or else the references', above as many generated).
        overwrite: for the montage files, as in :func:`lift3d.utils.atomic_path`.

    Returns:
        ``{"cases": {sample: {"pred", "ref", "mask", "source", "mean_abs_dz"}}, "summary": {...
        metrics, "n_cases", "eval_encoder": identity, "msssim": settings,
        "feature_extractors": {...}[, "floor", "ratio_to_floor"][, "montage"]},
        "eval_encoder": identity, "feature_extractors": {...}}``.

    Raises:
        InputError: missing or empty folders, fewer than 2 volumes on either side, a weights
            file that is unreadable or of another network; a floor folder that is missing,
            empty, the reference or generated folder itself, or off the generated grid.
    """
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    for folder, what in ((pred_dir, "generated"), (ref_dir, "reference")):
        if not folder.is_dir():
            raise InputError(f"{what} folder not found", folder)
    if floor_dir is not None:
        floor_dir = Path(floor_dir)
        check_folder(floor_dir, "floor")
        for other, what in ((ref_dir, "reference"), (pred_dir, "generated")):
            if floor_dir.resolve() == other.resolve():
                raise InputError(
                    f"the floor must be a second real set, not the {what} folder", floor_dir
                )
    extractors = load_extractors(medicalnet, radimagenet)  # a bad file fails before any work
    files, modality = generated_files(pred_dir)
    if not files:
        raise InputError("no generated volumes (.nii.gz, .nii, .mha) found", pred_dir)
    refs = reference_files(ref_dir, modality)
    if eval_shape is None:
        first = to_model_space(read_ras(refs[0][1]), "axial").shape
        eval_shape = tuple(min(int(s), EVAL_GRID_CAP) for s in first)
    gen_idx, floor, floor_ids, subsampled = list(range(len(files))), [], [], None
    subsets = [gen_idx]
    if floor_dir is not None:  # read and checked before the encoder is trained
        found = floor_files(floor_dir, modality)
        gen_idx, floor_idx, subsampled = match_counts(len(files), len(found), seed)
        if subsampled is not None and subsampled["set"] == "generated":
            subsets = generated_subsets(len(files), gen_idx, seed=seed)
            subsampled["subsets"] = len(subsets)
        floor_ids = [found[i][0] for i in floor_idx]
        first_gen = read_ras_grid(files[0])
        grid = (first_gen[0].shape, first_gen[1])
        floor = read_floor([found[i][1] for i in floor_idx], grid, eval_shape)
    gen = [prepare_volume(read_ras(f), eval_shape) for f in files]
    ref = [prepare_volume(read_ras(f), eval_shape) for _, f in refs]
    enc, identity = eval_encoder_for(
        ref,
        ref_dir=ref_dir,
        refs=refs,
        eval_shape=eval_shape,
        encoder_path=encoder_path,
        save_encoder=save_encoder,
        eval_encoder=eval_encoder,
        seed=encoder_seed,
        steps=encoder_steps,
    )
    features = {  # embedded once: the summary and the floor's subsets share them
        plane: (
            plane_features(enc, gen, plane, max_slices),
            plane_features(enc, ref, plane, max_slices),
        )
        for plane in PLANES
    }
    summary: dict[str, Any] = distribution_metrics(
        gen, ref, enc, max_slices=max_slices, seed=seed, features=features
    )
    # The real sets' scores are the same for every evaluation sharing this encoder file: kept
    # beside it and reused (score_cache; keyed by files, encoder identity and settings).
    folder = cache_folder(eval_encoder)
    real_key = {
        "references": file_identity(f for _, f in refs),
        "eval_shape": [int(s) for s in eval_shape],
        "seed": seed,
    }
    div, div_settings = diversity_metrics(
        gen,
        ref,
        max_pairs=diversity_pairs,
        seed=seed,
        reference=partial(
            cached_scores,
            folder,
            {"what": "reference diversity", "max_pairs": diversity_pairs, **real_key},
            partial(diversity, ref, max_pairs=diversity_pairs, seed=seed),
        ),
    )
    summary.update(div)
    scores, pretrained = pretrained_scores(gen, ref, extractors, seed=seed)
    summary.update(scores)
    summary["n_cases"] = len(gen)
    summary["n_reference"] = len(ref)
    summary["eval_encoder"] = identity
    summary["msssim"] = div_settings
    extractor_ids = feature_extractors(identity, pretrained)
    summary["feature_extractors"] = extractor_ids
    info = generation_info(pred_dir)
    if info is not None:  # (a None would read as a missing metric in the tables)
        summary["generation"] = info
    gen_names = [f.name.split(".")[0] for f in files]
    if floor_dir is not None:
        block, ratio = floor_block(
            gen,
            floor,
            ref,
            enc,
            extractors,
            summary,
            gen_subsets=subsets,
            seed=seed,
            features=features,
            max_slices=max_slices,
            diversity_pairs=diversity_pairs,
            cache=partial(
                cached_scores,
                folder,
                {
                    "what": "floor set",
                    "floor": file_identity(found[i][1] for i in floor_idx),
                    "encoder": encoder_key(identity),
                    "extractors": {k: v for k, v in extractor_ids.items() if k != "eval_encoder"},
                    "max_slices": max_slices,
                    "diversity_pairs": diversity_pairs,
                    **real_key,
                },
            ),
        )
        summary["floor"] = {
            "dir": str(floor_dir.resolve()),
            "n": len(floor),
            "n_files": len(found),
            "subsampled": subsampled,
            "same_as_generated": "references, evaluation encoder, grid, seed and sample count",
            "floor_cases": floor_ids,
            "generated_cases": [gen_names[i] for i in gen_idx],
            "generated_subsets": [[gen_names[i] for i in idx] for idx in subsets],
            **block,
        }
        summary["ratio_to_floor"] = ratio
        real_name, real = "real (floor)", list(zip(floor_ids, floor))
        shown_gen = [(gen_names[i], gen[i]) for i in gen_idx]
    else:
        real_name, real = "real (reference)", [(c, v) for (c, _), v in zip(refs, ref)]
        shown_gen = list(zip(gen_names, gen))
    if montage:
        real, shown_gen = real[:MONTAGE_VOLUMES], shown_gen[:MONTAGE_VOLUMES]
        grid = "x".join(str(int(s)) for s in eval_shape)
        written = write_montage(
            {real_name: [v for _, v in real], "generated": [v for _, v in shown_gen]},
            montage,
            f"centre cuts on the evaluation grid {grid} (S x A x R), intensities as scored",
            overwrite=overwrite,
        )
        summary["montage"] = {
            "files": [str(p.resolve()) for p in written],
            "rows": {real_name: [c for c, _ in real], "generated": [c for c, _ in shown_gen]},
            "columns": "centre cut along S (axial), A (coronal) and R (sagittal) of each volume",
        }
    cases = {
        name: {
            "pred": str(f.resolve()),
            "ref": None,
            "mask": None,
            "source": None,
            "mean_abs_dz": float(np.abs(np.diff(v, axis=0)).mean()),
        }
        for name, f, v in zip(gen_names, files, gen)
    }
    return {
        "cases": cases,
        "summary": summary,
        "eval_encoder": identity,
        "feature_extractors": extractor_ids,
    }
