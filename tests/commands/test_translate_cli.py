"""`lift3d train translate` -> `lift3d translate` / `synthesize-missing` through `lift3d.cli.main`."""

from __future__ import annotations

import json
import shutil
import struct

import nibabel as nib
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lift3d.cli import main
from lift3d.config import TranslateConfig
from lift3d.data.volume import read_volume
from lift3d.model_folder import save_model
from lift3d.models.registry import translation_model_from_config as build_model

TRAIN_FAST = ["--config", "translate_tiny", "--set", "translator.steps=2", "mixer.steps=2"]


@pytest.fixture(scope="module")
def mr2ct_run(tmp_path_factory, phantom_synthrad_dir):
    run = tmp_path_factory.mktemp("cli") / "run"
    argv = ["train", "translate", "--task", "mr2ct", "--data", str(phantom_synthrad_dir)]
    assert main([*argv, "--out", str(run), *TRAIN_FAST]) == 0
    return run


def missing_model(path):
    """A (random) missing-modality model folder; synthesize-missing behaviour needs no training."""
    torch.manual_seed(0)
    cfg = TranslateConfig(task="missing")
    cfg.data.shape = [16, 16, 16]
    cfg.model.size = "tiny"
    return save_model(build_model(cfg), cfg, path)


def nan_affine_nifti(path):
    """A NIfTI whose sform holds a NaN (nibabel cannot write one, so patch the header bytes)."""
    img = nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4))
    img.set_qform(None, code=0)
    img.set_sform(np.eye(4), code=1)
    nib.save(img, path)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<f", raw, 280, float("nan"))  # srow_x[0]
    path.write_bytes(bytes(raw))
    return path


def case_dirs(root):
    return sorted(p for p in root.rglob("*") if p.is_dir() and any(p.glob("*.nii.gz")))


def test_train_then_translate_folder_and_file(mr2ct_run, phantom_synthrad_dir, tmp_path):
    assert json.loads((mr2ct_run / "run.json").read_text())["subtask"] == "mr2ct"
    outs = {}
    for variant, extra in (("mixer", []), ("no_mixer", ["--no-mixer"])):
        out = tmp_path / variant
        argv = ["translate", "--model", str(mr2ct_run), "--input", str(phantom_synthrad_dir)]
        assert main([*argv, "--output", str(out), *extra]) == 0
        outs[variant] = out
    cases = case_dirs(phantom_synthrad_dir)
    for case in cases:
        ref = read_volume(case / "ct.nii.gz")
        a = read_volume(outs["mixer"] / case.name / "sct.nii.gz")
        b = read_volume(outs["no_mixer"] / case.name / "sct.nii.gz")
        assert a.same_grid(ref) and b.same_grid(ref)
        assert a.array.min() >= -1024 and a.array.max() <= 3000
        assert not np.array_equal(a.array, b.array)  # the trained mixer changes the output
    # file mode gives the same volume as folder mode (the mask beside mr.nii.gz is used)
    single = tmp_path / "one.nii.gz"
    argv = ["translate", "--model", str(mr2ct_run), "--input", str(cases[0] / "mr.nii.gz")]
    assert main([*argv, "--output", str(single)]) == 0
    np.testing.assert_allclose(
        read_volume(single).array,
        read_volume(outs["mixer"] / cases[0].name / "sct.nii.gz").array,
        atol=1e-3,
    )
    # an existing output is not replaced without --overwrite
    assert main([*argv, "--output", str(single)]) == 2
    assert main([*argv, "--output", str(single), "--overwrite"]) == 0


def test_train_refuses_existing_run_and_resumes(mr2ct_run, phantom_synthrad_dir, capsys):
    argv = ["train", "translate", "--data", str(phantom_synthrad_dir), "--out", str(mr2ct_run)]
    before = load_file(mr2ct_run / "model.safetensors")
    assert main([*argv, *TRAIN_FAST]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*argv, *TRAIN_FAST, "--resume"]) == 0  # finished stages are skipped
    printed = capsys.readouterr().out
    assert printed.strip().splitlines()[-1] == f"report: {mr2ct_run / 'report.html'}"
    assert "training" in (mr2ct_run / "report.html").read_text().lower()
    after = load_file(mr2ct_run / "model.safetensors")
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_translate_bad_inputs(mr2ct_run, phantom_synthrad_dir, tmp_path, capsys):
    case = case_dirs(phantom_synthrad_dir)[0]
    out = tmp_path / "o.nii.gz"

    def fails(*argv, model=mr2ct_run):
        code = main(["translate", "--model", str(model), *argv, "--output", str(out)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, err
        assert not out.exists()
        return err

    assert "model folder not found" in fails(
        "--input", str(case / "mr.nii.gz"), model=tmp_path / "x"
    )
    gen = tmp_path / "gen"
    gen.mkdir()
    (gen / "run.json").write_text(json.dumps({"task": "generate", "subtask": "generate"}))
    assert "'generate'" in fails("--input", str(case / "mr.nii.gz"), model=gen)
    assert "one MR volume" in fails("--input", str(case / "mr.nii.gz"), str(case / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4, 2), np.float32), np.eye(4)), tmp_path / "4d.nii.gz")
    assert "3D" in fails("--input", str(tmp_path / "4d.nii.gz"))
    assert "geometry" in fails("--input", str(nan_affine_nifti(tmp_path / "nan.nii")))
    assert "--target" in fails("--input", str(case / "mr.nii.gz"), "--target", "t1n")


def test_synthesize_missing(tmp_path, phantom_brats_dir, capsys):
    model = missing_model(tmp_path / "model")
    data = tmp_path / "brats"
    shutil.copytree(phantom_brats_dir, data)
    case = case_dirs(data)[0]
    # complete case: nothing to synthesise
    assert main(["synthesize-missing", "--model", str(model), "--case", str(case)]) == 2
    assert "all four" in capsys.readouterr().err
    target = case / f"{case.name}-t2w.nii.gz"
    reference = read_volume(target)
    target.unlink()
    before = sorted(p.name for p in case.iterdir())
    assert main(["synthesize-missing", "--model", str(model), "--case", str(case)]) == 0
    assert sorted(p.name for p in case.iterdir()) == sorted([*before, target.name])
    assert read_volume(target).same_grid(reference)
    # never overwritten silently; --out writes elsewhere
    assert main(["synthesize-missing", "--model", str(model), "--case", str(case)]) == 2
    target.unlink()
    out = tmp_path / "out"
    assert (
        main(["synthesize-missing", "--model", str(model), "--case", str(case), "--out", str(out)])
        == 0
    )
    assert (out / target.name).is_file() and not target.exists()
    # two missing: error, nothing written
    (case / f"{case.name}-t1n.nii.gz").unlink()
    assert main(["synthesize-missing", "--model", str(model), "--case", str(case)]) == 2
    assert "lacks 2" in capsys.readouterr().err
    assert not target.exists()


def test_synthesize_missing_rejects_other_models(mr2ct_run, phantom_brats_dir, capsys):
    case = case_dirs(phantom_brats_dir)[0]
    assert main(["synthesize-missing", "--model", str(mr2ct_run), "--case", str(case)]) == 2
    assert "--task missing" in capsys.readouterr().err


def test_translate_missing_folder_mode(tmp_path, phantom_brats_dir):
    model = missing_model(tmp_path / "model")
    out = tmp_path / "pred"
    argv = ["translate", "--model", str(model), "--input", str(phantom_brats_dir)]
    assert main([*argv, "--output", str(out)]) == 2  # complete cases need --target
    assert not out.exists()
    assert main([*argv, "--output", str(out), "--target", "cycle"]) == 0
    cases = case_dirs(phantom_brats_dir)
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz"))
    mods = ["t1n", "t1c", "t2w", "t2f"]
    assert names == sorted(f"{c.name}/{c.name}-{mods[i % 4]}.nii.gz" for i, c in enumerate(cases))


def test_25d_arm_trains_and_translates_without_a_flag(phantom_synthrad_dir, tmp_path):
    """`--set model.context_slices=1`: stored in the model folder, used by `lift3d translate`."""
    run = tmp_path / "run25"
    argv = ["train", "translate", "--task", "mr2ct", "--data", str(phantom_synthrad_dir)]
    sets = ["model.context_slices=1", "mixer.z_chunk=8"]  # chunks cut with their context
    assert main([*argv, "--out", str(run), *TRAIN_FAST, *sets]) == 0
    assert "context_slices: 1" in (run / "config.yaml").read_text()
    weights = load_file(run / "model.safetensors")
    assert (
        weights["translator.down_blocks.0.body.0.weight"].shape[1] == 3
    )  # F takes the slice and one neighbour on each side
    case = case_dirs(phantom_synthrad_dir)[0]
    out = tmp_path / "sct.nii.gz"
    assert (
        main(
            [
                "translate",
                "--model",
                str(run),
                "--input",
                str(case / "mr.nii.gz"),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    ref = read_volume(case / "ct.nii.gz")
    pred = read_volume(out)
    assert pred.same_grid(ref) and np.isfinite(pred.array).all()


def test_jointly_trained_model_warns_that_no_mixer_is_not_the_2d_arm(
    phantom_synthrad_dir, mr2ct_run, tmp_path, capsys
):
    """F and mixer trained together (no per-slice stage): the model translates as usual, and
    `--no-mixer` still writes its output but says on stderr that it is not the 2D ablation;
    the two-stage model's --no-mixer says nothing."""
    run = tmp_path / "joint"
    argv = ["train", "translate", "--task", "mr2ct", "--data", str(phantom_synthrad_dir)]
    joint = ["translator.steps=0", "mixer.freeze_translator=false", "mixer.translator_lr=0.002"]
    assert main([*argv, "--out", str(run), *TRAIN_FAST, *joint]) == 0
    mr = case_dirs(phantom_synthrad_dir)[0] / "mr.nii.gz"
    capsys.readouterr()
    for model, name in ((run, "joint"), (mr2ct_run, "two-stage")):
        out = tmp_path / f"{name}.nii.gz"
        args = ["translate", "--model", str(model), "--input", str(mr), "--output", str(out)]
        assert main([*args, "--no-mixer"]) == 0 and out.is_file()
        err = capsys.readouterr().err
        assert ("not the per-slice (2D) ablation" in err) == (name == "joint"), name
