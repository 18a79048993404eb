"""Which side a comparison table calls better (lift3d.evaluation.tables)."""

from __future__ import annotations

import pytest

from lift3d.evaluation.tables import comparison_rows


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
    ],
)
def test_better_side(metric, a, b, winner):
    rows = comparison_rows({"summary": {metric: a}}, {"summary": {metric: b}}, ("A", "B"))
    (row,) = [r for r in rows if r["metric"] == metric]
    assert row["better"] == winner
