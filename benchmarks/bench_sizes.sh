#!/usr/bin/env bash
# Is a translation size's capacity used? Train the per-slice network F of each size for the same
# number of steps on the realistic MR->CT phantom (mixer off), translate held-out cases of a fresh
# seed without the mixer and score them; print params, s/step and held-out MAE / PSNR per size.
# Phantom data: shows that capacity is used, says nothing of clinical quality.
# Usage (venv active, or LIFT3D=.venv/bin/lift3d PYTHON=.venv/bin/python):
#   benchmarks/bench_sizes.sh OUT [STEPS] [SIZE ...]        (default: 150 steps; small base large)
set -euo pipefail
out=${1:?output folder}
steps=${2:-150}
if [ $# -ge 2 ]; then shift 2; else shift 1; fi
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(small base large)
lift3d=${LIFT3D:-lift3d}
export OMP_NUM_THREADS=1  # translation too: one thread, comparable with the training runs
# 10 cases: 8 train, 2 for the end-of-training validation; 3 held-out cases on another seed
[ -d "$out/train" ] || $lift3d phantom --kind realistic --layout synthrad --cases 10 \
  --shape 64 64 64 --seed 0 --out "$out/train"
[ -d "$out/test" ] || $lift3d phantom --kind realistic --layout synthrad --cases 3 \
  --shape 64 64 64 --seed 1 --out "$out/test"
for size in "${sizes[@]}"; do
  $lift3d train translate --task mr2ct --data "$out/train" --out "$out/run-$size" \
    --config translate_demo --set model.size="$size" translator.steps="$steps" mixer.steps=0 \
    data.val_fraction=0.2 train.val_every=0 train.num_threads=1
  $lift3d translate --model "$out/run-$size" --input "$out/test" --output "$out/pred-$size" \
    --no-mixer
  $lift3d evaluate --task mr2ct --pred "$out/pred-$size" --ref "$out/test" \
    --out "$out/eval-$size" --label "2D $size, $steps steps"
done
${PYTHON:-python} "$(dirname "$0")/bench_sizes_table.py" "$out" "${sizes[@]}"
