"""Generation scoring: slice features and increments, the evaluation grid, folder evaluation
with its evaluation encoder (train, save, reuse), and the metric's sanity check."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from lift3d.errors import InputError
from lift3d.evaluation.encoder import EvalDescriptor
from lift3d.evaluation.generation import (
    distribution_metrics,
    diversity_metrics,
    evaluate_generation,
    plane_features,
    prepare_volume,
)
from lift3d.metrics.distribution import increment_distance
from lift3d.models.encoder import SliceEncoder


def smooth_volumes(n: int, seed: int, size: int = 16) -> list[np.ndarray]:
    """Blobs that change smoothly along every axis (a stand-in for anatomy)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, size)] * 3, indexing="ij")
    vols = []
    for _ in range(n):
        c = rng.uniform(-0.3, 0.3, 3)
        r = rng.uniform(0.4, 0.7)
        vols.append(
            (np.exp(-((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / r**2)).astype(
                np.float32
            )
        )
    return vols


def test_increment_distance_detects_slice_flicker():
    torch.manual_seed(0)
    enc = SliceEncoder(1, (8, 16), pool=1).eval()
    ref = smooth_volumes(6, 0)
    good = smooth_volumes(6, 1)
    rng = np.random.default_rng(2)
    # Same slices, independently drawn per z position from different volumes: flicker along z.
    flicker = [np.stack([good[rng.integers(0, 6)][k] for k in range(16)]) for _ in range(6)]
    _, ri = plane_features(enc, ref, "axial")
    _, gi = plane_features(enc, good, "axial")
    _, fi = plane_features(enc, flicker, "axial")
    assert increment_distance(fi, ri) > 3 * increment_distance(gi, ri)


def test_prepare_volume_orientation_and_range():
    ras = np.zeros((4, 6, 8), np.float32)  # X=R, Y=A, Z=S
    ras[1:3, 2:4, 3:6] = np.arange(2 * 2 * 3).reshape(2, 2, 3) + 1
    out = prepare_volume(ras, (8, 6, 4))
    assert out.shape == (8, 6, 4)  # (S, A, R)
    assert out.min() >= 0 and out.max() <= 1 and out.max() > 0.9


def write_nifti(array: np.ndarray, path) -> None:
    nib.save(nib.Nifti1Image(array.astype(np.float32), np.diag([1.0, 1.0, 1.0, 1.0])), str(path))


def generated_and_reference(tmp_path):
    """Folders of 3 generated and 4 reference volumes (NIfTI, identity affine)."""
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    for i, v in enumerate(smooth_volumes(3, 1)):
        write_nifti(v * 500, pred / f"sample_{i:04d}.nii.gz")
    for i, v in enumerate(smooth_volumes(4, 0)):
        write_nifti(v * 800, ref / f"case_{i}.nii.gz")
    return pred, ref


def test_evaluate_generation_folders_and_encoder_identity(tmp_path):
    pred, ref = generated_and_reference(tmp_path)
    enc_path = tmp_path / "evalenc.safetensors"
    result = evaluate_generation(
        pred, ref, eval_shape=(16, 16, 16), encoder_steps=3, save_encoder=enc_path
    )
    summary = result["summary"]
    for plane in ("axial", "coronal", "sagittal"):
        for m in ("kid", "fid"):
            assert np.isfinite(summary[f"{m}_{plane}"]) and summary[f"{m}_{plane}_std"] >= 0
    assert summary["increment_distance"] >= 0 and 0 <= summary["histogram_distance"] <= 1
    assert summary["zgrad_ratio"] > 0
    identity = summary["eval_encoder"]
    assert identity["objective"] == "masked" and len(identity["weights_sha256"]) == 64
    assert summary["n_cases"] == 3 and set(result["cases"]) == {
        "sample_0000",
        "sample_0001",
        "sample_0002",
    }
    json.dumps(result)  # JSON-serialisable
    again = evaluate_generation(pred, ref, eval_shape=(16, 16, 16), encoder_path=enc_path)
    assert again["summary"]["eval_encoder"]["weights_sha256"] == identity["weights_sha256"]
    assert again["summary"]["kid_axial"] == pytest.approx(summary["kid_axial"], rel=1e-5)
    with pytest.raises(InputError):
        evaluate_generation(tmp_path / "nope", ref)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError):
        evaluate_generation(empty, ref)


def test_reformat_kid_tells_cross_subject_stripes_from_real():
    """The sanity check of the metric: volumes whose axial slices come from different subjects
    (what independent per-slice sampling gives) must score worse in coronal and sagittal KID
    than real volumes, for every evaluation-encoder seed (the z-scored mean descriptor of
    earlier builds failed this for the default seed on the phantom)."""
    ref, real = smooth_volumes(8, 0), smooth_volumes(8, 1)
    rng = np.random.default_rng(3)
    striped = [np.stack([real[rng.integers(0, 8)][k] for k in range(16)]) for _ in range(8)]
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        enc = EvalDescriptor(SliceEncoder(1, (8, 16), pool=1, objective="masked").eval())
        good = distribution_metrics(real, ref, enc, bootstrap=0, kid_subsets=5)
        bad = distribution_metrics(striped, ref, enc, bootstrap=0, kid_subsets=5)
        for plane in ("coronal", "sagittal"):
            assert bad[f"kid_{plane}"] > good[f"kid_{plane}"] + 0.05, (seed, plane)
            assert bad[f"fid_{plane}"] > 2 * good[f"fid_{plane}"], (seed, plane)


def test_eval_encoder_file_is_trained_once_then_reused(tmp_path):
    pred, ref = generated_and_reference(tmp_path)
    path = tmp_path / "enc" / "evalenc.safetensors"
    kw = {"eval_shape": (16, 16, 16), "encoder_steps": 3, "eval_encoder": path}
    first = evaluate_generation(pred, ref, **kw)["summary"]
    assert path.is_file() and path.with_suffix(".json").is_file()
    assert first["eval_encoder"]["saved_to"] == str(path.resolve())
    assert first["eval_encoder"]["descriptor"] == "meanstd"
    mtime = path.stat().st_mtime_ns
    second = evaluate_generation(pred, ref, **{**kw, "encoder_seed": 99})["summary"]
    assert path.stat().st_mtime_ns == mtime  # loaded, not retrained
    assert second["eval_encoder"]["loaded_from"] == str(path.resolve())
    assert second["eval_encoder"]["weights_sha256"] == first["eval_encoder"]["weights_sha256"]
    assert second["eval_encoder"]["seed"] == first["eval_encoder"]["seed"]
    assert second["kid_coronal"] == pytest.approx(first["kid_coronal"], rel=1e-6)
    # The file is tied to the grid it was trained on.
    with pytest.raises(InputError, match=r"trained on the \(16, 16, 16\) grid"):
        evaluate_generation(pred, ref, **{**kw, "eval_shape": (12, 16, 16)})
    # An identity that does not match the weights is refused.
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["weights_sha256"] = "0" * 64
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="do not match"):
        evaluate_generation(pred, ref, **kw)
    path.with_suffix(".json").unlink()
    with pytest.raises(InputError):
        evaluate_generation(pred, ref, **kw)


def test_diversity_metrics_of_both_sets_and_small_grids():
    vols = smooth_volumes(4, 0)  # 16^3: 2 MS-SSIM scales
    scores, settings = diversity_metrics(vols, vols, max_pairs=5, seed=1)
    assert scores["msssim_diversity"] == pytest.approx(scores["msssim_diversity_reference"])
    assert scores["msssim_diversity_gap"] == pytest.approx(0.0, abs=1e-9)
    assert settings["scales"] == 2 and settings["pairs"] == 5 and settings["pairs_total"] == 6
    assert settings["window"] == [7, 7, 7] and settings["grid"] == [16, 16, 16]
    tiny = [v[:6, :6, :6] for v in vols]
    scores, settings = diversity_metrics(tiny, tiny)
    assert set(scores.values()) == {"needs --eval-shape of at least 7 per axis"}
    assert settings["grid"] == [6, 6, 6]
