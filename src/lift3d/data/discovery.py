"""Find and validate cases in the dataset layouts lift3d reads (see DATA.md).

Layouts:

- ``brats``: BraTS 2023, one folder per case, ``BraTS-<TAG>-NNNNN-NNN/<case>-<mod>.nii.gz`` with
  modalities t1n, t1c, t2w, t2f and an optional seg (any cohort tag: GLI, MEN, PED, SSA, MET ...).
  The root holds the case folders, or is one case folder itself.
- ``synthrad``: SynthRAD2023 task 1, ``Task1/{brain,pelvis}/<case>/{mr,ct,mask}.nii.gz|.mha``.
  The root may be the dataset folder holding ``Task1``, ``Task1`` itself, a region folder, or
  one case folder.
- ``manifest``: a CSV (header ``case_id,<mod1>,<mod2>,...``; an empty cell = absent) or JSON
  (``{"cases": [{"case_id": ..., "<mod>": path}]}`` or a bare list) file, paths relative to the
  manifest. The root is the file, or a folder holding exactly one ``manifest.csv|json``.

Validation is two-staged so a file is decoded once: header checks (presence, readable, 3D,
same shape and affine across a case) need no voxel data; data checks (finite, not constant,
decodes to the end) decode the file, and the decoded volume is handed over to `load_case`
through a small bounded cache instead of being decoded again.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lift3d.constants import BRATS_MODALITIES, LPS_TO_RAS
from lift3d.data.volume import Volume, image_suffix, read_volume
from lift3d.errors import InputError

log = logging.getLogger(__name__)

SYNTHRAD_MODALITIES = ("mr", "ct", "mask")
LAYOUTS = ("brats", "synthrad", "manifest")
LABEL_MODALITIES = ("seg", "label", "labels")  # may legitimately be all zero (no tumour)
MASK_MODALITIES = ("mask",)  # may be all one, never all zero
AFFINE_ATOL_MM = 1e-3
MANIFEST_NAMES = ("manifest.csv", "manifest.json")

_BRATS_CASE = re.compile(r"^BraTS-[A-Za-z0-9][A-Za-z0-9-]*$")
_SYNTHRAD_REGIONS = {"brain", "pelvis"}
_SYNTHRAD_CASE = re.compile(r"^[12][A-Z]{2}\d{3}$")  # 1BA001: task, region, centre, number
_SYNTHRAD_REGION_LETTER = {"B": "brain", "P": "pelvis"}


@dataclass
class Case:
    """One subject: its modality files and where they came from.

    Attributes:
        case_id: e.g. ``BraTS-GLI-00000-000`` or ``1BA001``.
        layout: ``brats`` | ``synthrad`` | ``manifest``.
        root: the case folder (for a manifest: the folder holding the manifest).
        paths: modality name -> image file (only modalities that exist in the layout's listing).
        region: SynthRAD region (``brain`` | ``pelvis``), a manifest's ``region`` column, or None.
        manifest: the manifest file a case was listed in, else None.
    """

    case_id: str
    layout: str
    root: Path
    paths: dict[str, Path]
    region: str | None = None
    manifest: Path | None = None

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.paths)

    def expected_path(self, modality: str) -> Path:
        """Where `modality`'s file would be (for messages about a missing file)."""
        if modality in self.paths:
            return self.paths[modality]
        if self.layout == "brats":
            return self.root / f"{self.case_id}-{modality}.nii.gz"
        if self.layout == "synthrad":
            ext = next((image_suffix(p) for p in self.paths.values()), ".nii.gz")
            return self.root / f"{modality}{ext}"
        return self.manifest if self.manifest is not None else self.root


class DiscoveryResult(list):
    """The valid cases (a plain ``list[Case]``) plus what discovery found on the way.

    Attributes:
        root: the dataset path given.
        layout: the layout used.
        skipped: ``(case_id, error)`` for every case dropped by ``skip_bad=True``.
    """

    def __init__(self, cases=(), *, root: Path, layout: str, skipped=None) -> None:
        super().__init__(cases)
        self.root = root
        self.layout = layout
        self.skipped: list[tuple[str, InputError]] = list(skipped or [])


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


# ---------------------------------------------------------------- layouts


def _visible(entries) -> list[Path]:
    return sorted(p for p in entries if not p.name.startswith("."))


def _find_manifest(root: Path) -> Path | None:
    found = [root / name for name in MANIFEST_NAMES if (root / name).is_file()]
    if len(found) > 1:
        raise InputError("both manifest.csv and manifest.json found; keep one", root)
    return found[0] if found else None


def _is_brats_case_dir(path: Path) -> bool:
    return path.is_dir() and bool(_BRATS_CASE.match(path.name))


def _image_stem(path: Path) -> str:
    suffix = image_suffix(path)
    return path.name[: len(path.name) - len(suffix)] if suffix else ""


def _has_mr_or_ct(folder: Path) -> bool:
    return any(
        p.is_file() and _image_stem(p).lower() in ("mr", "ct") for p in _visible(folder.iterdir())
    )


def _is_synthrad_case_dir(path: Path) -> bool:
    """A case folder: named like 1BA001, or holding image files (not e.g. ``overview/`` PNGs)."""
    if not path.is_dir():
        return False
    return bool(_SYNTHRAD_CASE.match(path.name)) or any(
        p.is_file() and image_suffix(p) for p in _visible(path.iterdir())
    )


def _synthrad_case_dirs(root: Path) -> list[tuple[Path, str | None]]:
    """(case folder, region folder name or None) for a SynthRAD task 1 tree rooted at `root`."""
    base = root / "Task1" if (root / "Task1").is_dir() else root
    subdirs = [p for p in _visible(base.iterdir()) if p.is_dir()]
    regions = [p for p in subdirs if p.name.lower() in _SYNTHRAD_REGIONS]
    if regions:  # Task1/brain/<case>
        return [
            (case, region.name.lower())
            for region in regions
            for case in _visible(region.iterdir())
            if _is_synthrad_case_dir(case)
        ]
    region = base.name.lower() if base.name.lower() in _SYNTHRAD_REGIONS else None
    if region is not None:  # a region folder
        return [(p, region) for p in subdirs if _is_synthrad_case_dir(p)]
    cases = [(p, region) for p in subdirs if _has_mr_or_ct(p)]
    if not cases and _has_mr_or_ct(base):  # one case folder
        parent = base.parent.name.lower()
        cases = [(base, parent if parent in _SYNTHRAD_REGIONS else None)]
    return cases


def detect_layout(root: str | Path) -> str:
    """Guess a dataset's layout from its folder structure.

    Args:
        root: dataset folder, a single case folder, or a manifest file.

    Returns:
        ``"brats"``, ``"synthrad"`` or ``"manifest"``.

    Raises:
        InputError: the path does not exist, is an empty folder, or matches no layout.
    """
    root = Path(root)
    if not root.exists():
        raise InputError("no such file or folder", root)
    if root.is_file():
        if root.suffix.lower() in (".csv", ".json"):
            return "manifest"
        raise InputError(
            "unknown dataset layout: expected a dataset folder or a manifest .csv/.json file",
            root,
        )
    entries = _visible(root.iterdir())
    if not entries:
        raise InputError("folder is empty", root)
    if _find_manifest(root) is not None:
        return "manifest"
    if any(_is_brats_case_dir(p) for p in entries) or (
        _BRATS_CASE.match(root.name) and any(p.name.startswith(root.name + "-") for p in entries)
    ):
        return "brats"
    if _synthrad_case_dirs(root):
        return "synthrad"
    raise InputError(
        "unknown dataset layout: expected BraTS case folders (BraTS-<TAG>-NNNNN-NNN/), a SynthRAD "
        "tree (Task1/brain/1BA001/mr.nii.gz), or a manifest.csv/manifest.json",
        root,
    )


def _modality_files(folder: Path, prefix: str) -> dict[str, Path]:
    """Modality -> file for image files named ``<prefix><modality><suffix>`` in `folder`."""
    paths: dict[str, Path] = {}
    for p in _visible(folder.iterdir()):
        stem = _image_stem(p)
        if not stem or not stem.startswith(prefix) or not p.is_file():
            continue
        modality = stem[len(prefix) :].lower()
        if not modality:
            continue
        if modality in paths:
            raise InputError(
                f"two files for modality {modality!r} ({paths[modality].name}, {p.name})", folder
            )
        paths[modality] = p
    return paths


def _brats_cases(root: Path) -> list[Case]:
    if _BRATS_CASE.match(root.name) and not any(_is_brats_case_dir(p) for p in root.iterdir()):
        folders = [root]
    else:
        folders = [p for p in _visible(root.iterdir()) if _is_brats_case_dir(p)]
    if not folders:
        raise InputError("no BraTS case folders (BraTS-<TAG>-NNNNN-NNN/) found", root)
    return [
        Case(f.name, "brats", f, _modality_files(f, f.name + "-"), region=f.name.split("-")[1])
        for f in folders
    ]


def _synthrad_cases(root: Path) -> list[Case]:
    found = _synthrad_case_dirs(root)
    if not found:
        raise InputError("no SynthRAD case folders (Task1/<region>/<case>/mr.nii.gz) found", root)
    cases = []
    for folder, region in found:
        if region is None and len(folder.name) > 1:
            region = _SYNTHRAD_REGION_LETTER.get(folder.name[1].upper())
        cases.append(Case(folder.name, "synthrad", folder, _modality_files(folder, ""), region))
    return cases


def _manifest_rows(manifest: Path) -> list[dict[str, str]]:
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read manifest ({exc.__class__.__name__})", manifest) from None
    if manifest.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        fields = [f.strip() for f in (reader.fieldnames or [])]
        if "case_id" not in fields:
            raise InputError("manifest CSV needs a header 'case_id,<modality>,...'", manifest)
        return [
            {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
            for row in reader
        ]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON (line {exc.lineno}: {exc.msg})", manifest) from None
    rows = data.get("cases") if isinstance(data, dict) else data
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise InputError(
            'manifest JSON must be {"cases": [{"case_id": ..., "<modality>": path}]} or a list',
            manifest,
        )
    return [{str(k): "" if v is None else str(v) for k, v in r.items()} for r in rows]


def _manifest_cases(root: Path) -> list[Case]:
    manifest = root if root.is_file() else _find_manifest(root)
    if manifest is None:
        raise InputError("no manifest.csv or manifest.json in this folder", root)
    rows = _manifest_rows(manifest)
    if not rows:
        raise InputError("manifest lists no cases", manifest)
    cases, seen = [], set()
    for n, row in enumerate(rows, start=1):
        case_id = row.get("case_id", "").strip()
        if not case_id:
            raise InputError(f"case {n} has no case_id", manifest)
        if case_id in seen:
            raise InputError(f"case_id {case_id!r} listed twice", manifest)
        seen.add(case_id)
        paths = {}
        for key, value in row.items():
            if key in ("case_id", "region") or not key or not value:
                continue
            path = Path(value).expanduser()
            paths[key] = path if path.is_absolute() else manifest.parent / path
        region = row.get("region") or None
        cases.append(Case(case_id, "manifest", manifest.parent, paths, region, manifest))
    return cases


def default_required(layout: str, cases: list[Case] | None = None) -> tuple[str, ...]:
    """Modalities a case must have when `required` is not given.

    BraTS: the four MR modalities; SynthRAD: mr and ct; manifest: every modality column of the
    manifest the `cases` came from.
    """
    if layout == "manifest":
        if not cases or cases[0].manifest is None:
            return ()
        rows = _manifest_rows(cases[0].manifest)
        return tuple(k for k in rows[0] if k not in ("case_id", "region") and k)
    return {"brats": BRATS_MODALITIES, "synthrad": ("mr", "ct")}.get(layout, ())


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
    if min(squeezed) < 2:
        raise InputError(f"expected a 3D image, got a single slice (shape {squeezed})", path)
    if not np.all(np.isfinite(affine)):
        raise InputError("image geometry (affine) is not finite", path)
    return FileInfo(modality, path, squeezed, affine, dtype)


def check_volume_data(volume: Volume, modality: str, path: Path | None = None) -> None:
    """Raise InputError if `volume` has non-finite voxels or (for images) one constant value."""
    path = path if path is not None else volume.path
    array = volume.array
    if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise InputError(f"{bad} voxels are NaN or Inf", path)
    lo, hi = array.min(), array.max()
    if modality in LABEL_MODALITIES:
        return
    if lo == hi == 0:
        raise InputError("all voxels are zero (empty image)", path)
    if lo == hi and modality not in MASK_MODALITIES:
        raise InputError(f"all voxels have the same value ({lo}); not an image", path)


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


def list_cases(root: str | Path, layout: str = "auto") -> tuple[str, list[Case]]:
    """The layout and every case under `root`, unvalidated (for `inspect`)."""
    root = Path(root)
    if layout not in ("auto", *LAYOUTS):
        raise InputError(f"unknown layout {layout!r}; use auto, {', '.join(LAYOUTS)}", root)
    if not root.exists():
        raise InputError("no such file or folder", root)
    if root.is_dir() and not _visible(root.iterdir()):
        raise InputError("folder is empty", root)
    layout = detect_layout(root) if layout == "auto" else layout
    finder = {"brats": _brats_cases, "synthrad": _synthrad_cases, "manifest": _manifest_cases}
    return layout, finder[layout](root)


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
