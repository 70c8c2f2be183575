"""Timing primitives and the device's own yardsticks (GEMM throughput, copy bandwidth).

On CUDA every call timed here is bracketed by synchronisations or CUDA events; an untimed 256 MB
write flushes the L2 cache before a timed round. Nothing here touches CUDA at import time.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch


@dataclass
class Stats:
    """Summary of the timed rounds of one configuration, in seconds."""

    median: float
    iqr: float
    q1: float
    q3: float
    mean: float
    stddev: float
    min: float
    max: float
    rounds: int

    @classmethod
    def of(cls, times: list[float]) -> "Stats":
        q1, _, q3 = statistics.quantiles(times, n=4) if len(times) > 1 else times * 3
        return cls(median=statistics.median(times), iqr=q3 - q1, q1=q1, q3=q3, mean=statistics.fmean(times),
                   stddev=statistics.stdev(times) if len(times) > 1 else 0.0, min=min(times), max=max(times),
                   rounds=len(times))


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



def graph_replay_seconds(fn: Callable[[], Any], device: torch.device, replays: int = 20, repeats: int = 5) -> float:
    """Seconds of one call replayed from a CUDA graph (median of ``repeats`` runs of ``replays``
    replays between CUDA events), as ``triton.testing.do_bench_cudagraph`` measures: launch overhead
    removed, and no L2 flush between replays (optimistic for small tensors). CUDA only; raises
    RuntimeError when the call cannot be captured (a host synchronisation, a CPU tensor, ...)."""
    device = torch.device(device)
    if device.type != "cuda":
        raise RuntimeError(f"CUDA-graph replay needs a CUDA device, not {device}")
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # capture needs warm-up calls on a side stream first
        for _ in range(3):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(replays):
            graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / replays)
    return statistics.median(times)
