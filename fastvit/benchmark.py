"""Measurement machinery of the resolution sweep (``benchmarks/``), reusable on its own.

- FLOP and byte models: what the throughput columns of a report mean.
- Peak memory of one call, measured: on CUDA the caching allocator's peak after
  ``reset_peak_memory_stats`` minus what was allocated before the call; on CPU the peak of the
  running sum of torch's allocation and free events recorded by ``torch.profiler``
  (``profile_memory=True``). ``tracemalloc`` never sees torch's allocator and ``ru_maxrss`` cannot be
  reset, so neither is used; :func:`rss_peak_memory` (the RSS high-water mark after resetting it via
  ``/proc/self/clear_refs``) is kept as a cross-check.
- Timing: one configuration is a :class:`Case`; :meth:`Sweep.run` checks it can run here and fits
  the time budget, measures its memory in a call of its own, then times it with pytest-benchmark's
  ``pedantic`` (explicit rounds). On CUDA every timed round is bracketed by synchronisations and
  preceded, untimed, by a 256 MB write that flushes the L2 cache; CUDA-event times of the same rounds
  are kept as ``kernel_median_s`` (quartiles ``kernel_q1_s``, ``kernel_q3_s``): the report's CUDA
  figures, free of the synchronisation and Python around each round.
- The device's own yardsticks, measured in the same run: GEMM throughput (fp32 on CPU, the sweep's
  dtype on GPU) and copy bandwidth.
- The environment of a run (versions, device, threads, commit, command line) and the JSONL writer
  that appends each row as soon as it is measured.

Nothing here touches CUDA at import time.
"""
from __future__ import annotations

import datetime
import gc
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from fastvit.errors import BackendError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
OPS = ("attention", "vit", "layernorm", "patch_embed")
PASSES = ("fwd", "train")

# Backends that hold the (B, H, N, N) score matrix: used only to refuse, before running, a CPU
# configuration whose matrices cannot fit in memory (a real CPU OOM kills the process).
MATERIALIZING = {"naive", "sdpa-math"}


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


def num_tokens(resolution: int, patch: int) -> int:
    """Tokens of a square image: (res / patch)^2 patches plus the CLS token."""
    return (resolution // patch) ** 2 + 1


def split_impl(impl: str) -> tuple[str, bool]:
    """``"sdpa+compile"`` -> ``("sdpa", True)``: a backend and whether torch.compile wraps it."""
    base, plus, rest = impl.partition("+")
    if plus and rest != "compile":
        raise ValueError(f"unknown implementation suffix in {impl!r} (only '+compile')")
    return base, bool(plus)


# -- FLOP and byte models ---------------------------------------------------------------------------
def attention_flops(batch: int, heads: int, tokens: int, head_dim: int, pass_: str = "fwd") -> float:
    """softmax(q k^T) v on (B, H, N, D): forward 4 * B * H * N^2 * D (two N x N x D matmuls of
    2 * N^2 * D FLOPs each); backward 2.5x the forward (five matmuls, counting the recomputed
    q k^T, as FlashAttention and PyTorch's SDPA benchmarks do), so a training step is 3.5x."""
    fwd = 4.0 * batch * heads * tokens ** 2 * head_dim
    return fwd * (3.5 if pass_ == "train" else 1.0)


def vit_flops(cfg, batch: int, resolution: int, pass_: str = "fwd") -> float:
    """A ViT forward: 2 * MACs of the patch-embedding GEMM, every block's qkv, proj, fc1 and fc2,
    and the head, plus attention's 4 * B * H * N^2 * D per block. Norms, softmax, GELU and adds
    are not counted. A training step counts the backward as 2x the forward, so 3x in all."""
    patch, E, C = cfg.patch_size, cfg.embed_dim, cfg.in_chans
    patches = (resolution // patch) ** 2
    N = patches + 1
    hidden = int(E * cfg.mlp_ratio)
    stem = 2.0 * batch * patches * E * C * patch * patch
    linears = 2.0 * batch * N * (3 * E * E + E * E + 2 * E * hidden)  # qkv, proj, fc1, fc2
    attn = attention_flops(batch, cfg.num_heads, N, E // cfg.num_heads)
    head = 2.0 * batch * E * cfg.num_classes
    fwd = stem + cfg.depth * (linears + attn) + head
    return fwd * (3.0 if pass_ == "train" else 1.0)


def add_layer_norm_bytes(rows: int, hidden: int, elem: int, pass_: str = "fwd") -> float:
    """Bytes a fused ``y = LN(x + residual)`` (also returning ``s = x + residual``) must move.

    Forward: read x and residual, write y and s (4 * M * E elements, plus weight and bias).
    Backward: read dy, ds and s, write dx (which is also d residual), 4 * M * E, plus the
    parameters and their gradients. An unfused implementation moves more; every backend is
    charged the same minimum, so GB/s compares like with like (the "effective bandwidth")."""
    fwd = (4 * rows * hidden + 2 * hidden) * elem
    bwd = (4 * rows * hidden + 4 * hidden) * elem
    return float(fwd + (bwd if pass_ == "train" else 0))


def patch_embed_bytes(batch: int, chans: int, resolution: int, patch: int, embed: int, elem: int,
                      pass_: str = "fwd") -> float:
    """Bytes of the token stem: read the images, the (E, C, P, P) weight, bias, CLS row and position
    embedding, write (B, 1 + N, E) tokens. Backward (the images need no gradient): read the token
    gradient and the images again, write the weight, bias, CLS and position-embedding gradients."""
    tokens = num_tokens(resolution, patch)
    images = batch * chans * resolution * resolution
    weight = embed * chans * patch * patch
    out = batch * tokens * embed
    params = weight + embed + tokens * embed + embed
    fwd = images + params + out
    bwd = out + images + params
    return float((fwd + (bwd if pass_ == "train" else 0)) * elem)


def patch_embed_flops(batch: int, chans: int, resolution: int, patch: int, embed: int, pass_: str = "fwd") -> float:
    """2 * MACs of the patch GEMM (B * N, C * P * P) x (C * P * P, E); the weight gradient doubles
    it in a training step (the images need no gradient)."""
    fwd = 2.0 * batch * (resolution // patch) ** 2 * embed * chans * patch * patch
    return fwd * (2.0 if pass_ == "train" else 1.0)


# -- peak memory ------------------------------------------------------------------------------------
def cuda_peak_memory(fn: Callable[[], Any], device: torch.device) -> int:
    """Bytes the caching allocator held at its peak during ``fn()`` beyond what was already allocated."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    out = fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del out
    return int(peak)


def cpu_peak_memory(fn: Callable[[], Any]) -> int:
    """Peak bytes torch allocated on the CPU during ``fn()`` beyond what was allocated before.

    torch.profiler records every CPU allocation and free of torch's allocator as a ``[memory]`` event
    with signed size; the peak of their running sum, in time order, is the call's peak. The returned
    value is dropped inside the profiled region, so its free is recorded too (it does not change the
    peak)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
        del out
    results = getattr(prof.profiler, "kineto_results", None)
    if results is None:
        raise RuntimeError("this torch.profiler exposes no allocation events (kineto_results)")
    events = sorted((e.start_ns(), e.nbytes()) for e in results.events()
                    if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    running = peak = 0
    for _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
    return int(peak)


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not found in /proc/self/status")


def rss_peak_memory(fn: Callable[[], Any]) -> int:
    """Cross-check for :func:`cpu_peak_memory` (Linux): the process's RSS high-water mark after
    resetting it (``echo 5 > /proc/self/clear_refs``), minus the RSS before the call. glibc reuses
    freed heap pages without touching the RSS, so small peaks read low; large ones agree."""
    Path("/proc/self/clear_refs").write_text("5")
    base = _status_kib("VmRSS")
    out = fn()
    del out
    return max(0, _status_kib("VmHWM") - base)


def peak_memory(fn: Callable[[], Any], device: torch.device) -> int:
    device = torch.device(device)
    if device.type == "cuda":
        return cuda_peak_memory(fn, device)
    return cpu_peak_memory(fn)


def available_memory(device: torch.device) -> int | None:
    """Free bytes on the device (CPU: MemAvailable), or None when unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return _meminfo_bytes("MemAvailable")
    except (OSError, RuntimeError):
        return None


def _meminfo_bytes(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/meminfo")


def is_oom(err: BaseException) -> bool:
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


# -- timing -----------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class L2Flush:
    """Writes a 256 MB buffer (more than any GPU's L2) so the next kernel starts from a cold cache,
    as ``triton.testing.do_bench`` does. Allocated on first use; a no-op on CPU."""

    SIZE = 256 * 2 ** 20

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self._buffer = None

    def __call__(self) -> None:
        if self.device.type != "cuda":
            return
        if self._buffer is None:
            self._buffer = torch.empty(self.SIZE, dtype=torch.int8, device=self.device)
        self._buffer.zero_()


def time_call(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds of one call, synchronised on both sides."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, size: int | None = None, reps: int = 5) -> float:
    """Best FLOP/s over ``reps`` calls of a large square GEMM (2 * n^3 FLOPs): the device's practical
    matmul peak."""
    device = torch.device(device)
    n = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = _repeat(lambda: torch.mm(a, b), device, reps)
    return 2.0 * n ** 3 / min(times)


def measure_copy_bandwidth(device: torch.device, nbytes: int | None = None, reps: int = 5) -> float:
    """Best bytes/s over ``reps`` device-to-device copies (each reads and writes ``nbytes``)."""
    device = torch.device(device)
    nbytes = nbytes or (2 ** 30 if device.type == "cuda" else 256 * 2 ** 20)
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    times = _repeat(lambda: dst.copy_(src), device, reps)
    return 2.0 * nbytes / min(times)


def _repeat(fn: Callable[[], Any], device: torch.device, reps: int) -> list[float]:
    fn()
    fn()
    if device.type != "cuda":
        return [time_call(fn, device) for _ in range(reps)]
    out = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        out.append(start.elapsed_time(end) / 1e3)
    return out


# -- environment ------------------------------------------------------------------------------------
def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name(device: torch.device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_slug(device: torch.device) -> str:
    """A directory name for a device's results: ``cpu-amd-epyc``, ``cuda-nvidia-h100-80gb-hbm3``."""
    device = torch.device(device)
    name = re.sub(r"\(r\)|\(tm\)|\bcpu\b|@.*$|\bprocessor\b", "", device_name(device).lower())
    name = re.sub(r"[^a-z0-9]+", "-", name).strip("-")
    return f"{device.type}-{name}" if name else device.type


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit(cwd: str | os.PathLike | None = None) -> dict:
    """``{"id": sha, "dirty": bool}`` of the checkout, or ``{}`` outside a git repository. Changes under
    reports/ do not count: a sweep that regenerates a committed report rewrites them itself."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    try:
        sha = git("rev-parse", "HEAD")
        if sha.returncode:
            return {}
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                    ":(top,exclude)reports").stdout.strip() != ""
        return {"id": sha.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {}


def _triton_autotune_mode() -> str | None:
    """FASTVIT_AUTOTUNE as the Triton kernels read it (None without triton)."""
    if importlib.util.find_spec("triton") is None:
        return None
    from kernels._common import autotune_mode  # imports triton: only once a sweep is running
    return autotune_mode()


def environment(device: torch.device, command: str | None = None) -> dict:
    """Versions, device and settings that a results file must carry (no GPU queries unless ``device``
    is CUDA)."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    env = {
        "device": device.type,
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "triton": _package_version("triton"),
        "xformers": _package_version("xformers"),
        "triton_autotune": _triton_autotune_mode(),
        "pytest_benchmark": _package_version("pytest-benchmark"),
        "git": git_commit(),
        "datetime": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command if command is not None else shlex.join(sys.argv),
        "peak_memory_method": ("torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus the "
                               "memory allocated before the call") if cuda else
                              ("torch.profiler allocation events (profile_memory=True): peak of the running "
                               "sum of torch's CPU allocations and frees during the call"),
        "timing_method": ("pytest-benchmark pedantic rounds, each bracketed by torch.cuda.synchronize and "
                          "preceded by an untimed 256 MB L2 flush; CUDA-event times of the same rounds in "
                          "kernel_median_s / kernel_q1_s / kernel_q3_s, which fastvit report uses") if cuda else
                         (f"pytest-benchmark pedantic rounds (time.perf_counter) on "
                          f"{torch.get_num_threads()} torch threads"),
    }
    if cuda:
        props = torch.cuda.get_device_properties(device)
        env["gpu_memory_bytes"] = int(props.total_memory)
        env["gpu_capability"] = f"{props.major}.{props.minor}"
    return env


# -- results ----------------------------------------------------------------------------------------
def _jsonable(value):
    if isinstance(value, (torch.dtype, torch.device, Path)):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class RowWriter:
    """Appends one JSON object per line and flushes it to disk at once, so an interrupted sweep keeps
    every row already measured. ``truncate=True`` starts a new file."""

    def __init__(self, path: str | os.PathLike, truncate: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if truncate:
            self.path.write_text("")

    def write(self, record: dict) -> None:
        line = json.dumps(record, default=_jsonable, allow_nan=False)
        with self.path.open("a") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())


# -- one configuration and the sweep ----------------------------------------------------------------
@dataclass
class Workload:
    """What a case's ``build()`` returns: the call to time and an untimed per-round reset."""

    fn: Callable[[], Any]
    reset: Callable[[], None] | None = None
    info: dict = field(default_factory=dict)  # extra row fields known only once built (sdpa_kernel)


@dataclass
class Case:
    """One configuration of one op: identity, analytic work and a lazy builder.

    ``build`` allocates the inputs (and model) and returns a :class:`Workload`; it is called only
    when the case can run here and fits its budgets. ``skip`` says why it cannot run at all.
    """

    op: str
    backend: str
    fields: dict                       # model, resolution, tokens, batch, dtype, pass, ...
    build: Callable[[], Workload] | None
    flops: float | None = None
    bytes: float | None = None
    skip: str | None = None
    matrix_bytes: float | None = None  # bytes of the N x N matrices a materializing backend holds


class Skip(Exception):
    """A configuration that is recorded with a non-ok status instead of a timing."""

    def __init__(self, status: str, row: dict):
        super().__init__(status)
        self.status = status
        self.row = row


@dataclass
class Sweep:
    """Runs cases on one device under one policy and records every row.

    Time policy: a configuration whose single call would take more than ``time_budget / min_rounds``
    seconds is recorded as ``skipped``, judged in this order: its FLOPs at the measured matmul peak
    (a lower bound); the call measured at the next smaller size of the same series, scaled by the
    ratio of FLOPs (or bytes); its own first call. Otherwise it gets about ``target_time / call``
    timed rounds, at least ``min_rounds`` and at most ``max_rounds`` and ``time_budget / call``.
    """

    device: torch.device
    time_budget: float
    writer: RowWriter | None = None
    min_rounds: int = 3
    max_rounds: int = 100
    target_time: float = 1.0
    warmup_rounds: int = 1
    matmul_peak: dict = field(default_factory=dict)  # dtype name -> FLOP/s
    copy_bandwidth: float | None = None
    env: dict = field(default_factory=dict)
    unmeasured: list = field(default_factory=list)  # rows with a status other than "ok"
    rows: list = field(default_factory=list)
    _probes: dict = field(default_factory=dict, repr=False)  # series -> [(work, seconds of one call)]
    _flush: L2Flush | None = field(default=None, repr=False)

    @classmethod
    def for_device(cls, device, time_budget: float | None = None, writer: RowWriter | None = None,
                   dtypes=("fp32",), command: str | None = None) -> "Sweep":
        """A sweep with the device's defaults, its matmul peak (per dtype) and copy bandwidth measured."""
        device = torch.device(device)
        cuda = device.type == "cuda"
        budget = time_budget if time_budget is not None else (10.0 if cuda else 30.0)
        sweep = cls(device=device, time_budget=budget, writer=writer,
                    min_rounds=10 if cuda else 3, max_rounds=200 if cuda else 100,
                    target_time=min(0.5 if cuda else 1.0, budget / 10), warmup_rounds=3 if cuda else 1)
        peak_dtypes = set(dtypes) | ({"fp32"} if not cuda else set())
        sweep.matmul_peak = {d: measure_matmul_peak(device, DTYPES[d]) for d in sorted(peak_dtypes)}
        sweep.copy_bandwidth = measure_copy_bandwidth(device)
        if not cuda:
            cpu_peak_memory(lambda: torch.ones(8))  # the profiler's first use is slow: keep it out of the probes
        sweep.env = environment(device, command)
        sweep.env.update(matmul_flops_per_s=sweep.matmul_peak, copy_bytes_per_s=sweep.copy_bandwidth,
                         time_budget_s=budget, min_rounds=sweep.min_rounds, max_rounds=sweep.max_rounds,
                         target_time_s=sweep.target_time)
        if writer is not None:
            writer.write({"environment": sweep.env})
        return sweep

    # -- rows --
    def base_row(self, case: Case) -> dict:
        row = {"op": case.op, "backend": case.backend, **case.fields, "device": self.device.type,
               "device_name": self.env.get("device_name") or device_name(self.device)}
        if self.device.type == "cpu":
            row["threads"] = torch.get_num_threads()
        row["flops"] = case.flops
        if case.bytes is not None:
            row["bytes"] = case.bytes
        return row

    def _record(self, row: dict, status: str) -> dict:
        row["status"] = status
        if status != "ok":
            self.unmeasured.append(row)
        self.rows.append(row)
        if self.writer is not None:
            self.writer.write(row)
        return row

    def _skip(self, row: dict, status: str):
        raise Skip(status, self._record(row, status))

    @staticmethod
    def _series_key(case: Case) -> tuple:
        """Configurations that differ only in size: a measured call of one predicts the others."""
        rest = tuple(sorted((k, str(v)) for k, v in case.fields.items() if k not in ("resolution", "tokens")))
        return (case.op, case.backend) + rest

    # -- the measurement --
    def run(self, case: Case, benchmark) -> dict:
        """Measure ``case`` with the pytest-benchmark fixture ``benchmark``; return the "ok" row.

        Raises :class:`Skip` (after recording the row) for "skipped: ..." and "oom" outcomes.
        """
        row = self.base_row(case)
        base, _ = split_impl(case.backend)
        if case.skip:
            self._skip(row, f"skipped: {case.skip}")
        if getattr(benchmark, "disabled", False):
            self._skip(row, "skipped: timing disabled (--benchmark-disable)")
        if self.device.type == "cpu" and base == "triton":
            self._skip(row, "skipped: Triton kernels run on CPU only in Triton's interpreter, whose timings "
                            "say nothing about the kernel; measured on CUDA only")
        per_call = self.time_budget / self.min_rounds
        peak = self.matmul_peak.get(row.get("dtype", "fp32"))
        if case.flops and peak:
            estimate = case.flops / peak
            if estimate > per_call:
                self._skip(row, f"skipped: over the time budget ({case.flops / 1e9:.0f} GFLOP take at least "
                                f"{estimate:.1f} s per call at the measured matmul peak of {peak / 1e9:.0f} "
                                f"GFLOP/s; budget {self.time_budget:g} s for {self.min_rounds} rounds)")
        work_now = case.flops or case.bytes
        series = self._series_key(case)
        smaller = [(w, t) for w, t in self._probes.get(series, []) if work_now and w <= work_now]
        if smaller:
            w, t = max(smaller)
            estimate = t * work_now / w
            if estimate > per_call:
                self._skip(row, f"skipped: over the time budget (estimated {estimate:.1f} s per call: "
                                f"{t:.2f} s measured at a smaller size, scaled by the work ratio "
                                f"{work_now / w:.1f}; budget {self.time_budget:g} s for {self.min_rounds} rounds)")
        if self.device.type == "cpu" and base in MATERIALIZING and case.matrix_bytes:
            free = available_memory(self.device)
            if free is not None and case.matrix_bytes > 0.8 * free:
                self._skip(row, f"skipped: its N x N matrices need about {case.matrix_bytes / 2 ** 30:.1f} GiB, "
                                f"more than the {free / 2 ** 30:.1f} GiB of memory available")
        try:
            status, kernel_times = self._measure(case, row, benchmark, per_call, work_now, series)
        except BackendError as err:  # a pinned kernel that PyTorch refuses for this size
            status = f"skipped: {err}"
        except Exception as err:
            if not is_oom(err):  # a failure: recorded where the report shows it, then raised for pytest
                first_line = (str(err).strip().splitlines() or [""])[0][:300]
                self._record(row, f"error: {type(err).__name__}: {first_line}")
                raise
            status = "oom"
        if status is not None:  # raised here, outside the handlers, so no traceback keeps tensors alive
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self._skip(row, status)
        stats = benchmark.stats.stats
        if work_now:
            self._probes.setdefault(series, []).append((work_now, stats.median))
        row.update(median_s=stats.median, iqr_s=stats.iqr, q1_s=stats.q1, q3_s=stats.q3, mean_s=stats.mean,
                   stddev_s=stats.stddev, min_s=stats.min, max_s=stats.max, rounds=stats.rounds)
        if kernel_times:
            row["kernel_median_s"] = statistics.median(kernel_times)
            q1, _, q3 = statistics.quantiles(kernel_times, n=4) if len(kernel_times) > 1 else kernel_times * 3
            row.update(kernel_q1_s=q1, kernel_q3_s=q3)
        if case.flops:
            row["flops_per_s"] = case.flops / stats.median
        if case.bytes is not None:
            row["bytes_per_s"] = case.bytes / stats.median
        return self._record(row, "ok")

    def _measure(self, case: Case, row: dict, benchmark, per_call: float, work_now, series) -> tuple:
        """Build, measure peak memory, probe, time. Returns (non-ok status or None, CUDA-event times)."""
        work = case.build()
        row.update(work.info)
        cuda = self.device.type == "cuda"
        reset = work.reset or (lambda: None)
        compiled = split_impl(case.backend)[1]
        if cuda or compiled:
            reset()
            work.fn()  # compilation, autotuning and library workspaces stay out of memory figure and probe
        if compiled:
            row.update(compile_stats())
        reset()
        start = time.perf_counter()
        row["peak_mem_bytes"] = peak_memory(work.fn, self.device)  # a call of its own, never timed
        call = time.perf_counter() - start
        if cuda:
            reset()
            call = time_call(work.fn, self.device)
        # on CPU the memory call (profiled, so a little slower than a plain one) is the probe of the
        # call's duration; it is never part of the statistics
        if call > per_call:
            if work_now:
                self._probes.setdefault(series, []).append((work_now, call))
            return (f"skipped: over the time budget (one call took {call:.1f} s; budget "
                    f"{self.time_budget:g} s for {self.min_rounds} rounds)"), []
        rounds = max(self.min_rounds, min(self.max_rounds, math.ceil(self.target_time / max(call, 1e-9))))
        rounds = min(rounds, max(self.min_rounds, int(self.time_budget / max(call, 1e-9))))
        # the calls above warmed caches and the allocator; slow CPU calls need no further warm-up round
        warmup = self.warmup_rounds if (cuda or call < 0.1) else 0
        return None, self._time(benchmark, work, rounds, warmup)

    def _time(self, benchmark, work: Workload, rounds: int, warmup: int) -> list[float]:
        """Timed rounds through pytest-benchmark; returns CUDA-event times of the rounds (CUDA only)."""
        device = self.device
        if device.type != "cuda":
            setup = work.reset
            benchmark.pedantic(work.fn, setup=setup, rounds=rounds, warmup_rounds=warmup, iterations=1)
            return []
        if self._flush is None:
            self._flush = L2Flush(device)
        flush = self._flush
        events = []

        def setup():
            if work.reset is not None:
                work.reset()
            flush()
            torch.cuda.synchronize(device)

        def timed():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            work.fn()
            end.record()
            torch.cuda.synchronize(device)
            events.append((start, end))

        benchmark.pedantic(timed, setup=setup, rounds=rounds, warmup_rounds=warmup, iterations=1)
        return [s.elapsed_time(e) / 1e3 for s, e in events[warmup:]]


def maybe_compile(fn: Callable, compiled: bool) -> Callable:
    """``torch.compile(fn)`` for a ``+compile`` row, after clearing dynamo's caches and counters: each
    row compiles afresh (no recompile limit shared across rows silently running eager code) and
    :func:`compile_stats` then describes this row's compilation alone."""
    if not compiled:
        return fn
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    return torch.compile(fn)


def compile_stats() -> dict:
    """Graphs captured and graph breaks since the last :func:`maybe_compile`: a compiled row that broke
    its graph runs partly as eager PyTorch, and its row says so."""
    from torch._dynamo.utils import counters

    breaks = counters.get("graph_break", {})
    return {"compile_graphs": int(counters.get("stats", {}).get("unique_graphs", 0)),
            "compile_graph_breaks": int(sum(breaks.values())),
            "compile_break_reasons": sorted({str(r).strip().splitlines()[0][:200] for r in breaks})}


def row_summary(row: dict) -> str:
    """A short progress line for a row: status, median and peak memory."""
    if row.get("status") != "ok":
        return row.get("status", "?")
    t = row["median_s"]
    parts = [f"{t:.3g} s" if t >= 1 else f"{t * 1e3:.3g} ms"]
    if row.get("peak_mem_bytes") is not None:
        parts.append(f"{row['peak_mem_bytes'] / 2 ** 20:.3g} MiB")
    if row.get("flops_per_s"):
        parts.append(f"{row['flops_per_s'] / 1e9:.3g} GFLOP/s")
    if row.get("bytes_per_s"):
        parts.append(f"{row['bytes_per_s'] / 1e9:.3g} GB/s")
    return "ok  " + ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    """``python -m fastvit.benchmark slug [--device D]`` prints the results directory name of a device."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m fastvit.benchmark")
    p.add_argument("what", choices=["slug", "device"])
    p.add_argument("--device")
    args = p.parse_args(argv)
    device = torch.device(args.device) if args.device else default_device()
    print(device_slug(device) if args.what == "slug" else device.type)
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "DTYPES", "OPS", "PASSES", "Case", "Workload", "Sweep", "Skip", "RowWriter",
    "attention_flops", "vit_flops", "add_layer_norm_bytes", "patch_embed_bytes", "patch_embed_flops",
    "num_tokens", "split_impl", "peak_memory", "cpu_peak_memory", "cuda_peak_memory", "rss_peak_memory",
    "measure_matmul_peak", "measure_copy_bandwidth", "environment", "device_name", "device_slug",
    "compile_stats", "default_device", "maybe_compile", "row_summary",
]
