#!/usr/bin/env bash
# Does a per-slice (2D) MR->CT model flicker on a phantom kind? Train the demo translation config
# briefly, translate held-out cases without the z-mixer, and print the z-gradient numbers next to
# the per-plane errors and the gradient error along R, A, S.
# Usage (venv active, or LIFT3D=.venv/bin/lift3d PYTHON=.venv/bin/python):
#   benchmarks/bench_phantom_flicker.sh KIND OUT [STEPS]
set -euo pipefail
kind=${1:?kind: basic or realistic}
out=${2:?output folder}
steps=${3:-300}
lift3d=${LIFT3D:-lift3d}
$lift3d phantom --kind "$kind" --layout synthrad --cases 8 --shape 64 64 64 --seed 0 \
  --out "$out/train"
$lift3d phantom --kind "$kind" --layout synthrad --cases 3 --shape 64 64 64 --seed 1 \
  --out "$out/test"
$lift3d train translate --task mr2ct --data "$out/train" --out "$out/run" \
  --config translate_demo --set translator.steps="$steps" mixer.steps=1 data.val_fraction=0.25
$lift3d translate --model "$out/run" --input "$out/test" --output "$out/pred" --no-mixer
$lift3d evaluate --task mr2ct --pred "$out/pred" --ref "$out/test" --out "$out/eval" \
  --label "2D on $kind"
${PYTHON:-python} "$(dirname "$0")/phantom_gradient_errors.py" "$out/pred" "$out/test"
