"""Shared shapes of the head phantoms: deformed atlas coordinates and the basic tissue layout.

Both phantom kinds (`lift3d.data.synthetic`, basic; `lift3d.data.phantom_realistic`) label the
same analytic anatomy evaluated at per-subject deformed coordinates; this module holds that
anatomy and the small field helpers (plane waves, ellipsoid levels, bias field) they share.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MR_MODALITIES = ("t1n", "t1c", "t2w", "t2f")
MIN_SIZE = 16  # smallest grid edge (voxels) that still holds every structure

# Tissue codes of the "tissue" label map returned by `make_phantom`.
TISSUES: dict[str, int] = {
    "background": 0,
    "soft_tissue": 1,  # skin, muscle
    "fat": 2,  # subcutaneous fat
    "bone": 3,  # skull and vertebrae
    "csf": 4,  # subarachnoid space and sulci
    "ventricles": 5,
    "grey_matter": 6,
    "white_matter": 7,
    "necrotic": 8,  # BraTS label 1
    "oedema": 9,  # BraTS label 2
    "enhancing": 10,  # BraTS label 3
    "air": 11,  # air cavities inside the body (sinuses)
}
_T = TISSUES


def _rotation(angles: np.ndarray) -> np.ndarray:
    """(3, 3) rotation from three angles (radians) about x, y, z."""
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _waves(rng: np.random.Generator, n: int, freq: tuple[float, float]) -> list[tuple]:
    """Random plane waves: (unit direction * angular frequency, phase, amplitude)."""
    out = []
    for _ in range(n):
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        k = d * 2 * np.pi * rng.uniform(*freq)
        out.append((k.astype(np.float32), np.float32(rng.uniform(0, 2 * np.pi)), 1.0))
    return out


def _wave_field(waves: list[tuple], x, y, z) -> np.ndarray:
    """Sum of plane waves at coordinates (x, y, z), normalised to unit variance."""
    total = None
    for k, phase, amp in waves:
        term = np.sin(k[0] * x + k[1] * y + k[2] * z + phase)
        term *= np.float32(amp)
        total = term if total is None else total + term
    return (total * np.float32(np.sqrt(2.0 / len(waves)))).astype(np.float32, copy=False)


def _level(x, y, z, centre, radii) -> np.ndarray:
    """Ellipsoid level function ||(q - centre) / radii||: < 1 inside."""
    return np.sqrt(
        ((x - centre[0]) / radii[0]) ** 2
        + ((y - centre[1]) / radii[1]) ** 2
        + ((z - centre[2]) / radii[2]) ** 2
    ).astype(np.float32, copy=False)


def _coordinates(shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scanner coordinates: voxel centres in [-1, 1] per axis, as broadcastable 1D arrays."""
    axes = [((np.arange(n, dtype=np.float32) + 0.5) / n * 2 - 1) for n in shape]
    return axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]


def _head_coordinates(
    shape: Sequence[int], spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Isotropic head-frame coordinates (R, A, S) of voxel centres, broadcastable 1D arrays.

    One unit is half the smaller in-plane field of view, so the head (|x|, |y| < 0.9, top at
    z ~ 0.9) fills the axial plane whatever the grid. A field of view shorter along S than in
    plane is a window onto the top of the head (as in BraTS: the brain, not the neck).
    """
    extent = [n * float(d) for n, d in zip(shape, spacing)]
    half = min(extent[0], extent[1]) / 2
    axes = [
        ((np.arange(n) + 0.5) * float(d) - e / 2) / half for n, d, e in zip(shape, spacing, extent)
    ]
    z_half = extent[2] / 2 / half
    axes[2] = axes[2] + max(0.0, 0.93 - z_half)  # keep the vertex inside the field of view
    x, y, z = (a.astype(np.float32) for a in axes)
    return x[:, None, None], y[None, :, None], z[None, None, :]


def _bias_field(coeffs: np.ndarray, px, py, pz) -> np.ndarray:
    """Smooth multiplicative field exp(quadratic polynomial) in scanner coordinates."""
    c = coeffs.astype(np.float32)
    poly = (
        c[0] * px
        + c[1] * py
        + c[2] * pz
        + c[3] * px * py
        + c[4] * py * pz
        + c[5] * px * pz
        + c[6] * (px**2 - 0.33)
        + c[7] * (py**2 - 0.33)
        + c[8] * (pz**2 - 0.33)
    )
    return np.exp(poly).astype(np.float32)


def _atlas_coordinates(
    p: dict, shape: Sequence[int], spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Atlas coordinates (x, y, z) of the grid's voxel centres under the subject's deformation."""
    px, py, pz = _head_coordinates(shape, spacing)
    # Subject deformation: q = M (p - shift) + elastic(p), q in atlas coordinates.
    m = _rotation(p["angles"]) / p["scale"][None, :]
    m = m.astype(np.float32)
    s = p["shift"].astype(np.float32)
    dx, dy, dz = px - s[0], py - s[1], pz - s[2]
    q = []
    for r in range(3):
        warp = _wave_field(p["warp"][r], px, py, pz) * np.float32(p["warp_amp"])
        q.append(m[r, 0] * dx + m[r, 1] * dy + m[r, 2] * dz + warp)
    return q[0], q[1], q[2]


def _label_anatomy(
    p: dict, shape: Sequence[int], x: np.ndarray, y: np.ndarray, z: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label atlas coordinates (x, y, z) broadcast to `shape`: (tissue, skull depth, brain)."""
    # Intracranial compartments: cerebrum and cerebellum (level < 1), brainstem and cord.
    rho_b = _level(x, y, z, (0.0, 0.0, 0.20), (0.58, 0.68, 0.52))
    rho_c = _level(x, y, z, (0.0, -0.38, -0.24), (0.40, 0.28, 0.21))
    rho_s = np.sqrt((x / 0.11) ** 2 + ((y + 0.15) / 0.13) ** 2)
    stem = (rho_s < 1) & (z < 0.1)
    lc = np.minimum(rho_b, rho_c)
    intracranial = lc < 1.05
    skull_out = 1.05 + p["skull"] / 0.58
    # Body: scalp of even thickness over the skull, face (with air sinuses) and neck. Each part's
    # level is 1 on the skin, so one band of the minimum gives the subcutaneous fat everywhere.
    body_level = lc / (skull_out + p["scalp"])
    body_level = np.minimum(body_level, _level(x, y, z, (0.0, 0.28, -0.42), (0.46, 0.48, 0.34)))
    neck = np.sqrt((x / 0.40) ** 2 + ((y + 0.1) / 0.44) ** 2)
    body_level = np.where(z < -0.3, np.minimum(body_level, neck), body_level)
    body = body_level < 1
    tissue = np.zeros(tuple(shape), dtype=np.uint8)
    tissue[body] = _T["soft_tissue"]
    tissue[body & (body_level > 0.91) & (body_level < 0.97)] = _T["fat"]
    # Bone: skull shell, vertebral ring around the cord, mandible arch.
    skull = (lc >= 1.05) & (lc < skull_out) & body
    spine = (rho_s > 1.4) & (rho_s < 2.3) & (z < -0.45)
    jaw = np.sqrt((x / 0.40) ** 2 + ((y - 0.2) / 0.42) ** 2)
    jaw = (jaw > 0.8) & (jaw < 0.97) & (y > 0.05) & (z > -0.78) & (z < -0.64)
    tissue[(skull | spine | jaw) & body] = _T["bone"]
    depth = np.where(skull, (lc - 1.05) / (skull_out - 1.05), -1.0).astype(np.float32)
    for side in (-1.0, 1.0):  # maxillary sinuses: air inside the body (dark in MR and CT)
        sinus = _level(x, y, z, (side * 0.15, 0.48, -0.34), (0.09, 0.12, 0.1)) < 1
        tissue[sinus & body & ~intracranial] = _T["air"]

    # Brain: CSF rim, folded cortex with sulci, white matter, deep grey, ventricles, cerebellum.
    fold = _wave_field(p["fold"], x, y, z)
    cerebrum = rho_b < 1.0
    cerebellum = (rho_c < 1.0) & ~cerebrum
    tissue[intracranial | stem] = _T["csf"]
    brain = intracranial | (stem & (z > -0.55))
    cortex_in = 1.0 - p["cortex"] - 0.05 * fold
    tissue[cerebrum] = _T["white_matter"]
    tissue[cerebrum & (rho_b > cortex_in)] = _T["grey_matter"]
    sulci = cerebrum & (rho_b > 0.8) & (fold > 1.0 - 1.2 * (rho_b - 0.8))
    tissue[sulci] = _T["csf"]
    tissue[cerebrum & (rho_b > 0.985)] = _T["csf"]
    folia = np.sin(2 * np.pi * 7.0 * (z + 0.4 * y)) > 0.3
    tissue[cerebellum] = _T["grey_matter"]
    tissue[cerebellum & (rho_c < 0.55) & ~folia] = _T["white_matter"]
    tissue[cerebellum & (rho_c > 0.93)] = _T["csf"]
    tissue[stem & ~cerebrum & (z < 0.1)] = _T["white_matter"]
    for side in (-1.0, 1.0):
        deep = _level(x, y, z, (side * 0.2, 0.02, 0.06), (0.11, 0.17, 0.11)) < 1
        tissue[deep] = _T["grey_matter"]
    vs = p["ventricle_scale"]
    for side in (-1.0, 1.0):  # lateral ventricles: curved, horns bending down
        zc = 0.24 - 0.7 * (y - 0.02) ** 2
        lv = ((x - side * 0.1 * vs) / (0.06 * vs)) ** 2 + ((y - 0.02) / 0.36) ** 2 + (
            (z - zc) / (0.07 * vs)
        ) ** 2 < 1
        tissue[lv] = _T["ventricles"]
    third = _level(x, y, z, (0.0, 0.0, 0.08), (0.02 * vs, 0.14, 0.1)) < 1
    fourth = _level(x, y, z, (0.0, -0.3, -0.24), (0.05, 0.04, 0.06)) < 1
    tissue[third | fourth] = _T["ventricles"]

    t = p["tumour"]
    if t is not None:
        lumps = _wave_field(t["lumps"], x, y, z)
        lev = _level(x, y, z, t["centre"], t["radii"]) * (1 + 0.12 * lumps)
        inside = brain & (tissue != _T["ventricles"]) & (lev < t["oedema"])
        oedema = inside & (
            (tissue == _T["white_matter"])
            | ((tissue == _T["grey_matter"]) & (lev < 0.75 * t["oedema"]))
        )
        tissue[oedema] = _T["oedema"]
        tissue[inside & (lev < 1.0)] = _T["enhancing"]
        tissue[inside & (lev < t["core"])] = _T["necrotic"]
    return tissue, depth, brain
