#!/usr/bin/env bash
# Creates or refreshes the project's virtual environment and installs fastvit into it.
#
#   scripts/setup_venv.sh VENV EXTRAS
#
# torch is installed before the project so that pip never swaps it (and is pinned while the rest installs):
#   - a torch already in the venv is kept (CPU or CUDA build alike);
#   - on a machine with an NVIDIA GPU, the normal (CUDA) build is installed;
#   - otherwise the CPU build, torch==$FASTVIT_CPU_TORCH (default 2.13.0), is installed. Extra
#     pip arguments for it (an index that serves CPU wheels, say) go in $FASTVIT_TORCH_PIP_ARGS.
#
#   scripts/setup_venv.sh --triton VERSION VENV
#
# installs triton==VERSION alone into VENV/triton-VERSION (kept once installed): put first on
# PYTHONPATH, it stands in for the venv's own triton, with everything else the venv's (make test
# runs the audit and the kernels' interpreter tests with the other supported releases this way).
set -euo pipefail
if [ "${1:-}" = "--triton" ]; then
    version=${2:?usage: scripts/setup_venv.sh --triton VERSION VENV}
    venv=${3:-.venv}
    target="$venv/triton-$version"
    if [ ! -f "$target/.installed" ]; then
        echo "[setup] installing triton==$version into $target"
        rm -rf "$target"
        "$venv/bin/python" -m pip install -q --no-deps --target "$target" "triton==$version"
        touch "$target/.installed"
    fi
    exit 0
fi
venv=${1:-.venv}
extras=${2:-test}
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
    echo "[setup] creating $venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
fi
pip=("$venv/bin/python" -m pip install -q)

if "$venv/bin/python" -c "import torch" 2>/dev/null; then
    echo "[setup] keeping torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)')"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "[setup] NVIDIA GPU found: installing the CUDA build of torch"
    "${pip[@]}" "torch>=2.13"
else
    echo "[setup] no NVIDIA GPU: installing the CPU build torch==${FASTVIT_CPU_TORCH:-2.13.0}"
    # shellcheck disable=SC2086
    "${pip[@]}" ${FASTVIT_TORCH_PIP_ARGS:-} "torch==${FASTVIT_CPU_TORCH:-2.13.0}"
fi

# Pin the torch just installed: an extra that depends on torch (torchvision, which timm needs) then
# resolves to the release built for it, instead of pulling a newer torch (a multi-GB CUDA build).
constraints="$venv/constraints.txt"
"$venv/bin/python" -c 'import torch; print("torch==" + torch.__version__.split("+")[0])' > "$constraints"
echo "[setup] installing fastvit[$extras] (editable) with $(cat "$constraints")"
"${pip[@]}" -c "$constraints" -e ".[$extras]"

# torchvision on PyPI is a CUDA build; beside a CPU torch (or another release's) its compiled ops fail to
# load and a plain `import torchvision` fails, and with it `import timm` (timm needs torchvision) and
# transformers' image classes. fastvit imports the peers through fastvit.optional, which declares the
# missing ops' schemas: where that works, torchvision stays (timm cannot run without it) and the peers
# run. Where even that fails, torchvision is uninstalled so that transformers imports: the torchvision
# and timm peers are then skipped in the sweep with the reason.
if "$venv/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torchvision') is None)"; then
    versions=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("torchvision"), m.version("torch"))')
    tv_version=${versions% *} torch_version=${versions#* }
    if ! why=$("$venv/bin/python" -c "import torchvision" 2>&1); then
        why=$(printf '%s\n' "$why" | tail -n 1)
        if "$venv/bin/python" -c "from fastvit.optional import import_peer; import_peer('timm'); import_peer('torchvision').models.vit_b_16" 2>/dev/null; then
            echo "[setup] WARNING: torchvision $tv_version is not built for torch $torch_version ($why): a plain" \
                 "'import torchvision' or 'import timm' fails in $venv; fastvit imports them through fastvit.optional" \
                 "(the models work, torchvision.ops.nms does not), so the timm and torchvision peers run. For" \
                 "timm outside fastvit, install the torchvision built for torch $torch_version"
        else
            echo "[setup] WARNING: torchvision $tv_version is not built for torch $torch_version ($why) and does not" \
                 "import even through fastvit.optional: uninstalling it so that transformers imports; the" \
                 "torchvision and timm peers (timm needs torchvision) are skipped with this reason"
            "$venv/bin/python" -m pip uninstall -q -y torchvision
        fi
    fi
fi
