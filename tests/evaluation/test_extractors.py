"""Pretrained feature extractors (MedicalNet 3D FID, RadImageNet 2.5D FID): randomly initialised
networks saved in the released checkpoints' key layouts load, give their networks' features and
the scores; wrong, truncated or missing files get one-line errors; the CLI, the JSON, the tables
and the report name the extractor (file SHA-256) of every score."""

from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pytest
import torch

from lift3d.cli import main
from lift3d.errors import InputError
from lift3d.evaluation.encoder import save_eval_encoder, weights_sha256
from lift3d.evaluation.extractors import (
    NEEDS,
    load_extractors,
    load_medicalnet,
    load_radimagenet,
    medicalnet_features,
    pretrained_scores,
    radimagenet_plane_features,
)
from lift3d.evaluation.generation import evaluate_generation
from lift3d.evaluation.tables import compare_summaries, format_summary
from lift3d.models.encoder import SliceEncoder
from lift3d.models.pretrained import RadImageNetResNet50, medicalnet_resnet50


def smooth_volumes(n: int, seed: int, size: int = 16) -> list[np.ndarray]:
    """Gaussian blobs at random centres and widths, (size,) * 3 in [0, 1]."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, size)] * 3, indexing="ij")
    out = []
    for _ in range(n):
        c, r = rng.uniform(-0.3, 0.3, 3), rng.uniform(0.4, 0.7)
        blob = np.exp(-((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / r**2)
        out.append(blob.astype(np.float32))
    return out


def generated_and_reference(tmp_path):
    """Folders of 3 generated and 4 reference volumes (NIfTI, identity affine)."""
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    for folder, vols, stem, scale in (
        (pred, smooth_volumes(3, 1), "sample_{:04d}", 500),
        (ref, smooth_volumes(4, 0), "case_{}", 800),
    ):
        for i, v in enumerate(vols):
            image = nib.Nifti1Image((v * scale).astype(np.float32), np.eye(4))
            nib.save(image, str(folder / f"{stem.format(i)}.nii.gz"))
    return pred, ref


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Released-layout files of randomly initialised networks, and the networks themselves.

    MedicalNet: ``{"state_dict": {"module.<key>": tensor}}`` without ``num_batches_tracked``
    (written before batch norm counted steps) and with a segmentation-head key; RadImageNet:
    the plain state dict of the Keras-layout ResNet-50.
    """
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    mn = medicalnet_resnet50()
    for m in mn.modules():  # non-trivial batch-norm statistics, so a missed key would show
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    state = {f"module.{k}": v for k, v in mn.state_dict().items() if "num_batches" not in k}
    state["module.conv_seg.6.weight"] = torch.zeros(2, 32, 1, 1, 1)
    torch.save({"state_dict": state}, root / "resnet_50_23dataset.pth")
    rn = RadImageNetResNet50()
    torch.save(rn.state_dict(), root / "RadImageNet-ResNet50_notop.pth")
    out = {
        "medicalnet": root / "resnet_50_23dataset.pth",
        "radimagenet": root / "RadImageNet-ResNet50_notop.pth",
        "mn": mn,
        "rn": rn,
        "root": root,
    }
    for kind in ("medicalnet", "radimagenet"):
        out[f"{kind}_sha256"] = hashlib.sha256(out[kind].read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def loaded(weights):
    """Both extractors, loaded once from the files."""
    return load_extractors(weights["medicalnet"], weights["radimagenet"])


def untrained_eval_encoder(path, shape=(16, 16, 16)):
    """An evaluation-encoder file (random weights) for the grid, so no test trains one."""
    torch.manual_seed(0)
    enc = SliceEncoder(1, (8, 16), pool=1, objective="masked").eval()
    identity = {
        "name": "SliceEncoder-masked-ae",
        "objective": "masked",
        "widths": [8, 16],
        "pool": 1,
        "descriptor": "meanstd",
        "eval_shape": list(shape),
        "weights_sha256": weights_sha256(enc),
    }
    return save_eval_encoder(enc, identity, path)


def test_released_layouts_load_and_give_the_networks_features(weights, loaded):
    vols = smooth_volumes(2, 0)  # 16^3
    mn = loaded["medicalnet"]
    assert mn.identity["file_sha256"] == weights["medicalnet_sha256"]
    assert mn.identity["name"] == "MedicalNet ResNet-50" and mn.identity["features"] == 2048
    feats = medicalnet_features(mn.net, vols)
    with torch.no_grad():
        t = torch.from_numpy(np.stack(vols))[:, None]
        t = (t - t.mean((2, 3, 4), keepdim=True)) / (t.std((2, 3, 4), keepdim=True) + 1e-5)
        expected = weights["mn"](t).numpy()
    assert feats.shape == (2, 2048) and np.allclose(feats, expected, atol=1e-5)
    rn = loaded["radimagenet"]
    assert rn.identity["file_sha256"] == weights["radimagenet_sha256"]
    feats = radimagenet_plane_features(rn.net, vols, "coronal")
    assert feats.shape == (2 * 16, 2048)
    with torch.no_grad():
        s = torch.from_numpy(vols[1]).movedim(1, 0)[:, None]
        s = (s - s.min()) / (s.max() - s.min() + 1e-10)
        s = s.expand(-1, 3, -1, -1) - torch.tensor([0.406, 0.456, 0.485]).view(1, 3, 1, 1)
        expected = weights["rn"](s.contiguous()).numpy()
    assert np.allclose(feats[16:], expected, atol=1e-5)


def test_wrong_truncated_or_missing_files_get_one_line_errors(weights):
    root = weights["root"]
    text = root / "notes.pth"
    text.write_text("not weights\n")
    truncated = root / "truncated.pth"
    truncated.write_bytes(weights["medicalnet"].read_bytes()[: 1 << 20])
    cases = [
        (load_medicalnet, text, "not a readable PyTorch weights file"),
        (load_medicalnet, truncated, "truncated"),
        (load_medicalnet, root / "missing.pth", "not found"),
        (load_medicalnet, weights["radimagenet"], "not MedicalNet ResNet-50 weights"),
        (load_radimagenet, weights["medicalnet"], "not RadImageNet ResNet-50 weights"),
    ]
    for load, path, words in cases:
        with pytest.raises(InputError, match=words) as info:
            load(path)
        assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_pretrained_scores_numbers_with_weights_and_needs_without(loaded):
    gen, ref = smooth_volumes(3, 1, 12), smooth_volumes(3, 0, 12)
    scores, ids = pretrained_scores(gen, ref, loaded, mmd_subsets=3)
    for key in ("fid_medicalnet", "mmd_medicalnet", "fid_radimagenet", "mmd_radimagenet"):
        assert np.isfinite(scores[key])
    assert scores["fid_medicalnet"] > 0 and scores["fid_radimagenet_axial"] > 0
    assert scores["fid_radimagenet"] == pytest.approx(
        np.mean([scores[f"fid_radimagenet_{p}"] for p in ("axial", "coronal", "sagittal")])
    )
    assert ids["medicalnet"]["samples"] == [3, 3] and ids["radimagenet"]["samples"][0] == [36, 36]
    same, _ = pretrained_scores(ref[:2], ref[:2], loaded, mmd_subsets=3)
    assert same["fid_medicalnet"] == pytest.approx(0, abs=1e-6)
    assert same["fid_radimagenet"] == pytest.approx(0, abs=1e-4)
    none, ids = pretrained_scores(gen, ref, {})
    assert none["fid_medicalnet"] == none["mmd_medicalnet"] == NEEDS["medicalnet"]
    assert none["fid_radimagenet"] == "needs --radimagenet PATH"
    assert ids["medicalnet"]["status"] == "needs --medicalnet PATH"


def test_evaluate_generation_json_tables_and_report_name_every_extractor(weights, tmp_path, capsys):
    pred, ref = generated_and_reference(tmp_path)
    enc = untrained_eval_encoder(tmp_path / "enc.safetensors")
    plain = evaluate_generation(pred, ref, eval_shape=(16, 16, 16), encoder_path=enc)
    s = plain["summary"]
    assert s["fid_medicalnet"] == "needs --medicalnet PATH"
    assert 0 < s["msssim_diversity"] <= 1 and 0 < s["msssim_diversity_reference"] <= 1
    assert s["msssim_diversity_gap"] == pytest.approx(
        s["msssim_diversity"] - s["msssim_diversity_reference"]
    )
    assert s["msssim"]["scales"] == 2 and s["msssim"]["pairs"] == 3
    assert (
        s["feature_extractors"]["eval_encoder"]["weights_sha256"]
        == s["eval_encoder"]["weights_sha256"]
    )
    table = format_summary({"summary": s, "label": "x", "task": "generate"})
    assert "needs --medicalnet PATH" in table and "msssim_diversity_reference" in table
    out = tmp_path / "eval"
    code = main(
        [
            "evaluate",
            "--task",
            "generate",
            "--pred",
            str(pred),
            "--ref",
            str(ref),
            "--out",
            str(out),
            "--eval-shape",
            "16",
            "16",
            "16",
            "--eval-encoder",
            str(enc),
            "--medicalnet",
            str(weights["medicalnet"]),
            "--radimagenet",
            str(weights["radimagenet"]),
            "--diversity-pairs",
            "2",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "fid_medicalnet" in printed and "needs --" not in printed
    data = json.loads((out / "summary.json").read_text())
    summary = data["summary"]
    assert isinstance(summary["fid_medicalnet"], float)
    assert isinstance(summary["mmd_radimagenet_sagittal"], float)
    assert summary["msssim"]["pairs"] == 2 and summary["msssim"]["pairs_total"] == 3
    found = data["feature_extractors"]
    assert found["medicalnet"]["file_sha256"] == weights["medicalnet_sha256"]
    assert found["radimagenet"]["file_sha256"] == weights["radimagenet_sha256"]
    assert "fid_radimagenet_axial" in found["radimagenet"]["scores"]
    report = (out / "report.html").read_text()
    assert "Feature extractor of each score" in report
    assert weights["medicalnet_sha256"] in report and "MS-SSIM diversity settings" in report
    side = compare_summaries(plain, data, ("no weights", "weights"))
    row = next(line for line in side.splitlines() if line.startswith("fid_medicalnet "))
    assert "needs --medicalnet PATH" in row
    row = next(line for line in side.splitlines() if line.startswith("msssim_diversity_gap"))
    assert row.rstrip().endswith(("no weights", "weights", "="))


def run_bad(args, capsys) -> str:
    code = main(["evaluate", *map(str, args)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    return err


def test_cli_bad_weights_fail_in_one_line(weights, tmp_path, capsys):
    pred, ref = generated_and_reference(tmp_path)
    base = ["--task", "generate", "--pred", pred, "--ref", ref]
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x80\x02garbage")
    assert "not a readable PyTorch weights file" in run_bad([*base, "--medicalnet", bad], capsys)
    err = run_bad([*base, "--radimagenet", weights["medicalnet"]], capsys)
    assert "not RadImageNet ResNet-50 weights" in err
    assert "not found" in run_bad([*base, "--medicalnet", tmp_path / "none.pth"], capsys)
    assert "at least 1" in run_bad([*base, "--diversity-pairs", "0"], capsys)
    paired = ["--task", "mr2ct", "--pred", pred, "--ref", ref, "--medicalnet", bad]
    assert "only applies to --task generate" in run_bad(paired, capsys)
