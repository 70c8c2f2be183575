"""A comparison group of configurations -> one row each: the sweep's measurement of a :class:`Group`.

Everything the report compares at one configuration (the backends of an op at one size; every model,
peer and compiled build at one size) is one group, measured in one process. :meth:`Sweep.run_group`
takes its cases one by one: applies the skip rules (fastvit.bench.budget), builds the case, measures
its peak memory in a call of its own and probes the call's duration; then it times every runnable
member together in interleaved rounds (fastvit.bench.rounds: each member beside its baseline, the
pairs shuffled per round, adaptive until each paired ratio's 95% interval is within ±2%, the group's
time budget is spent, or the maximum of rounds). The default sweep adds an A/A twin of the group's
baseline (the same workload timed under a second name), whose ratio is the run's measured noise floor.

Each row keeps its raw per-round times (``round_times_s``, and on CUDA the CUDA-event times
``kernel_round_times_s``, each round after an untimed L2 flush), its baseline's times from its own
pairs (``baseline_round_times_s``, on CUDA also ``kernel_baseline_round_times_s``), its statistics,
and its paired ratio against its baseline with the 95% interval and the verdict (fastvit.bench.paired).
On CUDA a forward member whose call is short also gets a CUDA-graph replay time (``graph_median_s``:
launch overhead removed, no L2 flush). Every outcome is a row with its status, written the moment the group is done
(skipped members at once); the sweep never raises to signal a skip.
"""
from __future__ import annotations

import gc
import time
import zlib
from dataclasses import dataclass, field
from typing import Callable

import torch

from fastvit.bench import budget as rules
from fastvit.bench.defaults import defaults_for
from fastvit.bench.env import device_name, environment
from fastvit.bench.memory import available_memory, cpu_peak_memory, is_oom, peak_memory
from fastvit.bench.paired import verdict
from fastvit.bench.results import row_key
from fastvit.bench.rounds import Member, Rounds, interleave
from fastvit.bench.rows import RowWriter, split_impl
from fastvit.bench.timing import (L2Flush, Stats, graph_replay_seconds, measure_copy_bandwidth, measure_matmul_peak,
                                  time_call)
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
    member: str | None = None          # its label in its group (default: ``backend``)
    baseline: str | None = None        # the member it is compared against (None: none)

    @property
    def label(self) -> str:
        return self.member or self.backend


TWIN = " (A/A)"  # suffix of an A/A twin's backend and member labels


@dataclass
class Group:
    """Cases timed together in interleaved rounds: everything compared at one configuration.

    ``key`` names what the members share (op, model, resolution, batch, dtype, pass); ``twin``, the
    member whose A/A twin joins the rounds (the same workload under the name ``<label> (A/A)``);
    ``time_budget``, the seconds its rounds may take (None: the sweep's budget)."""

    op: str
    key: dict
    cases: list
    twin: str | None = None
    time_budget: float | None = None

    @property
    def id(self) -> str:
        return " ".join([self.op] + [f"{k}={v}" for k, v in self.key.items()])

    @property
    def seed(self) -> int:
        return zlib.crc32(self.id.encode())


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
    timing_disabled: bool = False  # pytest-benchmark's --benchmark-disable: nothing is timed
    graph_below: float = 1e-3  # on CUDA, forward members faster than this also get a CUDA-graph replay time
    _flush: L2Flush | None = field(default=None, repr=False)

    @staticmethod
    def plan(device, time_budget: float | None = None, max_rounds: int | None = None) -> rules.Budget:
        """The budget of a sweep on ``device``: its defaults, with ``time_budget`` seconds and at most
        ``max_rounds`` rounds a group if given."""
        d = defaults_for(device)
        seconds = time_budget if time_budget is not None else d.time_budget
        rounds = max(max_rounds, d.min_rounds) if max_rounds is not None else d.max_rounds
        return rules.Budget(seconds, d.min_rounds, rounds, d.warmup_rounds, d.min_block)

    @staticmethod
    def environment(device, budget: rules.Budget, command: str | None = None) -> dict:
        """What the results file records of this sweep before anything is measured."""
        env = environment(torch.device(device), command)
        env.update(time_budget_s=budget.time_budget, min_rounds=budget.min_rounds, max_rounds=budget.max_rounds,
                   timing_method=("interleaved rounds per comparison group, each member beside its baseline, "
                                  "the pairs shuffled per round, "
                                  + ("CUDA events after an untimed L2 flush" if torch.device(device).type == "cuda"
                                     else f"time.perf_counter on {torch.get_num_threads()} torch threads")
                                  + (f", calls under {budget.min_block * 1e3:g} ms repeated back to back to that length"
                                     if budget.min_block > 0 else "")))
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
        if self.timing_disabled:
            return "skipped: timing disabled (--benchmark-disable)"
        work = case.flops or case.bytes
        peak = self.matmul_peak.get(case.fields.get("dtype", "fp32"))
        free = available_memory(self.device) if self.device.type == "cpu" and any(
            b.materializes for b in case.backends) else None
        return (rules.by_backend(case.backends, self.device.type)
                or self.budget.by_flops(case.flops, peak)
                or self.budget.by_probe(work, self._probes.get(self.series_key(case), []))
                or rules.by_memory(case.matrix_bytes, free))

    # -- the measurement --
    def run(self, case: Case) -> Outcome:
        """Measure one case on its own (a group of one, no twin)."""
        return self.run_group(Group(case.op, {}, [case]))[0]

    def run_group(self, group: Group) -> list[Outcome]:
        """Measure every case of ``group``: prepared one by one, then timed together in interleaved
        rounds. Returns the outcomes in the order of the cases (the A/A twin's last)."""
        outcomes: list[Outcome | None] = []
        ready: list[tuple[int, dict, Workload, float]] = []  # (case index, row, workload, seconds of one call)
        for i, case in enumerate(group.cases):
            row = self.base_row(case)
            row.update(group=group.id, member=case.label, baseline=case.baseline)
            done = self.recorded.get(row_key(row))
            if done is not None:
                self.resumed.append(done)
                outcomes.append(Outcome(done, resumed=True))
                continue
            outcome, prepared = self._prepare(case, row)
            outcomes.append(outcome)
            if prepared is not None:
                ready.append((i, row, *prepared))
        twin_case = next((c for c in group.cases if c.label == group.twin), None)
        if twin_case is not None:  # the twin of a baseline recorded by the sweep being resumed
            done = self.recorded.get(row_key({**self.base_row(twin_case), "backend": twin_case.backend + TWIN}))
            if done is not None:
                self.resumed.append(done)
                outcomes.append(Outcome(done, resumed=True))
        if not ready:
            return outcomes
        twin = next((r for r in ready if group.cases[r[0]].label == group.twin), None)
        entries = [(group.cases[i], row, work, call) for i, row, work, call in ready]
        if twin is not None:
            case, row = group.cases[twin[0]], dict(twin[1])
            row.update(backend=row["backend"] + TWIN, member=case.label + TWIN, baseline=case.label,
                       twin_of=case.label, peak_mem_bytes=None)
            entries.append((case, row, twin[2], twin[3]))
        labels = [row["member"] for _, row, _, _ in entries]
        members = [Member(work.fn, work.reset, labels.index(row["baseline"]) if row["baseline"] in labels else None,
                          self._warmup(case, call)) for case, row, work, call in entries]
        if self.device.type == "cuda" and self._flush is None:
            self._flush = L2Flush(self.device)
        seconds = group.time_budget if group.time_budget is not None else self.budget.time_budget
        rounds = interleave(members, self.device, min_rounds=self.budget.min_rounds,
                            max_rounds=self.budget.max_rounds, time_budget=seconds,
                            seed=group.seed, flush=self._flush, min_block=self.budget.min_block)
        finished = self._rows(group, entries, members, rounds, seconds)
        for index, (case, row, _, _) in enumerate(entries):
            if index < len(ready):
                outcomes[ready[index][0]] = finished[index]
            else:
                outcomes.append(finished[index])
        return outcomes

    def _prepare(self, case: Case, row: dict) -> tuple[Outcome | None, tuple | None]:
        """Skip rules, build, peak memory, probe: (the outcome of a member that will not be timed, or
        None) and (its workload, seconds of one call) for one that will."""
        status = self.refusal(case)
        if status is not None:
            return self._record(row, status), None
        try:
            status, prepared = self._build(case, row)
        except BackendError as err:  # a pinned kernel that PyTorch refuses for this size
            status, prepared = f"skipped: {err}", None
        except Exception as err:
            if not is_oom(err):  # a failure: recorded where the report shows it
                return self._record(row, _error_status(err), err), None
            status, prepared = "oom", None
        if status is not None:  # handled here, outside the except blocks, so no traceback keeps tensors alive
            self._free()
            return self._record(row, status), None
        return None, prepared

    def _build(self, case: Case, row: dict) -> tuple[str | None, tuple | None]:
        work = case.build()
        row.update(work.info)
        cuda = self.device.type == "cuda"
        reset = work.reset or (lambda: None)
        compiled = split_impl(case.backend)[1]
        if cuda or _compiles(case):
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
        elif _compiles(case) or call > self.budget.per_call / 10:
            # the profiled memory call may run compiled code afresh, and the profiler slows a model of
            # many small ops several times over: a plain call is then the probe of the call's duration
            reset()
            start = time.perf_counter()
            work.fn()
            call = time.perf_counter() - start
        # otherwise on CPU the (cheap) memory call is the probe; it is never part of the statistics
        over = self.budget.by_call(call)
        if over:
            self._probe(case, call)
            return over, None
        return None, (work, call)

    def _warmup(self, case: Case, call: float) -> int:
        """Untimed rounds of a member before its timed ones: the budget's on CUDA and for calls under
        0.1 s, none otherwise; at least one for a member that compiles (a ``+compile`` row, a backend
        that compiles per shape), whose compiled code another member's build may have discarded
        (``maybe_compile`` resets dynamo), so that compiling again falls in an untimed round."""
        rounds = self.budget.warmup_rounds if (self.device.type == "cuda" or call < 0.1) else 0
        return max(rounds, 1) if _compiles(case) else rounds

    def _probe(self, case: Case, seconds: float) -> None:
        """Remember the seconds of one call of ``case``: the larger sizes of its series are judged by it."""
        if case.flops or case.bytes:
            self._probes.setdefault(self.series_key(case), []).append((case.flops or case.bytes, seconds))

    def _rows(self, group: Group, entries: list, members: list[Member], rounds: Rounds,
              seconds: float) -> list[Outcome]:
        """The rows of a timed group: statistics, raw rounds, paired ratios, verdicts, attention's share."""
        twin = next((i for i, (_, row, _, _) in enumerate(entries) if row.get("twin_of")), None)
        noise = rounds.ratio(twin, members[twin].baseline) if twin is not None else None
        out = []
        for i, (case, row, work, _) in enumerate(entries):
            if i in rounds.failed:
                err = rounds.failed[i]
                status = "oom" if is_oom(err) else _error_status(err)
                out.append(self._record(row, status, None if status == "oom" else err))
                continue
            stats = Stats.of(rounds.times[i])
            if not row.get("twin_of"):
                self._probe(case, stats.median)
            row.update(median_s=stats.median, iqr_s=stats.iqr, q1_s=stats.q1, q3_s=stats.q3, mean_s=stats.mean,
                       stddev_s=stats.stddev, min_s=stats.min, max_s=stats.max, rounds=stats.rounds,
                       round_times_s=rounds.times[i], group_rounds=rounds.rounds, group_seed=rounds.seed,
                       group_stop=rounds.stop, group_members=len(entries), calls_per_round=rounds.calls[i],
                       group_budget_s=seconds)
            if rounds.kernel:
                events = Stats.of(rounds.kernel[i])
                row.update(kernel_median_s=events.median, kernel_q1_s=events.q1, kernel_q3_s=events.q3,
                           kernel_round_times_s=rounds.kernel[i])
            base = members[i].baseline
            if base is not None and base != i:
                if rounds.beside[i]:
                    row["baseline_round_times_s"] = rounds.beside[i]
                    if rounds.kernel:
                        row["kernel_baseline_round_times_s"] = rounds.beside_kernel[i]
                ratio = rounds.ratio(i, base)
                if ratio is not None:
                    row.update(ratio.as_fields(), verdict=verdict(ratio, None if i == twin else noise))
            seconds = row.get("kernel_median_s", stats.median)
            if case.flops:
                row["flops_per_s"] = case.flops / seconds
            if case.bytes is not None:
                row["bytes_per_s"] = case.bytes / seconds
            if self.device.type == "cuda" and row.get("pass") == "fwd" and seconds < self.graph_below and i != twin:
                try:
                    row["graph_median_s"] = graph_replay_seconds(work.fn, self.device)
                except Exception as err:  # recorded: a call that cannot be captured is no failure of the row
                    row["graph_status"] = f"not captured: {_error_status(err)[7:]}"
            if work.share is not None and i != twin:  # runs of their own, after the timed rounds: the median
                runs = 3 if 3 * stats.median <= self.budget.time_budget / 10 else 1  # of three where cheap
                row["attention_share"] = work.share(runs)
                row["attention_share_runs"] = runs
            out.append(self._record(row, "ok"))
        self._free()
        return out

    def _free(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _compiles(case: Case) -> bool:
    """Whether the case's first call compiles: a ``+compile`` row, or a backend that compiles per shape."""
    return split_impl(case.backend)[1] or any(b.compiles for b in case.backends)


def _error_status(err: BaseException) -> str:
    first_line = (str(err).strip().splitlines() or [""])[0][:300]
    return f"error: {type(err).__name__}: {first_line}"
