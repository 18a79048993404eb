"""Gradient error along each axis of sCT vs CT on a SynthRAD-layout set (z vs in-plane).

A per-slice (axial) model that flickers has a larger gradient error along z (between its
independently predicted slices) than along x and y (inside each slice). Prints, per case and on
average, the mean absolute error of the first difference along R, A, S inside the body mask (HU
per voxel) and the ratio of predicted to reference gradient magnitude along S.

Usage: python benchmarks/phantom_gradient_errors.py PRED_DIR REF_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from lift3d import read_volume
from lift3d.metrics.consistency import zgrad_metrics


def main(pred_dir: str, ref_dir: str) -> None:
    rows = []
    for case in sorted((Path(ref_dir) / "Task1" / "brain").iterdir()):
        pred_path = Path(pred_dir) / case.name / "sct.nii.gz"
        if not pred_path.is_file():
            continue
        pred = read_volume(pred_path).array.astype(np.float64)
        ref = read_volume(case / "ct.nii.gz").array.astype(np.float64)
        mask = read_volume(case / "mask.nii.gz").array > 0
        per_axis = [zgrad_metrics(pred, ref, mask, axis=a) for a in range(3)]
        row = [m["zgrad_error"] for m in per_axis] + [per_axis[2]["zgrad_ratio"]]
        rows.append(row)
        print(
            f"{case.name}  grad error R {row[0]:.1f}  A {row[1]:.1f}  S {row[2]:.1f} HU  "
            f"S ratio {row[3]:.3f}"
        )
    mean = np.mean(rows, axis=0)
    print(
        f"mean    grad error R {mean[0]:.1f}  A {mean[1]:.1f}  S {mean[2]:.1f} HU  "
        f"S ratio {mean[3]:.3f}  (S / in-plane: {mean[2] / mean[:2].mean():.3f})"
    )


if __name__ == "__main__":
    main(*sys.argv[1:3])
