#!/usr/bin/env bash
# One resolution sweep, the flags every sweep shares in one place (make bench and scripts/gpu_job.sh):
#
#   scripts/sweep.sh OUT_DIR PATH [SWEEP FLAGS...]      PATH: benchmarks/ or one bench file
#
# Writes OUT_DIR/results.jsonl (rows as each comparison group finishes), removing a stale one (and the
# pytest-benchmark JSON of older runs) first. SWEEP_TIMEOUT=SECONDS interrupts a sweep that runs
# longer; every group finished before is kept. PYTHON picks the interpreter [python3].
set -uo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OUT_DIR PATH [SWEEP FLAGS...]" >&2; exit 2; }
out=$1 path=$2
shift 2
mkdir -p "$out"
rm -f "$out/results.json" "$out/results.jsonl"  # never report a stale run as this one
exec ${SWEEP_TIMEOUT:+timeout -s INT -k 30 "$SWEEP_TIMEOUT"} "${PYTHON:-python3}" -m pytest "$path" --benchmark-only \
    -v -p no:cacheprovider --benchmark-columns=median --benchmark-sort=name --benchmark-group-by=func \
    --results="$out/results.jsonl" "$@"
