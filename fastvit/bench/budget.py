"""The sweep's skip rules, as small pure functions: each returns the status of a configuration that
is not to be timed (``"skipped: <why>"``), or None.

Time policy: ``time_budget`` is the seconds of timed rounds one comparison group may take once it has
``min_rounds`` (fastvit.bench.rounds: the rounds stop earlier when every paired interval is within
±2%, and at ``max_rounds``). A configuration whose single call would take more than ``time_budget /
min_rounds`` seconds is skipped, judged in this order: its FLOPs at the measured matmul peak (a lower
bound); the call measured at the next smaller size of the same series, scaled by the ratio of work;
its own first call. ``min_block``: see fastvit.bench.rounds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    time_budget: float
    min_rounds: int = 3
    max_rounds: int = 100
    warmup_rounds: int = 1
    min_block: float = 0.0  # seconds one member's measurement in a round lasts at least (back-to-back calls)

    @property
    def per_call(self) -> float:
        return self.time_budget / self.min_rounds

    def _tail(self) -> str:
        return f"budget {self.time_budget:g} s for {self.min_rounds} rounds"

    def by_flops(self, flops: float | None, peak: float | None) -> str | None:
        """Over budget at the matmul peak, a lower bound of the call's time."""
        if not flops or not peak or flops / peak <= self.per_call:
            return None
        return (f"skipped: over the time budget ({flops / 1e9:.0f} GFLOP take at least {flops / peak:.1f} s per "
                f"call at the measured matmul peak of {peak / 1e9:.0f} GFLOP/s; {self._tail()})")

    def by_probe(self, work: float | None, probes: list[tuple[float, float]]) -> str | None:
        """Over budget judged by the largest smaller size measured in the same series: ``probes`` holds
        (work, seconds of one call) pairs."""
        smaller = [(w, t) for w, t in probes if work and w <= work]
        if not smaller:
            return None
        w, t = max(smaller)
        estimate = t * work / w
        if estimate <= self.per_call:
            return None
        return (f"skipped: over the time budget (estimated {estimate:.1f} s per call: {t:.2f} s measured at a "
                f"smaller size, scaled by the work ratio {work / w:.1f}; {self._tail()})")

    def by_call(self, seconds: float) -> str | None:
        """Over budget by the configuration's own first call."""
        if seconds <= self.per_call:
            return None
        return f"skipped: over the time budget (one call took {seconds:.1f} s; {self._tail()})"


def by_memory(matrix_bytes: float | None, free: int | None) -> str | None:
    """A configuration holding N x N matrices that cannot fit in the free memory (a real CPU
    out-of-memory kills the process, so it is refused before running)."""
    if not matrix_bytes or free is None or matrix_bytes <= 0.8 * free:
        return None
    return (f"skipped: its N x N matrices need about {matrix_bytes / 2 ** 30:.1f} GiB, more than the "
            f"{free / 2 ** 30:.1f} GiB of memory available")


def by_backend(backends, device_type: str) -> str | None:
    """fastvit's own kernels run on a CPU only in Triton's interpreter, whose timings say nothing
    about the kernel."""
    if device_type == "cpu" and any(b.own_kernel for b in backends):
        return ("skipped: Triton kernels run on CPU only in Triton's interpreter, whose timings say nothing "
                "about the kernel; measured on CUDA only")
    return None
