# Sourced by the GPU scripts (gpu_check.sh, gpu_seed_runs.sh), from the repo root: sets PY and
# PYTHONPATH so `$PY -m lift3d` runs this checkout on a GPU machine. Wheels of packages the
# machine lacks can sit in .whl/; they are installed to a scratch folder ($SITE, default a new
# temporary folder) that goes first on PYTHONPATH (benchmarks/README.md).
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
SITE=${SITE:-$(mktemp -d)}
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .whl/*.whl || exit 1
    export PYTHONPATH=$SITE
fi
export PYTHONPATH=$PWD/src:${PYTHONPATH:-}
