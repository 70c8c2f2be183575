"""FASTVIT_AUTOTUNE: the search spaces the GPU kernels autotune over (built at import, no GPU needed)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kernels._common import autotune_mode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("value, mode", [(None, "on"), ("", "on"), ("1", "on"), ("ON", "on"),
                                         ("0", "off"), ("off", "off"), ("full", "full"), (" Full ", "full")])
def test_mode_parsing(monkeypatch, value, mode):
    if value is None:
        monkeypatch.delenv("FASTVIT_AUTOTUNE", raising=False)
    else:
        monkeypatch.setenv("FASTVIT_AUTOTUNE", value)
    assert autotune_mode() == mode


def test_bad_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv("FASTVIT_AUTOTUNE", "fast")
    with pytest.raises(ValueError, match=r"FASTVIT_AUTOTUNE='fast' is not a valid setting; expected one of on, full, off"):
        autotune_mode()


_PROBE = """
import importlib, json, os, sys
as_dicts = lambda configs: [dict(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages) for c in configs]
out = {}
for mode in sys.argv[1:]:
    # FASTVIT_AUTOTUNE is read when a kernel module is imported: each mode imports them afresh
    for name in [m for m in sys.modules if m == "kernels" or m.startswith("kernels.")]:
        del sys.modules[name]
    os.environ["FASTVIT_AUTOTUNE"] = mode
    importlib.import_module("kernels")
    from kernels._common import SPACES
    from kernels.audit.capture import base_fn, launchable_kernels
    tuned = [k for k in launchable_kernels() if hasattr(k, "configs")]
    fa = [k for k in tuned if base_fn(k).__name__.startswith("_flash_attn")]
    pruned = {f"{base_fn(k).__name__}-{ieee}-{d}-{d2}": as_dicts(k.early_config_prune(
                  SPACES[base_fn(k).__name__]["on"], {}, IEEE=ieee, BLOCK_D=d, BLOCK_D2=d2, HAS_BIAS=False))
              for k in fa for ieee in (False, True) for d, d2 in ((64, 0), (64, 16), (256, 0))}
    out[mode] = {"active": {base_fn(k).__name__: as_dicts(k.configs) for k in tuned},
                 "spaces": {name: {m: as_dicts(cs) for m, cs in sp.items()} for name, sp in SPACES.items()},
                 "pruned": pruned}
print(json.dumps(out))
"""

KERNELS = ["_flash_attn_fwd_kernel", "_flash_attn_bwd_dkdv_kernel", "_flash_attn_bwd_dq_kernel",
           "_patch_embed_fwd_kernel", "_patch_embed_bwd_dweight_kernel", "_patch_embed_bwd_dimages_kernel"]


def _gpu_spaces(*modes: str) -> dict:
    """Per FASTVIT_AUTOTUNE mode, the GPU kernels' autotuning configs, from an interpreter-free Python
    (importing kernels builds the autotuners without touching a GPU): one process, which imports the
    kernel modules afresh for each mode (torch and triton are imported once, not once a mode)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "FASTVIT_AUTOTUNE")}
    out = subprocess.run([sys.executable, "-c", _PROBE, *modes], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def spaces():
    return _gpu_spaces("off", "on", "full")


def test_the_setting_picks_the_space(spaces):
    """Every autotuner tunes over its kernel's space for the setting; the spaces themselves (data in
    kernels._common.SPACES, read by the audit) do not depend on it."""
    for mode in ("off", "on", "full"):
        assert sorted(spaces[mode]["active"]) == sorted(KERNELS)
        for name in KERNELS:
            assert spaces[mode]["active"][name] == spaces[mode]["spaces"][name][mode]
            assert spaces[mode]["spaces"][name] == spaces["on"]["spaces"][name]


def test_gpu_search_spaces(spaces):
    table = spaces["on"]["spaces"]
    interpreter_blocking = [{"BLOCK_M": 32, "BLOCK_N": 32}] * 3 + [
        {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32}, {"BLOCK_E": 32, "BLOCK_K": 32, "BLOCK_R": 32},
        {"BLOCK_M": 32, "BLOCK_K": 32, "BLOCK_E": 32}]
    for name, blocks in zip(KERNELS, interpreter_blocking):  # off: exactly the blocking CI verifies
        warps = 8 if name == "_flash_attn_bwd_dkdv_kernel" else 4  # with 4, its fp32 build spills
        assert table[name]["off"] == [dict(blocks, num_warps=warps, num_stages=2)]
        small, large = table[name]["on"], table[name]["full"]
        assert 1 < len(small) < len(large)
        keys = [json.dumps(c, sort_keys=True) for c in small]
        assert len(set(keys)) == len(small), "duplicate configs"
        assert set(keys) <= {json.dumps(c, sort_keys=True) for c in large}, "the default space is part of the wide one"


@pytest.mark.parametrize("mode", ["on"])
def test_flash_attention_pruning(spaces, mode):
    """fp32 launches keep only small FMA tiles (at most 32 x 64 elements), fp16 / bf16 launches only
    tensor-core tiles of 64 rows or columns and up; each keeps at least two, at every head width."""
    for key, kept in spaces[mode]["pruned"].items():
        fp32 = key.split("-")[1] == "True"
        assert len(kept) >= 2, key
        if fp32:
            assert all(c["BLOCK_M"] * c["BLOCK_N"] <= 32 * 64 for c in kept), key
        else:
            assert all(max(c["BLOCK_M"], c["BLOCK_N"]) >= 64 for c in kept), key
