"""Preprocessing from a source volume to the model grid, and its exact inverse.

Forward (`preprocess_case`), for every modality of a case on one shared grid:

1. reorient to RAS (axis permutation/flips only: lossless);
2. optionally resample to `spacing_mm` (linear for images, nearest for label/mask);
3. move the slice axis first: model arrays are (D, H, W) (`to_model_space`);
4. crop/pad to the model `shape`, centred on the foreground bounding box (`crop_or_pad`);
5. normalise intensities (`normalize_intensity`): MR clipped to the 0.5 / 99.5 percentiles of the
   foreground and scaled to [0, 1]; CT clipped to the HU window [-1024, 3000] and scaled to [0, 1];
   label / mask values unchanged.

Everything needed to undo it is kept in a JSON-serialisable `PreprocessRecord`;
`restore_volume` maps a model-space (D, H, W) array back onto the source file's exact grid
(shape and affine) and intensity scale (HU for CT). Without resampling the inverse is exact:
voxels inside the model field of view come back voxel-exact (labels) or to float precision
(intensities inside the clip window); voxels outside it get the background value.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from lift3d.constants import CT_WINDOW_HU, MR_PERCENTILES
from lift3d.data.volume import Volume
from lift3d.errors import InputError

KINDS = ("mr", "ct", "label", "mask")
IMAGE_KINDS = ("mr", "ct")
# Value given to voxels outside the model field of view when restoring (source intensity scale).
BACKGROUND = {"mr": 0.0, "ct": CT_WINDOW_HU[0], "label": 0.0, "mask": 0.0}
# Model-space axis order (D, H, W) as RAS axes (0 = R, 1 = A, 2 = S), per slice axis.
MODEL_AXES = {"axial": (2, 1, 0), "coronal": (1, 2, 0), "sagittal": (0, 2, 1)}
RECORD_VERSION = 1


# --------------------------------------------------------------------------- pure array functions


def to_model_space(array_ras: np.ndarray, slice_axis: str = "axial") -> np.ndarray:
    """Put the slice axis first: RAS-ordered (X=R, Y=A, Z=S) array -> (D, H, W).

    axial: (D=S, H=A, W=R); coronal: (D=A, H=S, W=R); sagittal: (D=R, H=S, W=A).

    Args:
        array_ras: (X, Y, Z) array whose axes point to R, A, S.
        slice_axis: "axial", "coronal" or "sagittal".

    Returns:
        (D, H, W) view of the same voxels (no copy, no interpolation).
    """
    return array_ras.transpose(_model_axes(slice_axis))


def from_model_space(array_dhw: np.ndarray, slice_axis: str = "axial") -> np.ndarray:
    """Inverse of `to_model_space`: (D, H, W) -> RAS-ordered (X, Y, Z)."""
    return array_dhw.transpose(np.argsort(_model_axes(slice_axis)))


def _model_axes(slice_axis: str) -> tuple[int, int, int]:
    if slice_axis not in MODEL_AXES:
        raise ValueError(f"slice_axis must be one of {sorted(MODEL_AXES)}, got {slice_axis!r}")
    return MODEL_AXES[slice_axis]


def crop_or_pad(
    array: np.ndarray, start: Sequence[int], shape: Sequence[int], fill: float = 0.0
) -> np.ndarray:
    """Window of `array` of size `shape` starting at index `start` (may be negative / overhang).

    ``out[o] = array[o + start]`` where that index exists, else `fill`. The inverse of
    ``crop_or_pad(a, start, shape)`` is ``crop_or_pad(out, -start, a.shape)`` on the overlap.

    Args:
        array: (N0, N1, ...) input.
        start: per-axis index in `array` of ``out[0, 0, ...]``.
        shape: output shape, same number of axes.
        fill: value outside `array`.

    Returns:
        Array of `shape`, dtype of `array`.
    """
    assert len(start) == len(shape) == array.ndim
    out = np.full(tuple(int(s) for s in shape), fill, dtype=array.dtype)
    src, dst = [], []
    for n_in, n_out, s in zip(array.shape, shape, start, strict=True):
        lo, hi = max(int(s), 0), min(int(s) + int(n_out), n_in)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - int(s), hi - int(s)))
    out[tuple(dst)] = array[tuple(src)]
    return out


def centered_start(
    full_shape: Sequence[int], shape: Sequence[int], mask: np.ndarray | None
) -> tuple[int, ...]:
    """Start index of a `shape` window centred on the bounding box of `mask` (whole array if None
    or empty), kept inside the array when cropping and around it when padding."""
    if mask is not None and mask.any():
        idx = np.nonzero(mask)
        centre = [(int(i.min()) + int(i.max()) + 1) / 2 for i in idx]
    else:
        centre = [n / 2 for n in full_shape]
    start = []
    for c, n_full, n in zip(centre, full_shape, shape, strict=True):
        s = int(np.floor(c - n / 2 + 0.5))
        lo, hi = sorted((0, n_full - n))
        start.append(min(max(s, lo), hi))
    return tuple(start)


def intensity_window(
    array: np.ndarray, kind: str, foreground: np.ndarray | None = None
) -> tuple[float, float] | None:
    """(low, high) clip window for `kind`, or None for label / mask (no normalisation).

    MR: the 0.5 / 99.5 percentiles of voxels in `foreground` (all voxels if it is None or
    empty); CT: the HU window [-1024, 3000].
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "ct":
        return CT_WINDOW_HU
    if kind != "mr":
        return None
    values = array[foreground] if foreground is not None and foreground.any() else array
    low, high = np.percentile(values.astype(np.float64), MR_PERCENTILES)
    return float(low), float(high)


def normalize_intensity(array: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """Clip to `window` = (low, high) and scale linearly to [0, 1]; float32 copy.

    A window with ``high <= low`` (constant foreground) maps ``low`` to 0 with unit scale.
    None leaves values unchanged (labels, masks).
    """
    if window is None:
        return array.astype(np.float32)
    low, high = window
    scale = high - low if high > low else 1.0
    out = (np.clip(array.astype(np.float64), low, high) - low) / scale
    return out.astype(np.float32)


def denormalize_intensity(array: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """Inverse of `normalize_intensity` for values inside the window: [0, 1] -> source units."""
    if window is None:
        return np.asarray(array, dtype=np.float64)
    low, high = window
    scale = high - low if high > low else 1.0
    return np.asarray(array, dtype=np.float64) * scale + low


def resample_grid(
    array: np.ndarray, factors: Sequence[float], shape: Sequence[int], order: int
) -> np.ndarray:
    """Resample on index grids sharing voxel 0: ``out[n] = array(n * factors)``.

    Args:
        array: (X, Y, Z) input.
        factors: per-axis input-index step per output index (new spacing / old spacing).
        shape: output shape.
        order: 1 = linear (images), 0 = nearest (labels, masks).

    Returns:
        float64 array of `shape` (edges continue the nearest voxel).
    """
    from scipy import ndimage

    return ndimage.affine_transform(
        array.astype(np.float64),
        np.asarray(factors, dtype=np.float64),
        output_shape=tuple(int(s) for s in shape),
        order=order,
        mode="nearest",
    )


# ---------------------------------------------------------------------------------- record


@dataclass
class PreprocessRecord:
    """Everything `restore_volume` needs to map model space back to the source file.

    Attributes:
        slice_axis: "axial" | "coronal" | "sagittal".
        shape: model grid (D, H, W).
        source_shape: (I, J, K) of the source files.
        source_affine: (4, 4) source voxel -> RAS mm.
        ornt_to_ras: (3, 2) nibabel orientation transform source -> RAS (axis, flip).
        ras_shape: shape after reorientation (before resampling).
        spacing_mm: target spacing along R, A, S in mm, or None (no resampling).
        resample_factors: per RAS axis, new / old spacing (1.0 without resampling).
        resampled_shape: RAS grid shape after resampling.
        crop_start: (D, H, W) index in the full model-space array of model voxel (0, 0, 0);
            negative where the model grid is padded.
        model_affine: (4, 4) model voxel (d, h, w) -> RAS mm.
        intensity: per modality ``{"kind", "window": [low, high] | None, "dtype"}``.
    """

    slice_axis: str
    shape: tuple[int, int, int]
    source_shape: tuple[int, int, int]
    source_affine: np.ndarray
    ornt_to_ras: np.ndarray
    ras_shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float] | None
    resample_factors: tuple[float, float, float]
    resampled_shape: tuple[int, int, int]
    crop_start: tuple[int, int, int]
    model_affine: np.ndarray
    intensity: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (lists, floats, strings)."""
        out = asdict(self)
        for key in ("source_affine", "ornt_to_ras", "model_affine"):
            out[key] = np.asarray(out[key], dtype=np.float64).tolist()
        for key in ("shape", "source_shape", "ras_shape", "resampled_shape", "crop_start"):
            out[key] = [int(v) for v in out[key]]
        out["resample_factors"] = [float(v) for v in self.resample_factors]
        out["spacing_mm"] = None if self.spacing_mm is None else [float(v) for v in self.spacing_mm]
        out["version"] = RECORD_VERSION
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessRecord:
        """Rebuild from `to_dict` output (e.g. after a JSON round trip)."""
        if data.get("version", RECORD_VERSION) != RECORD_VERSION:
            raise ValueError(f"unsupported PreprocessRecord version {data.get('version')}")

        def ints(key: str) -> tuple[int, ...]:
            return tuple(int(v) for v in data[key])

        spacing = data.get("spacing_mm")
        return cls(
            slice_axis=str(data["slice_axis"]),
            shape=ints("shape"),  # type: ignore[arg-type]
            source_shape=ints("source_shape"),  # type: ignore[arg-type]
            source_affine=np.asarray(data["source_affine"], dtype=np.float64),
            ornt_to_ras=np.asarray(data["ornt_to_ras"], dtype=np.float64),
            ras_shape=ints("ras_shape"),  # type: ignore[arg-type]
            spacing_mm=None if spacing is None else tuple(float(v) for v in spacing),  # type: ignore[arg-type]
            resample_factors=tuple(float(v) for v in data["resample_factors"]),  # type: ignore[arg-type]
            resampled_shape=ints("resampled_shape"),  # type: ignore[arg-type]
            crop_start=ints("crop_start"),  # type: ignore[arg-type]
            model_affine=np.asarray(data["model_affine"], dtype=np.float64),
            intensity={k: dict(v) for k, v in data["intensity"].items()},
        )


# ------------------------------------------------------------------------------ case functions


def _inverse_ornt(ornt: np.ndarray) -> np.ndarray:
    """Inverse of a nibabel orientation transform: input axis i -> (axis j, flip) becomes j -> i."""
    inverse = np.zeros_like(ornt)
    for axis, (target, flip) in enumerate(ornt):
        inverse[int(target)] = (axis, flip)
    return inverse


def _ras_and_resample(
    array: np.ndarray, ornt: np.ndarray, factors: np.ndarray, shape: tuple, order: int
) -> np.ndarray:
    import nibabel.orientations as nio

    ras = nio.apply_orientation(array, ornt)
    if np.allclose(factors, 1.0):
        return ras
    return resample_grid(ras, factors, shape, order)


def preprocess_case(
    volumes: Mapping[str, Volume],
    *,
    shape: Sequence[int],
    kinds: Mapping[str, str],
    slice_axis: str = "axial",
    spacing_mm: float | Sequence[float] | None = None,
    foreground: np.ndarray | None = None,
    with_foreground: bool = False,
) -> tuple[dict[str, np.ndarray], PreprocessRecord]:
    """Map a case's volumes (one shared grid) to model space.

    Args:
        volumes: modality name -> Volume, all with the same shape and affine (1e-3 mm).
        shape: model grid (D, H, W).
        kinds: modality name -> "mr" | "ct" | "label" | "mask".
        slice_axis: which anatomical axis becomes D.
        spacing_mm: optional target voxel size in mm (one value, or one per R, A, S axis).
        foreground: optional (I, J, K) boolean array on the source grid; default: union of the
            non-zero voxels of the MR inputs (else of the mask inputs, else everything).
        with_foreground: also return the model-space foreground (0/1) under "foreground".

    Returns:
        (arrays, record): arrays maps modality -> (D, H, W) float32 (MR/CT in [0, 1], labels and
        masks with their values); record inverts it via `restore_volume`.

    Raises:
        InputError: the volumes do not share one grid.
    """
    import nibabel.orientations as nio

    if not volumes:
        raise ValueError("preprocess_case needs at least one volume")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be 3 positive ints (D, H, W), got {shape}")
    _model_axes(slice_axis)
    missing = [m for m in volumes if m not in kinds]
    if missing:
        raise ValueError(f"no kind given for modalities {missing}")
    for m in volumes:
        if kinds[m] not in KINDS:
            raise ValueError(f"kind of {m!r} must be one of {KINDS}, got {kinds[m]!r}")

    ref = next(iter(volumes.values()))
    for vol in volumes.values():
        if not vol.same_grid(ref):
            raise InputError(
                f"grid {vol.shape} / affine differs from {ref.path or 'the first volume'}",
                vol.path,
            )
    if foreground is not None and foreground.shape != ref.shape:
        raise ValueError(f"foreground shape {foreground.shape} != volume shape {ref.shape}")

    # 1. orientation: source -> RAS (permute / flip only)
    ornt = nio.ornt_transform(nio.io_orientation(ref.affine), nio.axcodes2ornt(("R", "A", "S")))
    ras_affine = ref.affine @ nio.inv_ornt_aff(ornt, ref.shape)
    ras_shape = tuple(int(s) for s in nio.apply_orientation(np.empty(ref.shape, bool), ornt).shape)

    # 2. optional resampling on the RAS grid (voxel 0 keeps its centre)
    old_spacing = np.sqrt((ras_affine[:3, :3] ** 2).sum(axis=0))
    if spacing_mm is None:
        target = None
        factors = np.ones(3)
    else:
        target = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (3,)).copy()
        if np.any(target <= 0):
            raise ValueError(f"spacing_mm must be positive, got {spacing_mm}")
        factors = target / old_spacing
    res_shape = tuple(int(np.floor((n - 1) / f + 1e-6)) + 1 for n, f in zip(ras_shape, factors))
    res_affine = ras_affine @ np.diag([*factors, 1.0])

    def to_full_model(array: np.ndarray, order: int) -> np.ndarray:
        return to_model_space(_ras_and_resample(array, ornt, factors, res_shape, order), slice_axis)

    # 3-4. foreground in model space -> crop window
    if foreground is None:
        fg_kind = "mr" if any(kinds[m] == "mr" for m in volumes) else "mask"
        sources = [v.array != 0 for m, v in volumes.items() if kinds[m] == fg_kind]
        foreground = np.logical_or.reduce(sources) if sources else None
    fg_model = None if foreground is None else to_full_model(foreground.astype(np.uint8), 0) > 0
    full_shape = to_model_space(np.empty(res_shape, bool), slice_axis).shape
    start = centered_start(full_shape, shape, fg_model)

    # model voxel (d, h, w) -> full model index (+ start) -> RAS resampled index -> mm
    axes = _model_axes(slice_axis)
    perm = np.zeros((4, 4))
    for d_axis, ras_axis in enumerate(axes):
        perm[ras_axis, d_axis] = 1.0
    perm[3, 3] = 1.0
    shift = np.eye(4)
    shift[:3, 3] = start
    model_affine = res_affine @ perm @ shift

    # 5. intensities
    arrays: dict[str, np.ndarray] = {}
    intensity: dict[str, dict[str, Any]] = {}
    for m, vol in volumes.items():
        kind = kinds[m]
        full = to_full_model(vol.array, 1 if kind in IMAGE_KINDS else 0)
        window = intensity_window(full, kind, fg_model)
        norm = normalize_intensity(full, window)
        fill = normalize_intensity(np.array([BACKGROUND[kind]]), window)[0]
        arrays[m] = np.ascontiguousarray(crop_or_pad(norm, start, shape, fill))
        intensity[m] = {
            "kind": kind,
            "window": None if window is None else [float(window[0]), float(window[1])],
            "dtype": vol.array.dtype.str,
        }
    if with_foreground:
        fg = np.ones(full_shape, bool) if fg_model is None else fg_model
        arrays["foreground"] = crop_or_pad(fg.astype(np.float32), start, shape, 0.0)

    record = PreprocessRecord(
        slice_axis=slice_axis,
        shape=shape,  # type: ignore[arg-type]
        source_shape=ref.shape,
        source_affine=ref.affine.copy(),
        ornt_to_ras=np.asarray(ornt, dtype=np.float64),
        ras_shape=ras_shape,  # type: ignore[arg-type]
        spacing_mm=None if target is None else tuple(float(t) for t in target),  # type: ignore[arg-type]
        resample_factors=tuple(float(f) for f in factors),  # type: ignore[arg-type]
        resampled_shape=res_shape,  # type: ignore[arg-type]
        crop_start=start,  # type: ignore[arg-type]
        model_affine=model_affine,
        intensity=intensity,
    )
    return arrays, record


def restore_volume(array_dhw: Any, record: PreprocessRecord, modality: str) -> Volume:
    """Map a model-space array back onto the source grid and intensity scale.

    Args:
        array_dhw: (D, H, W) array (numpy or torch; leading singleton dims are dropped) in
            model space, e.g. a model output for `modality`.
        record: from `preprocess_case` (or `PreprocessRecord.from_dict`).
        modality: whose intensity parameters to use (e.g. "ct" -> HU).

    Returns:
        Volume with the source shape and affine (no header: pair it with the source file's via
        ``source.with_array(restored.array)`` to keep the source NIfTI header). MR/CT come back as
        float32 in source units (HU for CT); label/mask in the source dtype (rounded). Voxels
        outside the model field of view hold the background (0; -1024 HU for CT).
    """
    import nibabel.orientations as nio

    if modality not in record.intensity:
        raise ValueError(f"modality {modality!r} not in record ({sorted(record.intensity)})")
    params = record.intensity[modality]
    kind = params["kind"]
    array = np.asarray(array_dhw.detach().cpu() if hasattr(array_dhw, "detach") else array_dhw)
    while array.ndim > 3 and array.shape[0] == 1:
        array = array[0]
    if tuple(array.shape) != tuple(record.shape):
        raise ValueError(f"array shape {array.shape} != model shape {record.shape}")

    window = None if params["window"] is None else tuple(params["window"])
    values = denormalize_intensity(array, window)  # float64, source units
    background = BACKGROUND[kind]
    full_shape = to_model_space(np.empty(record.resampled_shape, bool), record.slice_axis).shape
    full = crop_or_pad(values, [-s for s in record.crop_start], full_shape, background)
    ras = from_model_space(full, record.slice_axis)
    factors = np.asarray(record.resample_factors)
    if not np.allclose(factors, 1.0):
        order = 1 if kind in IMAGE_KINDS else 0
        ras = resample_grid(ras, 1.0 / factors, record.ras_shape, order)
    out = nio.apply_orientation(ras, _inverse_ornt(np.asarray(record.ornt_to_ras)))
    assert out.shape == tuple(record.source_shape)
    if kind in IMAGE_KINDS:
        out = out.astype(np.float32)
    else:
        dtype = np.dtype(params["dtype"])
        out = np.rint(out).astype(dtype) if dtype.kind in "iub" else out.astype(dtype)
    return Volume(np.ascontiguousarray(out), np.asarray(record.source_affine).copy())


# Model-space values at or below are background (0 in a restored generated sample).
FOREGROUND_THRESHOLD = 0.01


def restore_sample(array_dhw: np.ndarray, record_dict: dict[str, Any], modality: str):
    """Model-space (D, H, W) in [0, 1] -> Volume on the reference grid in source units.

    Background (values <= FOREGROUND_THRESHOLD) is written as 0, as in the training files,
    instead of the bottom of the intensity window.
    """
    record = PreprocessRecord.from_dict(record_dict)
    vol = restore_volume(array_dhw, record, modality)
    fg_record = copy.deepcopy(record)
    fg_record.intensity["_foreground"] = {"kind": "mask", "window": None, "dtype": "|u1"}
    fg = restore_volume(
        (array_dhw > FOREGROUND_THRESHOLD).astype(np.uint8), fg_record, "_foreground"
    )
    if record.intensity[modality]["kind"] == "mr":
        vol.array[fg.array == 0] = 0
    return vol
