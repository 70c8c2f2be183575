#!/usr/bin/env bash
# Downloads, where a package registry is reachable, the wheels the GPU job needs beyond torch, triton,
# einops, numpy, pandas, matplotlib, pytest and pytest-benchmark (markdown, for the report, and scipy, for the
# paired intervals, among them), into .whl/ (ignored by git), for a
# CUDA machine that cannot reach a registry itself; scripts/device_job.sh installs them there.
#
#   scripts/gpu_wheels.sh [PYTHON_VERSION]      (the GPU machine's Python, default 3.12)
set -euo pipefail
cd "$(dirname "$0")/.."
pyver=${1:-3.12}
rm -rf .whl  # wheels for another Python must not be carried along
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "xformers==0.0.35" "hypothesis>=6" sortedcontainers "attrs>=22.2" "markdown>=3.4" "scipy>=1.11"
ls -l .whl
