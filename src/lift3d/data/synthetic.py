"""Seeded multi-modal head phantom for demos and tests (test data, not anatomy).

A phantom is built from analytic shapes evaluated at per-subject deformed coordinates: head and
neck, scalp fat, skull (with diploe) and cervical spine, subarachnoid CSF and sulci, lateral /
third / fourth ventricles, cortical and deep grey matter, white matter, cerebellum with folia,
brainstem, and an optional glioma (necrotic core, enhancing rim, oedema; BraTS labels 1/3/2).
Anatomy changes with depth along the superior-inferior axis (ventricles appear and vanish, the
skull curves, the cerebellum and spine take over below), which is what LiFT's through-plane
models must keep coherent.

The labels are rendered into t1n, t1c, t2w, t2f (tissue-specific contrasts, partial-volume blur,
smooth multiplicative bias field, Rician noise) and CT (Hounsfield units, Gaussian noise), then
written in the BraTS 2023 or SynthRAD2023 task 1 layout with non-trivial affines, so the real
loaders are the ones exercised. Same arguments, same bytes.

This is the ``basic`` kind: each tissue is distinguishable in a single MR slice. The
``realistic`` kind (`lift3d.data.phantom_realistic`) adds the ambiguities of real MR -> CT;
`write_phantom_dataset(kind=...)` writes either.

Results on phantoms show that a mechanism works, never clinical quality.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np

from lift3d.constants import PHANTOM_NOTE
from lift3d.data.phantom_anatomy import (
    MIN_SIZE,
    MR_MODALITIES,
    TISSUES,
    _atlas_coordinates,
    _bias_field,
    _coordinates,
    _label_anatomy,
    _rotation,
    _waves,
)
from lift3d.data.phantom_realistic import MULTISLICE_DEFAULT, make_realistic_phantom
from lift3d.data.volume import Volume, write_volume
from lift3d.errors import InputError
from lift3d.utils import atomic_write_text, check_output_path
from lift3d.version import __version__

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
MARKER_NAME = "lift3d_phantom.json"
LAYOUTS = ("brats", "synthrad")
KINDS = ("basic", "realistic")  # basic: this module; realistic: lift3d.data.phantom_realistic
_T = TISSUES
# tissue code -> BraTS segmentation label
_BRATS_LABEL = np.zeros(len(TISSUES), dtype=np.uint8)
_BRATS_LABEL[[_T["necrotic"], _T["oedema"], _T["enhancing"]]] = (1, 2, 3)

# Relative MR signal per tissue (index = tissue code), scaled by _MR_SCALE. Chosen to follow real
# contrasts: T1 WM > GM > CSF, fat bright; T1c like T1 with a bright enhancing rim; T2 CSF and
# oedema bright; FLAIR CSF suppressed, oedema brightest. Bone is dark everywhere.
#                 bg    soft  fat   bone  csf   vent  gm    wm    necr  oed   enh   air
_MR_LUT = {
    "t1n": (0.00, 0.45, 0.95, 0.08, 0.12, 0.10, 0.52, 0.72, 0.18, 0.40, 0.46, 0.00),
    "t1c": (0.00, 0.50, 0.95, 0.08, 0.13, 0.11, 0.54, 0.72, 0.16, 0.41, 1.00, 0.00),
    "t2w": (0.00, 0.35, 0.55, 0.05, 1.00, 1.00, 0.58, 0.40, 0.90, 0.82, 0.62, 0.00),
    "t2f": (0.00, 0.35, 0.60, 0.05, 0.07, 0.05, 0.58, 0.44, 0.30, 0.95, 0.66, 0.00),
}
_MR_SCALE = 1000.0
_MR_NOISE = 0.02  # Rician sigma as a fraction of _MR_SCALE
#                 bg      soft  fat    bone  csf  vent  gm    wm    necr  oed   enh   air
_CT_LUT = (-1000.0, 45.0, -90.0, 0.0, 8.0, 6.0, 38.0, 28.0, 20.0, 22.0, 36.0, -1000.0)
_CT_NOISE_HU = 12.0
_CT_RANGE = (-1024, 3071)


def _subject(seed: int, case: int, tumour: bool) -> dict:
    """Per-subject random parameters, drawn from (seed, case) only."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(case), GENERATOR_VERSION]))
    p: dict = {}
    p["scale"] = rng.uniform(0.92, 1.04, size=3)  # head radii variation
    p["angles"] = np.deg2rad(rng.uniform(-6.0, 6.0, size=3))
    p["shift"] = rng.uniform(-0.03, 0.03, size=3)
    p["warp"] = [_waves(rng, 4, (0.4, 1.1)) for _ in range(3)]  # elastic displacement
    p["warp_amp"] = rng.uniform(0.015, 0.03)
    p["fold"] = _waves(rng, 12, (2.5, 4.5))  # gyri
    p["ventricle_scale"] = rng.uniform(0.75, 1.35)
    p["skull"] = rng.uniform(0.09, 0.14)
    p["cortex"] = rng.uniform(0.12, 0.18)
    p["scalp"] = rng.uniform(0.07, 0.1)
    p["tumour"] = None
    if tumour:
        side = rng.choice([-1.0, 1.0])
        centre = np.array(
            [side * rng.uniform(0.22, 0.38), rng.uniform(-0.35, 0.35), rng.uniform(0.02, 0.35)]
        )
        radii = rng.uniform(0.09, 0.15) * rng.uniform(0.8, 1.2, size=3)
        p["tumour"] = {
            "centre": centre,
            "radii": radii,
            "core": rng.uniform(0.5, 0.75),
            "oedema": rng.uniform(1.7, 2.4),
            "lumps": _waves(rng, 6, (3.0, 6.0)),
        }
    p["bias"] = {m: rng.normal(scale=0.12, size=9) for m in (*MR_MODALITIES, "ct")}
    p["noise_seed"] = rng.integers(0, 2**63 - 1)
    return p


def _anatomy(
    p: dict, shape: Sequence[int], spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label the grid. Returns (tissue codes uint8, skull depth in [0, 1] or -1, brain bool)."""
    return _label_anatomy(p, shape, *_atlas_coordinates(p, shape, spacing))


def _blur(img: np.ndarray, sigma: float = 0.6) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(img, sigma, mode="nearest", truncate=3.0)


def make_phantom(
    seed: int,
    shape: Sequence[int] = (64, 64, 64),
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    tumour: bool = True,
    case: int = 0,
) -> dict[str, np.ndarray]:
    """Make one seeded head phantom on a RAS grid.

    The head fills the field of view whatever the grid; array axes point Right, Anterior,
    Superior. Case `case` of seed `seed` is the same subject regardless of how many cases are made.

    Args:
        seed: dataset seed.
        shape: (X, Y, Z) voxels, each at least 16.
        spacing: voxel size in mm (only the returned affine uses it).
        tumour: add a glioma (BraTS labels 1, 2, 3).
        case: subject index within the dataset.

    Returns:
        Dict of (X, Y, Z) arrays: ``tissue`` (uint8 codes, see `TISSUES`), ``seg`` (uint8 BraTS
        labels 0-3), ``brain`` (bool, intracranial mask used for skull stripping), ``mask``
        (uint8 body outline), ``t1n``, ``t1c``, ``t2w``, ``t2f`` (float32, whole head, arbitrary
        scanner units ~0-1200), ``ct`` (float32 HU); and ``affine`` (4, 4) voxel -> RAS mm.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < MIN_SIZE:
        raise InputError(f"phantom shape must be 3 sizes of at least {MIN_SIZE}, got {shape}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise InputError(f"spacing must be 3 positive sizes in mm, got {tuple(spacing)}")
    p = _subject(seed, case, tumour)
    tissue, depth, brain = _anatomy(p, shape, spacing)
    body = tissue != _T["background"]
    rng = np.random.default_rng(p["noise_seed"])
    px, py, pz = _coordinates(shape)
    from scipy.ndimage import gaussian_filter

    # Fine tissue texture, shared across modalities (same anatomy seen by every sequence).
    texture = gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 1.2, truncate=3.0)
    texture *= np.float32(1.0 / max(float(texture.std()), 1e-6))
    out: dict[str, np.ndarray] = {}
    for mod in MR_MODALITIES:
        lut = np.asarray(_MR_LUT[mod], dtype=np.float32) * np.float32(_MR_SCALE)
        img = lut[tissue]
        img *= 1 + np.float32(0.04) * texture
        img = _blur(img) * _bias_field(p["bias"][mod], px, py, pz)
        sigma = np.float32(_MR_NOISE * _MR_SCALE)
        n1 = rng.standard_normal(shape, dtype=np.float32)
        n2 = rng.standard_normal(shape, dtype=np.float32)
        out[mod] = np.sqrt((img + sigma * n1) ** 2 + (sigma * n2) ** 2).astype(np.float32)
    lut = np.asarray(_CT_LUT, dtype=np.float32)
    ct = lut[tissue]
    # Bone: dense cortical tables (~1500 HU) around cancellous diploe (~700 HU); vertebrae ~900.
    bone = tissue == _T["bone"]
    ct[bone] = np.where(
        depth[bone] >= 0, 1500.0 - 800.0 * np.sin(np.pi * depth[bone]), 900.0
    ).astype(np.float32)
    ct += np.float32(6.0) * texture * body
    ct = _blur(ct) + np.float32(_CT_NOISE_HU) * rng.standard_normal(shape, dtype=np.float32)
    out["ct"] = np.clip(ct, *_CT_RANGE).astype(np.float32)
    out["tissue"] = tissue
    out["seg"] = _BRATS_LABEL[tissue]
    out["brain"] = brain
    out["mask"] = body.astype(np.uint8)
    affine = np.diag([*map(float, spacing), 1.0])
    centre = (np.asarray(shape) - 1) / 2.0 * np.asarray(spacing, dtype=float)
    affine[:3, 3] = -centre + np.array([1.5, -17.0, 12.0])  # non-zero, off-centre origin
    out["affine"] = affine
    return out


def _brats_affine(ras_affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Affine of the LPS-ordered array (i -> Left, j -> Posterior) as BraTS files store it."""
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, shape[0] - 1
    flip[1, 1], flip[1, 3] = -1.0, shape[1] - 1
    return ras_affine @ flip


def _oblique_affine(ras_affine: np.ndarray) -> np.ndarray:
    """A slightly oblique scanner affine (3 deg about S, 2 deg about R), as a real scan may have."""
    rot = np.eye(4)
    rot[:3, :3] = _rotation(np.deg2rad([2.0, 0.0, 3.0]))
    return rot @ ras_affine


def brats_case_id(index: int) -> str:
    """BraTS 2023 glioma-style case name of case `index` (0-based)."""
    return f"BraTS-GLI-{index:05d}-000"


def synthrad_case_id(index: int) -> str:
    """SynthRAD2023 task 1 brain-style case name of case `index` (0-based): 1BA001, ..."""
    return f"1BA{index + 1:03d}"


def _write_case(
    root: Path,
    layout: str,
    index: int,
    phantom: dict[str, np.ndarray],
    written: list[Path],
    overwrite: bool = False,
) -> None:
    """Write one case's files, appending each to `written` as soon as it exists."""
    shape = phantom["tissue"].shape
    if layout == "brats":
        # BraTS MR is skull-stripped: zero outside the intracranial mask. LPS voxel order.
        case_id = brats_case_id(index)
        affine = _brats_affine(phantom["affine"], shape)
        brain = phantom["brain"]
        arrays = {m: np.where(brain, phantom[m], np.float32(0)) for m in MR_MODALITIES}
        arrays["seg"] = phantom["seg"]
        for name, arr in arrays.items():
            arr = np.ascontiguousarray(arr[::-1, ::-1, :])
            path = root / case_id / f"{case_id}-{name}.nii.gz"
            written.append(write_volume(Volume(arr, affine), path, overwrite=overwrite))
    else:
        # SynthRAD: whole-head T1 (post-contrast, as most SynthRAD brain MRs), CT in int16 HU.
        case_id = synthrad_case_id(index)
        affine = _oblique_affine(phantom["affine"])
        arrays = {
            "mr": phantom["t1c"],
            "ct": np.rint(phantom["ct"]).astype(np.int16),
            "mask": phantom["mask"],
        }
        for name, arr in arrays.items():
            path = root / "Task1" / "brain" / case_id / f"{name}.nii.gz"
            volume = Volume(np.ascontiguousarray(arr), affine)
            written.append(write_volume(volume, path, overwrite=overwrite))


def _remove_written(out: Path, written: list[Path]) -> None:
    """Undo a failed run: delete the files it wrote and the folders left empty."""
    for path in written:
        with contextlib.suppress(OSError):
            path.unlink()
        for parent in path.parents:
            if parent == out:
                break
            try:
                parent.rmdir()  # only empty folders go
            except OSError:
                break


def _remove_previous(out: Path) -> None:
    """Delete the files an earlier phantom run listed in its marker (and folders left empty)."""
    marker = out / MARKER_NAME
    try:
        files = json.loads(marker.read_text()).get("files", [])
    except (OSError, ValueError):
        return
    for rel in files:
        path = (out / rel).resolve()
        if path.is_file() and out.resolve() in path.parents:
            path.unlink()
            for parent in path.parents:
                if parent == out.resolve() or any(parent.iterdir()):
                    break
                parent.rmdir()
    marker.unlink()


def write_phantom_dataset(
    out: str | Path,
    layout: str = "brats",
    cases: int = 4,
    shape: Sequence[int] = (64, 64, 64),
    seed: int = 0,
    tumour: bool = True,
    *,
    kind: str = "basic",
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    multislice: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> list[Path]:
    """Write a phantom dataset in the BraTS 2023 or SynthRAD2023 task 1 layout.

    ``brats``: ``OUT/BraTS-GLI-0000k-000/BraTS-GLI-0000k-000-{t1n,t1c,t2w,t2f,seg}.nii.gz``
    (skull-stripped MR, LPS voxel order). ``synthrad``: ``OUT/Task1/brain/1BA00k/{mr,ct,mask}
    .nii.gz`` (whole-head MR, CT in HU, body mask; slightly oblique affine). Also writes
    ``OUT/lift3d_phantom.json``. Files are byte-identical for the same arguments, and case k is
    the same subject whatever `cases` is.

    Args:
        out: dataset folder (created; must be empty or absent unless `overwrite`).
        layout: ``"brats"`` or ``"synthrad"``.
        cases: number of subjects (>= 1).
        shape: (X, Y, Z) voxel grid as stored in the files, each >= 16.
        seed: dataset seed.
        tumour: add gliomas (BraTS labels 1, 2, 3).
        kind: ``"basic"`` (`make_phantom`: every tissue distinguishable in one MR slice) or
            ``"realistic"`` (`lift3d.data.phantom_realistic.make_realistic_phantom`: bone and
            air both dark in MR, air cells next to bone, partial volume, varied anatomy).
        spacing: voxel size in mm, e.g. (1, 1, 2.5) for thick axial slices.
        multislice: realistic kind only: the MR sequences acquired as interleaved 2D stacks
            (motion between packages, cross-talk); None: the kind's default
            (`lift3d.data.phantom_realistic.MULTISLICE_DEFAULT`), () for none. The SynthRAD
            layout's MR is the t1c.
        overwrite: replace an existing dataset (files of an earlier phantom run are removed).
            Without it every file is created exclusively: a file that appears meanwhile
            (another run writing the same folder) is an error.
        progress: show a tqdm bar over cases.

    Returns:
        Paths of the written image files (marker excluded), in case order.

    Raises:
        InputError: unknown layout or kind, cases < 1, bad shape or spacing, `out` exists and
            is not empty, or a file cannot be written (then the files this call wrote are
            removed again).
    """
    from tqdm.auto import tqdm

    if kind not in KINDS:
        raise InputError(f"unknown phantom kind {kind!r}; use one of {', '.join(KINDS)}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise InputError(f"--spacing needs 3 positive sizes in mm, got {spacing}")
    if kind == "realistic":
        multislice = MULTISLICE_DEFAULT if multislice is None else tuple(multislice)
        unknown = sorted(set(multislice) - set(MR_MODALITIES))
        if unknown:
            raise InputError(
                f"--multislice takes MR sequences ({', '.join(MR_MODALITIES)}), got "
                f"{', '.join(unknown)}"
            )
        make = partial(make_realistic_phantom, multislice=multislice)
    elif multislice:
        raise InputError("--multislice needs --kind realistic (the basic phantom has no motion)")
    else:
        make = make_phantom
    if layout not in LAYOUTS:
        raise InputError(f"unknown phantom layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    if int(cases) < 1:
        raise InputError(f"--cases must be at least 1, got {cases}")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < MIN_SIZE:
        raise InputError(f"--shape needs 3 sizes of at least {MIN_SIZE} voxels, got {shape}")
    out = check_output_path(out, overwrite=overwrite)
    if out.exists() and not out.is_dir():
        raise InputError("output must be a folder, found a file", out)
    if overwrite and out.is_dir():
        _remove_previous(out)
    written: list[Path] = []
    bar = tqdm(range(int(cases)), desc=f"phantom ({layout})", unit="case", disable=not progress)
    try:
        for index in bar:
            phantom = make(seed, shape, spacing, tumour=tumour, case=index)
            _write_case(out, layout, index, phantom, written, overwrite)
        _write_marker(
            out, layout, cases, shape, seed, tumour, written, overwrite, kind, spacing, multislice
        )
    except BaseException:
        _remove_written(out, written)  # no half-written dataset (full disk, Ctrl-C ...)
        raise
    log.debug("wrote %d %s phantom cases (%s layout) to %s", cases, kind, layout, out)
    return written


def _write_marker(
    out: Path,
    layout: str,
    cases: int,
    shape: tuple[int, ...],
    seed: int,
    tumour: bool,
    written: list[Path],
    overwrite: bool,
    kind: str = "basic",
    spacing: tuple[float, ...] = (1.0, 1.0, 1.0),
    multislice: Sequence[str] | None = None,
) -> None:
    marker = {
        "generator": "lift3d.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "lift3d_version": __version__,
        "layout": layout,
        "cases": int(cases),
        "shape": list(shape),
        "kind": kind,
        "spacing_mm": list(spacing),
        **({"multislice": list(multislice)} if kind == "realistic" else {}),
        "seed": int(seed),
        "tumour": bool(tumour),
        "note": PHANTOM_NOTE,
        "files": [p.relative_to(out).as_posix() for p in written],
    }
    text = json.dumps(marker, indent=2, sort_keys=True) + "\n"
    atomic_write_text(out / MARKER_NAME, text, overwrite=overwrite)


def is_phantom_dataset(path: str | Path) -> bool:
    """True when `path` (a file or folder) or one of its 4 nearest parents holds the marker."""
    path = Path(path).resolve()
    folder = path if path.is_dir() else path.parent
    for candidate in [folder, *list(folder.parents)[:4]]:
        if (candidate / MARKER_NAME).is_file():
            return True
    return False
