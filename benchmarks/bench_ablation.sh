#!/usr/bin/env bash
# 2D vs 2.5D vs LiFT on held-out phantom cases, several training seeds (issue: evidence where it
# is hard). For each training seed trains two translators (context 0: the 2D arm; context k: the
# 2.5D arm, k neighbouring source slices on each side as input channels), each followed by its
# z-mixer, translates the held-out cases with and without the mixer and scores them:
#   2D = F alone, LiFT = F + mixer, 2.5D = F(k) alone, LiFT-2.5D = F(k) + mixer.
# With JOINT=1 also a LiFT model whose F and mixer are trained together from the start (no
# per-slice stage: STEPS joint steps on random 16-slice chunks, F at the mixer's lr), scored with
# its mixer (its F alone is no 2D model). Then prints the mean +- sd table
# (benchmarks/ablation_table.py). PHANTOM results.
# Usage (venv active, or LIFT3D=.venv/bin/lift3d PYTHON=.venv/bin/python):
#   benchmarks/bench_ablation.sh TASK OUT [STEPS] [MIXER_STEPS]      TASK: mr2ct | missing
# Environment: SEEDS="0 1 2" (training seeds), TEST_SEED=2 (held-out phantom seed, 3 cases; the
# training set is seed 0, 8 cases), CONTEXT=1 (k of the 2.5D arm), KIND=realistic, SHAPE="64 64 64",
# SPACING="1 1 1", MULTISLICE (realistic kind: see `lift3d phantom --help`), TARGET=t1c (missing:
# the modality synthesised from the other three), JOBS=1 (training runs at once, 1 thread each),
# JOINT=0 (1: add the jointly trained LiFT arm).
set -euo pipefail
task=${1:?task: mr2ct or missing}
out=${2:?output folder}
steps=${3:-1500}
mixer_steps=${4:-300}
seeds=${SEEDS:-0 1 2}
test_seed=${TEST_SEED:-2}
context=${CONTEXT:-1}
kind=${KIND:-realistic}
spacing=${SPACING:-1 1 1}
shape=${SHAPE:-64 64 64}
target=${TARGET:-t1c}
jobs=${JOBS:-1}
joint=${JOINT:-0}
lift3d=${LIFT3D:-lift3d}
python=${PYTHON:-python}
export OMP_NUM_THREADS=1 # one thread per job on a shared CPU
multislice=()
if [[ -n "${MULTISLICE:-}" ]]; then
  read -r -a ms <<<"$MULTISLICE"
  multislice=(--multislice "${ms[@]}")
fi
case $task in
mr2ct) layout=synthrad config=translate_demo target_args=() ;;
missing) layout=brats config=translate_demo target_args=(--target "$target") ;;
*) echo "task must be mr2ct or missing" >&2 && exit 2 ;;
esac
read -r sx sy sz <<<"$shape"
grid="[$sz,$sy,$sx]" # the model grid is (D, H, W): axial slices first
mkdir -p "$out"
for set in "train 0 8" "test $test_seed 3"; do
  read -r name seed n <<<"$set"
  # shellcheck disable=SC2086  # shape and spacing are word lists on purpose
  [ -d "$out/$name" ] || $lift3d phantom --kind "$kind" --layout "$layout" --cases "$n" \
    --shape $shape --spacing $spacing "${multislice[@]}" --seed "$seed" --out "$out/$name"
done

train_one() { # seed arm (c0, c<k>: two stages with context k; joint: F and mixer together)
  local run="$out/run-$2-s$1" sets
  [ -f "$run/model.safetensors" ] && return 0
  if [ "$2" = joint ]; then
    sets=(translator.steps=0 mixer.steps="$steps" mixer.z_chunk=16 mixer.freeze_translator=false
      mixer.translator_lr=0.002 model.context_slices=0)
  else
    sets=(translator.steps="$steps" mixer.steps="$mixer_steps" model.context_slices="${2#c}")
  fi
  local t0=$SECONDS
  $lift3d train translate --task "$task" --data "$out/train" --out "$run" --config "$config" \
    --seed "$1" --set "${sets[@]}" data.val_fraction=0.25 "data.shape=$grid" \
    train.num_threads=1 train.val_every=0 >"$out/train-$2-s$1.log" 2>&1
  echo $((SECONDS - t0)) >"$run/train_seconds.txt"
}

arms=(c0 "c$context")
[ "$joint" = 1 ] && arms+=(joint)
pids=()
for seed in $seeds; do
  for arm in "${arms[@]}"; do
    [ -f "$out/run-$arm-s$seed/model.safetensors" ] && continue # trained: no job slot
    train_one "$seed" "$arm" &
    pids+=($!)
    if [ "${#pids[@]}" -ge "$jobs" ]; then
      wait "${pids[0]}"
      pids=("${pids[@]:1}")
    fi
  done
done
for pid in "${pids[@]}"; do wait "$pid"; done

for seed in $seeds; do
  for tag in "${arms[@]}"; do
    run="$out/run-$tag-s$seed"
    mixers=(mixer no-mixer)
    [ "$tag" = joint ] && mixers=(mixer)
    for mixer in "${mixers[@]}"; do
      arm="$tag-$mixer-s$seed"
      extra=()
      [ "$mixer" = mixer ] || extra=(--no-mixer)
      [ -d "$out/pred-$arm" ] || $lift3d translate --model "$run" --input "$out/test" \
        --output "$out/pred-$arm" "${target_args[@]}" "${extra[@]}"
      [ -f "$out/eval-$arm/summary.json" ] || $lift3d evaluate --task "$task" \
        --pred "$out/pred-$arm" --ref "$out/test" --out "$out/eval-$arm" --label "$arm"
    done
  done
done
$python "$(dirname "$0")/ablation_table.py" "$out" --context "$context" --seeds $seeds
