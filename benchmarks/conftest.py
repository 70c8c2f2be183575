"""The resolution sweep's command-line axes, parametrization, fixtures and results file.

    pytest benchmarks/ --benchmark-only [--attn-backend=naive,sdpa] [--resolutions=224,384]
        [--model-resolutions=224] [--model=NAME] [--dtype=fp32] [--device=cpu] [--batch-size=1]
        [--pass=fwd,train] [--compile | --compile-at=R,R] [--peers] [--no-aa] [--results=PATH.jsonl]
        [--time-budget=SECONDS] [--max-rounds=R] [--threads=N] [--resume [--force-resume]]

Every ``bench_<op>.py`` here declares ``OP`` and one test per comparison group taking ``resolution``,
``pass_name`` and ``dtype_name``; this file parametrizes them from the options (bench_mixed.py's groups
hold images of many sizes: it takes ``mixed_model`` and ``mixed_backend`` instead of ``resolution``). A test builds the
group's cases (every backend of the op; for whole models every model, peer and compiled build) and
hands them to ``measure_group``, which times them together in interleaved rounds (fastvit.bench.sweep)
inside one ``benchmark.pedantic`` round: pytest-benchmark's own table shows what each group's
measurement took, the measurements are the rows. Each finished group is appended to the JSONL
results file at once (its first line: the run's environment, versions, device, matmul peak, copy
bandwidth, command), the one results format the report reads. The results file is locked while the
sweep runs; ``--resume`` continues an interrupted sweep in it without measuring again what it
recorded (fastvit.bench.results).
"""
from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
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
    g.addoption("--model-resolutions", metavar="R,R", help="sizes of the whole-model rows (default: --resolutions "
                "if given, else per device: " + "; ".join(f"{d}: {','.join(map(str, v.model_resolutions))}"
                                                        for d, v in fb.DEFAULTS.items()) + ")")
    g.addoption("--no-aa", action="store_true", help="leave out the A/A twin of each comparison group's baseline "
                "(the measured noise floor)")
    g.addoption("--model", metavar="A,B", help="presets of any family for the whole-model rows; the op-level rows "
                "use the shapes of the first ViT-family one (default per device: "
                + "; ".join(f"{d}: {','.join(v.models)}" for d, v in fb.DEFAULTS.items()) + ")")
    g.addoption("--peers", action="store_true", help="add whole-model rows of timm's, HF transformers' and "
                "torchvision's builds of the same presets (same weights) and of CNN baselines (" + ", ".join(CNNS) + ")")
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
    g.addoption("--time-budget", type=float, metavar="S", help="seconds of interleaved rounds one comparison group "
                "may take after its minimum of rounds (default per device, op-level / whole-model and mixed groups: "
                + ", ".join(f"{d}: {v.time_budget:g} / {v.model_time_budget or v.time_budget:g}"
                            for d, v in fb.DEFAULTS.items())
                + "); a configuration whose single call would exceed budget / min rounds is recorded as skipped")
    g.addoption("--max-rounds", type=int, metavar="R", help="the most timed rounds of one comparison group "
                "(default per device: " + ", ".join(f"{d}: {v.max_rounds}" for d, v in fb.DEFAULTS.items())
                + "; at least the minimum of rounds): a quick run stops there, recorded as 'max rounds'")
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
    model_resolutions: list
    compile_at: list     # without --compile: where the op-level preset's whole model gets +compile rows
    batch: int
    dtypes: list
    passes: list
    impls: dict          # op -> implementation labels
    vit_norm: list
    vit_patch: list
    results: Path
    time_budget: float | None
    model_time_budget: float | None = None  # seconds of rounds of a whole-model or mixed group (None: the sweep's)
    peer_models: list | None = None  # presets given peer builds with --peers (None: every one of ``models``)
    train_resolutions: list | None = None  # whole-model sizes of the training step (None: model_resolutions)
    twin: bool = True    # an A/A twin of each group's baseline
    compile_all: bool = False  # --compile: +compile members everywhere
    mixed_models: list = field(default_factory=list)  # presets of the mixed-resolution groups (ViT, DeiT)
    mixed: fb.MixedImages | None = None                # and their images

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
        given = config.getoption("resolutions")
        resolutions = [int(r) for r in _split(given or ",".join(map(str, defaults.resolutions)))]
        model_given = config.getoption("model_resolutions")
        model_resolutions = ([int(r) for r in _split(model_given)] if model_given else resolutions if given
                             else list(defaults.model_resolutions))
        at = config.getoption("compile_at")
        compile_at = [] if at == "none" else [int(r) for r in _split(at)] if at else list(defaults.compile_at)
    except ValueError:
        raise pytest.UsageError("--resolutions, --model-resolutions and --compile-at take comma-separated integers, "
                                "e.g. 224,384") from None
    compile_ = config.getoption("compile")
    compile_at = [r for r in compile_at if r in model_resolutions] if not compile_ else []
    # the default matrix's trims apply only where the sizes and models are the defaults
    train_resolutions = (list(model_resolutions) if model_given or given or defaults.train_resolutions is None
                         else [r for r in model_resolutions if r in defaults.train_resolutions])
    peer_models = (list(models) if config.getoption("model") or defaults.peer_models is None
                   else [m for m in models if m in defaults.peer_models])
    budget = config.getoption("time_budget")
    model_budget = budget if budget is not None else defaults.model_time_budget
    model_impls = _backends(config, "attn_backend", ATTENTION, compile_, default=defaults.model_backends)
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
                    resolutions=resolutions, model_resolutions=model_resolutions, compile_at=compile_at,
                    batch=config.getoption("batch_size") or defaults.batch, dtypes=dtypes, passes=passes,
                    impls=impls, vit_norm=vit_norm, vit_patch=vit_patch, results=results,
                    time_budget=budget, model_time_budget=model_budget, peer_models=peer_models,
                    train_resolutions=train_resolutions, twin=not config.getoption("no_aa"),
                    compile_all=compile_, mixed=defaults.mixed,
                    mixed_models=[m for m in models if isinstance(preset_config(m), ViTConfig)]
                    if config.getoption("model") else list(defaults.mixed_models))


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
    budget = fb.Sweep.plan(s.device, s.time_budget, config.getoption("max_rounds"))
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
            f"passes {','.join(s.passes)}, resolutions {','.join(map(str, s.resolutions))} "
            f"(whole models {','.join(map(str, s.model_resolutions))}), "
            f"{torch.get_num_threads()} threads; rows -> {s.results}")


def pytest_generate_tests(metafunc):
    op = getattr(metafunc.module, "OP", None)
    if op is None:
        return
    s = metafunc.config.stash[_SETTINGS]
    # one test per comparison group; smaller sizes first, so larger ones can be judged against the budget
    if op == "model":  # the training step at its own sizes
        pairs = [(r, p) for r in s.model_resolutions for p in s.passes
                 if p != "train" or r in (s.train_resolutions or s.model_resolutions)]
        metafunc.parametrize(("resolution", "pass_name"), pairs, ids=[f"{r}px-{p}" for r, p in pairs])
    else:
        if "resolution" in metafunc.fixturenames:
            metafunc.parametrize("resolution", s.resolutions, ids=[f"{r}px" for r in s.resolutions])
        if "mixed_model" in metafunc.fixturenames:
            metafunc.parametrize("mixed_model", s.mixed_models)
            metafunc.parametrize("mixed_backend", [i for i in s.impls["model"] if not fb.split_impl(i)[1]])
        metafunc.parametrize("pass_name", s.passes)
    metafunc.parametrize("dtype_name", s.dtypes)


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
    env = {**env, "models": settings.models, "model": settings.model, "batch": settings.batch, "peers": settings.peers,
           "peer_models": settings.peer_models, "train_resolutions": settings.train_resolutions,
           "model_time_budget_s": settings.model_time_budget}
    if results.recorded:
        env["resumed_rows"] = len(results.recorded)
    writer = fb.RowWriter(settings.results, truncate=False)
    sw = fb.Sweep.for_device(settings.device, budget, writer, settings.dtypes, env=env)
    sw.recorded = results.recorded
    request.config.stash[_SWEEP] = sw
    return sw


@pytest.fixture
def measure_group(request, benchmark, sweep):
    """``measure_group(group)``: time a comparison group in interleaved rounds (inside one
    pytest-benchmark round, which times the whole group's measurement); every member's row goes to
    the results file. A member that failed fails the test with its exception, after the others
    were measured; a group of which nothing was timed becomes a skip with the statuses."""
    def run(group: fb.Group) -> list[dict]:
        sweep.timing_disabled = bool(getattr(benchmark, "disabled", False))
        outcomes = []
        benchmark.pedantic(lambda: outcomes.extend(sweep.run_group(group)), rounds=1, iterations=1, warmup_rounds=0)
        fresh = [o for o in outcomes if not o.resumed]
        request.node.user_properties.append(("fastvit_rows", [o.row for o in fresh]))
        timed = [o.row for o in fresh if o.status == "ok"]
        benchmark.extra_info.update(group=group.id, members=len(outcomes), timed=len(timed),
                                    rounds=timed[0]["group_rounds"] if timed else 0,
                                    stop=timed[0]["group_stop"] if timed else None)
        errors = [o.error for o in fresh if o.error is not None]
        if errors:
            raise errors[0]
        if not fresh:
            pytest.skip("recorded by the sweep being resumed: " + ", ".join(sorted({o.status for o in outcomes})))
        if not timed:
            pytest.skip("; ".join(sorted({o.status for o in fresh})))
        return [o.row for o in outcomes]
    return run


def pytest_report_teststatus(report, config):
    """Progress: each finished group shows its members timed, rounds, why they stopped and the A/A ratio."""
    if report.when != "call" or not config.getoption("verbose"):
        return None
    rows = dict(report.user_properties).get("fastvit_rows")
    if not rows or not report.passed:
        return None  # skipped groups keep pytest's "SKIPPED (status)"
    timed = [r for r in rows if r["status"] == "ok"]
    summary = f"{len(timed)}/{len(rows)} timed, {timed[0]['group_rounds']} rounds ({timed[0]['group_stop']})"
    twin = next((r for r in timed if r.get("twin_of") and "ratio" in r), None)
    if twin is not None:
        summary += f", A/A {twin['ratio']:.3f} [{twin['ratio_low']:.3f}, {twin['ratio_high']:.3f}]"
    return "passed", ".", (summary, {"green": True})


def pytest_benchmark_update_machine_info(config, machine_info):
    sweep = config.stash.get(_SWEEP, None)
    if sweep is not None:
        machine_info["fastvit"] = sweep.env


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
