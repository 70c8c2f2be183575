"""Peak memory of one call, measured, never computed.

On CUDA the caching allocator's peak after ``reset_peak_memory_stats`` minus what was allocated
before the call; on CPU the peak of the running sum of torch's allocation and free events recorded by
``torch.profiler`` (``profile_memory=True``). ``tracemalloc`` never sees torch's allocator and
``ru_maxrss`` cannot be reset, so neither is used; :func:`rss_peak_memory` (the RSS high-water mark
after resetting it via ``/proc/self/clear_refs``) is kept as a cross-check.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch


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

