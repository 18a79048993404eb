"""Evaluations sharing an --eval-encoder file reuse the real sets' scores (reference diversity,
the floor set) from the score cache beside it, with the same results, and recompute them when
a file or a setting changes."""

from __future__ import annotations

import os

import lift3d.evaluation.generation as generation
from lift3d.evaluation.generation import evaluate_generation
from lift3d.evaluation.score_cache import cache_folder

from .test_floor import folders


def scores(summary: dict) -> dict:
    """Every number of a summary, the floor block's included (not where the encoder came from)."""
    out = {k: v for k, v in summary.items() if isinstance(v, (int, float))}
    out.update({f"floor.{k}": v for k, v in summary["floor"]["scores"].items()})
    out.update({f"ratio.{k}": v for k, v in summary["ratio_to_floor"].items()})
    return out


def test_real_set_scores_are_reused_and_invalidated(tmp_path, monkeypatch):
    dirs = folders(tmp_path)  # 4 generated, 4 references, 3 floor volumes
    enc = tmp_path / "eval" / "eval_encoder.safetensors"
    kw = {"eval_shape": (16, 16, 16), "max_slices": 8, "diversity_pairs": 3, "encoder_steps": 2}
    calls = []
    real = generation.diversity

    def counted(volumes, **k):
        calls.append(len(volumes))
        return real(volumes, **k)

    monkeypatch.setattr(generation, "diversity", counted)

    def run() -> dict:
        calls.clear()
        return evaluate_generation(
            dirs["pred"], dirs["ref"], floor_dir=dirs["floor"], eval_encoder=enc, **kw
        )["summary"]

    first = run()
    # generated 4, references 4, floor 3, generated subsampled to 3
    assert sorted(calls) == [3, 3, 4, 4]
    assert len(list(cache_folder(enc).glob("*.json"))) == 2
    second = run()  # e.g. the other arm: the references' and the floor's scores come from disk
    assert sorted(calls) == [3, 4]
    assert scores(second) == scores(first)  # exact: floats survive the JSON round trip
    assert second["msssim"] == first["msssim"]

    # A changed floor file: its entry is recomputed (the references' is still valid).
    floor_file = next(dirs["floor"].iterdir())
    st = floor_file.stat()
    os.utime(floor_file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    run()
    assert sorted(calls) == [3, 3, 4]
    # Another setting (diversity pairs): nothing reused.
    kw["diversity_pairs"] = 2
    run()
    assert sorted(calls) == [3, 3, 4, 4]


def test_without_an_encoder_file_nothing_is_cached(tmp_path):
    dirs = folders(tmp_path)
    evaluate_generation(
        dirs["pred"],
        dirs["ref"],
        floor_dir=dirs["floor"],
        eval_shape=(16, 16, 16),
        max_slices=8,
        diversity_pairs=3,
        encoder_steps=2,
    )
    assert not list(tmp_path.rglob("*.scores"))
