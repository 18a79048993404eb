"""Flicker check of sCT vs CT on a SynthRAD-layout phantom set: z vs in-plane gradient errors.

A per-slice (axial) model that flickers has a larger gradient error along z (between its
independently predicted slices) than along x and y (inside each slice), and a z-gradient
magnitude above the reference's (ratio > 1). For each prediction folder this prints the mean
over cases of: MAE (HU, mask), per-plane PSNR (dB), Δz MAE (HU per slice), Δz correlation, the
z-gradient ratio, the gradient error along R, A, S and the ratio S / mean(R, A) -- all on the
prepared SynthRAD pair that ``lift3d evaluate`` scores (clipped to [-1024, 3000] HU, outside
the mask at -1024, reoriented to RAS).

`S_over_inplane_rel` divides each axis's gradient error by the reference's mean |gradient| along
that axis first, so thick slices (a longer step along S) compare fairly with the in-plane axes.

The reference CT carries voxel noise, which is independent from slice to slice and so inflates
its z-gradient (and every gradient error) by an amount no model can or should reproduce. For a
realistic-kind phantom the script therefore scores each prediction a second time against the
same CT without its noise, regenerated from the dataset's marker (seed, shape, spacing, case).
That noise-free reference exists only for phantoms; it is a benchmark diagnostic that separates
a model's own flicker from the reference's noise, never a user-facing metric.

Usage: python benchmarks/phantom_gradient_errors.py REF_DIR LABEL=PRED_DIR [...] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lift3d import read_volume
from lift3d.data.phantom_realistic import make_realistic_phantom
from lift3d.data.synthetic import MARKER_NAME, synthrad_case_id
from lift3d.evaluation.paired import ras_coherence_metrics
from lift3d.metrics.consistency import z_differences, zgrad_metrics
from lift3d.metrics.image import HU_RANGE, SYNTHRAD_SSIM_CROP, synthrad_prepare

KEYS = (
    "mae",
    "psnr_axial",
    "psnr_coronal",
    "psnr_sagittal",
    "dz_mae",
    "dz_corr",
    "zgrad_ratio",
    "grad_R",
    "grad_A",
    "grad_S",
    "S_over_inplane",
    "S_over_inplane_rel",
)


def score(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray, affine: np.ndarray) -> dict:
    """The KEYS of one case (pred, ref in HU, file order)."""
    out = {"mae": float(np.abs(pred[mask] - ref[mask]).mean())}
    p, t = synthrad_prepare(pred, ref, mask)
    coh, _ = ras_coherence_metrics(p, t, mask, HU_RANGE, affine, SYNTHRAD_SSIM_CROP)
    out.update({k: coh[k] for k in ("psnr_axial", "psnr_coronal", "psnr_sagittal")})
    out.update({k: coh[k] for k in ("dz_mae", "dz_corr", "zgrad_ratio")})
    # Gradient error along each file axis (the phantom's files are RAS up to a small tilt).
    per_axis = [zgrad_metrics(p, t, mask, axis=a) for a in range(3)]
    grads = [m["zgrad_error"] for m in per_axis]
    out.update(grad_R=grads[0], grad_A=grads[1], grad_S=grads[2])
    out["S_over_inplane"] = grads[2] / (0.5 * (grads[0] + grads[1]))
    # Relative to the reference's own gradient along each axis, so thick slices (a larger step
    # along S, hence larger differences) compare on equal terms with the in-plane axes.
    ref_grad = [float(np.abs(z_differences(p, t, mask, axis=a)[1]).mean()) for a in range(3)]
    rel = [g / r for g, r in zip(grads, ref_grad)]
    out["S_over_inplane_rel"] = rel[2] / (0.5 * (rel[0] + rel[1]))
    return out


def noise_free_ct(marker: dict, index: int) -> np.ndarray | None:
    """The CT of case `index` without its voxel noise (realistic kind only), as written (int)."""
    if marker.get("kind") != "realistic":
        return None
    ph = make_realistic_phantom(
        marker["seed"],
        marker["shape"],
        marker.get("spacing_mm", (1.0, 1.0, 1.0)),
        tumour=marker["tumour"],
        case=index,
        ct_noise=False,
    )
    return np.rint(ph["ct"]).astype(np.float64)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ref", help="SynthRAD-layout phantom folder (with its marker)")
    parser.add_argument("preds", nargs="+", help="LABEL=PRED_DIR (lift3d translate output)")
    parser.add_argument("--json", help="write the per-case and mean scores to this file")
    args = parser.parse_args(argv)
    ref_dir = Path(args.ref)
    marker = json.loads((ref_dir / MARKER_NAME).read_text())
    refs = {}  # case -> (ref, clean ref or None, mask, affine)
    for index in range(int(marker["cases"])):
        case = ref_dir / "Task1" / "brain" / synthrad_case_id(index)
        vol = read_volume(case / "ct.nii.gz")
        mask = read_volume(case / "mask.nii.gz").array > 0
        refs[case.name] = (
            vol.array.astype(np.float64),
            noise_free_ct(marker, index),
            mask,
            vol.affine,
        )
    results: dict = {}
    for item in args.preds:
        label, _, pred_dir = item.partition("=")
        for ref_name in ("noisy", "noise_free"):
            rows = {}
            for name, (ref, clean, mask, affine) in refs.items():
                target = ref if ref_name == "noisy" else clean
                if target is None:
                    continue
                pred = read_volume(Path(pred_dir) / name / "sct.nii.gz").array.astype(np.float64)
                rows[name] = score(pred, target, mask, affine)
            if not rows:
                continue
            mean = {k: float(np.mean([r[k] for r in rows.values()])) for k in KEYS}
            sd = {k: float(np.std([r[k] for r in rows.values()], ddof=1)) for k in KEYS}
            results[f"{label}/{ref_name}"] = {"cases": rows, "mean": mean, "sd": sd}
    header = "arm / reference".ljust(26) + "".join(k.rjust(15) for k in KEYS)
    print(header)
    for key, res in results.items():
        print(key.ljust(26) + "".join(f"{res['mean'][k]:15.3f}" for k in KEYS))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    return results


if __name__ == "__main__":
    main()
