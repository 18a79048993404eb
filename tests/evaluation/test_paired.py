"""Paired-task scoring: the slice axis follows the world's axial axis, and a missing-modality
folder with several modalities per case is scored per entry and per modality."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lift3d.data.discovery import discover_cases
from lift3d.data.volume import Volume, read_volume, reorient, write_volume
from lift3d.evaluation import evaluate_folder, to_json
from lift3d.evaluation.paired import ras_coherence_metrics
from lift3d.metrics.consistency import zgrad_metrics

SHAPE = (12, 14, 10)  # RAS order: R, A, S


def smooth_volume(seed=0):
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(*[np.arange(s, dtype=float) for s in SHAPE], indexing="ij")
    return np.sin(i / 3) + np.cos(j / 4) + 0.3 * k / SHAPE[2] + 0.05 * rng.random(SHAPE)


@pytest.fixture(scope="module")
def brats_cases(phantom_brats_dir):
    return discover_cases(phantom_brats_dir, validate=False)


def test_slice_axis_follows_world_axial_axis():
    t = smooth_volume()
    d = 0.1
    pred = t + d * (-1.0) ** np.arange(SHAPE[2])[None, None, :]  # flicker along S
    mask = np.ones(SHAPE, bool)
    ras_metrics, ras_profile = ras_coherence_metrics(pred, t, mask, 1.0, affine=np.eye(4))
    assert ras_metrics["zgrad_error"] == pytest.approx(2 * d)
    # the same data stored as "SPL" (S first, flipped axes): same metrics once reoriented
    vols = [reorient(Volume(a, np.eye(4)), "SPL") for a in (pred, t, mask.astype(np.uint8))]
    assert vols[0].shape == (SHAPE[2], SHAPE[1], SHAPE[0])
    other, profile = ras_coherence_metrics(
        vols[0].array, vols[1].array, vols[2].array, 1.0, affine=vols[0].affine
    )
    for key, value in ras_metrics.items():
        assert other[key] == pytest.approx(value, abs=1e-12), key
    np.testing.assert_allclose(profile, ras_profile)
    # without reorientation the file's last axis (L here) would be taken as z: no flicker there
    naive = zgrad_metrics(vols[0].array, vols[1].array, vols[2].array, axis=2)
    assert naive["zgrad_error"] == pytest.approx(0.0, abs=1e-12)


def test_missing_modality_end_to_end(tmp_path, phantom_brats_dir, brats_cases):
    pred = tmp_path / "pred"
    a, b = brats_cases[:2]
    # case a: t1c right up to a linear intensity change (perfect on the BraSyn scale)
    t1c = read_volume(a.paths["t1c"])
    exact = t1c.with_array(t1c.array.astype(np.float32) * 2.0 + 5.0 * (t1c.array != 0))
    write_volume(exact, pred / a.case_id / f"{a.case_id}-t1c.nii.gz")
    # case b: two modalities predicted, one of them noisy
    for mod in ("t1c", "t2f"):
        ref = read_volume(b.paths[mod])
        noisy = ref.array + np.random.default_rng(1).normal(0, 40, ref.shape)
        write_volume(
            ref.with_array(noisy.astype(np.float32)), pred / b.case_id / f"{b.case_id}-{mod}.nii.gz"
        )
    result = evaluate_folder("missing", pred, phantom_brats_dir, progress=False, allow_missing=True)
    assert set(result["cases"]) == {a.case_id, f"{b.case_id}-t1c", f"{b.case_id}-t2f"}
    others = sorted(c.case_id for c in brats_cases[2:])
    assert result["summary"]["missing_predictions"] == others
    perfect = result["cases"][a.case_id]
    assert perfect["modality"] == "t1c"
    assert perfect["mse"] == pytest.approx(0.0, abs=1e-12)
    assert perfect["ssim"] == pytest.approx(1.0) and perfect["zgrad_error"] == pytest.approx(
        0.0, abs=1e-7
    )
    assert perfect["mask"] is None  # region = non-zero reference voxels
    noisy = result["cases"][f"{b.case_id}-t2f"]
    assert noisy["modality"] == "t2f" and 0 < noisy["mse"] < 1 and noisy["ssim"] < 0.99
    assert noisy["zgrad_ratio"] > 1.0  # independent noise per slice adds flicker
    assert perfect["dz_mae"] == pytest.approx(0.0, abs=1e-7)
    assert perfect["dz_corr"] == pytest.approx(1.0)
    assert noisy["dz_mae"] == pytest.approx(noisy["zgrad_error"]) and noisy["dz_corr"] < 1.0
    assert {"dz_mae", "dz_mae_std", "dz_corr"} <= set(result["summary"])
    assert set(result["by_modality"]) == {"t1c", "t2f"}
    text = to_json(result)  # inf PSNR is written as null: strict JSON
    assert json.loads(text)["cases"][a.case_id]["psnr"] is None
    assert result["summary"]["psnr"] == pytest.approx(
        np.mean([result["cases"][k]["psnr"] for k in result["cases"] if k != a.case_id])
    )
