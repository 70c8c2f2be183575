"""One configuration -> one row: the sweep's measurement of a :class:`Case`.

:meth:`Sweep.run` applies the skip rules (fastvit.bench.budget), builds the case, measures its peak
memory in a call of its own, probes the call's duration, then times it through a
:data:`~fastvit.bench.timing.Timer` (the pytest adapter in benchmarks/conftest.py times through
pytest-benchmark). On CUDA every timed round is preceded, untimed, by an L2 flush and bracketed by
CUDA events; their times are kept as ``kernel_median_s`` (quartiles ``kernel_q1_s``,
``kernel_q3_s``): the report's CUDA figures, free of the synchronisation and Python around each
round. Every outcome is a row with its status, written the moment it exists; the sweep never raises
to signal a skip.
"""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from fastvit.bench import budget as rules
from fastvit.bench.defaults import defaults_for
from fastvit.bench.env import device_name, environment
from fastvit.bench.memory import available_memory, cpu_peak_memory, is_oom, peak_memory
from fastvit.bench.results import row_key
from fastvit.bench.rows import RowWriter, split_impl
from fastvit.bench.timing import L2Flush, Stats, Timer, measure_copy_bandwidth, measure_matmul_peak, time_call
from fastvit.bench.workload import Workload, compile_stats
from fastvit.devices import DTYPES
from fastvit.errors import BackendError


@dataclass
class Case:
    """One configuration of one op: identity, the backends it runs, analytic work and a lazy builder.

    ``build`` allocates the inputs (and model) and returns a :class:`Workload`; it is called only
    when the case can run here and fits its budgets. ``skip`` says why it cannot run at all.
    """

    op: str
    backend: str                       # the implementation label: a backend, maybe with "+compile"
    fields: dict                       # model, resolution, tokens, batch, dtype, pass, ...
    build: Callable[[], Workload] | None
    backends: tuple = ()               # the registry Backends the case runs (their traits decide skips)
    flops: float | None = None
    bytes: float | None = None
    skip: str | None = None
    matrix_bytes: float | None = None  # bytes of the N x N matrices a materializing backend holds


@dataclass
class Outcome:
    """A finished configuration: its row, and the exception behind an ``error: ...`` status."""

    row: dict
    error: BaseException | None = None
    resumed: bool = False  # recorded by the sweep being resumed, not measured again

    @property
    def status(self) -> str:
        return self.row["status"]


@dataclass
class Sweep:
    """Runs cases on one device under one budget and records every row."""

    device: torch.device
    budget: rules.Budget
    writer: RowWriter | None = None
    matmul_peak: dict = field(default_factory=dict)  # dtype name -> FLOP/s
    copy_bandwidth: float | None = None
    env: dict = field(default_factory=dict)
    unmeasured: list = field(default_factory=list)  # rows with a status other than "ok"
    rows: list = field(default_factory=list)
    recorded: dict = field(default_factory=dict)  # row key -> row of an earlier run being resumed
    resumed: list = field(default_factory=list)   # those rows, as this sweep came to them
    _probes: dict = field(default_factory=dict, repr=False)  # series -> [(work, seconds of one call)]
    _flush: L2Flush | None = field(default=None, repr=False)

    @staticmethod
    def plan(device, time_budget: float | None = None) -> rules.Budget:
        """The budget of a sweep on ``device``: its defaults, with ``time_budget`` seconds if given."""
        d = defaults_for(device)
        seconds = time_budget if time_budget is not None else d.time_budget
        return rules.Budget(seconds, d.min_rounds, d.max_rounds, min(d.target_time, seconds / 10), d.warmup_rounds)

    @staticmethod
    def environment(device, budget: rules.Budget, command: str | None = None) -> dict:
        """What the results file records of this sweep before anything is measured."""
        env = environment(torch.device(device), command)
        env.update(time_budget_s=budget.time_budget, min_rounds=budget.min_rounds, max_rounds=budget.max_rounds,
                   target_time_s=budget.target_time)
        return env

    @classmethod
    def for_device(cls, device, budget: rules.Budget | None = None, writer: RowWriter | None = None,
                   dtypes=("fp32",), env: dict | None = None) -> "Sweep":
        """A sweep with the device's budget, its matmul peak (per dtype) and copy bandwidth measured;
        the environment (``env``, or :meth:`environment`) goes first into the rows file."""
        device = torch.device(device)
        budget = budget or cls.plan(device)
        sweep = cls(device=device, budget=budget, writer=writer)
        cuda = device.type == "cuda"
        peak_dtypes = set(dtypes) | ({"fp32"} if not cuda else set())
        sweep.matmul_peak = {n: measure_matmul_peak(device, DTYPES[n]) for n in sorted(peak_dtypes)}
        sweep.copy_bandwidth = measure_copy_bandwidth(device)
        if not cuda:
            cpu_peak_memory(lambda: torch.ones(8))  # the profiler's first use is slow: keep it out of the probes
        sweep.env = dict(env if env is not None else cls.environment(device, budget))
        sweep.env.update(matmul_flops_per_s=sweep.matmul_peak, copy_bytes_per_s=sweep.copy_bandwidth)
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

    def _record(self, row: dict, status: str, error: BaseException | None = None) -> Outcome:
        row["status"] = status
        if status != "ok":
            self.unmeasured.append(row)
        self.rows.append(row)
        if self.writer is not None:
            self.writer.write(row)
        return Outcome(row, error)

    @staticmethod
    def series_key(case: Case) -> tuple:
        """Configurations that differ only in size: a measured call of one predicts the others."""
        rest = tuple(sorted((k, str(v)) for k, v in case.fields.items() if k not in ("resolution", "tokens")))
        return (case.op, case.backend) + rest

    def refusal(self, case: Case) -> str | None:
        """Why ``case`` is not to be run at all, judged before anything is built (or None)."""
        if case.skip:
            return f"skipped: {case.skip}"
        work = case.flops or case.bytes
        peak = self.matmul_peak.get(case.fields.get("dtype", "fp32"))
        free = available_memory(self.device) if self.device.type == "cpu" and any(
            b.materializes for b in case.backends) else None
        return (rules.by_backend(case.backends, self.device.type)
                or self.budget.by_flops(case.flops, peak)
                or self.budget.by_probe(work, self._probes.get(self.series_key(case), []))
                or rules.by_memory(case.matrix_bytes, free))

    # -- the measurement --
    def run(self, case: Case, timer: Timer | None) -> Outcome:
        """Measure ``case``, timing it with ``timer`` (None: timing disabled); return its outcome."""
        row = self.base_row(case)
        done = self.recorded.get(row_key(row))
        if done is not None:
            self.resumed.append(done)
            return Outcome(done, resumed=True)
        status = self.refusal(case) or (None if timer is not None else "skipped: timing disabled (--benchmark-disable)")
        if status is not None:
            return self._record(row, status)
        try:
            status, stats, kernel_times = self._measure(case, row, timer)
        except BackendError as err:  # a pinned kernel that PyTorch refuses for this size
            status = f"skipped: {err}"
        except Exception as err:
            if not is_oom(err):  # a failure: recorded where the report shows it
                first_line = (str(err).strip().splitlines() or [""])[0][:300]
                return self._record(row, f"error: {type(err).__name__}: {first_line}", err)
            status = "oom"
        if status is not None:  # handled here, outside the except blocks, so no traceback keeps tensors alive
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            return self._record(row, status)
        work = case.flops or case.bytes
        if work:
            self._probes.setdefault(self.series_key(case), []).append((work, stats.median))
        row.update(median_s=stats.median, iqr_s=stats.iqr, q1_s=stats.q1, q3_s=stats.q3, mean_s=stats.mean,
                   stddev_s=stats.stddev, min_s=stats.min, max_s=stats.max, rounds=stats.rounds)
        if kernel_times:
            events = Stats.of(kernel_times)
            row.update(kernel_median_s=events.median, kernel_q1_s=events.q1, kernel_q3_s=events.q3)
        if case.flops:
            row["flops_per_s"] = case.flops / stats.median
        if case.bytes is not None:
            row["bytes_per_s"] = case.bytes / stats.median
        return self._record(row, "ok")

    def _measure(self, case: Case, row: dict, timer: Timer) -> tuple:
        """Build, measure peak memory, probe, time. Returns (non-ok status or None, Stats, CUDA-event times)."""
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
        elif compiled:  # the profiled memory call may run compiled code afresh: a plain call is the probe
            reset()
            start = time.perf_counter()
            work.fn()
            call = time.perf_counter() - start
        # otherwise on CPU the memory call (profiled, so a little slower than a plain one) is the probe
        # of the call's duration; it is never part of the statistics
        over = self.budget.by_call(call)
        if over:
            if case.flops or case.bytes:
                self._probes.setdefault(self.series_key(case), []).append((case.flops or case.bytes, call))
            return over, None, []
        rounds = self.budget.rounds(call)
        # the calls above warmed caches and the allocator; slow CPU calls need no further warm-up round
        warmup = self.budget.warmup_rounds if (cuda or call < 0.1) else 0
        if not cuda:
            timing = (None, timer(work.fn, work.reset, rounds, warmup), [])
        else:
            timing = (None, *self._time_cuda(timer, work, rounds, warmup))
        if work.share is not None:  # runs of their own, after the timed rounds: the median of three where
            runs = 3 if 3 * call <= self.budget.time_budget / 10 else 1  # they cost little, else one
            row["attention_share"] = work.share(runs)
            row["attention_share_runs"] = runs
        return timing

    def _time_cuda(self, timer: Timer, work: Workload, rounds: int, warmup: int) -> tuple[Stats, list[float]]:
        """Timed rounds, each after an untimed L2 flush, with CUDA events around the call itself."""
        device = self.device
        if self._flush is None:
            self._flush = L2Flush(device)
        flush, events = self._flush, []

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

        stats = timer(timed, setup, rounds, warmup)
        return stats, [s.elapsed_time(e) / 1e3 for s, e in events[warmup:]]
