"""Interleaved rounds: the members of a comparison group timed round by round in one process.

Each timed round runs every comparison of the group as a pair: the member and its baseline back to
back, in an order drawn per pair, the pairs shuffled (seeded: the orders are reproducible from the
group's seed). A member compared with nothing (a baseline of none, or one whose baseline failed) runs
alone among the pairs. A baseline with several members compared against it so runs once per pair,
and each member keeps the baseline's time from its own pair (``beside``): on a machine whose speed
drifts over seconds, two calls back to back see the same speed, where two calls a round apart do not.
The ratio of a member to its baseline pairs those adjacent times; any other two members of the group
are paired round by round. Warm-up rounds run every member once, alone, in a shuffled order. An
untimed ``reset`` (and on CUDA an L2 flush and a synchronisation) comes before each call.

The rounds adapt, as ``torch.utils.benchmark``'s ``adaptive_autorange`` does: after ``min_rounds``
they go on until every member's paired ratio against its baseline has a 95% interval at most ±2% wide
from at least ``MIN_INTERVAL_ROUNDS`` rounds (``converged``), or the group's ``time_budget`` is spent (``time budget``), or ``max_rounds`` are
done (``max rounds``); which one stopped them is recorded.

A member's measurement is the mean of ``calls`` back-to-back calls (each after its untimed ``reset``):
one call, unless ``min_block`` is set and the member's warm-up call was shorter than that; its count
is then set, from the median call of a burst of ``min_block`` seconds, so that the measurement lasts
about ``min_block`` (on a CPU, one call of a fraction of a millisecond is at the mercy of interrupts
and scheduling). A member running its baseline's very workload (an A/A twin) takes its baseline's
count: a shorter block holds a larger share of the cold first call after another member's, so two
counts would read as a difference. A member's own time in a round is its
measurement in its own pair; a baseline's (compared with nothing itself) is its first measurement of
the round. Python's garbage collector is off during the rounds (as ``timeit`` does), after one
collection.

On CUDA every call is bracketed by CUDA events (``kernel`` times, free of the synchronisation and
Python around the call) besides the host clock. A member whose call raises is dropped from the
following rounds with its exception kept; the others go on.
"""
from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from fastvit.bench.paired import TARGET_HALF_WIDTH, Ratio, converged, paired_ratio


@dataclass
class Member:
    """One timed call of a group: ``fn`` after an untimed ``reset``; compared against member ``baseline``
    (its own index for the group's baseline, None for no comparison)."""

    fn: Callable[[], Any]
    reset: Callable[[], None] | None = None
    baseline: int | None = None
    warmup: int = 0


@dataclass
class Rounds:
    """Per-member, per-round seconds; CUDA-event seconds on CUDA; why the rounds stopped. ``beside[i]``
    holds, round by round, the seconds of member i's baseline in i's own pair (None in a round where
    the baseline was not measured beside it; empty for a member compared with nothing)."""

    times: list[list[float]]
    kernel: list[list[float]] = field(default_factory=list)
    beside: list[list[float | None]] = field(default_factory=list)
    beside_kernel: list[list[float | None]] = field(default_factory=list)
    baselines: list[int | None] = field(default_factory=list)
    stop: str = ""
    seed: int = 0
    failed: dict = field(default_factory=dict)  # member index -> the exception its call raised
    calls: list[int] = field(default_factory=list)  # back-to-back calls per measurement, per member

    @property
    def rounds(self) -> int:
        return max((len(t) for t in self.times), default=0)

    def paired(self, i: int) -> list[float]:
        """The times ratios use: CUDA events where they exist, else the host clock."""
        return self.kernel[i] if self.kernel else self.times[i]

    def paired_beside(self, i: int) -> list[float | None]:
        """Member i's baseline's times from i's own pairs, as :meth:`paired` chooses them."""
        return self.beside_kernel[i] if self.kernel else self.beside[i]

    def ratio(self, i: int, j: int) -> Ratio | None:
        """Member i against member j (None if either failed): against i's baseline, over the pairs of
        the two; against any other member, round by round."""
        if i in self.failed or j in self.failed:
            return None
        if i < len(self.baselines) and self.baselines[i] == j != i and self.beside and self.beside[i]:
            return paired_ratio(self.paired(i), self.paired_beside(i))
        return paired_ratio(self.paired(i), self.paired(j))


def round_units(baselines: list[int | None], failed, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """One timed round's order: each comparison (member i, its baseline) as a pair in a random order of
    the two, every member in no pair on its own, the units shuffled. Failed members are left out."""
    pairs = [(i, b) for i, b in enumerate(baselines)
             if b is not None and b != i and i not in failed and b not in failed]
    paired = {x for p in pairs for x in p}
    units = [p if rng.random() < 0.5 else p[::-1] for p in pairs]
    units += [(i,) for i in range(len(baselines)) if i not in failed and i not in paired]
    return [units[k] for k in rng.permutation(len(units))]


def _check_due(rounds: int, min_rounds: int) -> bool:
    """Whether to test convergence after ``rounds``: at the minimum, then about every eighth more."""
    return rounds >= min_rounds and (rounds == min_rounds or rounds % max(1, rounds // 8) == 0)


MAX_CALLS = 1000  # the most back-to-back calls of one measurement


def calls_for(seconds: float, min_block: float) -> int:
    """Back-to-back calls of ``seconds`` each that make a measurement of at least ``min_block``."""
    if min_block <= 0 or seconds >= min_block:
        return 1
    return min(MAX_CALLS, math.ceil(min_block / max(seconds, 1e-9)))


def _block_calls(m: Member, cuda: bool, flush, device, min_block: float) -> int:
    """The calls of ``m`` that make a measurement of ``min_block``, from the median call of a burst that
    long (one slow call, the first after another member's, would otherwise set the count)."""
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < min_block and len(times) < MAX_CALLS:
        times.append(_one_call(m, cuda, flush, device)[0])
    return calls_for(float(np.median(times)), min_block)


def interleave(members: list[Member], device: torch.device, *, min_rounds: int, max_rounds: int,
               time_budget: float, seed: int, flush: Callable[[], None] | None = None,
               target: float = TARGET_HALF_WIDTH, min_block: float = 0.0) -> Rounds:
    """Time ``members`` in interleaved rounds until converged, out of budget or at ``max_rounds``."""
    collecting = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        return _interleave(members, device, min_rounds, max_rounds, time_budget, seed, flush, target, min_block)
    finally:
        if collecting:
            gc.enable()


def _interleave(members, device, min_rounds, max_rounds, time_budget, seed, flush, target, min_block) -> Rounds:
    cuda = torch.device(device).type == "cuda"
    n = len(members)
    baselines = [m.baseline for m in members]
    out = Rounds(times=[[] for _ in range(n)], kernel=[[] for _ in range(n)] if cuda else [], seed=seed,
                 calls=[1] * n, beside=[[] for _ in range(n)], beside_kernel=[[] for _ in range(n)] if cuda else [],
                 baselines=baselines)
    rng = np.random.default_rng(seed)
    for number in range(max((m.warmup for m in members), default=0)):  # alone, untimed
        for i in rng.permutation(n).tolist():
            m = members[i]
            if i in out.failed or number >= m.warmup:
                continue
            try:
                host, _ = _call(m, cuda, flush, device, out.calls[i])
            except Exception as err:  # recorded by the caller as this member's status
                out.failed[i] = err
                continue
            if number == m.warmup - 1 and calls_for(host, min_block) > 1:  # its last warm-up round sets its count
                out.calls[i] = _block_calls(m, cuda, flush, device, min_block)
    for i, m in enumerate(members):  # an A/A twin (its baseline's very workload) is measured as its baseline is
        if m.baseline is not None and m.baseline != i and m.fn is members[m.baseline].fn:
            out.calls[i] = out.calls[m.baseline]
    spent, r = 0.0, 0
    while True:
        start_round = time.perf_counter()
        _timed_round(members, out, round_units(baselines, out.failed, rng), cuda, flush, device)
        spent += time.perf_counter() - start_round
        r += 1
        if len(out.failed) == n:
            out.stop = "every member failed"
            break
        if r < min_rounds:
            continue
        if r >= max_rounds:
            out.stop = "max rounds"
            break
        if _check_due(r, min_rounds):
            ratios = [out.ratio(i, b) for i, b in enumerate(baselines) if b not in (None, i)]
            if converged([x for x in ratios if x is not None], target):
                out.stop = "converged"
                break
        if spent >= time_budget:
            out.stop = "time budget"
            break
    return out


def _timed_round(members, out: Rounds, units, cuda, flush, device) -> None:
    """One timed round of ``units``: each member's own time, and each member's baseline's beside it."""
    own, first, beside = {}, {}, {}
    for unit in units:
        for k, i in enumerate(unit):
            if i in out.failed:
                continue
            try:
                t = _call(members[i], cuda, flush, device, out.calls[i])
            except Exception as err:  # recorded by the caller as this member's status
                out.failed[i] = err
                continue
            first.setdefault(i, t)
            partner = unit[1 - k] if len(unit) == 2 else None
            if partner is not None and members[partner].baseline == i:
                beside[partner] = t  # i as the baseline in its member's pair
            else:
                own[i] = t
    for i, m in enumerate(members):
        if i in out.failed or i not in first:
            continue
        host, kernel = own.get(i, first[i])
        out.times[i].append(host)
        if cuda:
            out.kernel[i].append(kernel)
        if m.baseline is not None and m.baseline != i:
            b = beside.get(i)
            out.beside[i].append(None if b is None else b[0])
            if cuda:
                out.beside_kernel[i].append(None if b is None else b[1])


def _call(m: Member, cuda: bool, flush, device, calls: int = 1) -> tuple[float, float | None]:
    """Seconds of one call (host clock; CUDA events on CUDA), the mean over ``calls`` calls."""
    times = [_one_call(m, cuda, flush, device) for _ in range(calls)]
    host = sum(h for h, _ in times) / calls
    return host, (sum(k for _, k in times) / calls if cuda else None)


def _one_call(m: Member, cuda: bool, flush, device) -> tuple[float, float | None]:
    if m.reset is not None:
        m.reset()
    if not cuda:
        start = time.perf_counter()
        m.fn()
        return time.perf_counter() - start, None
    if flush is not None:
        flush()
    torch.cuda.synchronize(device)
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start = time.perf_counter()
    begin.record()
    m.fn()
    end.record()
    torch.cuda.synchronize(device)
    host = time.perf_counter() - start
    return host, begin.elapsed_time(end) / 1e3
