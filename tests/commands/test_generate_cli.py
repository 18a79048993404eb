"""End to end through the CLI: train generate (tiny) -> generate -> evaluate --task generate."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lift3d.cli import main
from lift3d.inference import detail
from lift3d.training import generate


@pytest.fixture(scope="module")
def cli_run(phantom_brats_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    rc = main(
        [
            "train",
            "generate",
            "--data",
            str(phantom_brats_dir),
            "--out",
            str(run),
            "--config",
            "configs/generate_tiny.yaml",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    return run


def test_generate_writes_reference_geometry_and_evaluates(
    cli_run, phantom_brats_dir, tmp_path, capsys
):
    out = tmp_path / "samples"
    assert (
        main(["generate", "--model", str(cli_run), "--n", "3", "--out", str(out), "--seed", "1"])
        == 0
    )
    files = sorted(out.glob("sample_*.nii.gz"))
    assert len(files) == 3 and (out / "montage.png").is_file()
    ref = nib.load(str(next(phantom_brats_dir.glob("*/*-t1n.nii.gz"))))
    for f in files:
        img = nib.load(str(f))
        assert img.shape == ref.shape
        np.testing.assert_allclose(img.affine, ref.affine, atol=1e-4)
        assert np.isfinite(img.get_fdata()).all()
    # Same seed -> same volumes; the ablation differs.
    again, ablation = tmp_path / "again", tmp_path / "ablation"
    assert (
        main(["generate", "--model", str(cli_run), "--n", "1", "--out", str(again), "--seed", "1"])
        == 0
    )
    assert (
        main(
            [
                "generate",
                "--model",
                str(cli_run),
                "--n",
                "2",
                "--out",
                str(ablation),
                "--seed",
                "1",
                "--no-mapper",
            ]
        )
        == 0
    )
    a = nib.load(str(files[0])).get_fdata()
    assert np.array_equal(a, nib.load(str(again / "sample_0000.nii.gz")).get_fdata())
    assert not np.array_equal(a, nib.load(str(ablation / "sample_0000.nii.gz")).get_fdata())
    meta = json.loads((ablation / "generation.json").read_text())
    assert meta["use_mapper"] is False and meta["n"] == 2

    summary_path = tmp_path / "eval.json"
    enc_path = tmp_path / "evalenc" / "enc.safetensors"
    rc = main(
        [
            "evaluate",
            "--task",
            "generate",
            "--pred",
            str(out),
            "--ref",
            str(phantom_brats_dir),
            "--json",
            str(summary_path),
            "--eval-encoder",
            str(enc_path),
        ]
    )
    assert rc == 0 and enc_path.is_file()
    result = json.loads(summary_path.read_text())
    # The ablation is scored with the same (loaded) evaluation encoder.
    abl_path = tmp_path / "eval_ablation.json"
    argv = ["evaluate", "--task", "generate", "--pred", str(ablation), "--ref"]
    argv += [str(phantom_brats_dir), "--json", str(abl_path), "--eval-encoder", str(enc_path)]
    assert main(argv) == 0
    ablation_encoder = json.loads(abl_path.read_text())["summary"]["eval_encoder"]
    assert ablation_encoder["loaded_from"] == str(enc_path.resolve())
    assert ablation_encoder["weights_sha256"] == result["summary"]["eval_encoder"]["weights_sha256"]
    summary = result["summary"]
    for key in (
        "kid_axial",
        "kid_coronal",
        "kid_sagittal",
        "fid_axial",
        "fid_coronal",
        "fid_sagittal",
        "increment_distance",
        "histogram_distance",
    ):
        assert summary[key] is not None and np.isfinite(summary[key]), key
    assert summary["eval_encoder"]["objective"] == "masked"
    assert summary["generation"]["use_mapper"] is True and summary["generation"]["seed"] == 1
    assert summary["generation"]["detail"] is False
    assert summary["generation"]["intensity_map"] == []  # opt-in
    assert result["task"] == "generate" and result["phantom"] is True
    # --eval-shape: both sides on another grid; the encoder file is tied to its own grid.
    small = tmp_path / "eval_small.json"
    argv = ["evaluate", "--task", "generate", "--pred", str(out), "--ref", str(phantom_brats_dir)]
    shape = ["--eval-shape", "16", "16", "16"]
    assert main([*argv, "--json", str(small), "--eval-encoder", str(enc_path), *shape]) == 2
    assert "grid" in capsys.readouterr().err and not small.exists()
    enc_small = tmp_path / "evalenc" / "enc16.safetensors"
    assert main([*argv, "--json", str(small), "--eval-encoder", str(enc_small), *shape]) == 0
    assert json.loads(small.read_text())["summary"]["eval_encoder"]["eval_shape"] == [16, 16, 16]


def test_generate_bad_input(cli_run, tmp_path, phantom_brats_dir, capsys):
    enc = str(tmp_path / "enc.safetensors")
    argv = ["evaluate", "--task", "mr2ct", "--pred", str(tmp_path), "--ref"]
    assert main([*argv, str(phantom_brats_dir), "--eval-encoder", enc]) == 2
    assert "--eval-encoder" in capsys.readouterr().err
    assert main([*argv, str(phantom_brats_dir), "--eval-shape", "16", "16", "16"]) == 2
    assert "--eval-shape" in capsys.readouterr().err
    assert (
        main(["generate", "--model", str(cli_run), "--n", "0", "--out", str(tmp_path / "a")]) == 2
    )
    assert "--n" in capsys.readouterr().err
    # A model folder from another task.
    other = tmp_path / "other"
    other.mkdir()
    (other / "run.json").write_text(json.dumps({"task": "translate", "subtask": "mr2ct"}))
    assert main(["generate", "--model", str(other), "--n", "1", "--out", str(tmp_path / "b")]) == 2
    assert "translate" in capsys.readouterr().err
    assert (
        main(
            [
                "generate",
                "--model",
                str(phantom_brats_dir),
                "--n",
                "1",
                "--out",
                str(tmp_path / "c"),
            ]
        )
        == 2
    )
    # Output folder not writable.
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            assert (
                main(["generate", "--model", str(cli_run), "--n", "1", "--out", str(locked / "x")])
                == 2
            )
            assert "not writable" in capsys.readouterr().err
        finally:
            locked.chmod(0o700)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["generate", "--model", str(cli_run), "--n", "1", "--out", str(blocker / "x")]) == 2
    assert "not writable" in capsys.readouterr().err
    # Existing output without --overwrite.
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    assert main(["generate", "--model", str(cli_run), "--n", "1", "--out", str(full)]) == 2
    assert (full / "keep.txt").read_text() == "x"


def test_generate_output_detail_is_calibrated_and_the_same_for_both_arms(cli_run, tmp_path):
    record = json.loads((cli_run / "reference.json").read_text())["detail"]["modalities"]["t1n"]
    assert record["sigma_rel"] > 0 and record["level_real_rel"] > record["level_generated_rel"]
    assert record["estimator"] == "noise"
    arms = {
        "lift": ["--detail"],
        "lift_plain": [],
        "nomap": ["--no-mapper", "--detail"],
        "nomap_plain": ["--no-mapper"],
    }
    vols = {}
    for name, extra in arms.items():
        out = tmp_path / name
        argv = ["generate", "--model", str(cli_run), "--n", "2", "--out", str(out), "--seed", "3"]
        assert main([*argv, *extra]) == 0
        vols[name] = [nib.load(str(out / f"sample_000{i}.nii.gz")).get_fdata() for i in (0, 1)]
    meta = json.loads((tmp_path / "lift" / "generation.json").read_text())["detail"]
    plain = json.loads((tmp_path / "lift_plain" / "generation.json").read_text())["detail"]
    assert meta["applied"] and meta["calibration"]["modalities"]["t1n"] == record
    assert not plain["applied"] and plain["why_not"] == "not asked for" and plain["sigma"] is None
    sigma = meta["sigma"]["t1n"]
    for i in (0, 1):
        noise_lift = vols["lift"][i] - vols["lift_plain"][i]
        noise_nomap = vols["nomap"][i] - vols["nomap_plain"][i]
        # Background untouched; away from the clip at 0 both arms got the very same noise.
        assert np.all(vols["lift"][i][vols["lift_plain"][i] == 0] == 0)
        bright = (vols["lift_plain"][i] > 5 * sigma) & (vols["nomap_plain"][i] > 5 * sigma)
        assert bright.sum() > 100
        np.testing.assert_allclose(noise_lift[bright], noise_nomap[bright], atol=1e-3)
        assert noise_lift[bright].std() == pytest.approx(sigma, rel=0.15)
        assert not np.array_equal(vols["lift_plain"][i], vols["nomap_plain"][i])


def test_generate_model_without_detail_calibration(cli_run, tmp_path):
    """Model folders written before the output detail generate as before, and say so."""
    old = tmp_path / "old"
    shutil.copytree(cli_run, old)
    ref = json.loads((old / "reference.json").read_text())
    del ref["detail"]
    (old / "reference.json").write_text(json.dumps(ref))
    out = tmp_path / "s"
    argv = ["generate", "--model", str(old), "--n", "1", "--out", str(out), "--seed", "3"]
    assert main([*argv, "--detail", "--intensity-map"]) == 0
    info = json.loads((out / "generation.json").read_text())
    meta = info["detail"]
    assert not meta["applied"] and meta["why_not"] == "the model has no detail calibration"
    assert info["intensity_map"]["applied"] == []
    assert "no intensity-map calibration" in info["intensity_map"]["why_not"]
    plain = tmp_path / "plain"
    argv = ["generate", "--model", str(cli_run), "--n", "1", "--out", str(plain), "--seed", "3"]
    assert main(argv) == 0
    a = nib.load(str(out / "sample_0000.nii.gz")).get_fdata()
    assert np.array_equal(a, nib.load(str(plain / "sample_0000.nii.gz")).get_fdata())


def test_generate_intensity_map_is_calibrated_and_monotone(cli_run, tmp_path, caplog):
    """The calibration holds G's and the data's foreground quantiles; `generate` maps each
    sample's foreground through that curve with `--intensity-map` (both arms); default raw."""
    record = json.loads((cli_run / "reference.json").read_text())["detail"]["modalities"]["t1n"]
    for key in ("intensity_map", "intensity_map_mapper"):  # each arm's own samples
        curve = record[key]
        assert len(curve["generated"]) == len(curve["real"]) == curve["levels"] > 2
        assert curve["real"][0] == 0.0 and curve["real"][-1] == 1.0
    assert record["intensity_map"]["real"] == record["intensity_map_mapper"]["real"]
    assert record["intensity_map"]["generated"] != record["intensity_map_mapper"]["generated"]
    vols, infos = {}, {}
    for name, extra in {
        "lift": ["--intensity-map"],
        "lift_raw": [],
        "nomap": ["--no-mapper", "--intensity-map"],
        "nomap_raw": ["--no-mapper"],
    }.items():
        out = tmp_path / name
        argv = ["generate", "--model", str(cli_run), "--n", "1", "--out", str(out), "--seed", "5"]
        assert main([*argv, *extra]) == 0
        vols[name] = nib.load(str(out / "sample_0000.nii.gz")).get_fdata()
        infos[name] = json.loads((out / "generation.json").read_text())["intensity_map"]
    assert infos["lift"]["applied"] == infos["nomap"]["applied"] == ["t1n"]
    assert infos["lift_raw"]["applied"] == [] and "not asked for" in infos["lift_raw"]["why_not"]
    for arm in ("lift", "nomap"):
        mapped, raw = vols[arm], vols[f"{arm}_raw"]
        fg = raw != 0
        assert np.array_equal(mapped != 0, fg) and not np.allclose(mapped, raw)
        order = np.argsort(raw[fg], kind="stable")  # one monotone curve per sample
        assert np.all(np.diff(mapped[fg][order]) >= -1e-3 * np.ptp(raw[fg]))
    # A folder calibrated before the LiFT arm had a map: that arm is written raw, and says so.
    old = tmp_path / "old"
    shutil.copytree(cli_run, old)
    ref = json.loads((old / "reference.json").read_text())
    del ref["detail"]["modalities"]["t1n"]["intensity_map_mapper"]
    (old / "reference.json").write_text(json.dumps(ref))
    out = tmp_path / "old_lift"
    argv = ["generate", "--model", str(old), "--n", "1", "--out", str(out), "--seed", "5"]
    assert main([*argv, "--intensity-map"]) == 0
    info = json.loads((out / "generation.json").read_text())["intensity_map"]
    assert info["applied"] == [] and "intensity_map_mapper" in info["why_not"]
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("--intensity-map" in m and str(old) in m for m in warned), warned
    assert np.array_equal(nib.load(str(out / "sample_0000.nii.gz")).get_fdata(), vols["lift_raw"])


def test_train_generate_calibrates_detail_unless_switched_off(
    cli_run, phantom_brats_dir, tmp_path, monkeypatch
):
    """`lift3d train generate` runs the detail calibration on the written folder after
    training (the trained run of this module stands in for the training here)."""

    def fake_training(cfg, run_dir, resume=False, calibrate=None, calibrate_mapper=None):
        passed.append(calibrate is not None)
        assert (calibrate_mapper is not None) == (calibrate is not None)
        run_dir = Path(run_dir)
        shutil.copytree(cli_run, run_dir, dirs_exist_ok=True)
        ref = json.loads((run_dir / "reference.json").read_text())
        ref["detail"] = None
        (run_dir / "reference.json").write_text(json.dumps(ref))
        return run_dir

    calls, passed = [], []
    monkeypatch.setattr(generate, "train_generation", fake_training)
    monkeypatch.setattr(detail, "calibrate_model_folder", lambda *a, **k: calls.append(a))
    argv = ["train", "generate", "--data", str(phantom_brats_dir), "--config", "generate_tiny"]
    assert main([*argv, "--out", str(tmp_path / "on")]) == 0
    assert calls == [(tmp_path / "on", str(phantom_brats_dir))]
    assert main([*argv, "--out", str(tmp_path / "off"), "--set", "detail.enabled=false"]) == 0
    assert len(calls) == 1
    assert json.loads((tmp_path / "off" / "reference.json").read_text())["detail"] is None
    # The in-training calibration (after the generator stage) is asked for only when enabled;
    # the folder call above is the fallback for a folder that has none yet.
    assert passed == [True, False]


def test_generate_bf16_is_float32_and_within_tolerance_of_fp32(cli_run, tmp_path):
    """--precision bf16 on the CPU: float32 files on the same grid, within 0.5 % (mean) and 5 %
    (max) of the fp32 sample's intensity range (bf16 rounds at 2^-9 relative per layer input).
    The networks' outputs (the default: no intensity map)."""
    outs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        args = ["generate", "--model", str(cli_run), "--n", "1", "--out", str(out)]
        assert main([*args, "--seed", "3", "--precision", precision]) == 0
        assert json.loads((out / "generation.json").read_text())["precision"] == precision
        outs[precision] = nib.load(str(out / "sample_0000.nii.gz"))
    a, b = (outs[p].get_fdata(dtype=np.float32) for p in ("fp32", "bf16"))
    assert outs["bf16"].get_data_dtype() == outs["fp32"].get_data_dtype() == np.float32
    np.testing.assert_allclose(outs["bf16"].affine, outs["fp32"].affine)
    width = float(a.max() - a.min())
    diff = np.abs(a - b) / width
    assert np.isfinite(b).all() and diff.mean() <= 0.005 and diff.max() <= 0.05


def test_generate_detail_and_map_follow_the_model_defaults_and_the_flags(cli_run, tmp_path):
    """A model whose config sets ``detail.sample_detail`` / ``sample_intensity_map`` samples
    with the output detail and the intensity map unless told ``--no-detail`` /
    ``--no-intensity-map``; the flags win either way, and generation.json says what was done."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    model = tmp_path / "model"
    shutil.copytree(cli_run, model)
    weights = model / "model.safetensors"  # the model is rebuilt from the config stored here
    with safe_open(str(weights), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    cfg = json.loads(meta["config"])
    # generate_tiny leaves both off
    assert cfg["detail"]["sample_detail"] is False
    assert cfg["detail"]["sample_intensity_map"] is False
    cfg["detail"]["sample_detail"] = cfg["detail"]["sample_intensity_map"] = True
    save_file(tensors, str(weights), {**meta, "config": json.dumps(cfg)})

    def sample(folder, name, *extra):
        out = tmp_path / name
        argv = ["generate", "--model", str(folder), "--n", "1", "--out", str(out), "--seed", "3"]
        assert main([*argv, *extra]) == 0
        info = json.loads((out / "generation.json").read_text())
        vol = nib.load(str(out / "sample_0000.nii.gz")).get_fdata()
        return vol, info["detail"]["applied"], info["intensity_map"]["applied"]

    default_on, detail, mapped = sample(model, "on")
    assert detail and mapped == ["t1n"]
    raw, detail, mapped = sample(model, "off", "--no-detail", "--no-intensity-map")
    assert not detail and mapped == []
    plain, detail, mapped = sample(cli_run, "plain")  # the defaults off: G's raw output
    assert not detail and mapped == [] and np.array_equal(raw, plain)
    forced, detail, mapped = sample(cli_run, "forced", "--detail", "--intensity-map")
    assert detail and mapped == ["t1n"] and np.array_equal(forced, default_on)
    noise_only, detail, mapped = sample(model, "noise", "--no-intensity-map")
    assert detail and mapped == []
    assert not np.array_equal(noise_only, default_on) and not np.array_equal(noise_only, raw)
