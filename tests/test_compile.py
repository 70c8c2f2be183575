"""torch.compile and torch.export of models and of fastvit's kernels (custom ops).

A model built with explicit backends compiles with zero graph breaks for every backend that runs
here (the registries drive the matrix: one op's backend swapped at a time), forward and training
step; ``torch.export`` records fastvit's Triton kernels as ``fastvit_kernels`` custom ops. The Triton
kernels run through the interpreter on CPU, so the models are tiny (32 px, two blocks where the
whole forward runs). Each kernel's custom ops pass ``torch.library.opcheck`` (schema, fake
implementation against the real one, autograd registration, AOT dispatch).

DeiT (distilled), Swin and PiT run the same matrix over the ops each family calls
(``model.op_shapes()``: PiT and Swin make no patch call, Swin's attention takes a bias), each backend
checked against the shapes the model passes; plus a training step of Swin on the triton backends
(the flash attention kernel's bias gradient).

A backend that cannot train here (flex on CPU) is traced under no_grad. One that compiles its own
kernels per shape (flex) is compared with the model in float64 on the reference backends by the fp32
rule, not bitwise with its eager self: eagerly it runs the kernels inductor generates for it (seconds
of compiling per shape on CPU), while a graph run by an eager-running backend runs flex_attention's
reference implementation.
"""
import contextlib
import copy
import functools

import pytest
import torch

import fastvit
from fastvit import ATTENTION, NORM, PATCH, BackendError, Packing
from fastvit.ops.attention.sdpa import PINNED
from fastvit.testing import assert_close
from conftest import TRITON_INTERPRETER

DEFAULTS = {"attention": "sdpa", "norm": "torch", "patch": "conv"}
TRITON = {"attention": "triton", "norm": "triton", "patch": "triton"}
REGISTRIES = {"attention": ATTENTION, "norm": NORM, "patch": PATCH}
# the Triton kernels run as parts of models here: the interpreter without its overflow sanitizer (conftest)
pytestmark = pytest.mark.usefixtures("interpreter_without_overflow_checks")


def tiny(backends: dict, depth: int | None = None):
    kw = {} if depth is None else {"depth": depth}
    return fastvit.create_model("vit_tiny_patch16_224", img_size=32, num_classes=10, attn_backend=backends["attention"],
                                norm_backend=backends["norm"], patch_backend=backends["patch"], **kw)


def _skip_unless_available(backends: dict):
    for op, name in backends.items():
        ok, reason = REGISTRIES[op].availability(name, "cpu", torch.float32, **REGISTRIES[op].probe_shape)
        if not ok:
            pytest.skip(f"{op} backend {name!r} cannot run here: {reason}")


def _mode(model, backends: dict):
    """no_grad where a backend the model calls refuses to train here, else grad mode (a training
    forward's call: eager and compiled in one mode, as SDPA's kernel choice depends on it)."""
    trains = all(model.backend_availability(op, name, "cpu", torch.float32, train=True)[0]
                 for op, name in backends.items())
    return contextlib.nullcontext if trains else torch.no_grad


def _compiles(backends: dict) -> bool:
    return any(REGISTRIES[op].get(name).compiles for op, name in backends.items())


def _reference_logits(model, x):
    """The model's weights in float64 on every op's reference backend, on ``x``."""
    ref = copy.deepcopy(model).double()
    for op, reg in REGISTRIES.items():
        ref.set_backend(op, reg.reference.name)
    with torch.no_grad():
        return ref(x.double())


def _assert_matches_eager(logits, model, x, backends, mode):
    """Compiled logits bitwise equal to eager's; for a backend compiling its own kernels, within the
    fp32 rule of the float64 reference (the module docstring)."""
    if _compiles(backends):
        assert_close(logits, _reference_logits(model, x), name=f"compiled logits on {backends}")
        return
    with mode():
        expected = model(x).detach()
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)


def _forget_routes():
    """A cold start: availability is checked while dynamo traces (as a constant, not traced)."""
    for reg in REGISTRIES.values():
        reg.routes.clear()


def _matrix():
    """The defaults with one op's backend swapped, for every registered backend; all three triton."""
    seen = []
    for op, reg in REGISTRIES.items():
        for name in reg.names():
            backends = {**DEFAULTS, op: name}
            if backends not in seen:
                seen.append(backends)
    return [pytest.param(b, id="-".join(b.values())) for b in seen + [TRITON]]


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _compiled_in_one_graph(model, *args):
    """``model(*args)`` compiled with fullgraph=True (a graph break raises, with its reason) by a backend
    that runs each graph as the eager one does and counts them: one graph, traced and run in one pass
    (what torch._dynamo.explain does, keeping the output)."""
    graphs = []

    def counting(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    out = torch.compile(model, backend=counting, fullgraph=True)(*args)
    assert len(graphs) == 1, [g.code[:300] for g in graphs]
    return out


@pytest.mark.parametrize("backends", _matrix())
def test_forward_has_no_graph_break(backends):
    _skip_unless_available(backends)
    model, x = tiny(backends, depth=2).eval(), torch.randn(1, 3, 32, 32)
    mode = _mode(model, backends)
    _forget_routes()
    with mode():
        explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0, [str(r.reason)[:300] for r in explained.break_reasons]
    assert explained.graph_count == 1
    with torch.no_grad():
        logits = torch.compile(model, backend="eager", fullgraph=True)(x)
    _assert_matches_eager(logits, model, x, backends, torch.no_grad)


def _compiled_step_matches_eager(model, x) -> dict:
    """A training step of ``model`` compiled with fullgraph=True under AOTAutograd: its loss equals
    eager's bitwise; returns the compiled step's parameter gradients (the model then holds eager's)."""
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    loss = compiled(x).square().mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    eager = model(x).square().mean()
    eager.backward()
    torch.testing.assert_close(loss, eager, rtol=0, atol=0)
    return grads


@pytest.mark.parametrize("backends", [pytest.param(DEFAULTS, id="defaults"), pytest.param(TRITON, id="triton")])
def test_training_step_compiles_in_one_graph(backends):
    """fullgraph=True with AOTAutograd: the backward is traced through each custom op's autograd
    formula and fake implementations; loss and every parameter gradient equal eager's."""
    _skip_unless_available(backends)
    model, x = tiny(backends, depth=2), torch.randn(2, 3, 32, 32)
    grads = _compiled_step_matches_eager(model, x)
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-6, atol=1e-7, msg=name)


# -- DeiT, Swin and PiT -----------------------------------------------------------------------------
FAMILIES = {  # tests/test_variants_backends.py's small configs with fewer blocks (the interpreter runs the kernels)
    "deit": ("deit_tiny_distilled_patch16_224", dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)),
    # 40 px: maps 10 and 5 in windows of 4 (padded to 12 and 8), block 1 shifted (its mask in the bias), one merging
    "swin": ("swin_tiny_patch4_window7_224", dict(img_size=40, embed_dim=16, depths=(2, 1), num_heads=(1, 2),
                                                  window_size=4)),
    "pit": ("pit_ti_224", dict(img_size=16, patch_size=4, stride=2, base_dims=(8, 8, 8), depths=(1, 1, 1),
                               num_heads=(1, 2, 4))),  # maps 7, 4, 2
}


def family_model(family: str, backends: dict):
    preset, config = FAMILIES[family]
    return fastvit.create_model(preset, num_classes=10, attn_backend=backends["attention"],
                                norm_backend=backends["norm"], patch_backend=backends["patch"], **config)


@functools.lru_cache(maxsize=None)
def family_ops(family: str) -> dict[str, list[dict]]:
    """The ops the family calls, with the shapes it passes (``op_shapes``)."""
    return family_model(family, DEFAULTS).op_shapes()


def _skip_unless_family_runs(family: str, backends: dict):
    """Skip, with the reason, unless every backend runs every call the model makes (the shapes it
    passes: Swin asks for attention with a bias)."""
    for op, shapes in family_ops(family).items():
        for shape in shapes:
            ok, reason = REGISTRIES[op].availability(backends[op], "cpu", torch.float32, **shape)
            if not ok:
                pytest.skip(f"{family}: {op} backend {backends[op]!r} cannot run the call {shape}: {reason}")


def _family_matrix():
    """Per family: the defaults with one called op's backend swapped, for every registered backend;
    all triton (the patch backend of a family that makes no patch call is never called)."""
    for family in FAMILIES:
        ops = list(family_ops(family))
        seen = []
        for op in ops:
            for name in REGISTRIES[op].names():
                backends = {**DEFAULTS, op: name}
                if backends not in seen:
                    seen.append(backends)
        for b in seen:
            yield pytest.param(family, b, id="-".join([family] + [b[op] for op in ops]))
        yield pytest.param(family, TRITON, id=f"{family}-all-triton")


def test_family_matrix_covers_the_ops_each_family_calls():
    assert set(family_ops("deit")) == {"attention", "norm", "patch"}
    assert family_ops("deit")["patch"] == [{"patch_size": 8, "prefix_tokens": 2}]
    assert set(family_ops("pit")) == set(family_ops("swin")) == {"attention", "norm"}  # own stems: no patch call
    assert {s["bias"] for s in family_ops("swin")["attention"]} == {True}


@pytest.mark.parametrize("family,backends", list(_family_matrix()))
def test_family_forward_has_no_graph_break(family, backends):
    """As the ViT's: one graph, no break, compiled logits bitwise equal to eager's. Traced and compared
    in grad mode (a training forward's call; eager and compiled in one mode, as SDPA's kernel choice
    depends on it), except where a backend refuses to train here: Swin on sdpa-flash (PyTorch's CPU
    flash kernel takes no bias that requires grad, Swin's relative positions; its grad-mode refusal is
    test_swin_grad_mode_refusal_stays_typed_when_compiled's case) and flex on CPU run in inference."""
    _skip_unless_family_runs(family, backends)
    model = family_model(family, backends).eval()
    x = torch.randn(1, 3, *model.cfg.img_size)
    called = {op: backends[op] for op in family_ops(family)}
    mode = _mode(model, called)
    _forget_routes()
    with mode():
        logits = _compiled_in_one_graph(model, x).detach()
    _assert_matches_eager(logits, model, x, called, mode)


def test_swin_grad_mode_refusal_stays_typed_when_compiled():
    """PyTorch's CPU flash kernel takes a constant bias but not one that needs its gradient: in grad
    mode Swin's relative position bias does, and the route key says so (bias=TRAINED), so the refusal
    is fastvit's BackendError at the first call, eager or while dynamo traces; under no_grad it runs."""
    backends = {**DEFAULTS, "attention": "sdpa-flash"}
    _skip_unless_family_runs("swin", backends)
    model = family_model("swin", backends).eval()
    x = torch.randn(1, 3, *model.cfg.img_size)
    with pytest.raises(BackendError, match="'sdpa-flash' cannot run"):
        model(x)  # grad mode: the relative position bias requires grad
    with pytest.raises(BackendError, match="'sdpa-flash' cannot run"):
        torch.compile(model, backend="eager")(x)
    ok, reason = fastvit.ATTENTION.availability("sdpa-flash", "cpu", torch.float32, head_dim=16, bias=True)
    if not ok:
        pytest.skip(f"sdpa-flash takes no constant bias here either: {reason}")
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model, backend="eager")(x), model(x), rtol=0, atol=0)


def test_swin_training_step_compiles_in_one_graph():
    """Swin on the triton backends, fullgraph=True with AOTAutograd: the flash attention kernel's
    backward with a bias (relative positions plus the shift mask, dbias reduced over the windows into
    the relative position tables); loss and every parameter gradient bitwise equal to eager's."""
    _skip_unless_family_runs("swin", TRITON)
    model = family_model("swin", TRITON)
    x = torch.randn(1, 3, *model.cfg.img_size)  # one image: the bias gradients still sum over 9 windows
    grads = _compiled_step_matches_eager(model, x)
    tables = [n for n in grads if n.endswith("relative_position_bias_table")]
    assert len(tables) == 3 and all(grads[n].abs().max() > 0 for n in tables)
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=0, atol=0, msg=name)


def test_model_without_explicit_backends_compiles_and_follows_the_selection(monkeypatch):
    """A module that names no backend reads the selection per call (use_backend, the environment,
    the default): in one graph, guarded, so a compiled model follows a later change by recompiling."""
    monkeypatch.delenv(ATTENTION.env_var, raising=False)
    model, x = fastvit.create_model("vit_tiny_patch16_224", img_size=32, num_classes=10, depth=1).eval(), \
        torch.randn(1, 3, 32, 32)
    explained = torch._dynamo.explain(model)(x)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), \
        [str(r.reason)[:300] for r in explained.break_reasons]
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager")
    with torch.no_grad():
        compiled(x)
        with fastvit.use_backend(attention="xformers"), pytest.raises(BackendError, match="'xformers' cannot run"):
            compiled(x)  # CUDA only: the refusal proves the new selection reached the compiled model
        compiled(x)
        monkeypatch.setenv(ATTENTION.env_var, "xformers")
        with pytest.raises(BackendError, match="'xformers' cannot run"):
            compiled(x)


@pytest.mark.parametrize("backends", [pytest.param(DEFAULTS, id="defaults"), pytest.param(TRITON, id="triton"),
                                      pytest.param({"attention": "naive", "norm": "torch", "patch": "einops"},
                                                   id="naive-torch-einops")])
def test_export(backends):
    _skip_unless_available(backends)
    model, x = tiny(backends, depth=2).eval(), torch.randn(1, 3, 32, 32)
    program = torch.export.export(model, (x,))
    ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    own = {op for op in ops if op.startswith("fastvit_kernels.")}
    if backends == TRITON:
        assert own == {"fastvit_kernels.flash_attn_fwd.default", "fastvit_kernels.layer_norm_fwd.default",
                       "fastvit_kernels.patch_embed_fwd.default"}
    else:
        assert not own
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=0, atol=0)


def test_export_of_the_default_selection_records_the_backend_in_force():
    """A model that names no backend exports the ones selected when export runs (use_backend, the
    environment, the defaults): the exported program is a graph, it no longer selects."""
    model, x = fastvit.create_model("vit_tiny_patch16_224", img_size=32, num_classes=10, depth=1).eval(), \
        torch.randn(1, 3, 32, 32)
    with fastvit.use_backend("naive"):
        program = torch.export.export(model, (x,))
    ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert "aten.softmax.int" in ops and "aten.scaled_dot_product_attention.default" not in ops


@pytest.mark.parametrize("name", list(PINNED))
def test_export_does_not_record_a_pinned_sdpa_kernel(name):
    """PyTorch limit: torch.export (strict or not) keeps SDPA as one aten op and drops the
    sdpa_kernel context manager around it, so the exported program of a pinned backend picks its
    SDPA kernel when it runs, as the unpinned one does (torch.compile keeps the pin)."""
    _skip_unless_available({**DEFAULTS, "attention": name})
    model = tiny({**DEFAULTS, "attention": name}, depth=1).eval()
    program = torch.export.export(model, (torch.randn(1, 3, 32, 32),))
    ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert "aten.scaled_dot_product_attention.default" in ops
    assert not any("sdpa_kernel" in op or "_scaled_dot_product_attention_math" in op for op in ops)


def test_attention_with_bias_compiles(monkeypatch):
    """Swin's call: attention with an additive bias, through the registry, in one graph."""
    backends = [n for n in ATTENTION.names() if ATTENTION.get(n).takes_bias
                and ATTENTION.availability(n, "cpu", torch.float32, head_dim=32, bias=True)[0]]
    assert "triton" in backends or not TRITON_INTERPRETER
    q, k, v = (torch.randn(2, 3, 49, 32) for _ in range(3))
    bias = torch.randn(1, 3, 49, 49)
    for name in backends:
        torch._dynamo.reset()
        fn = lambda q, k, v, bias: fastvit.attention(q, k, v, backend=name, bias=bias)  # noqa: E731
        explained = torch._dynamo.explain(fn)(q, k, v, bias)
        assert explained.graph_break_count == 0, (name, [str(r.reason)[:300] for r in explained.break_reasons])
        out = torch.compile(fn, backend="eager", fullgraph=True)(q, k, v, bias)
        if ATTENTION.get(name).compiles:  # see the module docstring
            assert_close(out, fastvit.attention(q.double(), k.double(), v.double(), backend="naive", bias=bias.double()),
                         name=name)
        else:
            torch.testing.assert_close(out, fn(q, k, v, bias), rtol=0, atol=0, msg=name)


def test_packed_attention_compiles():
    """Packed sequences through the registry in one graph, for every backend that runs them here (in
    inference: flex trains on CUDA only): the packing's Python lengths are constants of the graph and
    flex's block mask is built in it, nothing is read back. Held to each sequence alone in float64."""
    lengths = (5, 1, 17, 9)
    q, k, v = (torch.randn(1, 2, sum(lengths), 16) for _ in range(3))
    parts = zip(*(t.double().split(lengths, dim=2) for t in (q, k, v)))
    ref = torch.cat([fastvit.attention(a, b, c, backend="naive") for a, b, c in parts], dim=2)
    names = [n for n in ATTENTION.names() if ATTENTION.availability(n, "cpu", torch.float32, head_dim=16, packed=True)[0]]
    assert "naive" in names
    for name in names:
        torch._dynamo.reset()
        fn = lambda q, k, v: fastvit.attention(q, k, v, backend=name, packing=Packing(lengths))  # noqa: E731
        with torch.no_grad():
            out = _compiled_in_one_graph(fn, q, k, v)
        assert_close(out, ref, name=f"{name} packed, compiled")


def test_backend_errors_stay_typed_in_eager_and_compiled():
    q = torch.randn(1, 2, 5, 64)
    fn = lambda q: fastvit.attention(q, q, q, backend="xformers")  # noqa: E731  (CUDA only)
    with pytest.raises(BackendError, match="'xformers' cannot run on cpu"):
        fn(q)
    with pytest.raises(BackendError, match="'xformers' cannot run on cpu"):
        torch.compile(fn, backend="eager")(q)


# -- the kernels' custom ops -----------------------------------------------------------------------
def _kernel_cases():
    from kernels.flash_attention import flash_attn_fwd
    from kernels.layer_norm import layer_norm_fwd
    from kernels.patch_embed import patch_embed_fwd

    def t(*shape, dtype=torch.float32):
        return torch.randn(*shape, dtype=dtype, requires_grad=True)

    return {
        "flash_attn": (flash_attn_fwd, lambda: (t(1, 2, 20, 16), t(1, 2, 20, 16), t(1, 2, 20, 16), None, 0.25)),
        "flash_attn-bias": (flash_attn_fwd, lambda: (t(2, 2, 20, 16), t(2, 2, 20, 16), t(2, 2, 20, 16),
                                                     t(1, 2, 20, 20), 0.25)),
        "layer_norm": (layer_norm_fwd, lambda: (t(3, 5, 24), None, t(24), t(24), 1e-6, torch.float32)),
        "add_layer_norm-mixed": (layer_norm_fwd, lambda: (t(3, 5, 24, dtype=torch.float16), t(3, 5, 24), t(24),
                                                          None, 1e-5, torch.float32)),
        "patch_embed-T2": (patch_embed_fwd, lambda: (t(2, 3, 8, 12), t(16, 3, 4, 4), t(16), t(1, 2 + 6, 16),
                                                     t(1, 2, 16))),
    }


@pytest.mark.parametrize("case", list(_kernel_cases()))
def test_custom_ops_pass_opcheck(case):
    if not TRITON_INTERPRETER:
        pytest.skip("runs the kernels on CPU tensors, through Triton's interpreter")
    op, make_args = _kernel_cases()[case]
    torch.library.opcheck(op, make_args())


def test_eager_calls_skip_the_dispatcher_and_tracers_see_the_ops():
    """Eagerly each kernel applies its autograd.Function (no custom-op dispatch per call); under any
    tracer (here make_fx, a dispatch mode) the same call records the custom op."""
    if not TRITON_INTERPRETER:
        pytest.skip("runs the kernels on CPU tensors, through Triton's interpreter")
    from torch.fx.experimental.proxy_tensor import make_fx

    import kernels

    q = torch.randn(1, 2, 8, 16, requires_grad=True)
    assert type(kernels.flash_attention(q, q, q).grad_fn).__name__ == "FlashAttentionFnBackward"
    x, w = torch.randn(4, 8, requires_grad=True), torch.randn(8, requires_grad=True)
    assert type(kernels.layer_norm(x, w, None).grad_fn).__name__ == "LayerNormFnBackward"
    graph = make_fx(lambda q: kernels.flash_attention(q, q, q, bias=torch.zeros(8, 8)))(q.detach()).graph
    assert "fastvit_kernels.flash_attn_fwd.default" in {str(n.target) for n in graph.nodes}
