"""Evaluation: score prediction folders against references (what `lift3d evaluate` runs).

- :mod:`~lift3d.evaluation.paired`: mr2ct / missing; pair predictions with references by case
  id, per-case image and coherence metrics, summaries;
- :mod:`~lift3d.evaluation.generation`: unconditional generation; generated and reference
  volumes on one grid, per-plane feature distances;
- :mod:`~lift3d.evaluation.volumes`: generated, reference and floor files, and each volume on
  the common evaluation grid;
- :mod:`~lift3d.evaluation.encoder`: the evaluation encoder of generation (training, identity,
  save / load);
- :mod:`~lift3d.evaluation.floor`: the real-vs-real floor of generation scores (equal counts,
  ratios) and where the real-vs-generated montage goes;
- :mod:`~lift3d.evaluation.extractors`: the pretrained feature extractors of published scores
  (MedicalNet 3D FID, RadImageNet 2.5D FID), loaded from files the user names;
- :mod:`~lift3d.evaluation.results`: the evaluate JSON of any task, and its files;
- :mod:`~lift3d.evaluation.tables`: printed tables of one result or of two side by side.

The metric maths lives in :mod:`lift3d.metrics`.
"""

from __future__ import annotations

from lift3d.evaluation.encoder import (
    EVAL_ENCODER_STEPS,
    EvalDescriptor,
    load_eval_encoder,
    save_eval_encoder,
    train_eval_encoder,
    weights_sha256,
)
from lift3d.evaluation.floor import compare_to_floor, match_counts, montage_paths
from lift3d.evaluation.generation import (
    distribution_metrics,
    evaluate_generation,
    generated_files,
    plane_features,
    prepare_volume,
    reference_files,
)
from lift3d.evaluation.paired import (
    COHERENCE_METRICS,
    IMAGE_METRICS,
    find_predictions,
    pair_cases,
    score_pair,
    summarise,
)
from lift3d.evaluation.results import evaluate_folder, to_csv, to_json, write_results
from lift3d.evaluation.tables import (
    arms_table,
    compare_summaries,
    comparison_rows,
    format_summary,
)

__all__ = [
    "COHERENCE_METRICS",
    "EVAL_ENCODER_STEPS",
    "IMAGE_METRICS",
    "EvalDescriptor",
    "arms_table",
    "compare_summaries",
    "compare_to_floor",
    "comparison_rows",
    "distribution_metrics",
    "evaluate_folder",
    "evaluate_generation",
    "find_predictions",
    "format_summary",
    "generated_files",
    "load_eval_encoder",
    "match_counts",
    "montage_paths",
    "pair_cases",
    "plane_features",
    "prepare_volume",
    "reference_files",
    "save_eval_encoder",
    "score_pair",
    "summarise",
    "to_csv",
    "to_json",
    "train_eval_encoder",
    "weights_sha256",
    "write_results",
]
