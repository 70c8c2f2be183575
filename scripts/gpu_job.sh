#!/usr/bin/env bash
# fastvit's whole GPU job, in phases that each fit a 10-minute run:
#
#   scripts/gpu_job.sh [PHASE] [OUT_DIR]       PHASE: all (default), tests, sweep, report, quick
#
#   quick   the short, prioritised check that fits one device-tool run (scripts/gpu_quick.py: the
#           environment and SDPA kernels, the kernels' correctness on CUDA, op-level attention, add +
#           LayerNorm and patch embedding, the whole ViT-B/16 eager and compiled, then whatever time is
#           left), planned against a deadline (QUICK_DEADLINE [480 s]) and bundled on every exit
#           (BUNDLE_DIR [OUT_DIR/bundle]; at most 8 files of at most 16 MiB). More flags after OUT_DIR
#           go to scripts/gpu_quick.py; DEVICE=cpu rehearses it with tiny shapes. See scripts/README.md.
#   tests   the equivalence suite on CUDA (fp32, fp16, bf16; every backend, xformers and triton
#           included; the Triton kernels with FASTVIT_AUTOTUNE=$TEST_AUTOTUNE, by default off: the
#           blocking the interpreter verifies in CI, without autotuning each of the suite's many
#           shapes), then `fastvit check --backward` per dtype for ViT-S/16 and ViT-B/16 with the
#           kernels autotuned as in the sweep;
#   sweep   the resolution sweep for each model in MODELS (op-level attention, the whole ViT,
#           add + LayerNorm, patch embedding; fwd and train; every backend, the Triton kernels
#           included), plus op-level attention at BIG_BATCH for the short sequences (224 and 384 px)
#           where launch overhead and block padding decide;
#   report  `fastvit report` for every results file under OUT_DIR.
#
# Everything lands in OUT_DIR (default reports/<device slug>): logs, check-<dtype>.json, one folder per
# sweep with results.jsonl (rows as each comparison group finished) and the report.
# With BUNDLE=PATH the folder is also packed into one .tar.gz there (the device tool returns at most 8
# files). `make bench-gpu` runs this with the project's venv.
#
# Settings (environment): PYTHON [python3], DEVICE [cuda], MODELS [vit_base_patch16_224,
# vit_large_patch16_224], RESOLUTIONS [224,384,512,768,1024], DTYPE [bf16], BATCH [8], BIG_BATCH [64],
# TIME_BUDGET [5 s of interleaved rounds per comparison group], CHECK_MODELS [vit_small_patch16_224,vit_base_patch16_224],
# CHECK_DTYPES [fp32,fp16,bf16], SWEEP_TIMEOUT [none: seconds per sweep, then it is interrupted and
# what it measured is kept], TEST_AUTOTUNE [off], FASTVIT_AUTOTUNE [on: the kernels' compact
# autotuning space for checks and sweeps; full: the wide one], BENCH_ARGS (more sweep flags, e.g.
# --compile; without it the sweep still adds the +compile rows of the first model at 224 and 384 px).
# On a machine with torch and triton but no package registry, run it through scripts/device_job.sh.
# A phase's failure is reported and the next phase still runs; the exit status is non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

phase=${1:-all}
case $phase in all|tests|sweep|report|quick) ;; *) echo "usage: $0 [all|tests|sweep|report|quick] [OUT_DIR]" >&2; exit 2;; esac
if [ "$phase" = quick ]; then  # its own planner: no requirement check here (a missing module fails its step only)
    shift
    out_arg=()
    if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then out_arg=(--out "$1"); shift; fi
    exec "${PYTHON:-python3}" scripts/gpu_quick.py "${out_arg[@]}" "$@"
fi
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
MODELS=${MODELS:-vit_base_patch16_224,vit_large_patch16_224}
RESOLUTIONS=${RESOLUTIONS:-224,384,512,768,1024}
DTYPE=${DTYPE:-bf16}
BATCH=${BATCH:-8}
BIG_BATCH=${BIG_BATCH:-64}
TIME_BUDGET=${TIME_BUDGET:-5}
CHECK_MODELS=${CHECK_MODELS:-vit_small_patch16_224,vit_base_patch16_224}
CHECK_DTYPES=${CHECK_DTYPES:-fp32,fp16,bf16}
SWEEP_TIMEOUT=${SWEEP_TIMEOUT:-}
export PYTHONUNBUFFERED=1
failed=()
start=$(date +%s)

say() { echo "[gpu-job $(( $(date +%s) - start ))s] $*"; }

requirements() {  # fail early, naming what is missing, rather than after minutes of GPU time
    local missing need="torch triton einops numpy scipy pandas matplotlib markdown pytest pytest_benchmark"
    case $phase in all|tests) need="$need hypothesis" ;; esac
    missing=$($PY -c 'import importlib.util, sys; print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))' $need)
    if [ -n "$missing" ]; then
        echo "[gpu-job] $PY lacks: $missing (pip install -e '.[test,xformers]', or carry wheels: scripts/gpu_wheels.sh)" >&2
        exit 3
    fi
    $PY -c "import xformers" 2>/dev/null || say "xformers is not importable: its rows will say why"
}

requirements
out=${2:-reports/$($PY -m fastvit.bench slug --device "$DEVICE")}
mkdir -p "$out"

bundle() {  # on every exit, also an interrupted one, so that whatever was measured comes back
    if [ -n "${BUNDLE:-}" ]; then
        tar czf "$BUNDLE" -C "$out" . && say "bundled $out into $BUNDLE"
    fi
}
trap bundle EXIT
trap 'exit 143' TERM INT  # turn a termination into an exit, so the EXIT trap still bundles

environment() {
    {
        date -u +%FT%TZ
        git rev-parse HEAD 2>/dev/null && git status --porcelain --untracked-files=no | head -20
        nvidia-smi 2>&1 || echo "nvidia-smi: not available"
        $PY -c 'import torch, triton; print("torch", torch.__version__, "cuda", torch.version.cuda,
"cudnn", torch.backends.cudnn.version(), "triton", triton.__version__)'
        $PY -m kernels.audit --check-version  # is this Triton one the kernels were audited with?
        $PY -m xformers.info 2>&1 | head -60 || echo "xformers: not importable"
        $PY -m fastvit.cli backends --device "$DEVICE" --dtype "$DTYPE"
    } > "$out/environment.txt" 2>&1
}

run_tests() {
    say "equivalence suite on $DEVICE"
    FASTVIT_AUTOTUNE=${TEST_AUTOTUNE:-off} $PY -m pytest -rs tests -q -p no:cacheprovider --junitxml="$out/tests.xml" 2>&1 | tee "$out/tests.log" \
        || failed+=(tests)
    for model in ${CHECK_MODELS//,/ }; do
        for dtype in ${CHECK_DTYPES//,/ }; do
            say "fastvit check $model $dtype"
            $PY -m fastvit.cli check --model "$model" --dtype "$dtype" --device "$DEVICE" --backward \
                --json "$out/check-$model-$dtype.json" 2>&1 | tee -a "$out/check.log" \
                || failed+=("check-$model-$dtype")
        done
    done
}

sweep() {  # sweep NAME PATH FLAGS...: one sweep of PATH (benchmarks/ or one file) into $out/NAME/
    local name=$1 path=$2
    shift 2
    mkdir -p "$out/$name"
    say "sweep $name: $path $*"
    PYTHON=$PY scripts/sweep.sh "$out/$name" "$path" --device "$DEVICE" --dtype "$DTYPE" --time-budget "$TIME_BUDGET" \
        "$@" ${BENCH_ARGS:-} 2>&1 | tee "$out/$name/sweep.log" || failed+=("sweep-$name")
}

run_sweeps() {
    for model in ${MODELS//,/ }; do
        sweep "$model" benchmarks/ --model "$model" --resolutions "$RESOLUTIONS" --batch-size "$BATCH"
    done
    first=${MODELS%%,*}
    sweep "$first-attention-b$BIG_BATCH" benchmarks/bench_attention.py --model "$first" --resolutions 224,384 \
        --batch-size "$BIG_BATCH"
}

run_reports() {
    for results in "$out"/*/results.jsonl; do
        [ -s "$results" ] || continue
        say "report $(dirname "$results")"
        $PY -m fastvit.cli report "$results" -o "$(dirname "$results")" || failed+=("report-$(dirname "$results")")
    done
}

environment
case $phase in
    all) run_tests; run_sweeps; run_reports ;;
    tests) run_tests ;;
    sweep) run_sweeps; run_reports ;;
    report) run_reports ;;
esac

say "done; results in $out${failed[*]:+; FAILED: ${failed[*]}}"
[ ${#failed[@]} -eq 0 ]
