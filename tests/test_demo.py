"""The demo end to end at smoke-test sizes (slow: ~35 s on 2 cores; `make test-slow`)."""

from __future__ import annotations

import json
import os

import pytest

from lift3d.demo import main


@pytest.mark.slow
def test_quick_demo_runs_every_step(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "scored on the reference grid" in printed
    assert "no-mixer" in printed
    evals = out / "runs" / "generate" / "eval"
    for name in ("mapper", "no-mapper"):
        summary = json.loads((evals / name / "summary.json").read_text())["summary"]
        assert summary["n_cases"] == 3 and "kid_coronal" in summary, name
        assert 0 < summary["msssim_diversity"] <= 1 and summary["msssim"]["scales"] == 3, name
    # The generation table shows the diversity of both arms and of the held-out phantoms.
    assert "msssim_diversity_reference" in printed and "needs --medicalnet PATH" in printed
    # The quick config models the phantoms' own 32^3 grid: no second (model-grid) scoring.
    assert "scored on the model grid" not in printed
    assert sorted(p.name for p in evals.iterdir() if p.is_dir()) == ["mapper", "no-mapper"]
    assert (out / "runs" / "generate" / "report.html").is_file()
    # With two or more cores the generation half ran as a second process; its log is printed.
    if (os.cpu_count() or 1) >= 2:
        assert "generation half (ran alongside" in printed
        assert "[train generate: " in (out / "generate.log").read_text()
    # A second run into the same folder is refused without --fresh (exit 2).
    assert main(["--quick", "--out", str(out)]) == 2
