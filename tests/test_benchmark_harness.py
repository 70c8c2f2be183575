"""The sweep in benchmarks/ on a tiny configuration, in a subprocess, and the report on its output.

Never asserts on timings; memory is compared as ratios across sizes, never in absolute bytes.
"""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fastvit
from fastvit import bench as fb
from fastvit.report import load_results, write_report
from conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[1]
COMMON = {"op", "backend", "model", "resolution", "tokens", "batch", "dtype", "device", "device_name", "pass",
          "flops", "status"}
TIMED = {"median_s", "iqr_s", "rounds", "peak_mem_bytes", "round_times_s", "group_rounds", "group_seed", "group_stop"}
GROUPED = {"group", "member", "baseline"}
# the sweep's sizes: op-level rows at 64 and 192 px, whole models at 64 and 128 px (a training step of
# ViT-Ti/16 at 128 px takes about 0.04 s on one core, far inside the budget's 0.3 s per call)
SIZES = (64, 192)
MODEL_SIZES = (64, 128)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    # tests/conftest.py has set TRITON_INTERPRET=1 here; the subprocess inherits it, and the sweep must
    # still refuse to time the Triton backends on CPU
    env = subprocess_env()
    cmd = [sys.executable, "-m", "pytest", "benchmarks/", "--benchmark-only", "-q", "-p", "no:cacheprovider",
           "--model", "vit_tiny_patch16_224", "--resolutions", "64,192", "--model-resolutions", "64,128",
           "--batch-size", "1", "--device", "cpu",
           "--time-budget", "1.5", "--threads", "1",  # a call may take 0.3 s: these rows are timed even on a busy machine
           "--max-rounds", "8",  # intervals stop rounds only from 20 rounds on: 8 rounds are enough to check rows
           # whole models too (on CPU they default to sdpa); a backend that compiles per shape (seconds each
           # on CPU) is left out: test_a_backend_that_compiles_per_shape_compiles_only_in_untimed_calls
           "--attn-backend", ",".join(b.name for b in fastvit.ATTENTION.backends() if not b.compiles),
           "--results", str(out / "results.jsonl"),
           "--ignore", "benchmarks/bench_mixed.py"]  # its groups: tests/test_bench_mixed.py (seconds, not minutes)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out


def rows_of(path: Path) -> tuple[dict, list[dict]]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return records[0]["environment"], records[1:]


def test_jsonl_rows(sweep):
    env, rows = rows_of(sweep / "results.jsonl")
    for key in ("torch", "cuda", "cudnn", "triton", "xformers", "device_name", "threads", "git", "command",
                "matmul_flops_per_s", "copy_bytes_per_s"):
        assert key in env
    assert env["threads"] == 1 and "--resolutions 64,192 --model-resolutions 64,128" in env["command"]
    assert {r["op"] for r in rows} == set(fb.OPS)
    assert {r["pass"] for r in rows} == {"fwd", "train"}
    for op in fb.OPS:
        assert {r["resolution"] for r in rows if r["op"] == op} == set(MODEL_SIZES if op == "model" else SIZES), op
    for r in rows:
        assert COMMON <= r.keys() and GROUPED <= r.keys(), r
        assert r["status"] == "ok" or r["status"].startswith("skipped: ") or r["status"] == "oom", r
        assert r["threads"] == 1
        if r["status"] == "ok":
            assert TIMED <= r.keys(), r
            assert len(r["round_times_s"]) == r["rounds"] == r["group_rounds"] >= 5
            assert r["group_stop"] in ("converged", "time budget", "max rounds")
        if r["op"] in ("layernorm", "patch_embed"):
            assert "bytes" in r and (r["status"] != "ok" or r["bytes_per_s"] > 0)
        if r["status"] == "ok" and r["flops"]:
            assert r["flops_per_s"] > 0
        if r["status"] == "ok" and r["backend"].startswith("sdpa"):
            assert r["sdpa_kernel"].startswith("sdpa-")
        if r["op"] == "model":
            assert r["norm_backend"] == "torch" and r["patch_backend"] == "conv"
    status = {(r["op"], r["backend"], r["resolution"], r["pass"]): r["status"] for r in rows}
    for op, backend in (("attention", "naive"), ("attention", "sdpa"), ("model", "sdpa"), ("layernorm", "torch"),
                        ("patch_embed", "conv")):
        small, large = MODEL_SIZES if op == "model" else SIZES
        for pass_ in ("fwd", "train"):
            assert status[op, backend, small, pass_] == "ok"
            # a busy machine may make a training step at the larger size longer than the budget allows
            assert status[op, backend, large, pass_] == "ok" or "over the time budget" in status[op, backend, large, pass_]
    status = {(r["op"], r["backend"]): r["status"] for r in rows}
    for op in ("attention", "model", "layernorm", "patch_embed"):
        # never timed on CPU, although TRITON_INTERPRET=1 makes the backend available
        assert status[op, "triton"].startswith("skipped: ") and "interpreter" in status[op, "triton"]
    assert status["attention", "xformers"].startswith("skipped: ")


def test_naive_memory_grows_faster_than_sdpa(sweep):
    _, rows = rows_of(sweep / "results.jsonl")
    mem = {(r["backend"], r["pass"], r["tokens"]): r["peak_mem_bytes"] for r in rows
           if r["op"] == "attention" and r["status"] == "ok"}
    small, large = (fb.num_tokens(r, 16) for r in SIZES)
    for pass_ in ("fwd", "train"):
        naive = mem["naive", pass_, large] / mem["naive", pass_, small]
        sdpa = mem["sdpa", pass_, large] / mem["sdpa", pass_, small]
        assert naive > 1.5 * sdpa, (pass_, naive, sdpa)


def test_every_group_is_timed_together_with_an_aa_twin(sweep):
    """The members of a group share its rounds; each is compared with its baseline by a paired ratio
    with its interval; one A/A twin of the baseline per group, the same workload timed again."""
    _, rows = rows_of(sweep / "results.jsonl")
    groups = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    assert len(groups) == 4 * 2 * 2  # (attention, model, layernorm, patch embedding) x 2 sizes x 2 passes
    for name, members in groups.items():
        timed = [r for r in members if r["status"] == "ok"]
        if not timed:  # every backend of the group is one that cannot run here (the Triton kernels on CPU)
            assert {r["backend"] for r in members} <= {"triton"}, name
            continue
        assert len({r["group_rounds"] for r in timed}) == 1 and len({r["group_seed"] for r in timed}) == 1
        assert len({r["member"] for r in members}) == len(members), name
        twins = [r for r in timed if r.get("twin_of")]
        assert len(twins) == 1, name
        twin = twins[0]
        base = next(r for r in timed if r["member"] == twin["twin_of"])
        assert twin["backend"] == base["backend"] + fb.TWIN and twin["baseline"] == base["member"]
        assert "ratio" not in base and base["baseline"] == base["member"] or base["op"] != "model"
        for r in timed:
            if r is base or r["baseline"] not in {m["member"] for m in timed}:
                continue
            assert r["ratio_low"] <= r["ratio"] <= r["ratio_high"], r
            assert r["verdict"] in ("faster", "slower", fb.NO_DIFFERENCE)
            ref = next(m for m in timed if m["member"] == r["baseline"])
            beside = r["baseline_round_times_s"]  # the baseline's times from r's own pairs
            assert len(beside) == len(r["round_times_s"])
            assert fb.paired_ratio(r["round_times_s"], beside).value == pytest.approx(r["ratio"])


def test_triton_is_never_timed_on_cpu():
    """Even where the interpreter makes the backend available, a CPU sweep records fastvit's own
    kernels as skipped (the backend's own_kernel trait decides, not its name)."""
    called = []
    case = fb.Case("attention", "triton", {"resolution": 64, "dtype": "fp32"}, build=lambda: called.append(1),
                   backends=(fastvit.ATTENTION.get("triton"),))
    sweep = fb.Sweep(device=torch.device("cpu"), budget=fb.Budget(1.0))
    outcome = sweep.run(case)
    assert outcome.status.startswith("skipped: ") and "interpreter" in outcome.status
    assert not called and sweep.unmeasured == [outcome.row]


def test_a_backend_that_compiles_per_shape_compiles_only_in_untimed_calls(monkeypatch):
    """A backend that compiles a kernel per shape (flex) compiles at its build's first call and, when a
    later member's build resets dynamo (as a ``+compile`` row's does) and so discards its code, again
    in a warm-up round: no timed round holds a compilation."""
    from torch._dynamo.utils import counters

    shape = (2, 2, 197, 80)  # tests/test_attention.py's forward-only case: inductor's cache has it
    backend = next((b for b in fastvit.ATTENTION.backends() if b.compiles
                    and fastvit.ATTENTION.availability(b.name, "cpu", torch.float32, head_dim=shape[-1])[0]), None)
    if backend is None:
        pytest.skip("no attention backend that compiles per shape runs on this CPU")
    compiled = []  # per call of the backend: whether dynamo compiled a graph in it (its counters survive a reset)

    def counting(*args, **kwargs):
        before = counters["stats"]["unique_graphs"]
        out = backend.fn(*args, **kwargs)
        compiled.append(counters["stats"]["unique_graphs"] > before)
        return out

    monkeypatch.setitem(fastvit.ATTENTION._backends, backend.name, dataclasses.replace(backend, fn=counting))
    q, k, v = (torch.randn(shape) for _ in range(3))

    def case(name, reset=False):
        def build():
            if reset:
                torch._dynamo.reset()
            return fb.workload(lambda: fastvit.attention(q, k, v, backend=name), train=False)
        return fb.Case("attention", name, {"resolution": 224, "tokens": 197, "dtype": "fp32", "pass": "fwd"}, build,
                       backends=(fastvit.ATTENTION.get(name),))

    group = fb.Group("attention", {"resolution": 224}, [case(backend.name), case("sdpa", reset=True)])
    rows = [o.row for o in fb.Sweep(device=torch.device("cpu"),
                                    budget=fb.Budget(30.0, min_rounds=3, max_rounds=3)).run_group(group)]
    assert rows[0]["status"] == "ok" and rows[0]["rounds"] == 3, rows[0]["status"]
    assert sum(compiled) >= 2, compiled  # at its build, and again after the reset
    assert not any(compiled[-rows[0]["rounds"]:]), compiled


def test_time_budget_skips_before_building():
    """Over-budget configurations are recorded as skipped with the estimate that ruled them out, and
    nothing is built or run: by FLOPs at the measured matmul peak, then by a smaller size's call."""
    built = []
    sweep = fb.Sweep(device=torch.device("cpu"), budget=fb.Budget(3.0), matmul_peak={"fp32": 1e9})
    fields = {"resolution": 512, "tokens": 1025, "dtype": "fp32", "pass": "fwd"}
    big = fb.Case("attention", "naive", fields, build=lambda: built.append(1), flops=5e9)
    assert sweep.run(big).status == (
        "skipped: over the time budget (5 GFLOP take at least 5.0 s per call at the measured matmul peak of "
        "1 GFLOP/s; budget 3 s for 3 rounds)")
    scaled = fb.Case("attention", "naive", fields, build=lambda: built.append(1), flops=4e8)
    sweep._probes[sweep.series_key(scaled)] = [(1e8, 0.3)]  # a smaller size took 0.3 s per call
    assert "estimated 1.2 s per call: 0.30 s measured at a smaller size, scaled by the work ratio 4.0; budget 3 s " \
        "for 3 rounds" in sweep.run(scaled).status
    assert not built and [r["status"].startswith("skipped: over the time budget") for r in sweep.rows] == [True] * 2


def test_budget_rules_are_pure():
    plan = fb.Budget(3.0, min_rounds=3, max_rounds=50)
    assert plan.per_call == 1.0
    assert plan.by_flops(1e9, 1e10) is None and plan.by_flops(None, 1e9) is None
    assert plan.by_probe(4e8, []) is None and plan.by_probe(4e8, [(1e8, 0.2)]) is None
    assert plan.by_probe(4e8, [(1e8, 0.3), (1e9, 5.0)]).startswith("skipped: over the time budget (estimated 1.2")
    assert plan.by_call(0.5) is None and "one call took 1.5 s" in plan.by_call(1.5)
    from fastvit.bench.budget import by_backend, by_memory

    assert by_memory(10 * 2 ** 30, 8 * 2 ** 30).startswith("skipped: its N x N matrices")
    assert by_memory(2 ** 30, 8 * 2 ** 30) is None and by_memory(None, 1) is None
    triton, naive = fastvit.ATTENTION.get("triton"), fastvit.ATTENTION.get("naive")
    assert by_backend([naive, triton], "cpu") and by_backend([triton], "cuda") is None
    assert by_backend([naive], "cpu") is None


def test_a_failing_configuration_is_recorded_with_its_error():
    """An exception other than out-of-memory leaves an "error: ..." row (so the report shows the failure)
    and hands the exception back, so that the benchmark test fails with it."""
    def build():
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore detail")

    sweep = fb.Sweep(device=torch.device("cpu"), budget=fb.Budget(1.0))
    case = fb.Case("attention", "sdpa", {"resolution": 64, "tokens": 17, "dtype": "fp32"}, build=build, flops=1.0)
    outcome = sweep.run(case)
    assert isinstance(outcome.error, RuntimeError) and "illegal memory access" in str(outcome.error)
    assert sweep.unmeasured[0]["status"] == "error: RuntimeError: CUDA error: an illegal memory access was encountered"


def test_an_out_of_memory_configuration_is_recorded_as_oom():
    def build():
        def fn():
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return fb.Workload(fn)

    sweep = fb.Sweep(device=torch.device("cpu"), budget=fb.Budget(1.0))
    case = fb.Case("attention", "naive", {"resolution": 64, "tokens": 17, "dtype": "fp32"}, build=build)
    outcome = sweep.run(case)
    assert outcome.status == "oom" and outcome.error is None


def test_timed_rows_carry_their_statistics():
    sweep = fb.Sweep(device=torch.device("cpu"), budget=fb.Budget(0.5, min_rounds=3, max_rounds=5))
    x = torch.randn(64, 64)
    case = fb.Case("attention", "naive", {"resolution": 64, "tokens": 17, "dtype": "fp32"},
                   build=lambda: fb.Workload(lambda: x @ x), flops=2.0 * 64 ** 3)
    row = sweep.run(case).row
    assert row["status"] == "ok" and 3 <= row["rounds"] <= 5
    assert row["q1_s"] <= row["median_s"] <= row["q3_s"] and row["flops_per_s"] > 0 and "peak_mem_bytes" in row


def test_cpu_peak_memory_sees_torch_allocations():
    def alloc():
        a = torch.empty(2 ** 20, dtype=torch.uint8)  # 1 MiB
        b = torch.empty(3 * 2 ** 20, dtype=torch.uint8)  # 3 MiB, while a is alive
        del a, b
        return torch.empty(2 ** 20, dtype=torch.uint8)

    assert fb.cpu_peak_memory(alloc) == 4 * 2 ** 20


def test_compiled_rows_count_their_graphs_and_breaks():
    """maybe_compile starts each row's compilation afresh; compile_stats tells a whole graph from one
    that broke (and so runs partly as eager PyTorch)."""
    def whole(x):
        return x.sin() + 1

    def broken(x):
        y = x.sin()
        torch._dynamo.graph_break()
        return y + 1

    x = torch.randn(8)
    fb.maybe_compile(whole, True)(x)
    stats = fb.compile_stats()
    assert stats["compile_graphs"] == 1 and stats["compile_graph_breaks"] == 0
    fb.maybe_compile(broken, True)(x)
    stats = fb.compile_stats()
    assert stats["compile_graphs"] == 2 and stats["compile_graph_breaks"] >= 1 and stats["compile_break_reasons"]
    assert fb.maybe_compile(whole, False) is whole


def test_git_commit_ignores_regenerated_reports(tmp_path):
    """A sweep rewriting a committed report under reports/ does not mark its own run as uncommitted
    code; a change anywhere else does."""
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "report.md").write_text("old\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    assert fb.git_commit(tmp_path)["dirty"] is False
    (tmp_path / "reports" / "report.md").write_text("new\n")
    assert fb.git_commit(tmp_path)["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert fb.git_commit(tmp_path)["dirty"] is True


def test_attention_share_is_measured_inside_the_model_and_leaves_gradients_alone():
    from fastvit.bench.share import Clock, attention_share, attention_timed

    model = fastvit.create_model("vit_tiny_patch16_224", img_size=64, num_classes=10, depth=2)
    images = torch.randn(2, 3, 64, 64)

    def step():
        model(images).sum().backward()

    share = attention_share(step, "cpu", reset=lambda: model.zero_grad(set_to_none=True))
    assert 0.0 < share < 1.0
    model.zero_grad(set_to_none=True)
    step()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    clock = Clock("cpu")
    with attention_timed(clock):
        step()
    assert clock.seconds() > 0
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, plain[name], rtol=0, atol=0, msg=name)
    conv = torch.nn.Conv2d(3, 8, 3)
    assert attention_share(lambda: conv(images), "cpu") is None  # no attention in a CNN


def test_attention_share_sees_torch_sdpa_called_directly():
    from fastvit.bench.share import attention_share

    q = torch.randn(1, 2, 64, 32, requires_grad=True)
    w = torch.randn(32, 32, requires_grad=True)

    def step():
        x = q @ w
        torch.nn.functional.scaled_dot_product_attention(x, x, x).sum().backward()

    assert 0.0 < attention_share(step, "cpu") < 1.0


def test_nested_attention_spans_count_once():
    """A fastvit backend calling torch's SDPA is one attention call, not two."""
    from fastvit.bench.share import Clock

    clock = Clock("cpu")
    with clock.span():
        with clock.span():
            pass
        inner = clock._seconds
    assert inner == 0.0 and clock.seconds() > 0.0


def _bench_module(name: str):
    import importlib.util

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


def _settings(**kw):
    from types import SimpleNamespace

    base = dict(device=torch.device("cpu"), models=["vit_tiny_patch16_224", "pit_ti_224"], model="vit_tiny_patch16_224",
                peers=False, impls={"model": ["sdpa"]}, compile_at=[64], vit_norm=["torch"], vit_patch=["conv"],
                batch=1, twin=True, model_time_budget=None, peer_models=None)
    return SimpleNamespace(**(base | kw))


def test_the_model_group_holds_every_model_with_its_baseline():
    """One group per size and pass: every model, the default compiled build of the op-level preset at
    --compile-at sizes only, each compared against its own default build, which is compared against
    the first model's; the A/A twin is the first model's."""
    bench = _bench_module("bench_vit")
    group = bench.model_group(_settings(), 64, "fwd", "fp32")
    pairs = {c.label: c.baseline for c in group.cases}
    vit, pit = "vit_tiny_patch16_224 fastvit sdpa", "pit_ti_224 fastvit sdpa"
    assert pairs == {vit: vit, vit + "+compile": vit, pit: vit}
    assert group.twin == vit and group.key == {"resolution": 64, "batch": 1, "dtype": "fp32", "pass": "fwd"}
    assert {c.label for c in bench.model_group(_settings(), 96, "fwd", "fp32").cases} == {vit, pit}
    assert bench.model_group(_settings(twin=False), 96, "fwd", "fp32").twin is None


def test_same_kernel_under_two_names_in_one_group_gives_paired_rows_and_their_report_line(tmp_path):
    """On a CPU ``sdpa`` runs PyTorch's flash kernel, the one ``sdpa-flash`` pins: timed in one group,
    interleaved, each row carries its rounds, its paired ratio inside its interval and the verdict,
    and the report's line says that verdict. (What the ratio reads is a measurement, not a test: the
    committed report has it; tests/test_paired.py shows on a made-up clock that drift cancels.)"""
    bench = _bench_module("bench_attention")
    from fastvit.models import preset_config

    settings = _settings(cfg=preset_config("vit_tiny_patch16_224"), impls={"attention": ["sdpa", "sdpa-flash"]})
    cases = [bench.make_case(settings, impl, 224, "fwd", "fp32") for impl in ("sdpa", "sdpa-flash")]
    group = bench.op_group("attention", "attention", settings, cases, 224, "fwd", "fp32")
    sweep = fb.Sweep(device=torch.device("cpu"), budget=fb.Budget(0.5, min_rounds=5, max_rounds=50))
    rows = {o.row["member"]: o.row for o in sweep.run_group(group)}
    flash = rows["sdpa-flash"]
    assert rows["sdpa"]["sdpa_kernel"] == "sdpa-flash" and flash["status"] == "ok"
    assert flash["baseline"] == "sdpa" and len(flash["round_times_s"]) == flash["group_rounds"] >= 5
    assert flash["ratio_low"] <= flash["ratio"] <= flash["ratio_high"], flash
    assert flash["verdict"] in (fb.NO_DIFFERENCE, "faster", "slower"), flash
    assert rows["sdpa (A/A)"]["twin_of"] == "sdpa"
    results = tmp_path / "rows.jsonl"
    writer = fb.RowWriter(results)
    writer.write({"environment": fb.Sweep.environment("cpu", sweep.budget)})
    for row in rows.values():
        writer.write(row)
    text = write_report(results, tmp_path / "report").read_text()
    line = next(l for l in text.splitlines() if l.startswith("| 224 px") and "`sdpa-flash`" in l)
    assert line.endswith(f"| {flash['verdict']} |"), line


def test_graph_replay_is_cuda_only():
    with pytest.raises(RuntimeError, match="needs a CUDA device"):
        fb.graph_replay_seconds(lambda: None, torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA-graph replay needs a CUDA device")
def test_graph_replay_times_a_captured_call():
    x = torch.randn(256, 256, device="cuda")
    assert 0 < fb.graph_replay_seconds(lambda: x @ x, torch.device("cuda")) < 1
