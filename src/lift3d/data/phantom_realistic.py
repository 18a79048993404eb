"""Realistic head phantom: the MR ambiguities, anatomical variation and acquisition effects.

The basic phantom (`lift3d.data.synthetic.make_phantom`) makes every tissue distinguishable in
one MR slice. Real MR -> CT is harder, and this phantom keeps what makes it hard. Each property is
here because real scans have it:

- **Cortical bone and air are both near zero MR signal** (cortical bone: very short T2*, few
  mobile protons; air: no protons) in every sequence, while their CT differs by ~2400 HU
  (cortical tables 1200-1600 HU, air -1000 HU). A single MR slice cannot tell them apart; only
  the anatomy around them (and the neighbouring slices) can.
- **Air next to bone**: frontal and sphenoid sinuses inside the skull, maxillary sinuses in the
  face, and mastoid air cells (a sponge of air cells between thin bony septa behind each ear).
  These put the two dark classes side by side, as at the real skull base.
- **Fatty marrow bright on T1**: the diploe between the cortical tables holds fatty marrow (short
  T1: bright on T1, intermediate-bright on fast spin-echo T2 and FLAIR) with CT of cancellous bone
  (~450-800 HU), so bright MR can be bone too; subcutaneous fat is bright on T1 and -100 HU.
- **CSF dark on T1, bright on T2, suppressed on FLAIR** (long T1 and T2, nulled by inversion);
  grey matter darker than white matter on T1 and brighter on T2.
- **Anatomy that varies between cases**: head size (+-8 %) and pose (+-10 deg), a smooth random
  elastic deformation, skull thickness (7-13 % of the head radius) and its diploe share, ventricle
  size, gyral folding, sinus size and mastoid pneumatisation all drawn per case.
- **Partial volume**: every image is rendered on a grid twice as fine per axis (more along a
  thick-slice axis, so a 2.5 mm slice averages 5 sub-slices) and averaged down, so thin
  structures (the skull, septa, the cortex) mix with their neighbours as in a real voxel.
- **Anisotropic voxels**: `spacing` sets the voxel size, e.g. (1, 1, 2.5) mm as in a clinical
  axial acquisition with thick slices.
- **Bias field**: a smooth multiplicative field (exp of a quadratic, ~+-20 %) per MR sequence,
  as coil sensitivity gives; CT has none.
- **Rician noise at a realistic SNR**: magnitude of complex Gaussian noise with sigma set so that
  white matter has an SNR of 15-30 (drawn per case); the background is Rayleigh noise, not zero.
- **CT noise of a soft-tissue head protocol, scaled with slice thickness**: quantum noise whose
  standard deviation is drawn per case at 3-6 HU for a 5 mm slice (routine non-contrast head
  CT with a soft-tissue / brain kernel, measured in brain parenchyma, is a few HU at 5 mm) and
  scaled by sqrt(5 mm / slice thickness), since the detected photons per voxel grow in
  proportion to the slice thickness at a fixed dose: 6.7-13.4 HU at 1 mm, 4.2-8.5 HU at
  2.5 mm. The noise is white (a soft kernel would correlate it within a slice; not modelled).
  `ct_noise=False` leaves it out, for benchmarks that separate a model's through-plane error
  from the reference's own voxel noise; the files the CLI writes always have it.
- **Interleaved 2D multi-slice acquisition** (`multislice`, default t1n, t2w and t2f): BraTS
  protocols acquire native T1, T2 and FLAIR as 2D slice stacks (often axial, 1-6 mm) and T1Gd
  as a 3D volume (Bakas et al., Sci Data 2017); a 2D stack is excited in two interleaved
  packages (odd slices, then even ones) a minute or more apart. Two effects follow, drawn per
  case and sequence: (1) **motion between the packages** -- the head of the second package's
  slices is displaced rigidly by 0.25-1.5 mm in plane (random direction) and -0.5..0.5 mm along
  the slice axis, the typical drift of a cooperative patient over minutes, so neighbouring
  slices cut anatomy that does not line up (the comb / staircase seen in reformats of 2D
  stacks); (2) **slice cross-talk** -- imperfect slice profiles partially saturate each
  slice's neighbours, so the package acquired second has 2-8 % less signal. The labels, the CT
  and 3D sequences stay on the first package's position (the CT is acquired separately and
  registered to the MR). The SynthRAD layout's MR is the T1Gd (3D): pass
  ``multislice=("t1c",)`` to model a 2D spin-echo planning MR instead. Slices lie along the
  third (superior) axis.
- **BraTS tumours with compartments**: necrotic core (label 1: dark on T1, bright on T2, mid on
  FLAIR, no enhancement), enhancing rim (label 3: bright on t1c only, with patchy enhancement),
  oedema (label 2: dark on T1, bright on T2 and brightest on FLAIR), following white matter.

Labels (`tissue`, `seg`, `brain`, `mask`) are evaluated at the voxel centres of the output grid;
images are partial-volume averages. Same arguments, same bytes. Results on phantoms show that a
mechanism works, never clinical quality.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

from lift3d.data.phantom_anatomy import (
    MIN_SIZE,
    MR_MODALITIES,
    _atlas_coordinates,
    _bias_field,
    _coordinates,
    _label_anatomy,
    _level,
    _wave_field,
    _waves,
)
from lift3d.data.phantom_anatomy import TISSUES as _BASIC
from lift3d.errors import InputError

# Tissue codes of the realistic phantom's "tissue" map: the basic codes, with bone split into
# cortical bone (code 3, "bone") and fatty marrow of the diploe (code 12).
TISSUES: dict[str, int] = {**_BASIC, "marrow": 12}
_T = TISSUES
_N = len(TISSUES)
_BRATS_LABEL = np.zeros(_N, dtype=np.uint8)
_BRATS_LABEL[[_T["necrotic"], _T["oedema"], _T["enhancing"]]] = (1, 2, 3)

# Relative MR signal per tissue (index = tissue code), times _MR_SCALE. Cortical bone and air
# are ~0 in every sequence (the ambiguity); marrow and fat bright on T1.
#                 bg    soft  fat   bone  csf   vent  gm    wm    necr  oed   enh   air   marrow
_MR_LUT = {
    "t1n": (0.00, 0.45, 0.95, 0.02, 0.12, 0.10, 0.52, 0.72, 0.18, 0.40, 0.46, 0.00, 0.85),
    "t1c": (0.00, 0.50, 0.95, 0.02, 0.13, 0.11, 0.54, 0.72, 0.16, 0.41, 1.00, 0.00, 0.86),
    "t2w": (0.00, 0.35, 0.70, 0.02, 1.00, 1.00, 0.58, 0.40, 0.90, 0.82, 0.62, 0.00, 0.60),
    "t2f": (0.00, 0.35, 0.65, 0.02, 0.07, 0.05, 0.58, 0.44, 0.30, 0.95, 0.66, 0.00, 0.55),
}
_MR_SCALE = 1000.0
_REALISTIC_VERSION = 1
#                 bg     soft  fat     bone    csf  vent gm    wm    necr  oed   enh   air  marrow
_CT_LUT = (-1000.0, 40.0, -100.0, 1400.0, 8.0, 6.0, 38.0, 28.0, 20.0, 22.0, 36.0, -1000.0, 600.0)
_CT_RANGE = (-1024, 3071)
_CT_NOISE_SLICE_MM = 5.0  # slice thickness at which `ct_noise_5mm` is drawn
# Sequences acquired as interleaved 2D multi-slice stacks by default (BraTS: T1, T2, FLAIR 2D;
# T1Gd 3D).
MULTISLICE_DEFAULT: tuple[str, ...] = ("t1n", "t2w", "t2f")


def _subject(seed: int, case: int, tumour: bool) -> dict:
    """Per-subject parameters from (seed, case) only; keys of the basic phantom plus extras."""
    rng = np.random.default_rng(
        np.random.SeedSequence([int(seed), int(case), 1, 7919, _REALISTIC_VERSION])
    )
    p: dict = {}
    p["scale"] = rng.uniform(0.92, 1.08) * rng.uniform(0.96, 1.04, size=3)  # head size
    p["angles"] = np.deg2rad(rng.uniform(-10.0, 10.0, size=3))  # pose
    p["shift"] = rng.uniform(-0.04, 0.04, size=3)
    p["warp"] = [_waves(rng, 5, (0.4, 1.3)) for _ in range(3)]  # smooth elastic deformation
    p["warp_amp"] = rng.uniform(0.02, 0.045)
    p["fold"] = _waves(rng, 12, (2.5, 4.5))
    p["ventricle_scale"] = rng.uniform(0.7, 1.45)
    p["skull"] = rng.uniform(0.06, 0.12)  # skull thickness (head-frame units, radius ~0.9)
    p["cortex"] = rng.uniform(0.12, 0.18)
    p["scalp"] = rng.uniform(0.06, 0.1)
    p["diploe"] = rng.uniform(0.3, 0.55)  # share of the skull's depth that is marrow
    p["frontal"] = rng.uniform(0.5, 1.2)  # frontal sinus size (0.5: small, as often)
    p["sphenoid"] = rng.uniform(0.8, 1.2)
    p["mastoid"] = rng.uniform(0.7, 1.3)  # pneumatisation
    p["cells"] = _waves(rng, 10, (7.0, 11.0))  # air-cell sponge
    p["tumour"] = None
    if tumour:
        side = rng.choice([-1.0, 1.0])
        centre = np.array(
            [side * rng.uniform(0.2, 0.38), rng.uniform(-0.35, 0.35), rng.uniform(0.02, 0.35)]
        )
        p["tumour"] = {
            "centre": centre,
            "radii": rng.uniform(0.09, 0.16) * rng.uniform(0.8, 1.2, size=3),
            "core": rng.uniform(0.45, 0.75),
            "oedema": rng.uniform(1.6, 2.5),
            "lumps": _waves(rng, 6, (3.0, 6.0)),
        }
    p["patchy"] = _waves(rng, 6, (4.0, 8.0))  # patchy enhancement of the rim
    p["bias"] = {m: rng.normal(scale=0.1, size=9) for m in MR_MODALITIES}
    p["snr"] = rng.uniform(15.0, 30.0)  # white-matter SNR
    p["ct_noise_5mm"] = rng.uniform(3.0, 6.0)  # CT noise SD (HU) at a 5 mm slice
    p["cortical_hu"] = rng.uniform(1200.0, 1600.0)
    p["marrow_hu"] = rng.uniform(450.0, 800.0)
    p["noise_seed"] = rng.integers(0, 2**63 - 1)
    return p


def _multislice(seed: int, case: int) -> dict[str, dict]:
    """Per-sequence interleave parameters from (seed, case) only, drawn for every sequence in a
    fixed order (from their own stream: the other draws do not depend on `multislice`)."""
    rng = np.random.default_rng(
        np.random.SeedSequence([int(seed), int(case), 2, 7919, _REALISTIC_VERSION])
    )
    out = {}
    for mod in MR_MODALITIES:
        angle = rng.uniform(0.0, 2 * np.pi)
        shift = rng.uniform(0.25, 1.5)  # in-plane displacement of the second package, mm
        out[mod] = {
            "shift_mm": (shift * np.cos(angle), shift * np.sin(angle), rng.uniform(-0.5, 0.5)),
            "crosstalk": rng.uniform(0.02, 0.08),  # signal loss of the second package
        }
    return out


def _second_package_moved(
    img: np.ndarray, factors: Sequence[int], fine_spacing: Sequence[float], shift_mm
) -> np.ndarray:
    """`img` (fine grid) with the sub-slices of every second output slice taken from the head
    displaced by `shift_mm` (linear interpolation on the fine grid, before partial volume)."""
    from scipy.ndimage import shift as nd_shift

    fz = int(factors[2])
    n = img.shape[2] // fz
    sub = np.concatenate([np.arange(k * fz, (k + 1) * fz) for k in range(1, n, 2)])
    vox = [float(m) / float(s) for m, s in zip(shift_mm, fine_spacing)]
    moved = nd_shift(img, vox, order=1, mode="constant", cval=0.0, prefilter=False)
    out = img.copy()
    out[:, :, sub] = moved[:, :, sub]
    return out


def _anatomy(p: dict, shape: Sequence[int], spacing: Sequence[float]) -> tuple:
    """Label the grid: (tissue codes uint8, brain bool, body bool)."""
    x, y, z = _atlas_coordinates(p, shape, spacing)
    tissue, depth, brain = _label_anatomy(p, shape, x, y, z)
    body = tissue != _T["background"]
    # Diploe: the middle of the skull's depth is fatty marrow between two cortical tables.
    half = p["diploe"] / 2
    tissue[(depth > 0.5 - half) & (depth < 0.5 + half)] = _T["marrow"]
    free = body & ~brain  # sinuses and air cells never cut into the brain
    # Frontal sinus: air between the tables of the frontal bone above the nose (bone around it).
    f = p["frontal"]
    fs = _level(x, y, z, (0.0, 0.76, 0.02), (0.13 * f, 0.06, 0.09 * f))
    tissue[free & (fs < 1.6)] = _T["bone"]
    tissue[free & (fs < 1.0)] = _T["air"]
    # Sphenoid sinus in the skull base, and the maxillary sinuses in the face (bony walls).
    s = p["sphenoid"]
    for centre, radii in (
        ((0.0, 0.2, -0.42), (0.09 * s, 0.08 * s, 0.07 * s)),
        ((-0.15, 0.48, -0.34), (0.09, 0.12, 0.1)),
        ((0.15, 0.48, -0.34), (0.09, 0.12, 0.1)),
    ):
        lev = _level(x, y, z, centre, radii)
        tissue[free & (lev < 1.35) & (lev >= 1.0)] = _T["bone"]
        tissue[free & (lev < 1.0)] = _T["air"]
    # Mastoid air cells: a sponge of air cells in bone behind each ear.
    m = p["mastoid"]
    cells = _wave_field(p["cells"], x, y, z)
    for side in (-1.0, 1.0):
        lev = _level(x, y, z, (side * 0.5, -0.22, -0.12), (0.08 * m, 0.11 * m, 0.1 * m))
        block = free & (lev < 1.0)
        tissue[block] = _T["bone"]
        tissue[block & (cells > 0.1) & (lev < 0.85)] = _T["air"]
    return tissue, brain, body


def _tumour_patchiness(p: dict, shape: Sequence[int]) -> np.ndarray:
    """Multiplier in [0.75, 1] of the enhancing rim's signal (patchy enhancement)."""
    px, py, pz = _coordinates(shape)
    field = _wave_field(p["patchy"], px, py, pz)
    return (0.875 + 0.125 * np.tanh(field)).astype(np.float32)


def _render_factors(spacing: Sequence[float]) -> tuple[int, int, int]:
    """Sub-voxels per axis: 2 at the finest spacing, proportionally more along coarser axes."""
    finest = min(float(s) for s in spacing)
    return tuple(max(2, int(round(2 * float(s) / finest))) for s in spacing)


def _average_down(img: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Mean over blocks of `factors` voxels (partial volume)."""
    fx, fy, fz = factors
    x, y, z = (n // f for n, f in zip(img.shape, factors))
    return img.reshape(x, fx, y, fy, z, fz).mean(axis=(1, 3, 5), dtype=np.float32)


def make_realistic_phantom(
    seed: int,
    shape: Sequence[int] = (64, 64, 64),
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    tumour: bool = True,
    case: int = 0,
    ct_noise: bool = True,
    multislice: Sequence[str] = MULTISLICE_DEFAULT,
) -> dict[str, np.ndarray]:
    """Make one seeded realistic head phantom on a RAS grid (properties: module docstring).

    Args:
        seed: dataset seed.
        shape: (X, Y, Z) voxels, each at least 16.
        spacing: voxel size in mm; an anisotropic spacing such as (1, 1, 2.5) gives thick slices
            (more partial volume along that axis, the head keeps its shape).
        tumour: add a glioma (BraTS labels 1, 2, 3).
        case: subject index within the dataset.
        ct_noise: add the CT's quantum noise (default). False gives the same CT without it
            (every other array unchanged): a noise-free reference for benchmark diagnostics.
        multislice: MR sequences acquired as interleaved 2D stacks (motion between the two
            packages, cross-talk; module docstring); () for all 3D. A sequence's first-package
            slices are the same bytes either way.

    Returns:
        The keys of `make_phantom`: ``tissue`` (uint8 codes, see this module's `TISSUES`),
        ``seg``, ``brain``, ``mask``, ``t1n``, ``t1c``, ``t2w``, ``t2f`` (float32), ``ct``
        (float32 HU) and ``affine``.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < MIN_SIZE:
        raise InputError(f"phantom shape must be 3 sizes of at least {MIN_SIZE}, got {shape}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise InputError(f"spacing must be 3 positive sizes in mm, got {tuple(spacing)}")
    spacing = tuple(float(s) for s in spacing)
    multislice = tuple(multislice)
    unknown = sorted(set(multislice) - set(MR_MODALITIES))
    if unknown:
        raise InputError(
            f"multislice sequences must be among {', '.join(MR_MODALITIES)}, got "
            f"{', '.join(unknown)}"
        )
    interleave = _multislice(seed, case)
    p = _subject(seed, case, tumour)
    rng = np.random.default_rng(p["noise_seed"])
    factors = _render_factors(spacing)
    fine_shape = tuple(n * f for n, f in zip(shape, factors))
    fine_spacing = tuple(s / f for s, f in zip(spacing, factors))
    fine, _, fine_body = _anatomy(p, fine_shape, fine_spacing)
    tissue, brain, body = _anatomy(p, shape, spacing)
    # Tissue texture shared by all sequences and CT (same anatomy), on the fine grid.
    texture = gaussian_filter(rng.standard_normal(fine_shape, dtype=np.float32), 2.0, truncate=3.0)
    texture *= np.float32(1.0 / max(float(texture.std()), 1e-6))
    tex = 1 + np.float32(0.05) * texture
    patchy = _tumour_patchiness(p, fine_shape)
    enhancing = fine == _T["enhancing"]
    px, py, pz = _coordinates(shape)
    sigma = np.float32(_MR_SCALE * _MR_LUT["t1n"][_T["white_matter"]] / p["snr"])
    out: dict[str, np.ndarray] = {}
    for mod in MR_MODALITIES:
        lut = np.asarray(_MR_LUT[mod], dtype=np.float32) * np.float32(_MR_SCALE)
        img = lut[fine] * tex
        if mod == "t1c":
            img[enhancing] *= patchy[enhancing]
        if mod in multislice:
            img = _second_package_moved(img, factors, fine_spacing, interleave[mod]["shift_mm"])
        img = _average_down(img, factors) * _bias_field(p["bias"][mod], px, py, pz)
        if mod in multislice:
            img[:, :, 1::2] *= np.float32(1.0 - interleave[mod]["crosstalk"])
        n1 = rng.standard_normal(shape, dtype=np.float32)
        n2 = rng.standard_normal(shape, dtype=np.float32)
        out[mod] = np.sqrt((img + sigma * n1) ** 2 + (sigma * n2) ** 2).astype(np.float32)
    lut = np.asarray(_CT_LUT, dtype=np.float32)
    lut[_T["bone"]] = p["cortical_hu"]
    lut[_T["marrow"]] = p["marrow_hu"]
    ct = lut[fine] + np.float32(8.0) * texture * fine_body
    bone = (fine == _T["bone"]) | (fine == _T["marrow"])
    ct[bone] += np.float32(60.0) * texture[bone]  # trabecular / mineral variation
    ct = _average_down(ct, factors)
    if ct_noise:  # the last draw: leaving it out changes nothing else
        sd = p["ct_noise_5mm"] * np.sqrt(_CT_NOISE_SLICE_MM / spacing[2])
        ct += np.float32(sd) * rng.standard_normal(shape, dtype=np.float32)
    out["ct"] = np.clip(ct, *_CT_RANGE).astype(np.float32)
    out["tissue"] = tissue
    out["seg"] = _BRATS_LABEL[tissue]
    out["brain"] = brain
    out["mask"] = body.astype(np.uint8)
    affine = np.diag([*spacing, 1.0])
    centre = (np.asarray(shape) - 1) / 2.0 * np.asarray(spacing, dtype=float)
    affine[:3, 3] = -centre + np.array([1.5, -17.0, 12.0])
    out["affine"] = affine
    return out
