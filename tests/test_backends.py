"""Backend selection: explicit name > ``use_backend`` > environment variable > default, for all three
ops; unknown and unavailable backends raise BackendError and nothing falls back silently.

Which backend actually ran is proven by spying: every registered backend's function is replaced
(through monkeypatch, so the registry is restored afterwards) by a wrapper that counts its calls.
"""
import collections
import dataclasses
import os
import threading

import pytest
import torch

import fastvit
from fastvit import ATTENTION, NORM, PATCH, BackendError, create_model, use_backend

ENV = {"attention": "FASTVIT_ATTN_BACKEND", "norm": "FASTVIT_NORM_BACKEND", "patch": "FASTVIT_PATCH_BACKEND"}
REGISTRIES = fastvit.registries()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in ENV.values():
        monkeypatch.delenv(var, raising=False)


# -- helpers ------------------------------------------------------------------------------------
def _counting(fn, name, calls):
    def wrapper(*args, **kwargs):
        calls[name] += 1
        return fn(*args, **kwargs)
    return wrapper


def spy(monkeypatch, registry) -> collections.Counter:
    """Replace every backend of ``registry`` by a call-counting wrapper; return the counter."""
    calls = collections.Counter()
    for name, backend in list(registry._backends.items()):
        monkeypatch.setitem(registry._backends, name, dataclasses.replace(backend, fn=_counting(backend.fn, name, calls)))
    return calls


def add_copy(monkeypatch, registry, source: str, name: str):
    """Register ``name`` as a copy of ``source`` (so two runnable backends exist for every op)."""
    monkeypatch.setitem(registry._backends, name, dataclasses.replace(registry.get(source), name=name))


def ran(model, calls) -> set:
    """The set of backends whose functions ran during one forward pass."""
    calls.clear()
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    return set(calls)


def tiny(**kw):
    return create_model("vit_tiny_patch16_224", img_size=32, num_classes=10, **kw)


@pytest.fixture
def model():
    return tiny()


@pytest.fixture
def attn_calls(monkeypatch):
    return spy(monkeypatch, ATTENTION)


# -- attention selection order ---------------------------------------------------------------------
def test_default_is_sdpa(model, attn_calls):
    assert ATTENTION.default == "sdpa" and ATTENTION.resolve() == "sdpa"
    assert ran(model, attn_calls) == {"sdpa"}
    assert attn_calls["sdpa"] == model.cfg.depth


def test_env_var_selects(model, attn_calls, monkeypatch):
    monkeypatch.setenv("FASTVIT_ATTN_BACKEND", "naive")
    assert ran(model, attn_calls) == {"naive"}


def test_context_manager_beats_env_var(model, attn_calls, monkeypatch):
    monkeypatch.setenv("FASTVIT_ATTN_BACKEND", "naive")
    with use_backend("sdpa-math"):
        assert ran(model, attn_calls) == {"sdpa-math"}
    assert ran(model, attn_calls) == {"naive"}


def test_explicit_beats_context_manager_and_env_var(attn_calls, monkeypatch):
    monkeypatch.setenv("FASTVIT_ATTN_BACKEND", "sdpa")
    pinned = tiny(attn_backend="naive")
    with use_backend("sdpa-math"):
        assert ran(pinned, attn_calls) == {"naive"}
        assert fastvit.attention(*(torch.randn(1, 2, 5, 8),) * 3, backend="naive").shape == (1, 2, 5, 8)
        assert set(attn_calls) == {"naive"}


def test_selection_is_per_call_not_frozen_at_construction(attn_calls):
    with use_backend("naive"):
        built_inside = tiny()
    assert ran(built_inside, attn_calls) == {"sdpa"}


def test_set_attn_backend(attn_calls):
    m = tiny(attn_backend="naive")
    m.set_attn_backend("sdpa-math")
    assert ran(m, attn_calls) == {"sdpa-math"}
    m.set_attn_backend(None)
    with use_backend("naive"):
        assert ran(m, attn_calls) == {"naive"}
    with pytest.raises(BackendError, match="nope"):
        m.set_attn_backend("nope")


def test_use_backend_restores_nests_and_survives_exceptions():
    assert ATTENTION.resolve() == "sdpa"
    with use_backend("naive"):
        assert ATTENTION.resolve() == "naive"
        with use_backend("sdpa-math"):
            assert ATTENTION.resolve() == "sdpa-math"
        assert ATTENTION.resolve() == "naive"
        with pytest.raises(RuntimeError, match="boom"):
            with use_backend("sdpa-flash"):
                raise RuntimeError("boom")
        assert ATTENTION.resolve() == "naive"
    assert ATTENTION.resolve() == "sdpa"


def _in_thread(fn) -> dict:
    """Run ``fn(result)`` in a new thread, waiting for it; ``result`` gets ``error`` if it raised."""
    result = {}

    def run():
        try:
            fn(result)
        except BaseException as err:  # the test thread reports it
            result["error"] = err
    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_use_backend_is_per_thread_and_exits_leave_nothing_behind():
    """Thread A enters naive, then B enters sdpa-math; each sees its own selection and the main
    thread neither; A leaves first, then B: no error, and nothing stays selected anywhere."""
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def thread_a(seen):
        with use_backend("naive"):
            a_in.set()
            assert b_in.wait(10)
            seen["inside"] = ATTENTION.selected()
        a_out.set()
        seen["after"] = ATTENTION.selected()

    def thread_b(seen):
        assert a_in.wait(10)
        with use_backend("sdpa-math"):
            b_in.set()
            assert a_out.wait(10)
            seen["inside"] = ATTENTION.selected()
        seen["after"] = ATTENTION.selected()

    (ta, a), (tb, b) = _in_thread(thread_a), _in_thread(thread_b)
    assert b_in.wait(10)
    assert ATTENTION.selected() == "sdpa"  # both blocks open, neither in this thread
    ta.join(10), tb.join(10)
    assert "error" not in a and "error" not in b, (a.get("error"), b.get("error"))
    assert (a["inside"], b["inside"]) == ("naive", "sdpa-math")
    assert a["after"] == b["after"] == ATTENTION.selected() == "sdpa"
    assert not ATTENTION._open and not ATTENTION._selection.names


def test_blocks_left_out_of_order_leave_no_selection():
    outer, inner = use_backend("naive"), use_backend("sdpa-math")
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)  # the outer block first: the inner selection goes with it
    assert ATTENTION.selected() == "sdpa"
    inner.__exit__(None, None, None)
    assert ATTENTION.selected() == "sdpa" and not ATTENTION._open and not ATTENTION._selection.names


def test_compiled_code_follows_each_threads_selection():
    """One compiled function, no graph break, reused across threads: its guards read the calling
    thread's selection, so thread A's block (xformers: CUDA only, its refusal proves it was read)
    does not reach the main thread's calls while it is open, and vice versa."""
    torch._dynamo.reset()
    q = torch.randn(1, 2, 5, 8)
    fn = lambda q: fastvit.attention(q, q, q)  # noqa: E731
    explained = torch._dynamo.explain(fn)(q)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)
    torch._dynamo.reset()
    compiled = torch.compile(fn, backend="eager")  # (under fullgraph=True the refusal is dynamo's Unsupported)
    expected = fn(q)
    a_in, main_done = threading.Event(), threading.Event()

    def thread_a(seen):
        with use_backend("xformers"):
            a_in.set()
            assert main_done.wait(30)
            with pytest.raises(BackendError, match="'xformers' cannot run"):
                compiled(q)
        seen["after"] = compiled(q)

    ta, a = _in_thread(thread_a)
    try:
        assert a_in.wait(30)
        torch.testing.assert_close(compiled(q), expected, rtol=0, atol=0)  # A's block is open meanwhile
        with use_backend("naive"):
            torch.testing.assert_close(compiled(q), fn(q), rtol=0, atol=0)
    finally:
        main_done.set()
        ta.join(30)
    torch._dynamo.reset()
    assert "error" not in a, a.get("error")
    torch.testing.assert_close(a["after"], expected, rtol=0, atol=0)


# -- norm and patch selection ----------------------------------------------------------------------
@pytest.mark.parametrize("op", ["norm", "patch"])
def test_norm_and_patch_selection_order(op, monkeypatch):
    registry = REGISTRIES[op]
    add_copy(monkeypatch, registry, registry.default, "copy-a")
    add_copy(monkeypatch, registry, registry.default, "copy-b")
    calls = spy(monkeypatch, registry)
    m = tiny()
    assert ran(m, calls) == {registry.default}
    monkeypatch.setenv(ENV[op], "copy-a")
    assert ran(m, calls) == {"copy-a"}
    with use_backend(**{op: "copy-b"}):
        assert ran(m, calls) == {"copy-b"}
        with pytest.raises(RuntimeError):
            with use_backend(**{op: registry.default}):
                assert ran(m, calls) == {registry.default}
                raise RuntimeError("leave the block")
        assert ran(m, calls) == {"copy-b"}
        pinned = tiny(**{f"{op}_backend": registry.default})
        assert ran(pinned, calls) == {registry.default}
        getattr(pinned, f"set_{op}_backend")("copy-a")
        assert ran(pinned, calls) == {"copy-a"}
    assert ran(m, calls) == {"copy-a"}


def test_use_backend_sets_all_three_ops_at_once():
    with use_backend("naive", norm=NORM.default, patch="einops"):
        assert (ATTENTION.resolve(), NORM.resolve(), PATCH.resolve()) == ("naive", NORM.default, "einops")
    assert (ATTENTION.resolve(), NORM.resolve(), PATCH.resolve()) == ("sdpa", "torch", "conv")


# -- unknown names ---------------------------------------------------------------------------------
def _assert_names_known(err, registry):
    assert isinstance(err.value, ValueError)
    for name in registry.names():
        assert name in str(err.value), f"{name!r} missing from: {err.value}"


def test_unknown_name_in_create_model():
    with pytest.raises(BackendError, match="'sdpaa'.*did you mean 'sdpa'") as err:
        tiny(attn_backend="sdpaa")
    _assert_names_known(err, ATTENTION)


@pytest.mark.parametrize("op", ["attention", "norm", "patch"])
def test_unknown_name_in_use_backend(op):
    kwargs = {"attn": "nope"} if op == "attention" else {op: "nope"}
    with pytest.raises(BackendError, match="unknown .*'nope'") as err:
        with use_backend(**kwargs):
            pass
    _assert_names_known(err, REGISTRIES[op])


@pytest.mark.parametrize("op", ["attention", "norm", "patch"])
def test_unknown_name_in_env_var(op, monkeypatch):
    monkeypatch.setenv(ENV[op], "nope")
    with pytest.raises(BackendError, match="'nope'") as err:
        tiny()(torch.randn(1, 3, 32, 32))
    _assert_names_known(err, REGISTRIES[op])


def test_unknown_name_in_attention_function():
    q = torch.randn(1, 2, 5, 8)
    with pytest.raises(BackendError, match="'nope'") as err:
        fastvit.attention(q, q, q, backend="nope")
    _assert_names_known(err, ATTENTION)


# -- unavailable backends: an error with the reason, never a silent fallback -------------------------
@pytest.mark.parametrize("backend,why", [("xformers", "CUDA"), ("sdpa-efficient", "EFFICIENT_ATTENTION")])
@pytest.mark.parametrize("how", ["explicit", "use_backend", "env"])
def test_unavailable_backend_raises_and_nothing_runs(backend, why, how, attn_calls, monkeypatch):
    ok, _ = ATTENTION.availability(backend, "cpu", torch.float32, head_dim=64)
    if ok:
        pytest.skip(f"{backend} runs on this machine's CPU")
    runnable = [n for n in ATTENTION.names() if ATTENTION.availability(n, "cpu", torch.float32, head_dim=64)[0]]
    m = tiny(attn_backend=backend if how == "explicit" else None)
    if how == "env":
        monkeypatch.setenv("FASTVIT_ATTN_BACKEND", backend)
    with use_backend(backend if how == "use_backend" else None):
        with pytest.raises(BackendError, match=why) as err:
            ran(m, attn_calls)
    msg = str(err.value)
    assert repr(backend) in msg and "Backends that can" in msg
    for name in runnable:
        assert name in msg.split("Backends that can")[1]
    assert not attn_calls, f"no attention backend may run, but {dict(attn_calls)} did"


# -- listing ---------------------------------------------------------------------------------------
def test_list_backends_rows():
    rows = fastvit.list_backends("cpu")
    for op, registry in REGISTRIES.items():
        assert [r["name"] for r in rows if r["op"] == op] == registry.names()
    assert {r["op"] for r in rows} == set(REGISTRIES)
    for row in rows:
        assert {"name", "available", "reason"} <= set(row)
        assert isinstance(row["available"], bool)
        if row["available"]:
            assert row["reason"] == ""
        else:
            assert row["reason"].strip(), f"{row['op']} {row['name']} is unavailable without a reason"
    by_name = {(r["op"], r["name"]): r for r in rows}
    assert not by_name[("attention", "xformers")]["available"]
    assert by_name[("attention", "naive")]["available"] and by_name[("patch", "conv")]["available"]
    assert by_name[("norm", "torch")]["available"]


# -- the hot path: remembered routes -----------------------------------------------------------------
def test_availability_is_checked_once_per_route(monkeypatch):
    checks = collections.Counter()
    backend = ATTENTION.get("naive")

    def counted(device, dtype, **shape):
        checks[shape["head_dim"]] += 1
        return backend.check(device, dtype, **shape)

    monkeypatch.setitem(ATTENTION._backends, "naive", dataclasses.replace(backend, check=counted))
    for D in (8, 8, 16, 8, 16):
        fastvit.attention(*(torch.randn(1, 2, 5, D),) * 3, backend="naive")
    assert checks == {8: 1, 16: 1}
    assert ("naive", torch.device("cpu"), torch.float32, 8, False, False) in ATTENTION.routes


def test_any_change_to_the_table_forgets_the_routes(monkeypatch):
    q = torch.randn(1, 2, 5, 8)
    fastvit.attention(q, q, q, backend="naive")
    assert ATTENTION.routes
    calls = spy(monkeypatch, ATTENTION)  # monkeypatch.setitem on the table
    assert not ATTENTION.routes
    fastvit.attention(q, q, q, backend="naive")
    assert calls == {"naive": 1}
    with ATTENTION.wrapped(lambda b: lambda *a, **kw: "wrapped"):
        assert fastvit.attention(q, q, q, backend="naive") == "wrapped"
    assert isinstance(fastvit.attention(q, q, q, backend="naive"), torch.Tensor)


@pytest.mark.parametrize("op", ["attention", "norm", "patch"])
def test_environment_is_read_live(op, monkeypatch):
    registry = REGISTRIES[op]
    assert registry._environ() is None and registry.selected() == registry.default
    monkeypatch.setenv(ENV[op], "naïve-é")  # non-ASCII survives the raw read
    assert registry._environ() == os.environ.get(ENV[op]) == "naïve-é"
    monkeypatch.delenv(ENV[op])
    assert registry._environ() is None
