"""Which side a comparison table calls better (lift3d.evaluation.tables), and scores that
need an input the evaluation did not get."""

from __future__ import annotations

import pytest

from lift3d.evaluation.tables import compare_summaries, comparison_rows, format_summary


@pytest.mark.parametrize(
    ("metric", "a", "b", "winner"),
    [
        ("psnr_coronal", 30.0, 29.0, "A"),
        ("mae", 50.0, 60.0, "A"),
        ("zgrad_error", 12.0, 10.0, "B"),
        ("increment_distance_axial", 0.77, 0.62, "B"),
        ("increment_distance", 0.5, 0.9, "A"),
        ("histogram_distance_t1n", 0.2, 0.1, "B"),
        ("kid_sagittal", 3.0, 4.0, "A"),
        ("zgrad_ratio", 1.1, 0.8, "A"),
        ("dz_mae", 42.7, 38.4, "B"),
        ("dz_corr", 0.68, 0.73, "B"),
        ("fid_medicalnet", 30.0, 20.0, "B"),
        ("mmd_radimagenet_axial", 0.5, 0.7, "A"),
        ("msssim_diversity_gap", -0.05, 0.02, "B"),  # closer to the reference's diversity
        ("msssim_diversity", 0.6, 0.5, None),  # read against the reference: no better side
        ("msssim_diversity_reference", 0.7, 0.7, None),
        ("ssim_diversity", 0.3, 0.4, None),
    ],
)
def test_better_side(metric, a, b, winner):
    rows = comparison_rows({"summary": {metric: a}}, {"summary": {metric: b}}, ("A", "B"))
    (row,) = [r for r in rows if r["metric"] == metric]
    assert row["better"] == winner


def test_needs_rows_keep_their_text():
    needs = "needs --medicalnet PATH"
    a = {"summary": {"fid_medicalnet": needs, "msssim_diversity": 0.5, "n_cases": 3}}
    b = {"summary": {"fid_medicalnet": 12.5, "msssim_diversity": 0.4, "n_cases": 3}}
    (row,) = [r for r in comparison_rows(a, b, ("A", "B")) if r["metric"] == "fid_medicalnet"]
    assert row["A"] == needs and row["B"] == 12.5 and row["diff"] is None and row["better"] is None
    table = compare_summaries(a, b, ("A", "B"))
    line = next(x for x in table.splitlines() if x.startswith("fid_medicalnet"))
    assert needs in line and "12.50" in line and "n/a" not in line
    assert needs in format_summary({"summary": a["summary"], "label": "A", "task": "generate"})


def test_arms_table_names_the_best_arm_per_metric():
    from lift3d.evaluation import arms_table

    arms = {
        "2D": {"summary": {"mae": 160.0, "mae_std": 5.0, "dz_corr": 0.50, "zgrad_ratio": 1.30}},
        "2.5D": {"summary": {"mae": 140.0, "dz_corr": 0.60, "zgrad_ratio": 0.93}},
        "LiFT": {"summary": {"mae": 150.0, "dz_corr": 0.60, "zgrad_ratio": 1.05}},
    }
    lines = arms_table(arms, ["mae", "dz_corr", "zgrad_ratio", "missing"]).splitlines()
    assert lines[0].split() == ["metric", "2D", "2.5D", "LiFT", "best"]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert set(rows) == {"mae", "dz_corr", "zgrad_ratio"}  # no row for a metric nobody has
    assert rows["mae"].endswith("2.5D") and "160.0 ± 5.000" in rows["mae"]  # lower is better
    assert rows["dz_corr"].endswith("2.5D = LiFT")  # a tie names both
    assert rows["zgrad_ratio"].endswith("LiFT")  # closest to 1
    with_phantom = arms_table({k: {**v, "phantom": True} for k, v in arms.items()})
    assert with_phantom.startswith("PHANTOM")
