#!/usr/bin/env bash
# GPU checks and GPU timings on a CUDA machine, as one short script (run from the repo root).
#
#   OUT=gpu_out bash benchmarks/gpu_check.sh            # on a CUDA machine
#   DEVICE=cpu QUICK=1 OUT=gpu_dry bash benchmarks/gpu_check.sh   # dry run of the script itself
#
# Uses the machine's own python3/torch; packages it lacks can sit as wheels in .whl/ (installed
# to a scratch folder, see gpu_env.sh). Each step has its own time limit; logs and JSON go to $OUT. Steps:
#   1. machine facts; 2. the `gpu`-marked tests and the default suite on this torch build;
#   3. generation cost (benchmarks/bench_generate.py) with and without the mapper;
#   4. `lift3d bench --size brats` (LiFT vs the cWDM-configured reference) in fp32 and in bf16
#      (every system in the same precision; achieved TFLOP/s and fraction of the GPU's peak), then
#      bf16 with the whole volume in one slice batch (--chunk-size 0) and bf16 with --compile;
#      bf16 for every model size that both registries know;
#   5. end to end through the CLI: phantoms -> `train generate` (demo config) -> `generate`,
#      and `train translate` (tiny config) -> `translate`, timed;
#   6. training throughput (benchmarks/bench_throughput.py): translator slices/s and mapper
#      volumes/s, data loading included, per size, fp32 and bf16, with DataLoader workers.
# STEPS="1 4 6" runs only those steps (1 always runs).
set -u
OUT=${OUT:-gpu_out}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
STEPS=${STEPS:-"1 2 3 4 5 6"}
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
L3D="$PY -m lift3d"
W=$(mktemp -d)
step() { echo; echo "=== $1 ($(date -u +%T))"; }
want() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

step "1 machine"
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
    nproc
    $PY -c "import torch, monai, lightning_fabric as lf; print('torch', torch.__version__, \
'cuda', torch.version.cuda, 'monai', monai.__version__, 'fabric', lf.__version__); \
print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda')"
} 2>&1 | tee "$OUT/machine.txt"

if want 2; then
step "2 tests"
if [ "$QUICK" = 1 ]; then SUITE="tests/test_cli.py"; else SUITE="tests"; fi
timeout 120 $PY -m pytest -q -m gpu tests/training/test_engine.py tests/inference/test_precision.py \
    2>&1 | tail -5 | tee "$OUT/tests_gpu.txt"
XDIST=""
$PY -c "import xdist" 2>/dev/null && XDIST="-n 8"
timeout 150 $PY -m pytest -q $XDIST "$SUITE" 2>&1 | tail -8 | tee "$OUT/tests_suite.txt"
fi

if want 3; then
step "3 generation cost"
if [ "$QUICK" = 1 ]; then GEN_ARGS="--shape 32 32 32 --size tiny --repeats 1"; else GEN_ARGS=""; fi
timeout 90 $PY benchmarks/bench_generate.py --device "$DEVICE" $GEN_ARGS --json "$OUT/bench_generate.json" 2>&1 | tail -6
timeout 60 $PY benchmarks/bench_generate.py --device "$DEVICE" $GEN_ARGS --no-mapper --json "$OUT/bench_generate_nomapper.json" 2>&1 | tail -6
fi

if want 4; then
step "4 lift3d bench"
if [ "$QUICK" = 1 ]; then BSIZE=quick; else BSIZE=brats; fi
for PREC in fp32 bf16; do
    timeout 120 $L3D bench --size $BSIZE --device "$DEVICE" --precision $PREC \
        --json "$OUT/bench_${BSIZE}_$PREC.json" --overwrite 2>&1 | tail -16
done
timeout 90 $L3D bench --size $BSIZE --device "$DEVICE" --precision bf16 --chunk-size 0 \
    --json "$OUT/bench_${BSIZE}_bf16_whole.json" --overwrite 2>&1 | tail -16
timeout 180 $L3D bench --size $BSIZE --device "$DEVICE" --precision bf16 --compile \
    --json "$OUT/bench_${BSIZE}_bf16_compile.json" --overwrite 2>&1 | tail -16
SIZES=$($PY -c "from lift3d.models.registry import TRANSLATION_SIZES as T; \
from lift3d.models.generation import GENERATION_SIZES as G; print(' '.join(s for s in T if s in G))")
for MS in $SIZES; do
    [ "$MS" = base ] && continue  # measured above
    timeout 90 $L3D bench --size $BSIZE --device "$DEVICE" --precision bf16 --model-size "$MS" \
        --json "$OUT/bench_${BSIZE}_bf16_$MS.json" --overwrite 2>&1 | grep -E "^lift|reference-1step / lift-translate "
done
fi

if want 5; then
step "5 end to end"
if [ "$QUICK" = 1 ]; then
    GCFG=generate_tiny; GSHAPE="32 32 32"; GSET="encoder.steps=2 generator.steps=2 mapper.steps=2"
else
    GCFG=generate_demo; GSHAPE="64 64 64"; GSET="train.val_every=0"
fi
$L3D phantom --kind basic --layout brats --cases 24 --shape $GSHAPE --seed 0 --out "$W/brats" >/dev/null
$L3D phantom --kind basic --layout synthrad --cases 8 --shape 32 32 32 --seed 1 --out "$W/synthrad" >/dev/null
t0=$(date +%s.%N)
timeout 200 $L3D train generate --data "$W/brats" --out "$W/gen_run" --config $GCFG \
    --device "$DEVICE" --set $GSET 2>&1 | grep -vE "it/s|s/it" | tail -6
t1=$(date +%s.%N)
timeout 60 $L3D generate --model "$W/gen_run" --n 4 --out "$W/samples" --seed 0 --device "$DEVICE" 2>&1 | tail -3
t2=$(date +%s.%N)
timeout 90 $L3D train translate --task mr2ct --data "$W/synthrad" --out "$W/tr_run" \
    --config translate_tiny --device "$DEVICE" 2>&1 | grep -vE "it/s|s/it" | tail -4
t3=$(date +%s.%N)
timeout 60 $L3D translate --model "$W/tr_run" --input "$W/synthrad" --output "$W/ct" --device "$DEVICE" 2>&1 | tail -3
t4=$(date +%s.%N)
$PY - "$W" "$t0" "$t1" "$t2" "$t3" "$t4" <<'EOF' | tee "$OUT/end_to_end.txt"
import json, sys
from pathlib import Path
w = Path(sys.argv[1]); t = [float(x) for x in sys.argv[2:]]
print(f"train generate {t[1]-t[0]:.1f} s; generate 4 {t[2]-t[1]:.1f} s; "
      f"train translate (tiny) {t[3]-t[2]:.1f} s; translate {t[4]-t[3]:.1f} s")
run = w / "gen_run" / "run.json"
if run.exists():
    info = json.loads(run.read_text())
    print("run.json:", {k: info.get(k) for k in ("device", "device_name", "precision", "lift3d_version", "torch_version", "seed")})
print("samples:", sorted(p.name for p in (w / "samples").glob("*.nii.gz")))
print("translated:", sorted(str(p.relative_to(w)) for p in (w / "ct").rglob("*.nii.gz"))[:4])
EOF
cp "$W/gen_run/log.txt" "$OUT/gen_log.txt" 2>/dev/null
fi

if want 6; then
step "6 training throughput"
if [ "$QUICK" = 1 ]; then
    TP_ARGS="--sizes tiny --steps 3 --warmup 1 --cases 3 --translate-shape 16 32 32 --generate-shape 32 32 32"
else
    TP_ARGS="--sizes tiny small base --steps 20 --warmup 3 --cases 8 --translate-shape 32 240 240 --num-workers 4"
fi
timeout 240 $PY benchmarks/bench_throughput.py --device "$DEVICE" $TP_ARGS \
    --json "$OUT/throughput.json" 2>&1 | grep -vE "it/s|s/it" | tail -14
fi
step "done"
