"""The environment a results file must carry: versions, device, threads, commit, command line.

No GPU is queried unless the device asked about is CUDA.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import importlib.util
import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path

import torch


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

