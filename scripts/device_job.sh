#!/usr/bin/env bash
# scripts/gpu_job.sh on a CUDA machine that has torch and triton but cannot reach a package registry:
# installs the wheels carried in .whl/ (made by scripts/gpu_wheels.sh) into a scratch directory, puts
# it and the checkout on PYTHONPATH, and runs the job there (nothing is installed into the system).
#
#   scripts/device_job.sh [PHASE] [OUT_DIR] [...]     (arguments and settings as scripts/gpu_job.sh)
#
# The device tool's run, short (scripts/README.md): carry [".whl"] and
#   BUNDLE_DIR=$OUT bash scripts/device_job.sh quick /tmp/fq
set -uo pipefail
cd "$(dirname "$0")/.."
site=${SITE:-/tmp/fastvit-site}
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl \
        || { echo "[device-job] installing .whl/ failed" >&2; [ "${1:-}" = quick ] || exit 1; }  # quick: go on
else
    echo "[device-job] no wheels in .whl/: xformers (and hypothesis) must already be importable" >&2
fi
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON=$PY exec bash scripts/gpu_job.sh "$@"
