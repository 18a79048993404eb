"""Find and validate the cases of a dataset (layouts: `lift3d.data.layouts`, DATA.md).

`discover_cases` lists a dataset's cases and validates each; `load_case` reads one;
`read_checked` reads one file given on the command line. All of them check voxel data with
`check_volume_data` (finite, not constant, at least `MIN_EXTENT` voxels along each axis, a mask
not empty), so a file is accepted or refused the same way whichever command or mode reads it.

Validation is two-staged so a file is decoded once: header checks (presence, readable, 3D,
same shape and affine across a case) need no voxel data; data checks (finite, not constant,
decodes to the end) decode the file, and the decoded volume is handed over to `load_case`
through a small bounded cache instead of being decoded again.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lift3d.constants import LPS_TO_RAS
from lift3d.data.layouts import (
    LABEL_MODALITIES,
    MASK_MODALITIES,
    Case,
    DiscoveryResult,
    default_required,
    list_cases,
)
from lift3d.data.volume import Volume, image_suffix, read_volume
from lift3d.errors import InputError

log = logging.getLogger(__name__)

AFFINE_ATOL_MM = 1e-3
# Fewest voxels along any axis of a usable volume (one slice, or a 1x1x1 "volume", is not 3D).
MIN_EXTENT = 2


@dataclass
class FileInfo:
    """Header (and, after a data check, intensity) facts about one modality file."""

    modality: str
    path: Path
    shape: tuple[int, ...]
    affine: np.ndarray = field(repr=False)
    dtype: str = ""
    min: float | None = None
    max: float | None = None

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(z) for z in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))

    @property
    def orientation(self) -> str:
        import nibabel as nib

        return "".join(nib.aff2axcodes(self.affine))


@dataclass
class CaseReport:
    """Everything `check_case` found about one case; empty `problems` means valid."""

    case: Case
    files: dict[str, FileInfo] = field(default_factory=dict)
    problems: list[InputError] = field(default_factory=list)


# ---------------------------------------------------------------- decoded-volume hand-over cache


class _DecodedCache:
    """Volumes decoded by validation, kept (up to a byte budget) until `load_case` takes them.

    Keyed on (resolved path, size, mtime) so a file changed in between is decoded afresh.
    ``LIFT3D_DECODE_CACHE_MB`` sets the budget (default 512; 0 disables).
    """

    def __init__(self) -> None:
        self._items: OrderedDict[tuple, Volume] = OrderedDict()
        self._bytes = 0

    @staticmethod
    def _budget() -> int:
        return int(float(os.environ.get("LIFT3D_DECODE_CACHE_MB", "512")) * 2**20)

    @staticmethod
    def key(path: Path) -> tuple:
        st = path.stat()
        return (str(path.resolve()), st.st_size, st.st_mtime_ns)

    def put(self, path: Path, volume: Volume) -> None:
        budget = self._budget()
        size = volume.array.nbytes
        if size > budget:
            return
        key = self.key(path)
        if key in self._items:
            self._bytes -= self._items.pop(key).array.nbytes
        self._items[key] = volume
        self._bytes += size
        while self._bytes > budget:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.array.nbytes

    def take(self, path: Path) -> Volume | None:
        try:
            key = self.key(path)
        except OSError:
            return None
        volume = self._items.pop(key, None)
        if volume is not None:
            self._bytes -= volume.array.nbytes
        return volume

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0


_DECODED = _DecodedCache()


def clear_decode_cache() -> None:
    """Drop volumes decoded by validation and not yet loaded."""
    _DECODED.clear()


# ---------------------------------------------------------------- validation


def _read_header(path: Path, modality: str) -> FileInfo:
    """Shape and affine without decoding voxels (NIfTI header / MetaImage information)."""
    if not path.exists():
        raise InputError("file not found", path)
    if path.is_dir():
        raise InputError("expected an image file, found a folder", path)
    suffix = image_suffix(path)
    if not suffix:
        raise InputError("not an image file (expected .nii, .nii.gz, .mha or .mhd)", path)
    try:
        if suffix in (".nii", ".nii.gz"):
            import nibabel as nib

            img = nib.load(str(path))
            if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
                raise InputError(f"not a NIfTI image ({type(img).__name__})", path)
            shape, affine = tuple(int(s) for s in img.shape), np.asarray(img.affine, float)
            dtype = str(img.get_data_dtype())
        else:
            import SimpleITK as sitk

            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            if reader.GetNumberOfComponents() != 1:
                raise InputError(
                    f"expected a scalar image, got {reader.GetNumberOfComponents()} components",
                    path,
                )
            shape = tuple(int(s) for s in reader.GetSize())
            dim = len(shape)
            lps = np.eye(4)
            if dim == 3:
                direction = np.asarray(reader.GetDirection(), float).reshape(3, 3)
                lps[:3, :3] = direction @ np.diag(reader.GetSpacing())
                lps[:3, 3] = reader.GetOrigin()
            affine = LPS_TO_RAS @ lps
            dtype = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    except InputError:
        raise
    except Exception as exc:  # nibabel/SimpleITK raise many types for non-image files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"not a readable image ({reason[:160]})", path) from None
    squeezed = tuple(s for i, s in enumerate(shape) if i < 3 or s != 1)
    if len(squeezed) != 3:
        raise InputError(f"expected a 3D image, got {len(squeezed)}D with shape {shape}", path)
    _check_extent(squeezed, path)
    if not np.all(np.isfinite(affine)):
        raise InputError("image geometry (affine) is not finite", path)
    return FileInfo(modality, path, squeezed, affine, dtype)


def _check_extent(shape: tuple[int, ...], path: Path | None) -> None:
    if min(shape) < MIN_EXTENT:
        what = "a single voxel" if max(shape) < MIN_EXTENT else "a single slice"
        raise InputError(
            f"expected a 3D image of at least {MIN_EXTENT} voxels along each axis, got {what} "
            f"(shape {tuple(shape)})",
            path,
        )


def check_volume_data(volume: Volume, modality: str, path: Path | None = None) -> None:
    """Raise InputError unless `volume` is usable as `modality`.

    Every volume: at least `MIN_EXTENT` voxels along each axis, no NaN or Inf voxel. Images:
    not one constant value. Masks: not empty (all zero). Label maps: anything finite.
    """
    path = path if path is not None else volume.path
    _check_extent(volume.shape, path)
    array = volume.array
    if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise InputError(f"{bad} voxels are NaN or Inf", path)
    lo, hi = array.min(), array.max()
    if modality in LABEL_MODALITIES:
        return
    if lo == hi == 0:
        what = "empty mask" if modality in MASK_MODALITIES else "empty image"
        raise InputError(f"all voxels are zero ({what})", path)
    if lo == hi and modality not in MASK_MODALITIES:
        raise InputError(f"all voxels have the same value ({lo}); not an image", path)


def read_checked(path: str | Path, modality: str) -> Volume:
    """Read one volume file and check its data as `modality` (`check_volume_data`).

    What a command reads from a file named on its command line goes through here, as a
    dataset's files go through `load_case`.

    Raises:
        InputError: unreadable file, not 3D, too small, non-finite, constant or empty.
    """
    volume = read_volume(path)
    check_volume_data(volume, modality, Path(path))
    return volume


def _data_stats(volume: Volume) -> tuple[float, float]:
    array = volume.array
    if array.dtype.kind in "fc":
        finite = array[np.isfinite(array)]
        if finite.size == 0:
            return float("nan"), float("nan")
        return float(finite.min()), float(finite.max())
    return float(array.min()), float(array.max())


def check_case(
    case: Case,
    required: tuple[str, ...] | list[str] | None = None,
    *,
    check_data: bool = True,
    keep_decoded: bool = False,
) -> CaseReport:
    """Check one case and collect every problem (not just the first).

    Args:
        case: the case.
        required: modalities that must be present; None uses the layout's default.
        check_data: also decode voxels (finite, not constant, file complete).
        keep_decoded: hand decoded volumes over to a later `load_case` instead of dropping them.

    Returns:
        A `CaseReport` with per-file facts (shape, affine, min/max when decoded) and problems.
    """
    report = CaseReport(case)
    required = default_required(case.layout, [case]) if required is None else tuple(required)
    for modality in required:
        if modality not in case.paths:
            report.problems.append(
                InputError(
                    f"required modality {modality!r} is missing", case.expected_path(modality)
                )
            )
    if not case.paths:
        report.problems.append(InputError("case has no image files", case.root))
    for modality, path in case.paths.items():
        try:
            report.files[modality] = _read_header(path, modality)
        except InputError as exc:
            report.problems.append(exc)
    infos = list(report.files.values())
    if infos:
        ref = infos[0]
        for info in infos[1:]:
            if info.shape != ref.shape:
                report.problems.append(
                    InputError(
                        f"shape {info.shape} differs from {ref.modality}'s {ref.shape} "
                        f"({ref.path.name})",
                        info.path,
                    )
                )
            elif np.abs(info.affine - ref.affine).max() > AFFINE_ATOL_MM:
                diff = float(np.abs(info.affine - ref.affine).max())
                report.problems.append(
                    InputError(
                        f"affine differs from {ref.modality}'s ({ref.path.name}) by {diff:.4g} mm "
                        f"(tolerance {AFFINE_ATOL_MM} mm)",
                        info.path,
                    )
                )
    if check_data:
        for modality, info in report.files.items():
            try:
                volume = _DECODED.take(info.path) or read_volume(info.path)
                info.min, info.max = _data_stats(volume)
                info.dtype = str(volume.array.dtype)
                check_volume_data(volume, modality, info.path)
            except InputError as exc:
                report.problems.append(exc)
                continue
            if keep_decoded and not report.problems:
                _DECODED.put(info.path, volume)
    return report


def validate_case(
    case: Case, required: tuple[str, ...] | list[str] | None = None, *, check_data: bool = True
) -> None:
    """Raise the first problem of `case` as an InputError naming the file; return None if valid.

    Decoded volumes are kept for the next `load_case` of this case, so validation followed by
    loading decodes every file once.
    """
    report = check_case(case, required, check_data=check_data, keep_decoded=True)
    if report.problems:
        for path in case.paths.values():  # an invalid case will not be loaded
            _DECODED.take(path)
        raise report.problems[0]


def load_case(
    case: Case, modalities: tuple[str, ...] | list[str] | None = None
) -> dict[str, Volume]:
    """Decode a case's volumes, checking data and grids (each file decoded at most once).

    Args:
        case: the case.
        modalities: which to load; None loads every modality the case has.

    Returns:
        Modality -> `Volume` (arrays in file order, affines in RAS+ mm).

    Raises:
        InputError: a modality is missing, unreadable, non-finite, constant, or on another grid.
    """
    modalities = tuple(case.paths) if modalities is None else tuple(modalities)
    volumes: dict[str, Volume] = {}
    for modality in modalities:
        if modality not in case.paths:
            raise InputError(f"modality {modality!r} is missing", case.expected_path(modality))
        path = case.paths[modality]
        volume = _DECODED.take(path)
        if volume is None:
            volume = read_volume(path)
            check_volume_data(volume, modality, path)
        volumes[modality] = volume
    ref_mod, ref = next(iter(volumes.items()), (None, None))
    for modality, volume in volumes.items():
        if ref is not None and volume.shape != ref.shape:
            raise InputError(
                f"shape {volume.shape} differs from {ref_mod}'s {ref.shape}", case.paths[modality]
            )
        if ref is not None and not volume.same_grid(ref, AFFINE_ATOL_MM):
            raise InputError(
                f"affine differs from {ref_mod}'s by more than {AFFINE_ATOL_MM} mm",
                case.paths[modality],
            )
    return volumes


def discover_cases(
    root: str | Path,
    layout: str = "auto",
    required: tuple[str, ...] | list[str] | None = None,
    skip_bad: bool = False,
    validate: bool | str = True,
) -> DiscoveryResult:
    """Find a dataset's cases and validate each before use.

    Args:
        root: dataset folder, case folder, or manifest file.
        layout: ``auto`` | ``brats`` | ``synthrad`` | ``manifest``.
        required: modalities every case must have; None = the layout's default (BraTS: the four
            MR modalities; SynthRAD: mr and ct; manifest: every column).
        skip_bad: drop invalid cases with a warning each and a summary, instead of raising.
        validate: True (headers + voxel data), ``"header"`` (headers only: cheap; `load_case`
            still checks the data when it decodes), or False.

    Returns:
        A `DiscoveryResult`: a list of valid `Case` sorted by case_id, with ``.skipped``.

    Raises:
        InputError: missing/empty/unknown dataset, a bad case (unless `skip_bad`), or no valid
            case left.
    """
    root = Path(root)
    layout, cases = list_cases(root, layout)
    if required is None:
        required = default_required(layout, cases)
    cases.sort(key=lambda c: c.case_id)
    if not validate:
        return DiscoveryResult(cases, root=root, layout=layout)
    valid, skipped = [], []
    for case in cases:
        try:
            validate_case(case, required, check_data=validate != "header")
        except InputError as exc:
            if not skip_bad:
                raise
            log.warning("skipping case %s: %s", case.case_id, exc)
            skipped.append((case.case_id, exc))
            continue
        valid.append(case)
    if skipped:
        log.warning("skipped %d of %d cases with problems (--skip-bad)", len(skipped), len(cases))
    if not valid:
        raise InputError(f"no valid cases ({len(skipped)} skipped as bad)", root)
    return DiscoveryResult(valid, root=root, layout=layout, skipped=skipped)
