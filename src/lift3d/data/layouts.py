"""The dataset layouts lift3d reads (see DATA.md): which folders are cases, which files are
which modality. No file is opened here; `lift3d.data.discovery` validates what is listed.

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
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

from lift3d.constants import BRATS_MODALITIES
from lift3d.data.volume import image_suffix
from lift3d.errors import InputError

SYNTHRAD_MODALITIES = ("mr", "ct", "mask")
LAYOUTS = ("brats", "synthrad", "manifest")
LABEL_MODALITIES = ("seg", "label", "labels")  # may legitimately be all zero (no tumour)
MASK_MODALITIES = ("mask",)  # may be all one, never all zero
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
