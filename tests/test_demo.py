"""The demo end to end at smoke-test sizes (slow: ~35 s on 2 cores; `make test-slow`)."""

from __future__ import annotations

import json

import pytest

from lift3d.demo import main


@pytest.mark.slow
@pytest.mark.parametrize("jobs", ["2", "1"])
def test_quick_demo_runs_every_step(tmp_path, capsys, jobs):
    out = tmp_path / "demo"
    assert main(["--quick", "--out", str(out), "--jobs", jobs]) == 0
    printed = capsys.readouterr().out
    assert "scored on the reference grid" in printed
    assert "no-mixer" in printed
    # The 2.5D arm: its own translator (one neighbouring slice on each side, no mixer stage),
    # scored on the same held-out cases and printed beside 2D and LiFT.
    arms = "MR->CT on held-out PHANTOM cases: 2D, 2.5D and LiFT"
    assert printed.count(arms) == 1
    assert printed.index("LiFT (mixer) vs the no-mixer ablation") < printed.index(arms)
    assert "context_slices: 1" in (out / "runs" / "mr2ct_2.5d" / "config.yaml").read_text()
    arm = json.loads((out / "runs" / "mr2ct_2.5d" / "eval" / "summary.json").read_text())
    assert arm["label"] == "2.5D" and arm["summary"]["n_cases"] == 2
    table = printed[printed.index(arms) :].splitlines()
    assert table[2].split()[:4] == ["metric", "2D", "2.5D", "LiFT"]
    assert any(line.startswith("dz_corr ") for line in table[:16])
    evals = out / "runs" / "generate" / "eval"
    for name in ("mapper", "no-mapper"):
        summary = json.loads((evals / name / "summary.json").read_text())["summary"]
        assert summary["n_cases"] == 3 and "kid_coronal" in summary, name
        assert 0 < summary["msssim_diversity"] <= 1 and summary["msssim"]["scales"] == 3, name
    # The generation table shows the diversity of both arms and of the held-out phantoms.
    assert "msssim_diversity_reference" in printed and "needs --medicalnet PATH" in printed
    # The quick config models the phantoms' own 32^3 grid: no second (model-grid) scoring.
    assert "scored on the model grid" not in printed
    # (and the real sets' score cache beside the shared evaluation encoder)
    folders = sorted(p.name for p in evals.iterdir() if p.is_dir())
    assert folders == ["eval_encoder.scores", "mapper", "no-mapper"]
    assert (out / "runs" / "generate" / "report.html").is_file()
    # Both arms were scored with one evaluation encoder: one evaluation trained and saved it,
    # the other loaded that file.
    identities = [
        json.loads((evals / name / "summary.json").read_text())["summary"]["eval_encoder"]
        for name in ("mapper", "no-mapper")
    ]
    assert identities[0]["weights_sha256"] == identities[1]["weights_sha256"]
    assert sorted("saved_to" in i for i in identities) == [False, True]
    # Both arms' table is printed once, after the translation table.
    title = "Unconditional generation on PHANTOM data"
    assert printed.count(title) == 1
    assert printed.index("MR->CT on held-out PHANTOM cases") < printed.index(title)
    assert printed.count("[evaluate (no-mapper, reference grid): ") == 1
    # With --jobs 2 the generation half ran as a second process (its log is printed) and the
    # translation process scored the no-mapper arm while it trained the mapper.
    if jobs == "2":
        assert "generation half (ran alongside" in printed
        log = (out / "generate.log").read_text()
        assert "[train generate: " in log and "[evaluate (mapper, reference grid): " in log
        assert "[evaluate (no-mapper" not in log
        assert "no-mapper arm (scored here" in printed
    else:
        assert not (out / "generate.log").exists()
    # A second run into the same folder is refused without --fresh (exit 2).
    assert main(["--quick", "--out", str(out)]) == 2


def test_no_mapper_arm_stops_waiting_when_the_generation_process_failed(tmp_path, capsys):
    import subprocess
    import sys

    from lift3d import demo

    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
    child.wait()
    with pytest.raises(SystemExit, match="exited \\(code 3\\) before its generator stage"):
        demo.run_no_mapper_arm(tmp_path, child, quick=True)
    assert "waiting for the generation process" not in capsys.readouterr().out


def test_generation_process_reads_the_no_mapper_arm_record(tmp_path, monkeypatch):
    from lift3d import demo

    monkeypatch.setattr(demo, "POLL_S", 0.01)
    summary = tmp_path / "summary.json"
    (tmp_path / demo.NO_MAPPER_DONE).write_text(
        json.dumps({"summaries": {"reference grid": str(summary)}})
    )
    assert demo._wait_for_no_mapper_arm(tmp_path) == {"reference grid": summary}


def test_generation_process_thread_schedule_depends_on_stage_and_step_only():
    """The generation process of --jobs 2 takes every core from fixed steps on (the numerics,
    which depend on the thread count, then do not depend on the other process's timing)."""
    import os

    from lift3d import demo

    policy = demo._demo_thread_policy(1)
    cores = max(1, os.cpu_count() or 1)
    first = demo.ALL_CORES_FROM
    assert policy("encoder", first["encoder"] - 1) == 1
    assert policy("encoder", first["encoder"]) == cores
    assert policy("generator", 0) == cores
    assert policy("decoder", 0) == cores  # the other process waits for the folder after it
    assert "mapper" not in first  # it ends while the other process still works
    assert all(policy("mapper", s) == 1 for s in range(400))
    assert policy("some other stage", 10**6) == 1
    assert [policy("mapper", s) for s in range(400)] == [policy("mapper", s) for s in range(400)]
