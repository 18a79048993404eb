"""Figures for the run report: tri-planar views, per-slice error profiles along z, loss curves.

Volumes are shown in RAS orientation (array axes x = R, y = A, z = S; z is the axial slice axis),
whatever their file order, with the voxel spacing as the aspect ratio. Figures are built with
`matplotlib.figure.Figure` directly (no pyplot state, no GUI backend).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from lift3d.constants import PLANES, RAS_PLANE_AXIS
from lift3d.data.volume import read_volume, reorient
from lift3d.utils import atomic_path

# plane -> RAS array axis held fixed (axial: z = S, coronal: y = A, sagittal: x = R)
PLANE_AXIS = RAS_PLANE_AXIS
LOSS_SKIP_KEYS = {"step", "lr", "seconds", "time", "epoch", "elapsed", "samples"}


def load_ras(path: str | Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Read a volume and reorient it to RAS.

    Returns:
        (X, Y, Z) float32 array and its spacing in mm.
    """
    volume = reorient(read_volume(path), "RAS")
    return np.asarray(volume.array, dtype=np.float32), tuple(float(s) for s in volume.spacing)


def plane_image(
    array: np.ndarray, plane: str, index: int, spacing: Sequence[float]
) -> tuple[np.ndarray, float]:
    """One slice of a RAS array as an image (rows bottom-to-top) and its aspect ratio.

    Args:
        array: (X, Y, Z) RAS array.
        plane: "axial" | "coronal" | "sagittal".
        index: slice index along the plane's fixed axis.
        spacing: (sx, sy, sz) mm.

    Returns:
        (rows, cols) image for ``imshow(origin="lower")`` and the row/column spacing ratio.
    """
    axis = PLANE_AXIS[plane]
    image = np.take(array, index, axis=axis).T  # rows = the later remaining axis
    kept = [a for a in range(3) if a != axis]
    return image, spacing[kept[1]] / spacing[kept[0]]


def preview_png(
    rows: Mapping[str, np.ndarray],
    path: Path,
    title: str = "",
    labels: Sequence[str] = PLANES,
    aspect: str | None = None,
) -> Path:
    """Tri-planar PNG of model-space volumes: one row per volume, centre cut along each axis.

    Used for the training previews (``RUN/val/*.png``) and generation montages.

    Args:
        rows: row name -> (D, H, W) array in [0, 1] (model space, D = slice axis).
        path: PNG to write (atomically; parent folders are created).
        title: figure title.
        labels: column titles of the D, H and W cuts.
        aspect: matplotlib ``imshow`` aspect (None: square pixels).
    """
    cuts = {}
    for name, vol in rows.items():
        d, h, w = vol.shape
        cuts[name] = [vol[d // 2], vol[:, h // 2], vol[:, :, w // 2]]
    return slices_png(cuts, path, title, labels, aspect)


def slices_png(
    rows: Mapping[str, Sequence[np.ndarray]],
    path: Path,
    title: str = "",
    labels: Sequence[str] = PLANES,
    aspect: str | None = None,
) -> Path:
    """PNG grid of 2D images in [0, 1]: one row per name, one column per label.

    Args:
        rows: row name -> its images (as many as `labels`).
        path: PNG to write (atomically; parent folders are created).
        title: figure title.
        labels: column titles.
        aspect: matplotlib ``imshow`` aspect (None: square pixels).
    """
    cols = len(labels)
    fig = Figure(figsize=(2.1 * cols, 2.1 * len(rows) + 0.4), dpi=80)
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        for c, img in enumerate(images):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray", vmin=0, vmax=1, origin="lower", aspect=aspect)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(labels[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def montage_figure(
    rows: Mapping[str, Sequence[np.ndarray]], title: str = "", labels: Sequence[str] = PLANES
) -> Figure:
    """Sets of model-space volumes side by side: one row per set; columns the centre cut along
    each axis (one block per plane) of each of the set's volumes.

    Args:
        rows: row name -> (D, H, W) volumes in [0, 1] (model space, D = slice axis), e.g.
            ``{"real (floor)": [...], "generated": [...]}``; rows may hold different counts.
        title: figure title.
        labels: titles of the D, H and W cuts.
    """
    per_row = max(len(v) for v in rows.values())
    cols = 3 * per_row
    fig = Figure(figsize=(1.25 * cols + 0.4, 1.35 * len(rows) + 0.5), dpi=80)
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, (name, vols) in enumerate(rows.items()):
        for p in range(3):
            for i in range(per_row):
                ax = axes[r, p * per_row + i]
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"{labels[p]} {i + 1}", fontsize=7)
                if p == 0 and i == 0:
                    ax.set_ylabel(name, fontsize=8)
                if i >= len(vols):
                    ax.set_axis_off()
                    continue
                vol = np.asarray(vols[i])
                cut = np.take(vol, vol.shape[p] // 2, axis=p)
                ax.imshow(cut, cmap="gray", vmin=0, vmax=1, origin="lower")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.04, right=0.995, bottom=0.01, top=0.8, wspace=0.04, hspace=0.06)
    return fig


def slice_error_profile(
    pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None, axis: int = 2
) -> np.ndarray:
    """Mean absolute error of each slice along `axis` (z by default): flicker made visible.

    Args:
        pred, ref: same-shape arrays.
        mask: optional boolean foreground; slices without foreground give NaN.
        axis: slice axis.

    Returns:
        (n_slices,) float64.
    """
    error = np.abs(pred.astype(np.float64) - ref.astype(np.float64))
    other = tuple(a for a in range(error.ndim) if a != axis)
    if mask is None:
        return error.mean(axis=other)
    weight = mask.astype(np.float64)
    total = (error * weight).sum(axis=other)
    count = weight.sum(axis=other)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def worst_slices(error: np.ndarray, mask: np.ndarray | None = None) -> tuple[int, int, int]:
    """Index of the slice with the largest mean |error| along each of the three axes."""
    out = []
    for axis in range(3):
        profile = slice_error_profile(error, np.zeros_like(error), mask, axis=axis)
        profile = np.nan_to_num(profile, nan=-np.inf)
        out.append(int(np.argmax(profile)))
    return out[0], out[1], out[2]


def _window(array: np.ndarray, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    lo, hi = (float(v) for v in np.percentile(array, [low, high]))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def triplanar_figure(
    panels: Mapping[str, np.ndarray],
    spacing: Sequence[float],
    error_key: str = "|error|",
    shared_window: Sequence[str] = ("output", "target"),
    mask: np.ndarray | None = None,
    title: str = "",
) -> tuple[Figure, dict[str, tuple[int, int, int]]]:
    """Rows = volumes (input, output, target, |error|); columns = the three planes through the
    centre, then through the worst-error slice of each plane.

    Args:
        panels: row name -> (X, Y, Z) RAS array, all the same shape; `error_key` is the error.
        spacing: (sx, sy, sz) mm.
        error_key: row whose worst slices are located (and shown with a heat colour map).
        shared_window: rows drawn with one intensity window (taken from the last of them present).
        mask: optional foreground for locating the worst slices.
        title: figure title.

    Returns:
        The figure and ``{"centre": (x, y, z), "worst": (x, y, z)}`` slice indices.
    """
    shape = next(iter(panels.values())).shape
    centre = (shape[0] // 2, shape[1] // 2, shape[2] // 2)
    worst = worst_slices(panels[error_key], mask) if error_key in panels else centre
    shared = [k for k in shared_window if k in panels]
    shared_lim = _window(panels[shared[-1]]) if shared else None
    columns = [("centre", p) for p in PLANES] + [("worst", p) for p in PLANES]
    fig = Figure(figsize=(2.1 * len(columns), 2.1 * len(panels) + 0.5), dpi=80)
    axes = fig.subplots(len(panels), len(columns), squeeze=False)
    for r, (name, array) in enumerate(panels.items()):
        if name == error_key:
            cmap, lim = "magma", (0.0, max(_window(array)[1], 1e-12))
        else:
            cmap, lim = "gray", shared_lim if name in shared else _window(array)
        for c, (where, plane) in enumerate(columns):
            index = (centre if where == "centre" else worst)[PLANE_AXIS[plane]]
            image, aspect = plane_image(array, plane, index, spacing)
            ax = axes[r, c]
            ax.imshow(image, cmap=cmap, vmin=lim[0], vmax=lim[1], origin="lower", aspect=aspect)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"{plane} {where}\n(slice {index})", fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    # fixed margins: tight_layout over 24 axes costs ~0.4 s per figure
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.01, top=0.86, wspace=0.05, hspace=0.08)
    return fig, {"centre": centre, "worst": worst}


def profile_figure(profiles: Mapping[str, np.ndarray], ylabel: str = "mean |error|") -> Figure:
    """Per-slice error along z, one line per variant (e.g. mixer vs no mixer)."""
    fig = Figure(figsize=(7, 3.2), dpi=80)
    ax = fig.subplots()
    for label, profile in profiles.items():
        ax.plot(np.arange(len(profile)), profile, label=label, linewidth=1.2)
    ax.set_xlabel("slice index along z (inferior -> superior)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if profiles:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def loss_figure(logs: Mapping[str, Sequence[Mapping[str, object]]]) -> Figure | None:
    """Training curves: one panel per log (``logs/<stage>.jsonl``) against step.

    A training log shows its loss terms (keys containing ``loss``; every numeric key when none
    does); a validation log (``*_val``) shows every numeric key.

    Returns:
        None when no log holds a numeric value to plot.
    """
    series: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for stage, records in logs.items():
        keys = {k for rec in records for k in rec}
        lossy = {k for k in keys if "loss" in k}
        wanted = lossy if lossy and not stage.endswith("_val") else keys
        for i, rec in enumerate(records):
            step = rec.get("step", i)
            for key, value in rec.items():
                if key in LOSS_SKIP_KEYS or key not in wanted or isinstance(value, bool):
                    continue
                if isinstance(value, (int, float)) and np.isfinite(value):
                    xs, ys = series.setdefault(stage, {}).setdefault(key, ([], []))
                    xs.append(float(step))  # type: ignore[arg-type]
                    ys.append(float(value))
    if not series:
        return None
    fig = Figure(figsize=(4.2 * len(series), 3.2), dpi=80)
    axes = fig.subplots(1, len(series), squeeze=False)[0]
    for ax, (stage, keys) in zip(axes, series.items()):
        positive = True
        for key, (xs, ys) in keys.items():
            ax.plot(xs, ys, label=key, linewidth=1.0, marker="o" if len(xs) < 30 else None, ms=3)
            positive &= min(ys) > 0
        if positive:
            ax.set_yscale("log")
        ax.set_title(stage, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def figure_png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_png(data: bytes, path: str | Path) -> Path:
    """Write PNG bytes atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path
