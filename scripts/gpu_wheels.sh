#!/usr/bin/env bash
# Downloads, where a package registry is reachable, the wheels a CUDA machine without one needs for the
# GPU job, into .whl/ (ignored by git); scripts/device_job.sh installs them there. The device tool's
# image already holds torch, triton, einops, numpy, scipy, pandas, matplotlib, markdown, hypothesis,
# pytest, pytest-xdist, pytest-benchmark and timm (its KINDS.md), so by default only what it lacks is
# fetched: xformers (3 MiB). --all adds what a bare torch + triton machine lacks besides: hypothesis and
# its needs, markdown (the report) and scipy (the paired intervals; 35 MiB, which counts towards the
# device tool's 64 MiB of carried files). Keep one version of each: two stop the whole install.
#
#   scripts/gpu_wheels.sh [--all] [PYTHON_VERSION]      (the GPU machine's Python, default 3.12)
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=("xformers==0.0.35")
if [ "${1:-}" = --all ]; then
    wheels+=("hypothesis>=6" sortedcontainers "attrs>=22.2" "markdown>=3.4" "scipy>=1.11")
    shift
fi
pyver=${1:-3.12}
rm -rf .whl  # wheels for another Python must not be carried along
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "${wheels[@]}"
ls -l .whl
echo "[gpu-wheels] $(du -sh .whl | cut -f1) in .whl/: name .whl in the device run's carry"
