#!/usr/bin/env bash
# Train the unconditional demo pipeline (E -> G -> mapper) for several seeds on a GPU and
# pack the model folders, to sample and score them elsewhere (benchmarks/README.md, "seed runs").
#
#   OUT=out SEEDS="1 2 3 4" bash benchmarks/gpu_seed_runs.sh
#   DEVICE=cpu CONFIG=generate_tiny SEEDS="1" OUT=seed_dry bash benchmarks/gpu_seed_runs.sh  # dry run
#   SETS="data.shape=[32,32,32] data.spacing_mm=[2,2,2]" ... # extra --set overrides for every run
#
# Training data: the demo's (`lift3d phantom --kind basic --layout brats --cases 16 --shape 64 64 64 --seed 2`). Writes
# $OUT/seed_runs.tar.gz with <seed>/{model.safetensors, reference.json, config.yaml, run.json,
# log.txt} and $OUT/seed_runs.txt (wall time per run).
set -u
OUT=${OUT:-seed_out}; DEVICE=${DEVICE:-cuda}; CONFIG=${CONFIG:-generate_demo}
SEEDS=${SEEDS:-"1 2 3"}; PER_RUN=${PER_RUN:-150}; SETS=${SETS:-}
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
W=$(mktemp -d)
$PY -m lift3d phantom --kind basic --layout brats --cases 16 --shape 64 64 64 --seed 2 --out "$W/train" >/dev/null
for s in $SEEDS; do
    t0=$(date +%s.%N)
    timeout "$PER_RUN" $PY -m lift3d train generate --data "$W/train" --out "$W/runs/$s" \
        --config "$CONFIG" --device "$DEVICE" --seed "$s" --set train.val_every=0 $SETS \
        > "$W/train_$s.log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    echo "seed $s: rc $rc, $($PY -c "print(round($t1 - $t0, 1))") s" | tee -a "$OUT/seed_runs.txt"
    mkdir -p "$W/pack/$s"
    for f in model.safetensors reference.json config.yaml run.json log.txt; do
        cp "$W/runs/$s/$f" "$W/pack/$s/" 2>/dev/null
    done
done
tar czf "$OUT/seed_runs.tar.gz" -C "$W/pack" .
ls -la "$OUT"
