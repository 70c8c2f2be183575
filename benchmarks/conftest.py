"""The resolution sweep's command-line axes, parametrization, fixtures and results files.

    pytest benchmarks/ --benchmark-only [--attn-backend=naive,sdpa] [--resolutions=224,384]
        [--model=NAME] [--dtype=fp32] [--device=cpu] [--batch-size=1] [--pass=fwd,train]
        [--compile | --compile-at=R,R] [--peers] [--results=PATH.jsonl] [--time-budget=SECONDS] [--threads=N]
        [--resume [--force-resume]] [--benchmark-json=PATH.json]

Every ``bench_<op>.py`` here declares ``OP`` and one test taking ``impl``, ``resolution``,
``pass_name`` and ``dtype_name``; this file parametrizes them from the options. Each finished
configuration is appended to the JSONL results file at once; rows that are not timed (``skipped: ...``,
``oom``) also go to the pytest-benchmark JSON under ``fastvit_unmeasured``, and the run's environment
(versions, device, matmul peak, copy bandwidth, command) under ``machine_info.fastvit``. The results
file is locked while the sweep runs; ``--resume`` continues an interrupted sweep in it without
measuring again what it recorded (fastvit.bench.results), whose rows the JSON then carries under
``fastvit_resumed``.
"""
from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from fastvit import bench as fb
from fastvit.bench.results import ResultsError, ResultsFile
from fastvit.devices import DTYPES, default_device
from fastvit.bench.peers import CNNS, LIBRARIES
from fastvit.models import ViTConfig, list_models, preset_config
from fastvit.ops import ATTENTION, NORM, PATCH


def pytest_collect_file(file_path: Path, parent):
    """Collect ``bench_*.py`` (pytest's own pattern, test_*.py, stays the project's for tests/)."""
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_addoption(parser):
    g = parser.getgroup("fastvit sweep", "fastvit resolution sweep (benchmarks/)")
    g.addoption("--attn-backend", metavar="A,B", help="attention backends (default: every registered one; "
                "those that cannot run here are recorded as skipped)")
    g.addoption("--norm-backend", metavar="A,B", help="LayerNorm backends (default: all; the whole-model sweep "
                "uses the default 'torch' unless this is given)")
    g.addoption("--patch-backend", metavar="A,B", help="patch-embedding backends (default: all; the whole-model "
                "sweep uses the default 'conv' unless this is given)")
    g.addoption("--resolutions", metavar="R,R", help="square image sizes in px (default per device: "
                + "; ".join(f"{d}: {','.join(map(str, v.resolutions))}" for d, v in fb.DEFAULTS.items()) + ")")
    g.addoption("--model", metavar="A,B", help="presets of any family for the whole-model rows; the op-level rows "
                "use the shapes of the first ViT-family one (default per device: "
                + "; ".join(f"{d}: {','.join(v.models)}" for d, v in fb.DEFAULTS.items()) + ")")
    g.addoption("--peers", action="store_true", help="add whole-model rows of timm's and HF transformers' builds "
                "of the same presets (same weights) and of CNN baselines (" + ", ".join(CNNS) + ")")
    g.addoption("--dtype", metavar="D,D", help=f"{', '.join(DTYPES)} (default per device: "
                + ", ".join(f"{d}: {v.dtype}" for d, v in fb.DEFAULTS.items()) + ")")
    g.addoption("--device", choices=list(fb.DEFAULTS), help="default: cuda if available, else cpu")
    g.addoption("--batch-size", type=int, help="default per device: "
                + ", ".join(f"{d}: {v.batch}" for d, v in fb.DEFAULTS.items()))
    g.addoption("--pass", dest="fastvit_pass", default="fwd,train", metavar="P,P",
                help="fwd (inference under no_grad) and/or train (forward + backward)")
    g.addoption("--compile", action="store_true", help="add a torch.compile row ('<backend>+compile') per backend, "
                "op and resolution")
    g.addoption("--compile-at", metavar="R,R", help="without --compile: the resolutions of the +compile rows of the "
                "op-level preset's whole model, added by default ('none' for none; default per device: "
                + "; ".join(f"{d}: {','.join(map(str, v.compile_at)) or 'none'}" for d, v in fb.DEFAULTS.items())
                + ")")
    g.addoption("--results", metavar="PATH", help="JSONL file the rows are appended to as they finish "
                "(default: .benchmarks/fastvit-<device>.jsonl; a new sweep starts a new file)")
    g.addoption("--time-budget", type=float, metavar="S", help="seconds of timed rounds one configuration may "
                "take (default per device: " + ", ".join(f"{d}: {v.time_budget:g}" for d, v in fb.DEFAULTS.items())
                + "); a configuration whose single call would exceed budget / min rounds is recorded as skipped")
    g.addoption("--threads", type=int, help="torch CPU threads (default: the CPUs this process may use)")
    g.addoption("--resume", action="store_true", help="continue the sweep recorded in --results: configurations "
                "already there (measured under the same environment) are not measured again")
    g.addoption("--force-resume", action="store_true", help="with --resume, keep rows measured under another "
                "environment (device, versions, commit, settings) instead of refusing")


@dataclass
class Settings:
    device: torch.device
    models: list         # whole-model presets
    model: str           # the preset whose shapes the op-level rows use
    peers: bool
    resolutions: list
    compile_at: list     # without --compile: where the op-level preset's whole model gets +compile rows
    batch: int
    dtypes: list
    passes: list
    impls: dict          # op -> implementation labels
    vit_norm: list
    vit_patch: list
    results: Path
    time_budget: float | None

    @property
    def cfg(self):
        return preset_config(self.model)


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _backends(config, option: str, registry, compile_: bool, default=None) -> list[str]:
    value = config.getoption(option)
    names = _split(value) if value else list(default or registry.names())
    for name in names:
        if name not in registry.names():
            raise pytest.UsageError(f"--{option.replace('_', '-')}: unknown {registry.op} backend {name!r}; "
                                    f"known: {', '.join(registry.names())}")
    return names + ([f"{n}+compile" for n in names] if compile_ else [])


def _settings(config) -> Settings:
    device = torch.device(config.getoption("device") or default_device().type)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--device=cuda but CUDA is not available")
    defaults = fb.defaults_for(device)
    models = _split(config.getoption("model") or ",".join(defaults.models))
    unknown = [m for m in models if m not in list_models()]
    if unknown:
        raise pytest.UsageError(f"--model: unknown preset(s) {unknown}; known: {', '.join(list_models())}")
    op_models = [m for m in models if isinstance(preset_config(m), ViTConfig)] or [defaults.model]
    dtypes = _split(config.getoption("dtype") or defaults.dtype)
    passes = _split(config.getoption("fastvit_pass"))
    for value, allowed, flag in ((dtypes, DTYPES, "--dtype"), (passes, fb.PASSES, "--pass")):
        bad = [v for v in value if v not in allowed]
        if bad:
            raise pytest.UsageError(f"{flag}: unknown {bad}; choose from {', '.join(allowed)}")
    try:
        resolutions = [int(r) for r in _split(config.getoption("resolutions") or ",".join(map(str, defaults.resolutions)))]
        at = config.getoption("compile_at")
        compile_at = [] if at == "none" else [int(r) for r in _split(at)] if at else list(defaults.compile_at)
    except ValueError:
        raise pytest.UsageError("--resolutions and --compile-at take comma-separated integers, e.g. 224,384") from None
    compile_ = config.getoption("compile")
    compile_at = [r for r in compile_at if r in resolutions] if not compile_ else []
    model_impls = _backends(config, "attn_backend", ATTENTION, compile_, default=defaults.model_backends)
    if compile_at:  # the default compile rows: the op-level preset's whole model, eager beside compiled
        model_impls += [f"{n}+compile" for n in model_impls]
    impls = {
        "attention": _backends(config, "attn_backend", ATTENTION, compile_),
        "model": model_impls,
        "layernorm": _backends(config, "norm_backend", NORM, compile_),
        "patch_embed": _backends(config, "patch_backend", PATCH, compile_),
    }
    vit_norm = _split(config.getoption("norm_backend")) if config.getoption("norm_backend") else [NORM.default]
    vit_patch = _split(config.getoption("patch_backend")) if config.getoption("patch_backend") else [PATCH.default]
    results = Path(config.getoption("results") or f".benchmarks/fastvit-{device.type}.jsonl")
    return Settings(device=device, models=models, model=op_models[0], peers=config.getoption("peers"),
                    resolutions=resolutions, compile_at=compile_at,
                    batch=config.getoption("batch_size") or defaults.batch, dtypes=dtypes, passes=passes,
                    impls=impls, vit_norm=vit_norm, vit_patch=vit_patch, results=results,
                    time_budget=config.getoption("time_budget"))


_SETTINGS = pytest.StashKey[Settings]()
_SWEEP = pytest.StashKey[fb.Sweep]()
_RESULTS = pytest.StashKey[ResultsFile]()
_PLAN = pytest.StashKey[tuple]()


def pytest_configure(config):
    threads = config.getoption("threads") or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    s = config.stash[_SETTINGS] = _settings(config)
    argv = getattr(sys, "orig_argv", sys.argv)
    command = shlex.join([Path(argv[0]).name] + argv[1:])
    budget = fb.Sweep.plan(s.device, s.time_budget)
    env = fb.Sweep.environment(s.device, budget, command)
    try:  # refused before anything runs: a file another sweep is writing, or rows of another environment
        results = config.stash[_RESULTS] = ResultsFile(s.results, resume=config.getoption("resume"))
        results.check_environment(env, force=config.getoption("force_resume"))
    except ResultsError as err:
        raise pytest.UsageError(str(err)) from None
    config.stash[_PLAN] = (budget, env)


def pytest_unconfigure(config):
    results = config.stash.get(_RESULTS, None)
    if results is not None:
        results.close()


def pytest_report_header(config):
    s = config.stash[_SETTINGS]
    return (f"fastvit sweep: {','.join(s.models)}{' with peers' if s.peers else ''} (op level: {s.model}) on "
            f"{s.device.type}, batch {s.batch}, {','.join(s.dtypes)}, "
            f"passes {','.join(s.passes)}, resolutions {','.join(map(str, s.resolutions))}, "
            f"{torch.get_num_threads()} threads; rows -> {s.results}")


def pytest_generate_tests(metafunc):
    op = getattr(metafunc.module, "OP", None)
    if op is None:
        return
    s = metafunc.config.stash[_SETTINGS]
    # sizes outermost: every backend of one size runs back to back, so slow drifts of the machine do
    # not land on one backend; smaller sizes first, so larger ones can be judged against the budget
    metafunc.parametrize("resolution", s.resolutions, ids=[f"{r}px" for r in s.resolutions])
    if "model_name" in metafunc.fixturenames:
        metafunc.parametrize("model_name", s.models)
    if "source" in metafunc.fixturenames:  # (library, implementation): fastvit's backends, then the peers
        sources = [("fastvit", i) for i in s.impls[op]] + ([(lib, lib) for lib in LIBRARIES] if s.peers else [])
        metafunc.parametrize("source", sources, ids=[i if lib == "fastvit" else lib for lib, i in sources])
    if "cnn" in metafunc.fixturenames:
        metafunc.parametrize("cnn", list(CNNS) if s.peers else [])
    if "impl" in metafunc.fixturenames:
        metafunc.parametrize("impl", s.impls[op])
    if "vit_norm" in metafunc.fixturenames:
        metafunc.parametrize("vit_norm", s.vit_norm, ids=[f"norm={n}" for n in s.vit_norm])
    if "vit_patch" in metafunc.fixturenames:
        metafunc.parametrize("vit_patch", s.vit_patch, ids=[f"patch={p}" for p in s.vit_patch])
    metafunc.parametrize("pass_name", s.passes)
    metafunc.parametrize("dtype_name", s.dtypes)


def pytest_collection_modifyitems(config, items):
    """The default compile rows (``compile_at``) are the op-level preset's whole model at those sizes:
    the other whole-model +compile items are deselected."""
    s = config.stash.get(_SETTINGS, None)
    if s is None or not s.compile_at:
        return
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        source = params.get("source")
        compiled = source is not None and source[0] == "fastvit" and fb.split_impl(source[1])[1]
        wanted = params.get("model_name") == s.model and params.get("resolution") in s.compile_at
        (drop if compiled and not wanted else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def settings(request) -> Settings:
    return request.config.stash[_SETTINGS]


@pytest.fixture(scope="session")
def sweep(request, settings) -> fb.Sweep:
    """Created at the first benchmark: measures the device's matmul peak and copy bandwidth, writes
    the environment as a line of the JSONL file (its first, unless resuming)."""
    results = request.config.stash[_RESULTS]
    budget, env = request.config.stash[_PLAN]
    results.open_for_writing()
    env = {**env, "models": settings.models, "model": settings.model, "batch": settings.batch, "peers": settings.peers}
    if results.recorded:
        env["resumed_rows"] = len(results.recorded)
    writer = fb.RowWriter(settings.results, truncate=False)
    sw = fb.Sweep.for_device(settings.device, budget, writer, settings.dtypes, env=env)
    sw.recorded = results.recorded
    request.config.stash[_SWEEP] = sw
    return sw


def _timer(benchmark):
    """The sweep's Timer through pytest-benchmark's public API: ``pedantic`` with explicit rounds. A call
    that raises inside it marks the benchmark as failed, so pytest-benchmark leaves it out of its JSON."""
    if getattr(benchmark, "disabled", False):
        return None

    def timer(fn, setup, rounds, warmup):
        benchmark.pedantic(fn, setup=setup, rounds=rounds, warmup_rounds=warmup, iterations=1)
        s = benchmark.stats.stats
        return fb.Stats(median=s.median, iqr=s.iqr, q1=s.q1, q3=s.q3, mean=s.mean, stddev=s.stddev, min=s.min,
                        max=s.max, rounds=s.rounds)
    return timer


@pytest.fixture
def measure(request, benchmark, sweep):
    """``measure(case)``: run one configuration; a skipped or out-of-memory outcome becomes a pytest
    skip with its status, an error a failure with its exception."""
    def run(case: fb.Case) -> dict:
        outcome = sweep.run(case, _timer(benchmark))
        if outcome.resumed:
            pytest.skip(f"recorded by the sweep being resumed: {outcome.status}")
        request.node.user_properties.append(("fastvit_row", outcome.row))
        if outcome.error is not None:
            raise outcome.error
        if outcome.status != "ok":
            pytest.skip(outcome.status)
        benchmark.extra_info.update(outcome.row)
        return outcome.row
    return run


def pytest_report_teststatus(report, config):
    """Progress: each finished configuration shows its status, median, peak memory and throughput."""
    if report.when != "call" or not config.getoption("verbose"):
        return None
    row = dict(report.user_properties).get("fastvit_row")
    if row is None:
        return None
    summary = fb.row_summary(row)
    if len(summary) > 110:
        summary = summary[:107] + "..."
    if report.passed:
        return "passed", ".", (summary, {"green": True})
    return None  # skipped rows keep pytest's "SKIPPED (status)"


def pytest_benchmark_update_machine_info(config, machine_info):
    sweep = config.stash.get(_SWEEP, None)
    if sweep is not None:
        machine_info["fastvit"] = sweep.env


def pytest_benchmark_update_json(config, benchmarks, output_json):
    sweep = config.stash.get(_SWEEP, None)
    if sweep is not None:
        output_json["fastvit_unmeasured"] = sweep.unmeasured
        output_json["fastvit_resumed"] = sweep.resumed  # rows of the earlier run, so the JSON is whole


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    sweep = config.stash.get(_SWEEP, None)
    if sweep is None:
        return
    counts = {}
    for row in sweep.rows:
        key = "ok" if row["status"] == "ok" else row["status"].split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    peaks = ", ".join(f"{d} {v / 1e9:.0f} GFLOP/s" for d, v in sweep.matmul_peak.items())
    terminalreporter.write_sep("-", "fastvit sweep")
    terminalreporter.write_line(f"{len(sweep.rows)} configurations: "
                                + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
                                + (f"; {len(sweep.resumed)} recorded before (--resume)" if sweep.resumed else ""))
    terminalreporter.write_line(f"matmul peak: {peaks}; copy bandwidth {sweep.copy_bandwidth / 1e9:.1f} GB/s")
    terminalreporter.write_line(f"rows: {sweep.writer.path if sweep.writer else '-'}")
