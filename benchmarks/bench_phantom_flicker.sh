#!/usr/bin/env bash
# Does a per-slice (2D) MR->CT model flicker on a phantom kind, and does the z-mixer fix it?
# Trains the demo translation config (translator, then mixer) on 8 cases (seed 0), translates the
# held-out cases of each test seed with the mixer (LiFT) and without it (--no-mixer: the 2D arm,
# the same translator), scores both with `lift3d evaluate` and with phantom_gradient_errors.py
# (z vs in-plane gradient errors; for the realistic kind also against the noise-free CT).
# Usage (venv active, or LIFT3D=.venv/bin/lift3d PYTHON=.venv/bin/python):
#   benchmarks/bench_phantom_flicker.sh KIND OUT [STEPS] [MIXER_STEPS]
# Environment: SPACING="1 1 2.5" (voxel size in mm, default 1 1 1), SHAPE="64 64 26" (default
# 64 64 64), TEST_SEEDS="1 2" (held-out phantom seeds, 3 cases each; default 1), MULTISLICE="t1c"
# (realistic kind: MR sequences acquired as interleaved 2D stacks; the synthrad MR is the t1c;
# default: the phantom's own default, under which the synthrad MR is 3D; "none" for all 3D),
# CONTEXT=k (2.5D: k neighbouring source slices on each side as input channels; default 0).
set -euo pipefail
kind=${1:?kind: basic or realistic}
out=${2:?output folder}
steps=${3:-300}
mixer_steps=${4:-200}
spacing=${SPACING:-1 1 1}
shape=${SHAPE:-64 64 64}
test_seeds=${TEST_SEEDS:-1}
multislice=()
if [[ -n "${MULTISLICE:-}" ]]; then
  read -r -a ms <<<"$MULTISLICE"
  multislice=(--multislice "${ms[@]}")
fi
context=${CONTEXT:-0}
lift3d=${LIFT3D:-lift3d}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # one thread per job on a shared CPU
python=${PYTHON:-python}
read -r sx sy sz <<<"$shape"
grid="[$sz,$sy,$sx]" # the model grid is (D, H, W): axial slices first
# shellcheck disable=SC2086  # shape and spacing are word lists on purpose
$lift3d phantom --kind "$kind" --layout synthrad --cases 8 --shape $shape --spacing $spacing \
  "${multislice[@]}" --seed 0 --out "$out/train"
$lift3d train translate --task mr2ct --data "$out/train" --out "$out/run" \
  --config translate_demo --set translator.steps="$steps" mixer.steps="$mixer_steps" \
  data.val_fraction=0.25 "data.shape=$grid" train.num_threads=1 \
  model.context_slices="$context"
for seed in $test_seeds; do
  test="$out/test$seed"
  # shellcheck disable=SC2086
  $lift3d phantom --kind "$kind" --layout synthrad --cases 3 --shape $shape --spacing $spacing \
    "${multislice[@]}" --seed "$seed" --out "$test"
  $lift3d translate --model "$out/run" --input "$test" --output "$out/pred2d_$seed" --no-mixer
  $lift3d translate --model "$out/run" --input "$test" --output "$out/predlift_$seed"
  for arm in 2d lift; do
    $lift3d evaluate --task mr2ct --pred "$out/pred${arm}_$seed" --ref "$test" \
      --out "$out/eval${arm}_$seed" --label "$arm on $kind seed $seed"
  done
  $python "$(dirname "$0")/phantom_gradient_errors.py" "$test" "2D=$out/pred2d_$seed" \
    "LiFT=$out/predlift_$seed" --json "$out/gradients_$seed.json"
done
