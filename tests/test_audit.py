"""kernels.audit: launches captured from the real launchers, compiled for sm_90 / sm_80 without a GPU.

The capture and the compiles need the compiled kernels, not the interpreter's, so they run in one
fresh Python without TRITON_INTERPRET (importing kernels there touches no GPU). The whole audit is
not run here: ``python -m kernels.audit`` is its own step (reports/audit/README.md).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from kernels.audit.versions import AUDITED, SUPPORTED, check, classify


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_PROBE = r"""
import json, sys, warnings
import torch
from kernels.audit import report
from kernels.audit.capture import record_launches
from kernels.audit.compile import compile_job, jobs_for, specialize, worker_init
from kernels.flash_attention import flash_attention

worker_init()
out = {}

def qkv_views(E, H, N=197, dtype=torch.float16):
    qkv = torch.empty(1, N, 3 * E, dtype=dtype, requires_grad=True)
    return qkv.view(1, N, 3, H, E // H).permute(2, 0, 3, 1, 4).unbind(0)

def fwd_bwd(q, k, v):
    o = flash_attention(q, k, v)
    o.backward(torch.empty_like(o))

# (a) the real launches for (1, 2, 197, 64) q/k/v views of a fused qkv projection, default space
launches = record_launches(lambda: fwd_bwd(*qkv_views(128, 2)))
out["launches"] = [dict(name=l.name, kwargs={k: v for k, v in l.kwargs.items() if k.isupper()},
                        configs=[c.all_kwargs() if c else None for c in l.configs],
                        grids=[list(l.grid_for(c)) for c in l.configs]) for l in launches]
fwd = launches[0]
out["fwd_attrs"] = {arch: report.make_row(job, [(fwd, fwd.configs[0])], dict.fromkeys(report.COMPILE_FIELDS))
                    ["divisible_by_16"] for arch, job in ((a, specialize(fwd, fwd.configs[0], a)) for a in (90, 80))}
# k and v 36 fp16 elements (72 bytes, 144 bytes) into the qkv buffer: k is not 16-byte aligned
odd = record_launches(lambda: fwd_bwd(*qkv_views(36, 1, N=20)))[0]
out["odd_attrs"] = report.make_row(specialize(odd, odd.configs[0], 90), [(odd, odd.configs[0])],
                                   dict.fromkeys(report.COMPILE_FIELDS))["divisible_by_16"]

# (c) Swin's window attention (window 7, head dim 32) with its relative position bias, a permuted view
# (1, 3, 49, 49) of the (49 * 49, 3) table: made compact, stride 0 along the batch
from kernels.audit.capture import _window_attention
swin = record_launches(lambda: _window_attention(96, 3, 7, 4, False, torch.float16))
out["swin"] = [dict(name=l.name, kwargs={k: v for k, v in l.kwargs.items() if k.isupper()},
                    bias_strides=[a for a, n in zip(l.args, l.fn.arg_names) if n.startswith("stride_z")])
               for l in swin]

# (d) attention over three packed sequences of 5, 40 and 3 tokens, (1, 2, 48, 64) views of the qkv projection
from kernels.audit.capture import _packed_attention
packed = record_launches(lambda: _packed_attention(128, 2, (5, 40, 3), torch.float16))
out["packed"] = [dict(name=l.name, kwargs={k: v for k, v in l.kwargs.items() if k.isupper()},
                      configs=[c.all_kwargs() if c else None for c in l.configs],
                      grids=[list(l.grid_for(c)) for c in l.configs]) for l in packed]

# (b) one small compile per architecture: the fp16 forward's 64-row tile
small = [c for c in fwd.configs if c.kwargs["BLOCK_M"] == 64][0]
fwd.configs = [small]
rows = []
for job, users in jobs_for([fwd], [90, 80]):
    rows.append(report.make_row(job, users, compile_job(job)))
out["rows"] = rows
print("AUDIT-PROBE " + json.dumps(out, default=str))
"""


def _ptxas_missing() -> str:
    probe = subprocess.run([sys.executable, "-c", "from kernels.audit.compile import ptxas_tool; "
                            "print(ptxas_tool(80).path, ptxas_tool(90).path)"],
                           env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    return "" if probe.returncode == 0 else probe.stderr.strip().splitlines()[-1]


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}


@pytest.fixture(scope="module")
def probe():
    proc = subprocess.run([sys.executable, "-c", _PROBE], env=_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("AUDIT-PROBE ")]
    if proc.returncode != 0 or not lines:
        missing = _ptxas_missing()
        if missing:
            pytest.skip(f"ptxas is not usable here ({missing}); Triton's wheel ships it under "
                        "triton/backends/nvidia/bin")
        raise AssertionError(proc.stderr[-3000:])
    return json.loads(lines[-1][len("AUDIT-PROBE "):])


def test_capture_records_the_real_launches(probe):
    names = [launch["name"] for launch in probe["launches"]]
    assert names == ["_flash_attn_fwd_kernel", "_flash_attn_bwd_preprocess_kernel", "_flash_attn_bwd_dkdv_kernel",
                     "_flash_attn_bwd_dq_kernel"]
    fwd = probe["launches"][0]
    assert fwd["kwargs"] == {"HAS_BIAS": False, "VARLEN": False, "BLOCK_D": 64, "BLOCK_D2": 0, "IEEE": False}
    assert len(fwd["configs"]) >= 2, "the default space keeps several fp16 tiles"
    for config, grid in zip(fwd["configs"], fwd["grids"]):  # one program per query block, batch and head
        assert grid == [-(-197 // config["BLOCK_M"]) * 1 * 2, 1, 1][:len(grid)]
    assert probe["launches"][1]["configs"] == [None], "the preprocess kernel is not autotuned"


def test_packed_launches_cover_each_sequence(probe):
    """Packed sequences: the forward, dK/dV and dQ kernels in their VARLEN mode, one program per block
    of the longest sequence (40 tokens) for each of the 3 sequences and 2 heads; the preprocess as for
    any 48 rows."""
    names = [launch["name"] for launch in probe["packed"]]
    assert names == ["_flash_attn_fwd_kernel", "_flash_attn_bwd_preprocess_kernel", "_flash_attn_bwd_dkdv_kernel",
                     "_flash_attn_bwd_dq_kernel"]
    for launch, block in zip(probe["packed"], ("BLOCK_M", None, "BLOCK_N", "BLOCK_M")):
        if block is None:
            assert launch["configs"] == [None] and launch["grids"][0][0] == -(-48 // launch["kwargs"]["BLOCK_M"]) * 2
            continue
        assert launch["kwargs"]["VARLEN"] is True and launch["kwargs"]["HAS_BIAS"] is False
        for config, grid in zip(launch["configs"], launch["grids"]):
            assert grid[0] == -(-40 // config[block]) * 3 * 2


def test_bias_launches_read_the_bias_in_place(probe):
    """The relative position bias (1, H, N, N), a permuted view of its table whose key dim is not
    unit-stride, reaches every kernel as its H * N * N distinct elements made compact (never expanded
    over the batch): a stride of 0 along the batch it broadcasts over, then N * N, N, 1; the dQ pass
    writes dS, the bias's gradient."""
    names = [launch["name"] for launch in probe["swin"]]
    assert names == ["_flash_attn_fwd_kernel", "_flash_attn_bwd_preprocess_kernel", "_flash_attn_bwd_dkdv_kernel",
                     "_flash_attn_bwd_dq_kernel"]
    for launch in (probe["swin"][0], probe["swin"][2], probe["swin"][3]):
        assert launch["kwargs"]["HAS_BIAS"] is True and launch["kwargs"]["BLOCK_D"] == 32
        assert launch["bias_strides"] == [0, 49 * 49, 49, 1]
    assert probe["swin"][3]["kwargs"]["STORE_DS"] is True


def test_alignment_comes_from_the_views(probe):
    """q, k, v of a (1, 197, 3 * 128) fp16 projection start 0, 256 and 512 bytes in: all 16-byte
    aligned; with E = 36, k starts 72 bytes in and loses the hint while q and v (144 bytes) keep it."""
    for arch in ("90", "80"):
        assert {"Q", "K", "V", "Out", "Lse"} <= set(probe["fwd_attrs"][arch])
    assert "K" not in probe["odd_attrs"] and {"Q", "V", "Out"} <= set(probe["odd_attrs"])


def test_one_compile_per_architecture_reports_resources(probe):
    rows = {row["arch"]: row for row in probe["rows"]}
    assert set(rows) == {"sm_90", "sm_80"}
    for arch, row in rows.items():
        assert row["compiled"] and row["error"] is None, row
        assert 0 < row["shared_bytes"] <= row["shared_limit"]
        assert isinstance(row["registers"], int) and 0 < row["registers"] <= 255
        assert isinstance(row["spill_bytes"], int) and row["spill_bytes"] >= 0
        assert row["mma_work"] > 0
    assert rows["sm_90"]["mma"] == "wgmma" and rows["sm_80"]["mma"] == "mma.sync"
    assert rows["sm_90"]["shared_limit"] == 232448 and rows["sm_80"]["shared_limit"] == 166912


REQUIRED = {"kernel": str, "arch": str, "dtype": str, "variant": str, "config": str, "compiled": bool,
            "error": (str, type(None)), "shared_bytes": int, "shared_limit": int, "registers": int,
            "spill_bytes": int, "mma": str}


def test_rows_have_the_json_schema(probe):
    document = json.loads(json.dumps({"rows": probe["rows"]}))
    for row in document["rows"]:
        for field, kind in REQUIRED.items():
            assert isinstance(row[field], kind), f"{field}: {row[field]!r}"
        assert row["mma"] in ("wgmma", "mma.sync", "none") and row["arch"] in ("sm_90", "sm_80")
        assert row["dtype"] == "fp16" or row["dtype"] == "?"


@pytest.mark.parametrize("version", AUDITED)
def test_committed_report_is_clean_in_the_default_space(version):
    """reports/audit/triton-<version>/audit.json for every audited release, regenerated by make test
    (the command in reports/audit/README.md)."""
    path = os.path.join(ROOT, "reports", "audit", f"triton-{version}", "audit.json")
    assert os.path.exists(path), f"no committed audit for triton {version}"
    with open(path) as f:
        document = json.load(f)
    rows = document["rows"]
    assert document["meta"]["triton"] == version
    assert document["meta"]["space"] == "on" and {"sm_90", "sm_80"} <= set(document["meta"]["archs"])
    assert {r["dtype"] for r in rows} >= {"fp16", "bf16", "fp32"}
    bad = [(r["kernel"], r["arch"], r["dtype"], r["variant"], r["config"]) for r in rows if not r["clean"]]
    assert not bad, f"{len(bad)} configurations fail, overflow, spill or serialize: {bad[:5]}"


def test_every_launch_is_inside_its_device_guard(monkeypatch):
    """Each launcher launches with its inputs' device made current. Recorded on CPU, where the guard is
    a no-op, so each module's guard is replaced by one that notes which device it holds."""
    import importlib

    from kernels.audit import capture

    active: list = []

    class Guard:
        def __init__(self, t):
            self.device = t.device

        def __enter__(self):
            active.append(self.device)

        def __exit__(self, *exc):
            active.pop()

    for name in ("flash_attention", "flash_attention_bwd", "layer_norm", "patch_embed"):
        monkeypatch.setattr(importlib.import_module(f"kernels.{name}"), "device_guard", Guard)
    launches, guards = [], []
    with capture._recorders("on", launches, {}):
        for kernel in capture.launchable_kernels():
            def run(*args, _record=kernel.run, **kwargs):
                guards.append(list(active))
                return _record(*args, **kwargs)
            kernel.run = run
        capture._attention(64, 2, 17, torch.float32)
        capture._add_norm(48, 5, torch.float32, torch.float32, torch.float32)
        capture._norm(48, 5, torch.float32)
        capture._patch_embed(4, 16, 8, torch.float32)
        capture._window_attention(64, 2, 4, 2, True, torch.float32)
        capture._patch_embed(4, 16, 8, torch.float32, T=2)
        capture._packed_attention(64, 2, (3, 5), torch.float32)
    assert len(launches) == 4 + 2 + 2 + 3 + 4 + 3 + 4
    assert guards == [[torch.device("cpu")]] * len(launches)


_CACHE_PROBE = r"""
import json, sys
import kernels.audit as audit
from kernels.audit import run_audit

full = audit.model_launches
def few(space, dtypes):  # three of the real launches, one config each: a cold compile stays short
    launches, refused = full(space, dtypes)
    picked = [l for l in launches if "layer_norm" in l.name][:3]
    for l in picked:
        l.configs = l.configs[:1]
    return picked, refused
audit.model_launches = few

cache = {}
rows, _ = run_audit([80], dtypes=("fp16",), jobs=1, cache=cache, toolchain="t1")
fresh = {(r["kernel"], r["variant"], r["config"]): r for r in rows}
# a forged entry proves reuse: the audit reports what the cache holds for an unchanged key
key = next(iter(cache))
cache[key] = dict(cache[key], registers=999)
again, _ = run_audit([80], dtypes=("fp16",), jobs=1, cache=cache, toolchain="t1")
other, _ = run_audit([80], dtypes=("fp16",), jobs=1, cache={k: dict(v, registers=999) for k, v in cache.items()},
                     toolchain="t2")
from kernels.audit.compile import jobs_for, result_key
job = jobs_for(few("on", ("fp16",))[0], [80])[0][0]
moved = dict(job, options=dict(job["options"], extern_libs=tuple((n, "/elsewhere/venv/" + p.rsplit("/", 1)[-1])
                                                                  for n, p in job["options"]["extern_libs"])))
print("CACHE-PROBE " + json.dumps(dict(n=len(rows), keys=len(cache),
      moved=result_key(job, "t1") == result_key(moved, "t1"),
      forged=sum(r["registers"] == 999 for r in again), other=sum(r["registers"] == 999 for r in other),
      same=all(fresh[(r["kernel"], r["variant"], r["config"])] == r for r in again if r["registers"] != 999))))
"""


def test_results_cache_reuses_only_unchanged_keys():
    """A results cache entry stands in for a compile only under the same key (job, kernel source,
    compilers): one forged entry is reported as cached, every row else equals a fresh compile,
    another toolchain string recompiles everything, and the venv's location is not in the key."""
    proc = subprocess.run([sys.executable, "-c", _CACHE_PROBE], env=_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("CACHE-PROBE ")]
    if proc.returncode != 0 or not lines:
        missing = _ptxas_missing()
        if missing:
            pytest.skip(f"ptxas is not usable here ({missing})")
        raise AssertionError(proc.stderr[-3000:])
    out = json.loads(lines[-1][len("CACHE-PROBE "):])
    assert out["n"] == out["keys"] > 0
    assert out["forged"] == 1 and out["same"] and out["other"] == 0
    assert out["moved"], "the key must not depend on where the venv lies (a clean checkout reuses it)"


def _make_variable(name: str) -> list[str]:
    with open(os.path.join(ROOT, "Makefile")) as f:
        for line in f:
            if line.startswith(f"{name} :="):
                return line.split(":=", 1)[1].split()
    raise AssertionError(f"Makefile sets no {name}")


def test_supported_triton_range_is_declared_and_tested():
    """pyproject.toml declares the audited range; the oldest audited release is its floor, the newest
    is inside it; make test audits each release (the venv's own, the newest, and TRITON_OTHERS) and
    runs the interpreter tests with the oldest (TRITON_OLDEST) beside the venv's."""
    from packaging.specifiers import SpecifierSet

    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        lines = [line.strip().strip('",') for line in f if line.strip().startswith('"triton')]
    assert lines == [f"triton{SUPPORTED}; platform_system == 'Linux'"]
    spec = SpecifierSet(SUPPORTED)
    assert list(AUDITED) == sorted(AUDITED, key=lambda v: tuple(map(int, v.split("."))))
    assert all(spec.contains(v) for v in AUDITED) and not spec.contains("3.7.0")
    assert _make_variable("TRITON_OLDEST") == [AUDITED[0]]
    others = _make_variable("TRITON_OTHERS")
    assert AUDITED[-1] not in others and set(others) | {AUDITED[-1]} == set(AUDITED)


def test_version_check():
    assert [classify(v) for v in AUDITED] == ["audited"] * len(AUDITED)
    assert classify("3.8.1") == classify("3.9.0+git1a2b") == "between"
    assert classify("3.7.0") == classify("3.10.0") == classify("4.0") == "outside"
    line, warning = check("3.8.0", "ptxas 12.9")
    assert line.startswith("triton 3.8.0 (ptxas 12.9): audited") and warning is None
    line, warning = check("3.10.0")
    assert "OUTSIDE" in line and warning.startswith("WARNING: triton 3.10.0 is outside")
    proc = subprocess.run([sys.executable, "-m", "kernels.audit", "--check-version"], env=_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    import triton
    assert proc.returncode == 0 and proc.stdout.startswith(f"triton {triton.__version__} "), proc.stderr


def test_forwarded_knobs_are_those_jit_run_passes():
    """The audit passes the compilation knobs the installed Triton's JITFunction.run passes (detected
    from the backend's options, not assumed): the same names as run's own kwargs["x"] = knobs.compilation.x."""
    import inspect
    import re

    from triton.runtime.jit import JITFunction

    from kernels.audit.compile import forwarded_knobs

    assigned = re.findall(r'kwargs\["(\w+)"\]\s*=\s*knobs\.compilation\.(\w+)', inspect.getsource(JITFunction.run))
    assert all(key == knob for key, knob in assigned)
    for arch in (90, 80):
        assert forwarded_knobs(arch) == tuple(sorted(key for key, _ in assigned))
