"""FASTVIT_AUTOTUNE: the search spaces the GPU kernels autotune over (built at import, no GPU needed)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kernels._common import autotune_mode, tuning_space

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("value, mode", [(None, "on"), ("", "on"), ("1", "on"), ("ON", "on"),
                                         ("0", "off"), ("off", "off"), ("full", "full"), (" Full ", "full")])
def test_mode_parsing(monkeypatch, value, mode):
    if value is None:
        monkeypatch.delenv("FASTVIT_AUTOTUNE", raising=False)
    else:
        monkeypatch.setenv("FASTVIT_AUTOTUNE", value)
    assert autotune_mode() == mode
    assert tuning_space("fixed", ["a", "b"], ["a", "b", "c"]) == {"off": ["fixed"], "on": ["a", "b"],
                                                                  "full": ["a", "b", "c"]}[mode]


def test_bad_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv("FASTVIT_AUTOTUNE", "fast")
    with pytest.raises(ValueError, match=r"FASTVIT_AUTOTUNE='fast' is not a valid setting; expected one of on, full, off"):
        autotune_mode()


_PROBE = """
import json, sys, kernels
fa, pe = sys.modules["kernels.flash_attention"], sys.modules["kernels.patch_embed"]
tuned = [fa._fwd_kernel, fa._dkdv_kernel, fa._dq_kernel, pe._fwd_kernel, pe._dweight_kernel, pe._dimages_kernel]
as_dicts = lambda configs: [dict(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages) for c in configs]
pruned = {f"{ieee}-{bd}": [as_dicts(fa._prune_configs(k.configs, {}, IEEE=ieee, BLOCK_D=bd)) for k in tuned[:3]]
          for ieee in (False, True) for bd in (64, 256)}
print(json.dumps({"spaces": [as_dicts(k.configs) for k in tuned], "pruned": pruned}))
"""


def _gpu_spaces(mode: str) -> dict:
    """The GPU kernels' autotuning configs in ``mode``, from a fresh interpreter-free Python (importing
    kernels builds the autotuners without touching a GPU)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["FASTVIT_AUTOTUNE"] = mode
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def spaces():
    return {m: _gpu_spaces(m) for m in ("off", "on", "full")}


def test_gpu_search_spaces(spaces):
    off, on, full = (spaces[m]["spaces"] for m in ("off", "on", "full"))
    interpreter_blocking = [{"BLOCK_M": 32, "BLOCK_N": 32}] * 3 + [
        {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32}, {"BLOCK_E": 32, "BLOCK_K": 32, "BLOCK_R": 32},
        {"BLOCK_M": 32, "BLOCK_K": 32, "BLOCK_E": 32}]
    for configs, blocks in zip(off, interpreter_blocking):  # off: exactly the blocking CI verifies
        assert configs == [dict(blocks, num_warps=4, num_stages=2)]
    for small, large in zip(on, full):
        assert 1 < len(small) < len(large)
        assert len({json.dumps(c, sort_keys=True) for c in small}) == len(small), "duplicate configs"
    for configs in on[:3]:  # flash attention: fp32 and wide heads are pruned to tiles <= 64 x 64
        assert sum(c["BLOCK_M"] * c["BLOCK_N"] <= 64 * 64 for c in configs) >= 2


@pytest.mark.parametrize("mode", ["on", "full"])
def test_flash_attention_pruning(spaces, mode):
    """Wide fp32 heads keep only tiles that fit an H100 block's shared memory (<= 64 per side, two
    stages); fp32 or wide heads alone keep tiles of at most 64 x 64; fp16/bf16 at D <= 128 keep all."""
    full_space, pruned = spaces[mode]["spaces"], spaces[mode]["pruned"]
    for kernel in range(3):
        assert pruned["False-64"][kernel] == full_space[kernel]
        for key in ("True-64", "False-256"):
            assert pruned[key][kernel] and all(c["BLOCK_M"] * c["BLOCK_N"] <= 64 * 64 for c in pruned[key][kernel])
        wide_fp32 = pruned["True-256"][kernel]
        assert len(wide_fp32) >= 2 if mode == "on" else wide_fp32
        assert all(max(c["BLOCK_M"], c["BLOCK_N"]) <= 64 and c["num_stages"] <= 2 for c in wide_fp32)
