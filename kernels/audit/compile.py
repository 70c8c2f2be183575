"""Compile recorded launches for NVIDIA targets without a GPU, and read what the compiler reports.

``jobs_for(launches, archs)`` turns each (launch, configuration, architecture) into the exact
``triton.compile`` call a launch on that GPU would make: the signature, constexprs and specialisation
attributes come from Triton's own binder for the target's backend, applied to the launch's real
arguments. Tensors are replaced by stand-ins whose address is that of a CUDA allocation (PyTorch's
caching allocator aligns blocks to 512 B) plus the tensor's own offset, so a view such as k or v
inside a fused qkv buffer keeps the alignment of its offset. Launches that compile to the same
kernel are merged.

``compile_job(job)`` compiles one (in a worker process), takes the shared memory from the compiled
metadata, the MMA instructions from the PTX (``wgmma.mma_async`` / ``mma.sync``, and their static
work: the sum of m * n * k over the instructions in the code) and registers, spill stores and loads
and warnings from ptxas's ``-v`` report: the one Triton's own ptxas run prints when it compiles,
or, when Triton's cache already holds the kernel, a cached report or a fresh run of the wheel's
ptxas with Triton's flags. Reports are cached beside Triton's cache (``<triton cache>/fastvit_audit``),
keyed by the PTX.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import importlib
import json
import os
import re
import subprocess
import tempfile
import warnings

import torch
import triton
from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import create_function_from_signature

SHARED_LIMITS = {90: 232_448, 80: 166_912}  # per-block opt-in shared memory: H100/H200, A100
_ALLOCATION = 1 << 32  # a 512-byte aligned address standing in for a CUDA allocation

_WGMMA = re.compile(r"wgmma\.mma_async\.sync\.aligned\.m(\d+)n(\d+)k(\d+)")
_MMA_SYNC = re.compile(r"\bmma\.sync\.aligned\.m(\d+)n(\d+)k(\d+)")
_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_REGISTERS = re.compile(r"Used (\d+) registers")


def arch_name(arch: int) -> str:
    return f"sm_{arch}"


class _Pointer:
    """What Triton's specialisation reads from a tensor argument: its dtype and address."""

    def __init__(self, t: torch.Tensor):
        self.dtype = t.dtype
        self._address = _ALLOCATION + t.storage_offset() * t.element_size()

    def data_ptr(self) -> int:
        return self._address


@functools.lru_cache(maxsize=None)
def _backend(arch: int):
    return make_backend(GPUTarget("cuda", arch, 32))


@functools.lru_cache(maxsize=None)
def _binder(fn, arch: int):
    backend = _backend(arch)
    return backend, create_function_from_signature(fn.signature, fn.params, backend)


@functools.lru_cache(maxsize=None)
def forwarded_knobs(arch: int) -> tuple[str, ...]:
    """The compilation knobs JITFunction.run passes into a launch's compile options on this Triton:
    those the target backend's options have a field for (3.7 and 3.8: ``instrumentation_mode``; 3.9
    adds ``fpsan_homomorphic_casts``). Detected, so that one version's knob is never read on another."""
    fields = {f.name for f in dataclasses.fields(_backend(arch).parse_options({}))}
    return tuple(sorted(name for name in fields if hasattr(knobs.compilation, name)))


def specialize(launch, config, arch: int) -> dict:
    """The compile job of ``launch`` with ``config`` for ``sm_<arch>``, as JITFunction.run builds it."""
    fn = launch.fn
    backend, binder = _binder(fn, arch)
    kwargs = launch.meta(config)
    kwargs["debug"] = kwargs.get("debug", fn.debug) or knobs.runtime.debug
    for name in forwarded_knobs(arch):
        kwargs[name] = getattr(knobs.compilation, name)
    args = [_Pointer(a) if isinstance(a, torch.Tensor) else a for a in launch.args]
    bound, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    return dict(module=fn.fn.__module__, name=fn.__name__, arch=arch, signature=signature,
                constexprs=constexprs, attrs=attrs, options=dict(options.__dict__))


def job_key(job: dict) -> str:
    parts = [job["arch"], job["module"], job["name"]] + [sorted(job[k].items(), key=repr)
                                                          for k in ("signature", "constexprs", "attrs", "options")]
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def result_key(job: dict, toolchain: str) -> str:
    """What a compile's result depends on: the job (target, signature, constexprs, specialization,
    options), the kernel's source and the Triton functions it calls (``JITFunction.cache_key``), and
    the compilers (``toolchain``: triton's and ptxas's versions). Equal keys compile alike."""
    fn = getattr(importlib.import_module(job["module"]), job["name"])
    options = dict(job["options"])  # the libraries by name: their paths name the venv, not what they hold
    options["extern_libs"] = tuple((name, os.path.basename(path)) for name, path in options.get("extern_libs") or ())
    placed = job_key(dict(job, options=options))
    return hashlib.sha256(f"{placed}|{fn.cache_key}|{toolchain}".encode()).hexdigest()


def jobs_for(launches, archs) -> list[tuple[dict, list]]:
    """Unique compile jobs, each with the (launch, config) pairs that compile to it."""
    unique: dict[str, tuple[dict, list]] = {}
    for arch in archs:
        for launch in launches:
            for config in launch.configs:
                job = specialize(launch, config, arch)
                unique.setdefault(job_key(job), (job, []))[1].append((launch, config))
    return list(unique.values())


# ------------------------------------------------------------------------------------------------
# In the worker process
# ------------------------------------------------------------------------------------------------
def worker_init() -> None:
    # Triton 3.9 warns once per process that TRITON_DEFAULT_FP_FUSION is unset; the audit compiles
    # with whatever default a launch gets, so the notice says nothing about the kernels.
    warnings.filterwarnings("ignore", message=".*TRITON_DEFAULT_FP_FUSION.*")


def ptxas_tool(arch: int):
    """The ptxas Triton assembles for ``sm_<arch>`` with (shipped in the wheel); RuntimeError if absent."""
    from triton.backends.nvidia.compiler import get_ptxas
    return get_ptxas(arch)


def _ptxas_flags(arch: int, options: dict) -> list[str]:
    """The flags Triton assembles with by default (backends/nvidia/compiler.py, make_cubin; alike in
    3.7, 3.8 and 3.9), ``-v`` included."""
    from triton.backends.nvidia.compiler import sm_arch_from_capability

    return ["-lineinfo", *([] if options.get("enable_fp_fusion") else ["--fmad=false"]), "-v",
            "--regAllocOptLevel=2", *(options.get("ptx_options") or "").split(),
            f"--gpu-name={sm_arch_from_capability(arch)}"]


def _parse_ptxas(log: str, returncode: int = 0) -> dict:
    spills = [tuple(map(int, m)) for m in _SPILLS.findall(log)]
    registers = [int(r) for r in _REGISTERS.findall(log)]
    return dict(
        registers=max(registers) if registers else None,
        spill_stores=sum(s for s, _ in spills), spill_loads=sum(ld for _, ld in spills),
        ptxas_warnings=[line.strip() for line in log.splitlines() if "warning" in line.lower()],
        ptxas_error=None if returncode == 0 else f"ptxas exited with {returncode}: {log.strip()[-500:]}",
    )


def _ptxas(ptx: str, arch: int, options: dict, log: str | None = None) -> dict:
    """ptxas's report on ``ptx``: parsed from ``log`` (Triton's own ptxas run) when it holds one, else
    from the cache, else from running ptxas."""
    tool, flags = ptxas_tool(arch), _ptxas_flags(arch, options)
    key = hashlib.sha256("\0".join([tool.path, tool.version, *flags, ptx]).encode()).hexdigest()
    cache = os.path.join(knobs.cache.dir, "fastvit_audit", f"ptxas-{key}.json")
    if log and _REGISTERS.search(log):
        result = _parse_ptxas(log)
    elif os.path.exists(cache):
        with open(cache) as f:
            return json.load(f)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "kernel.ptx")
            with open(path, "w") as f:
                f.write(ptx)
            proc = subprocess.run([tool.path, *flags, path, "-o", os.path.join(tmp, "kernel.cubin")],
                                  capture_output=True, text=True)
        result = _parse_ptxas(proc.stdout + proc.stderr, proc.returncode)
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    with open(cache + f".{os.getpid()}", "w") as f:
        json.dump(result, f)
    os.replace(cache + f".{os.getpid()}", cache)
    return result


def mma_of(ptx: str) -> dict:
    """The MMA instructions of a PTX listing: kind and static work (sum of m * n * k)."""
    wgmma, mma = _WGMMA.findall(ptx), _MMA_SYNC.findall(ptx)
    kinds = (["wgmma"] if wgmma else []) + (["mma.sync"] if mma else [])
    work = sum(int(m) * int(n) * int(k) for m, n, k in wgmma + mma)
    return dict(mma=kinds[0] if kinds else "none", mma_kinds=kinds, mma_instructions=len(wgmma) + len(mma),
                mma_work=work)


def compile_job(job: dict) -> dict:
    """Compile one job for its target; returns the measurements (``compiled`` False with ``error``)."""
    out = dict(compiled=False, error=None, shared_bytes=None, registers=None, spill_stores=None, spill_loads=None,
               spill_bytes=None, mma="none", mma_kinds=[], mma_instructions=0, mma_work=0, wgmma_serialized=False,
               ptxas_warnings=[])
    try:
        fn = getattr(importlib.import_module(job["module"]), job["name"])
        src = ASTSource(fn, job["signature"], job["constexprs"], job["attrs"])
        log = io.StringIO()  # on a cold compile, Triton prints its ptxas -v log here
        with knobs.nvidia.scope(), contextlib.redirect_stdout(log):
            knobs.nvidia.dump_ptxas_log = True
            compiled = triton.compile(src, target=GPUTarget("cuda", job["arch"], 32), options=job["options"])
    except Exception as e:  # noqa: BLE001 -- any compiler failure is a finding, reported per config
        text = str(e).strip()
        out["error"] = f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"[:500]
        return out
    ptx = compiled.asm["ptx"]
    out.update(compiled=True, shared_bytes=int(compiled.metadata.shared), **mma_of(ptx))
    report = _ptxas(ptx, job["arch"], job["options"], log.getvalue())
    out.update(registers=report["registers"], spill_stores=report["spill_stores"],
               spill_loads=report["spill_loads"], spill_bytes=report["spill_stores"] + report["spill_loads"],
               ptxas_warnings=report["ptxas_warnings"],
               wgmma_serialized=any("serialized" in w for w in report["ptxas_warnings"]))
    if report["ptxas_error"]:
        out["error"] = report["ptxas_error"]
    return out
