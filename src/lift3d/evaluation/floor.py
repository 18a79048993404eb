"""The real-vs-real floor of generation scores (``lift3d evaluate --task generate --floor DIR``).

A second real set (e.g. the training volumes) is scored against the same reference set, with
the same evaluation encoder and at the same sample count as the generated set, so every
generated score reads as a multiple of what real data gets: a ratio of 1 is as close to the
references as a real set comes, and no model can be expected below it.

- :func:`match_counts`: equal sample counts (the larger set is subsampled, seeded);
- :func:`generated_subsets`: where the generated set is the larger, up to
  :data:`FLOOR_SUBSETS` disjoint subsets of the floor's size, whose mean score is compared with
  the floor (one subset of 16 volumes moves per-plane FID by up to +-40 % on the phantom);
- :func:`floor_metric_names`: the scores that get a floor;
- :func:`compare_to_floor`: ratios and differences, with the reason wherever a ratio has no
  meaning (a floor at or below zero: KID, an unbiased estimate, goes negative when two sets are
  as close as it can resolve; FID is 0 only for a set against itself);
- :func:`floor_files`, :func:`read_floor`: the floor set, checked (at least 2 volumes, each on
  the generated volumes' grid) and put on the evaluation grid;
- :func:`write_montage`: real beside generated centre cuts in the three planes.

The evaluation wires these together (:func:`lift3d.evaluation.generation.evaluate_generation`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lift3d.constants import FLOOR_SUBSETS, PLANES
from lift3d.errors import InputError
from lift3d.evaluation.volumes import prepare_volume, read_ras_grid, reference_files
from lift3d.report.figures import figure_png, montage_figure
from lift3d.utils import atomic_path

# A floor at or below this is zero: a set scored against itself gives FID ~1e-12, not 0.
FLOOR_ZERO = 1e-9
FLOOR_SCORES = (
    *(f"fid_{p}" for p in PLANES),
    *(f"kid_{p}" for p in PLANES),
    *(f"increment_distance_{p}" for p in PLANES),
    "increment_distance",
    "histogram_distance",
    "msssim_diversity",  # diversity of each set alone: ratio 1 = as diverse as real data
    "ssim_diversity",
)
# Scores of pretrained extractors, present when their weights file was given.
PRETRAINED_PREFIXES = ("fid_medicalnet", "mmd_medicalnet", "fid_radimagenet", "mmd_radimagenet")
MONTAGE_NAME = "real_vs_generated.png"  # beside summary.json; <json stem>_<this> beside --json
MONTAGE_VOLUMES = 4  # volumes per row of the montage


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool): a score that can be compared."""
    return (
        isinstance(value, int | float | np.floating)
        and not isinstance(value, bool)
        and bool(np.isfinite(value))
    )


def floor_metric_names(summary: Mapping[str, Any]) -> list[str]:
    """The scores of `summary` that get a floor: per-plane FID / KID / increment distance, their
    mean, the histogram distance, diversity, and pretrained FID / MMD (when they are numbers)."""
    names = [n for n in FLOOR_SCORES if is_number(summary.get(n))]
    names += [
        k
        for k, v in summary.items()
        if k.startswith(PRETRAINED_PREFIXES) and not k.endswith("_std") and is_number(v)
    ]
    return names


def match_counts(
    n_generated: int, n_floor: int, seed: int
) -> tuple[list[int], list[int], dict[str, Any] | None]:
    """Indices that give both sets the same size: the larger is subsampled without replacement.

    Args:
        n_generated: generated volumes.
        n_floor: floor volumes.
        seed: subsampling seed (the evaluation's).

    Returns:
        (generated indices, floor indices, None or ``{"set", "from", "to", "seed"}`` naming the
        subsampled set), indices sorted.
    """
    n = min(n_generated, n_floor)
    keep = {"generated": list(range(n_generated)), "floor": list(range(n_floor))}
    if n_generated == n_floor:
        return keep["generated"], keep["floor"], None
    larger = "generated" if n_generated > n_floor else "floor"
    total = max(n_generated, n_floor)
    rng = np.random.default_rng(seed)
    keep[larger] = sorted(int(i) for i in rng.choice(total, size=n, replace=False))
    note = {"set": larger, "from": total, "to": n, "seed": int(seed)}
    return keep["generated"], keep["floor"], note


def generated_subsets(
    n_generated: int, first: Sequence[int], max_subsets: int = FLOOR_SUBSETS, seed: int = 0
) -> list[list[int]]:
    """Disjoint subsets of the generated volumes at the floor's count, `first` first.

    One subset of 16 volumes gives a noisy score (per-plane FID of the 16-volume subsets of one
    96-sample phantom set ranged 0.65-1.73); the ratios to the floor use the mean over these.

    Args:
        n_generated: generated volumes.
        first: the subset :func:`match_counts` drew (its size is the floor's count).
        max_subsets: subsets at most (``n_generated // len(first)`` fit).
        seed: seed of the further subsets (drawn from the volumes not in `first`).

    Returns:
        ``[sorted(first), ...]``: ``min(max_subsets, n_generated // len(first))`` sorted index
        lists of ``len(first)`` volumes each, pairwise disjoint.
    """
    n = len(first)
    if n < 1 or max_subsets < 1:
        raise ValueError(
            f"need a non-empty first subset and max_subsets >= 1, got {n}, {max_subsets}"
        )
    taken = set(int(i) for i in first)
    rest = np.array([i for i in range(n_generated) if i not in taken], dtype=int)
    rest = np.random.default_rng([int(seed), 0x5B5E7]).permutation(rest)
    count = min(max_subsets, n_generated // n)
    return [sorted(taken)] + [
        sorted(int(i) for i in rest[k * n : (k + 1) * n]) for k in range(count - 1)
    ]


def compare_to_floor(
    generated: Mapping[str, Any], floor: Mapping[str, Any], names: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Each score of `generated` as a ratio to the same score of `floor`.

    Args:
        generated: scores of the generated set (at the floor's sample count).
        floor: scores of the real floor set.
        names: the scores to compare (:func:`floor_metric_names`).

    Returns:
        ``{"ratio": {name: generated / floor or None}, "difference": {name: generated - floor},
        "notes": {name: why the ratio is None}}``. A ratio is None when the floor is at or
        below zero (:data:`FLOOR_ZERO`): then the difference is the number to read.
    """
    ratio: dict[str, float | None] = {}
    difference: dict[str, float] = {}
    notes: dict[str, str] = {}
    for name in names:
        g, f = generated.get(name), floor.get(name)
        if not (is_number(g) and is_number(f)):
            continue
        g, f = float(g), float(f)
        difference[name] = g - f
        if f > FLOOR_ZERO:
            ratio[name] = g / f
            continue
        ratio[name] = None
        if name.startswith("kid_") and f < 0:
            notes[name] = (
                f"floor KID {f:.4g} < 0: KID is an unbiased estimate that goes below zero when "
                "two sets are as close as it can resolve, so a ratio has no meaning; read "
                "the difference (generated - floor)"
            )
        else:
            notes[name] = (
                f"floor {f:.3g} is zero (within {FLOOR_ZERO:g}) or below, so a ratio has no "
                "meaning; read the difference (generated - floor)"
            )
    return {"ratio": ratio, "difference": difference, "notes": notes}


def check_floor_grid(
    shapes: Sequence[tuple[Sequence[int], Sequence[float]]],
    files: Sequence[Path],
    expected: tuple[Sequence[int], Sequence[float]],
) -> None:
    """Raise InputError naming the first floor file whose RAS grid (shape, spacing in mm)
    differs from the generated volumes', which it must match to be scored like them."""
    want_shape, want_spacing = tuple(int(s) for s in expected[0]), expected[1]
    for (shape, spacing), path in zip(shapes, files):
        shape = tuple(int(s) for s in shape)
        same_spacing = np.allclose(spacing, want_spacing, rtol=1e-3, atol=1e-4)
        if shape != want_shape or not same_spacing:
            raise InputError(
                f"floor volume on a {shape} grid at {tuple(round(float(s), 3) for s in spacing)} "
                f"mm, the generated volumes on {want_shape} at "
                f"{tuple(round(float(s), 3) for s in want_spacing)} mm; the floor must be real "
                "volumes on the generated grid (e.g. the training set)",
                path,
            )


def montage_paths(out_dir: str | Path | None, json_path: str | Path | None) -> list[Path]:
    """Where the real-vs-generated montage goes: ``OUT/real_vs_generated.png`` beside
    ``summary.json`` and ``<stem>_real_vs_generated.png`` beside a ``--json`` file."""
    paths = []
    if out_dir is not None:
        paths.append(Path(out_dir) / MONTAGE_NAME)
    if json_path is not None:
        json_path = Path(json_path)
        paths.append(json_path.with_name(f"{json_path.stem}_{MONTAGE_NAME}"))
    return paths


def floor_files(floor_dir: Path, modality: str | None) -> list[tuple[str, Path]]:
    """(case id, file) of the floor set (a dataset or a folder of images, as the references).

    Raises:
        InputError: naming the floor folder: no volumes, a case without the modality, fewer
            than 2 volumes.
    """
    try:
        files = reference_files(floor_dir, modality)
    except InputError as exc:
        raise InputError(f"--floor: {exc.problem}", exc.path or floor_dir) from None
    if len(files) < 2:
        raise InputError(f"--floor needs at least 2 real volumes, found {len(files)}", floor_dir)
    return files


def read_floor(
    files: Sequence[Path], grid: tuple[Sequence[int], Sequence[float]], eval_shape: Sequence[int]
) -> list[np.ndarray]:
    """The floor volumes on the evaluation grid, each checked to lie on `grid` (the generated
    volumes' RAS shape and spacing) first, so both sets are resampled alike.

    Raises:
        InputError: naming the first floor file on another grid.
    """
    out = []
    for path in files:
        array, spacing = read_ras_grid(path)
        check_floor_grid([(array.shape, spacing)], [path], grid)
        out.append(prepare_volume(array, eval_shape))
    return out


def write_montage(
    rows: dict[str, Sequence[np.ndarray]],
    paths: Sequence[str | Path],
    title: str,
    overwrite: bool | None = None,
) -> list[Path]:
    """Draw the real-vs-generated montage once and write it to each of `paths` (atomically;
    `overwrite` as in :func:`lift3d.utils.atomic_path`)."""
    data = figure_png(montage_figure(rows, title))
    written = []
    for path in paths:
        with atomic_path(path, overwrite=overwrite) as tmp:
            tmp.write_bytes(data)
        written.append(Path(path))
    return written
