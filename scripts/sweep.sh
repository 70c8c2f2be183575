#!/usr/bin/env bash
# One resolution sweep, the flags every sweep shares in one place (make bench and scripts/gpu_job.sh):
#
#   scripts/sweep.sh OUT_DIR PATH [SWEEP FLAGS...]      PATH: benchmarks/ or one bench file
#
# Writes OUT_DIR/results.json (pytest-benchmark) and OUT_DIR/results.jsonl (rows as they finish),
# removing stale ones first. SWEEP_TIMEOUT=SECONDS interrupts a sweep that runs longer; pytest still
# writes its JSON, so what was measured is kept. PYTHON picks the interpreter [python3].
set -uo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OUT_DIR PATH [SWEEP FLAGS...]" >&2; exit 2; }
out=$1 path=$2
shift 2
mkdir -p "$out"
rm -f "$out/results.json" "$out/results.jsonl"  # never report a stale run as this one
exec ${SWEEP_TIMEOUT:+timeout -s INT -k 30 "$SWEEP_TIMEOUT"} "${PYTHON:-python3}" -m pytest "$path" --benchmark-only \
    -v -p no:cacheprovider --benchmark-columns=median,iqr,rounds --benchmark-sort=name --benchmark-group-by=func \
    --benchmark-json="$out/results.json" --results="$out/results.jsonl" "$@"
