"""Nothing silently wrong, nothing lost, through `lift3d.cli.main` (file and folder mode).

One test (or a parametrised family) per kind of defect: inputs checked the same way on every
path, results never NaN, outputs owned to the end (a second writer fails, --overwrite says so),
write failures (read-only folder, full disk) as the one-line contract with nothing left behind,
config values checked before anything is created, a diverging run stopped with a message,
checksummed weights and checkpoints (resume falls back), umask permissions and kept header codes,
leftover temporary files cleaned, `--skip-bad`, and evaluate's missing/extra predictions.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import nibabel as nib
import numpy as np
import pytest
import torch

from lift3d import utils
from lift3d.cli import main
from lift3d.config import TranslateConfig
from lift3d.data import volume as volume_mod
from lift3d.data.volume import Volume, read_volume, write_volume
from lift3d.inference import translate as translate_mod
from lift3d.model_folder import save_model
from lift3d.models.registry import translation_model_from_config as build_model
from lift3d.training import translate as train_translate_mod
from lift3d.training.engine import Engine

TRAIN_TINY = ["--config", "translate_tiny", "--set", "translator.steps=3", "mixer.steps=1"]


# ------------------------------------------------------------------ fixtures and helpers


def tiny_model(path, task="mr2ct", nan=False):
    """A random tiny translation model folder (inference behaviour needs no training)."""
    torch.manual_seed(0)
    cfg = TranslateConfig(task=task)
    cfg.data.shape = [16, 16, 16]
    cfg.model.size = "tiny"
    model = build_model(cfg)
    if nan:  # damaged weights: every output voxel NaN
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float("nan"))
    return save_model(model, cfg, path)


@pytest.fixture(scope="module")
def mr2ct_model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("models") / "mr2ct")


@pytest.fixture
def data(tmp_path, phantom_synthrad_dir):
    """A SynthRAD-layout copy with two cases (mr, ct, mask at 32^3)."""
    root = tmp_path / "data"
    shutil.copytree(phantom_synthrad_dir, root)
    cases = sorted((root / "Task1" / "brain").iterdir())
    for extra in cases[2:]:
        shutil.rmtree(extra)
    return root


def cases_of(root):
    return sorted((root / "Task1" / "brain").iterdir())


def cli(capsys, *argv):
    """Run the CLI; (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(capsys, *argv) -> str:
    """Run a command that must fail with the one-line contract; return the problem text."""
    code, _, err = cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"lift3d {argv[0]}: error: "), err
    return lines[0]


def problem_of(line: str, path) -> str:
    """The problem part of ``lift3d cmd: error: PATH: problem``, checking PATH is named."""
    head = f": error: {path}: "
    assert head in line, (line, path)
    return line.split(head, 1)[1]


def files_under(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def temp_leftovers(root) -> list:
    return sorted(root.rglob(f".*{utils.TEMP_TAG}*"))


def translate_file(model, mr, out, *extra):
    return ["translate", "--model", model, "--input", mr, "--output", out, *extra]


def translate_folder(model, root, out, *extra):
    return ["translate", "--model", model, "--input", root, "--output", out, *extra]


@contextlib.contextmanager
def read_only(folder):
    """Make `folder` unwritable even for root: `chattr +i`, else a read-only bind mount."""
    attempts = (
        (["chattr", "+i", str(folder)], ["chattr", "-i", str(folder)]),
        (
            ["mount", "--bind", "-o", "ro", str(folder), str(folder)],
            ["umount", str(folder)],
        ),
    )
    for on, off in attempts:
        if shutil.which(on[0]) is None:
            continue
        if subprocess.run(on, capture_output=True).returncode == 0:
            try:
                yield folder
            finally:
                subprocess.run(off, capture_output=True, check=True)
            return
    pytest.skip("cannot make a folder read-only here (no chattr +i, no read-only bind mount)")


@pytest.fixture
def full_disk(tmp_path, monkeypatch):
    """A folder on a full disk: a 16 KiB tmpfs where mounting is allowed; otherwise a folder
    whose writers fail with ENOSPC (patched)."""
    folder = tmp_path / "full"
    folder.mkdir()
    mounted = (
        shutil.which("mount") is not None
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(folder)], capture_output=True
        ).returncode
        == 0
    )
    if not mounted:

        def no_space(*args, **kwargs):
            raise OSError(28, os.strerror(28))

        monkeypatch.setattr(volume_mod, "_write_nifti", no_space)
        monkeypatch.setattr("lift3d.models.weights.save_file", no_space)
    try:
        yield folder
    finally:
        if mounted and subprocess.run(["umount", str(folder)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)  # busy: detach


def bad_array(kind: str, like: np.ndarray) -> np.ndarray:
    array = like.astype(np.float32)
    if kind == "NaN voxels":
        array[5, 6, 7] = np.nan
    elif kind == "Inf voxels":
        array[5, 6, 7] = np.inf
    elif kind == "all-zero volume":
        array = np.zeros_like(array)
    elif kind == "constant volume":
        array = np.full_like(array, 7.0)
    elif kind == "one voxel":
        array = array[:1, :1, :1].copy()
    return array


BAD_INPUTS = {
    "NaN voxels": "1 voxels are NaN or Inf",
    "Inf voxels": "1 voxels are NaN or Inf",
    "all-zero volume": "all voxels are zero (empty image)",
    "constant volume": "all voxels have the same value",
    "one voxel": "got a single voxel",
}


# ------------------------------------------------------------------ 1. inputs, one check everywhere


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_bad_input_refused_alike_in_file_and_folder_mode(kind, mr2ct_model, data, tmp_path, capsys):
    case = cases_of(data)[0]
    source = read_volume(case / "mr.nii.gz")
    array = bad_array(kind, source.array)
    # file mode: the bad MR alone (no mask beside it)
    single = tmp_path / "file" / "mr.nii.gz"
    single.parent.mkdir()
    write_volume(Volume(array, source.affine), single)
    out = tmp_path / "sct.nii.gz"
    file_problem = problem_of(
        one_line_error(capsys, *translate_file(mr2ct_model, single, out)), single
    )
    assert BAD_INPUTS[kind] in file_problem
    assert not out.exists()
    # folder mode: the same file as one case's MR
    write_volume(Volume(array, source.affine), case / "mr.nii.gz")
    out_dir = tmp_path / "pred"
    line = one_line_error(capsys, *translate_folder(mr2ct_model, data, out_dir))
    assert problem_of(line, case / "mr.nii.gz") == file_problem
    assert not out_dir.exists() or files_under(out_dir) == []  # checked before anything is written


def test_skip_bad_translates_the_rest_and_lists_the_bad_case(mr2ct_model, data, tmp_path, capsys):
    bad, good = cases_of(data)
    mr = read_volume(bad / "mr.nii.gz")
    write_volume(mr.with_array(bad_array("NaN voxels", mr.array)), bad / "mr.nii.gz")
    out = tmp_path / "pred"
    code, printed, _ = cli(capsys, *translate_folder(mr2ct_model, data, out, "--skip-bad"))
    assert code == 0 and "wrote 1 volume(s)" in printed
    assert files_under(out) == [f"{good.name}/sct.nii.gz", "translation.json"]
    info = json.loads((out / "translation.json").read_text())
    assert list(info["cases"]) == [good.name]
    assert "NaN or Inf" in info["skipped"][bad.name]
    # file mode has a single input: --skip-bad does not apply there
    line = one_line_error(
        capsys,
        *translate_file(mr2ct_model, good / "mr.nii.gz", tmp_path / "o.nii.gz", "--skip-bad"),
    )
    assert "folder mode" in line


def test_empty_mask_refused_in_file_and_folder_mode(mr2ct_model, data, tmp_path, capsys):
    case = cases_of(data)[0]
    mask = read_volume(case / "mask.nii.gz")
    empty = tmp_path / "empty_mask.nii.gz"
    write_volume(mask.with_array(np.zeros_like(mask.array)), empty)
    out = tmp_path / "sct.nii.gz"
    argv = translate_file(mr2ct_model, case / "mr.nii.gz", out, "--mask", empty)
    file_problem = problem_of(one_line_error(capsys, *argv), empty)
    assert file_problem == "all voxels are zero (empty mask)"
    shutil.copy(empty, case / "mask.nii.gz")
    line = one_line_error(capsys, *translate_folder(mr2ct_model, data, tmp_path / "pred"))
    assert problem_of(line, case / "mask.nii.gz") == file_problem
    assert not out.exists()


def test_folder_mode_does_not_read_the_reference_ct(mr2ct_model, data, tmp_path, capsys):
    first, second = cases_of(data)
    ct = read_volume(first / "ct.nii.gz")
    shifted = ct.affine.copy()
    shifted[:3, 3] += 5.0  # another grid: a problem for training, not for inference
    write_volume(Volume(ct.array, shifted), first / "ct.nii.gz")
    ct2 = read_volume(second / "ct.nii.gz")
    write_volume(ct2.with_array(bad_array("NaN voxels", ct2.array)), second / "ct.nii.gz")
    out = tmp_path / "pred"
    code, _, _ = cli(capsys, *translate_folder(mr2ct_model, data, out))
    assert code == 0
    assert files_under(out) == [f"{c.name}/sct.nii.gz" for c in (first, second)] + [
        "translation.json"
    ]


def test_missing_modality_inputs_checked_like_translate(tmp_path, phantom_brats_dir, capsys):
    model = tiny_model(tmp_path / "missing", task="missing")
    data = tmp_path / "brats"
    shutil.copytree(phantom_brats_dir, data)
    case = sorted(p for p in data.iterdir() if p.is_dir())[0]
    (case / f"{case.name}-t2w.nii.gz").unlink()
    t1c = case / f"{case.name}-t1c.nii.gz"
    vol = read_volume(t1c)
    write_volume(vol.with_array(bad_array("Inf voxels", vol.array)), t1c)
    line = one_line_error(capsys, "synthesize-missing", "--model", model, "--case", case)
    assert problem_of(line, t1c) == BAD_INPUTS["Inf voxels"]
    assert not (case / f"{case.name}-t2w.nii.gz").exists()


def test_nan_result_is_never_written(tmp_path, data, capsys):
    model = tiny_model(tmp_path / "nan_model", nan=True)
    case = cases_of(data)[0]
    out = tmp_path / "sct.nii.gz"
    line = one_line_error(capsys, *translate_file(model, case / "mr.nii.gz", out))
    assert "NaN or Inf voxels" in problem_of(line, out) and "nothing was written" in line
    assert not out.exists() and temp_leftovers(tmp_path) == []
    out_dir = tmp_path / "pred"
    line = one_line_error(capsys, *translate_folder(model, data, out_dir))
    assert "NaN or Inf voxels" in line
    assert not out_dir.exists() or files_under(out_dir) == []


def test_evaluate_reports_missing_and_extra_predictions(data, tmp_path, capsys):
    first, second = cases_of(data)
    pred = tmp_path / "pred"
    for case in (first, "1BA099"):  # second: no prediction; 1BA099: no reference
        source = first if case == "1BA099" else case
        ct = read_volume(source / "ct.nii.gz")
        name = case if isinstance(case, str) else case.name
        write_volume(ct.with_array(ct.array.astype(np.float32) + 10), pred / name / "sct.nii.gz")
    argv = ["evaluate", "--task", "mr2ct", "--pred", pred, "--ref", data, "--out", tmp_path / "ev"]
    line = one_line_error(capsys, *argv)
    assert "1 reference case(s) have no prediction" in problem_of(line, pred)
    assert second.name in line and not (tmp_path / "ev").exists()
    code, printed, _ = cli(capsys, *argv, "--allow-missing")
    assert code == 0
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())["summary"]
    assert summary["n_cases"] == 1
    assert summary["missing_predictions"] == [second.name]
    assert summary["extra_predictions"] == ["1BA099"]
    assert "predicted case(s) without a reference, not scored: 1BA099" in printed


# ------------------------------------------------------------------ 2. output ownership


def test_second_writer_of_a_file_fails_and_overwrite_says_so(
    mr2ct_model, data, tmp_path, capsys, monkeypatch, caplog
):
    """Another run writes the output while this one writes its temporary file (after the
    start check, before the final rename): this run must not replace it (unless --overwrite,
    and then it says so)."""
    case = cases_of(data)[0]
    out = tmp_path / "sct.nii.gz"
    real = volume_mod._write_nifti

    def other_run_finishes_first(volume, path):
        real(volume, path)
        out.write_bytes(b"the other run's result")

    monkeypatch.setattr(volume_mod, "_write_nifti", other_run_finishes_first)
    line = one_line_error(capsys, *translate_file(mr2ct_model, case / "mr.nii.gz", out))
    assert "already exists (written by another process meanwhile)" in problem_of(line, out)
    assert out.read_bytes() == b"the other run's result"
    assert temp_leftovers(tmp_path) == []
    caplog.set_level("INFO", logger="lift3d")
    argv = translate_file(mr2ct_model, case / "mr.nii.gz", out, "--overwrite")
    code, printed, _ = cli(capsys, *argv)
    assert code == 0 and f"wrote {out}" in printed
    assert read_volume(out).same_grid(read_volume(case / "mr.nii.gz"))  # last writer wins ...
    assert f"replaced the existing {out}" in caplog.text  # ... and says so


def test_second_writer_in_folder_mode_fails(mr2ct_model, data, tmp_path, capsys, monkeypatch):
    first, second = cases_of(data)
    out = tmp_path / "pred"
    theirs = out / second.name / "sct.nii.gz"
    real = translate_mod.translate_case

    def other_run_writes_case_two(bundle, case, *args, **kwargs):
        result = real(bundle, case, *args, **kwargs)
        if case.case_id == second.name:
            theirs.parent.mkdir(parents=True, exist_ok=True)
            theirs.write_bytes(b"theirs")
        return result

    monkeypatch.setattr(translate_mod, "translate_case", other_run_writes_case_two)
    line = one_line_error(capsys, *translate_folder(mr2ct_model, data, out))
    assert "output already exists" in problem_of(line, theirs)
    assert theirs.read_bytes() == b"theirs"
    assert temp_leftovers(out) == []


def test_two_processes_one_output(mr2ct_model, data, tmp_path):
    """Two real `lift3d translate` processes, one output path: exactly one succeeds."""
    case = cases_of(data)[0]
    out = tmp_path / "sct.nii.gz"
    argv = translate_file(mr2ct_model, case / "mr.nii.gz", out)
    # Both pass their start check before either writes: the first to reach the final rename
    # keeps the file; the other must fail cleanly.
    script = textwrap.dedent(
        """
        import sys, time
        from lift3d import cli
        from lift3d.inference import translate
        real = translate.translate_volumes
        def slow(*a, **k):
            result = real(*a, **k)
            time.sleep(float(sys.argv[1]))
            return result
        translate.translate_volumes = slow
        sys.exit(cli.main(sys.argv[2:]))
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, delay, *map(str, argv)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for delay in ("0", "2")
    ]
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    loser_err = next(err for code, _, err in results if code == 2)
    assert "output already exists" in loser_err
    assert len([ln for ln in loser_err.splitlines() if "error" in ln]) == 1
    assert read_volume(out).same_grid(read_volume(case / "mr.nii.gz"))
    assert temp_leftovers(tmp_path) == []


# ------------------------------------------------------------------ 3. write failures


def test_read_only_output_folder(mr2ct_model, data, tmp_path, capsys):
    case = cases_of(data)[0]
    locked = tmp_path / "locked"
    locked.mkdir()
    with read_only(locked):
        line = one_line_error(
            capsys, *translate_file(mr2ct_model, case / "mr.nii.gz", locked / "sct.nii.gz")
        )
        assert "not writable" in problem_of(line, locked)
        line = one_line_error(capsys, *translate_folder(mr2ct_model, data, locked))
        assert "not writable" in problem_of(line, locked)
        line = one_line_error(capsys, "phantom", "--cases", "1", "--out", locked / "ph")
        assert "not writable" in line
    assert list(locked.iterdir()) == []


def test_folder_turns_read_only_during_the_run(mr2ct_model, data, tmp_path, capsys, monkeypatch):
    """The folder was writable at the start check and is not at the final write."""
    case = cases_of(data)[0]
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "sct.nii.gz"
    real = translate_mod.translate_volumes
    stack = contextlib.ExitStack()

    def lock_then_return(*args, **kwargs):
        result = real(*args, **kwargs)
        stack.enter_context(read_only(folder))
        return result

    monkeypatch.setattr(translate_mod, "translate_volumes", lock_then_return)
    with stack:
        line = one_line_error(capsys, *translate_file(mr2ct_model, case / "mr.nii.gz", out))
    assert "cannot write (" in problem_of(line, out) and "nothing was written" in line
    assert list(folder.iterdir()) == []


def test_full_disk_translate_and_phantom(mr2ct_model, data, full_disk, capsys):
    case = cases_of(data)[0]
    out = full_disk / "sct.nii.gz"
    line = one_line_error(capsys, *translate_file(mr2ct_model, case / "mr.nii.gz", out))
    assert "No space left on device" in problem_of(line, out)
    assert files_under(full_disk) == [] and temp_leftovers(full_disk) == []
    line = one_line_error(capsys, *translate_folder(mr2ct_model, data, full_disk / "pred"))
    assert "No space left on device" in line
    assert files_under(full_disk) == []
    ph = full_disk / "ph"
    argv = ["phantom", "--layout", "synthrad", "--cases", "2", "--shape", "16", "16", "16"]
    line = one_line_error(capsys, *argv, "--out", ph)
    assert "No space left on device" in line
    assert files_under(full_disk) == []  # no half-written dataset


def test_full_disk_train(phantom_synthrad_dir, full_disk, capsys):
    run = full_disk / "run"
    argv = ["train", "translate", "--data", phantom_synthrad_dir, "--out", run, *TRAIN_TINY]
    line = one_line_error(capsys, *argv)
    assert "No space left on device" in line and str(run) in line
    assert files_under(full_disk) == []


def test_sigterm_while_writing_leaves_no_temp_file(
    mr2ct_model, data, tmp_path, capsys, monkeypatch
):
    case = cases_of(data)[0]
    out = tmp_path / "sct.nii.gz"
    real = volume_mod._write_nifti

    def write_then_terminated(volume, path):
        real(volume, path)
        assert path.is_file() and utils.TEMP_TAG in path.name  # the temporary file exists
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(volume_mod, "_write_nifti", write_then_terminated)
    code, _, err = cli(capsys, *translate_file(mr2ct_model, case / "mr.nii.gz", out))
    assert code == 143 and "terminated" in err
    assert not out.exists() and temp_leftovers(tmp_path) == []


# ------------------------------------------------------------------ 4. config values, divergence


@pytest.mark.parametrize(
    "override, key",
    [
        ("translator.lr=-1", "translator.lr"),
        ("translator.lr=nan", "translator.lr"),
        ("translator.lr=inf", "translator.lr"),
        ("data.shape=[0,0,0]", "data.shape"),
        ("data.shape=[1,2]", "data.shape"),
        ("data.val_fraction=1.5", "data.val_fraction"),
        ("translator.steps=-5", "translator.steps"),
        ("translator.batch_size=0", "translator.batch_size"),
        ("model.size=huge", "model.size"),
        ("model.context_slices=-1", "model.context_slices"),
        ("model.mixer_inplane=2", "model.mixer_inplane"),
    ],
)
def test_config_values_checked_before_the_run_folder_is_made(
    override, key, phantom_synthrad_dir, tmp_path, capsys
):
    run = tmp_path / "run"
    argv = ["train", "translate", "--data", phantom_synthrad_dir, "--out", run]
    line = one_line_error(capsys, *argv, "--config", "translate_tiny", "--set", override)
    assert f"config key {key!r}: must be" in line
    assert not run.exists()


def test_data_problem_leaves_no_run_folder(phantom_synthrad_dir, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "translate", "--task", "missing", "--data", phantom_synthrad_dir]
    line = one_line_error(capsys, *argv, "--out", run, *TRAIN_TINY)
    assert "t1n" in line or "BraTS" in line
    assert not run.exists()


def test_diverging_run_names_the_step_and_the_last_good_checkpoint(
    phantom_synthrad_dir, tmp_path, capsys, monkeypatch
):
    run = tmp_path / "run"
    argv = ["train", "translate", "--data", phantom_synthrad_dir, "--out", run, *TRAIN_TINY]
    argv += ["train.ckpt_every=1", "translator.steps=5"]
    real = train_translate_mod.slice_loss
    calls = {"n": 0}

    def infinite_at_step_four(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("inf") if calls["n"] == 4 else loss

    monkeypatch.setattr(train_translate_mod, "slice_loss", infinite_at_step_four)
    line = one_line_error(capsys, *argv)
    stage = run / "checkpoints" / "translator"
    assert "loss is inf at step 4, training diverged" in line
    assert f"last good checkpoint {stage / 'step_0000002.safetensors'} (step 2)" in line
    assert "--resume" in line
    assert sorted(p.name for p in stage.glob("*.json")) == [
        "step_0000001.json",
        "step_0000002.json",
    ]
    monkeypatch.setattr(train_translate_mod, "slice_loss", real)
    code, _, _ = cli(capsys, *argv, "--resume")
    assert code == 0
    assert "resumed from step_0000002.json" in (run / "log.txt").read_text()


def test_diverging_learning_rate_stops_with_one_line(phantom_synthrad_dir, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "translate", "--data", phantom_synthrad_dir, "--out", run, *TRAIN_TINY]
    line = one_line_error(capsys, *argv, "translator.lr=1e30")
    assert "at step 2, training diverged" in line and "lower the learning rate" in line
    assert not run.exists()  # no checkpoint worth keeping


# ------------------------------------------------------------------ 5. checksums and recovery


def flip_last_byte(path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01  # one bit of the last tensor's data
    path.write_bytes(bytes(raw))


def test_bit_flipped_weights_refused(mr2ct_model, data, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(mr2ct_model, model)
    flip_last_byte(model / "model.safetensors")
    case = cases_of(data)[0]
    out = tmp_path / "sct.nii.gz"
    line = one_line_error(capsys, *translate_file(model, case / "mr.nii.gz", out))
    assert "damaged" in problem_of(line, model / "model.safetensors") and "checksum" in line
    assert not out.exists()


def test_resume_falls_back_to_the_newest_intact_checkpoint(
    phantom_synthrad_dir, tmp_path, capsys, monkeypatch
):
    run = tmp_path / "run"
    argv = ["train", "translate", "--data", phantom_synthrad_dir, "--out", run, *TRAIN_TINY]
    argv += ["train.ckpt_every=1"]
    real = Engine._train_step

    def killed_at_step_three(self, stage, fmodule, fopt, scheduler, batch, step):
        if step == 2:
            raise KeyboardInterrupt("killed")
        return real(self, stage, fmodule, fopt, scheduler, batch, step)

    monkeypatch.setattr(Engine, "_train_step", killed_at_step_three)
    code, _, _ = cli(capsys, *argv)
    assert code == 130
    stage = run / "checkpoints" / "translator"
    assert sorted(p.name for p in stage.glob("*.json")) == [
        "step_0000001.json",
        "step_0000002.json",
    ]
    flip_last_byte(stage / "step_0000002.safetensors")
    monkeypatch.setattr(Engine, "_train_step", real)
    code, printed, _ = cli(capsys, *argv, "--resume")
    assert code == 0 and "model written to" in printed
    log = (run / "log.txt").read_text()
    assert "skipping damaged checkpoint" in log and "step_0000002.safetensors" in log
    assert "resumed from step_0000001.json (step 1), the newest intact checkpoint" in log
    assert (run / "model.safetensors").is_file()


def test_leftover_temp_files_are_cleaned_by_the_next_run(mr2ct_model, data, tmp_path, capsys):
    first, _ = cases_of(data)
    out = tmp_path / "pred"
    assert cli(capsys, *translate_folder(mr2ct_model, data, out))[0] == 0
    # A process killed (SIGKILL: no cleanup) while writing leaves its temporary file.
    target = out / first.name / "sct.nii.gz"
    script = textwrap.dedent(
        f"""
        import os, signal
        from lift3d.utils import atomic_path
        with atomic_path({str(target)!r}, overwrite=True) as tmp:
            tmp.write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    assert subprocess.run([sys.executable, "-c", script]).returncode == -signal.SIGKILL
    left = temp_leftovers(out)
    assert len(left) == 1 and left[0].parent == target.parent
    # One of a running writer (pid 1 on this host) must stay.
    running = target.parent / f".sct{utils.TEMP_TAG}{utils._host_tag()}-1-abcd.nii.gz"
    running.write_bytes(b"in progress")
    code, _, _ = cli(capsys, *translate_folder(mr2ct_model, data, out, "--overwrite"))
    assert code == 0
    assert temp_leftovers(out) == [running]
    running.unlink()


# ------------------------------------------------------------------ 6. permissions and headers


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_outputs_follow_the_umask(mr2ct_model, data, tmp_path, capsys):
    case = cases_of(data)[0]
    with umask(0o027):
        out = tmp_path / "sct.nii.gz"
        assert cli(capsys, *translate_file(mr2ct_model, case / "mr.nii.gz", out))[0] == 0
        folder = tmp_path / "pred"
        assert cli(capsys, *translate_folder(mr2ct_model, data, folder))[0] == 0
    written = [out, *(p for p in folder.rglob("*") if p.is_file())]
    assert len(written) == 4
    assert {oct(p.stat().st_mode & 0o777) for p in written} == {oct(0o640)}


def test_synthesized_modality_matches_its_siblings(tmp_path, phantom_brats_dir, capsys):
    model = tiny_model(tmp_path / "missing", task="missing")
    source = sorted(p for p in phantom_brats_dir.iterdir() if p.is_dir())[0]
    case = tmp_path / source.name
    shutil.copytree(source, case)
    with umask(0o022):
        for path in case.glob("*.nii.gz"):  # MNI-space siblings (code 4), written with umask 022
            img = nib.load(path)
            img.set_qform(img.affine, code=4)
            img.set_sform(img.affine, code=4)
            nib.save(img, path)
            path.chmod(0o644)
        target = case / f"{case.name}-t2w.nii.gz"
        target.unlink()
        code, _, _ = cli(capsys, "synthesize-missing", "--model", model, "--case", case)
    assert code == 0
    header = nib.load(target).header
    assert (int(header["qform_code"]), int(header["sform_code"])) == (4, 4)
    modes = {p.name: p.stat().st_mode & 0o777 for p in case.glob("*.nii.gz")}
    assert set(modes.values()) == {0o644}, modes
