"""Every registered attention backend against a float64 reference: output and dq, dk, dv.

The reference is the naive attention in float64. In fp32 the tolerance is tight; in fp16/bf16 a
backend may be at most twice as far from the reference as PyTorch's math SDPA in the same precision
(fastvit.testing). Backends that cannot run here are skipped with their reason (pytest -rs).

The op's one semantics (fastvit.attention's docstring) is held for every backend too: biases of
every rank 0 to 4 and expand()-ed views, fully masked rows (zeros, NaN-free gradients), rows
dominated by scores up to 1e4 at scales that are no power of two; a backend that cannot honour a
case must refuse it at admission (BackendError), which its availability check predicts.

These tests train (q, k, v need gradients). A backend that runs here forward only (flex on CPU:
PyTorch has no CPU backward for it) is skipped by them with its reason, and its forward is held to
the same reference on a few cases of its own (test_forward_only_backend_matches_float64_reference).
"""
import pytest
import torch

import fastvit
from fastvit.ops.attention.naive import naive_attention
from fastvit.ops.attention.registry import TRAINED
from fastvit.testing import BASELINE_ATTENTION, assert_close, is_low_precision
from conftest import DEVICES

DTYPES = {"cpu": [torch.float32, torch.bfloat16], "cuda": [torch.float32, torch.float16, torch.bfloat16]}
CASES = [  # (B, H, N, D): N = 1, ViT-B/16 at 224 px (197) and 384 px (577); D not a power of two (80)
    (2, 3, 1, 64),
    (2, 3, 197, 64),
    (1, 2, 197, 32),
    (2, 2, 197, 80),
    (1, 2, 577, 64),
]
# Triton runs through the interpreter on CPU, which is slow: its CPU coverage of larger shapes
# lives in tests/test_flash_attention.py.
INTERPRETER_CASES = {(2, 3, 1, 64), (1, 2, 197, 32), (2, 2, 197, 80)}


def _params():
    for device in DEVICES:
        for dtype in DTYPES[device]:
            for case in CASES:
                yield pytest.param(device, dtype, case, id=f"{device}-{str(dtype)[6:]}-{'x'.join(map(str, case))}")


def _run(backend, q, k, v, grad_out):
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    out = fastvit.attention(q, k, v, backend=backend)
    out.backward(grad_out.to(out.dtype))
    return out.detach(), q.grad, k.grad, v.grad


@pytest.mark.parametrize("backend", fastvit.ATTENTION.names())
@pytest.mark.parametrize("device,dtype,case", list(_params()))
def test_backend_matches_float64_reference(backend, device, dtype, case):
    B, H, N, D = case
    ok, reason = fastvit.ATTENTION.availability(backend, device, dtype, head_dim=D, grad=True)
    if not ok:
        pytest.skip(f"{backend} on {device}/{dtype}: {reason}")
    if backend == "triton" and device == "cpu" and case not in INTERPRETER_CASES:
        pytest.skip("triton on CPU runs through Triton's slow interpreter; larger shapes are in test_flash_attention.py")
    gen = torch.Generator(device).manual_seed(0)
    q, k, v, grad_out = (torch.randn(B, H, N, D, device=device, generator=gen) for _ in range(4))
    outs = _run(backend, *(t.to(dtype) for t in (q, k, v)), grad_out)
    refs = _run("naive", *(t.double() for t in (q, k, v)), grad_out)
    baselines = [None] * 4
    if is_low_precision(dtype):  # PyTorch's own math attention in the same precision
        baselines = _run(BASELINE_ATTENTION, *(t.to(dtype) for t in (q, k, v)), grad_out)
    for name, out, ref, base in zip(("out", "dq", "dk", "dv"), outs, refs, baselines):
        assert out.dtype == dtype, f"{name} came back as {out.dtype}, not {dtype}"
        assert_close(out, ref, baseline=base, dtype=dtype, name=f"{backend} {name}")


def test_reference_is_materialized_softmax():
    q, k, v = (torch.randn(1, 2, 5, 8, dtype=torch.float64) for _ in range(3))
    scores = torch.einsum("bhnd,bhmd->bhnm", q, k) / 8 ** 0.5
    expected = torch.einsum("bhnm,bhmd->bhnd", scores.softmax(-1), v)
    torch.testing.assert_close(naive_attention(q, k, v), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", ["naive", "sdpa", "sdpa-math"])
def test_custom_scale_is_honoured(backend):
    q, k, v = (torch.randn(1, 2, 7, 16) for _ in range(3))
    ref = naive_attention(q.double(), k.double(), v.double(), scale=0.5)
    assert_close(fastvit.attention(q, k, v, backend=backend, scale=0.5), ref, name=backend)


def test_sdpa_reports_the_kernel_it_picks():
    from fastvit.ops.attention.sdpa import PINNED, sdpa_kernel_choice

    q = torch.randn(1, 2, 197, 64)
    assert sdpa_kernel_choice(q, q, q) in PINNED


def test_pinned_sdpa_passes_out_of_memory_through(monkeypatch):
    """Out of memory in a pinned SDPA kernel is not a refusal: it reaches the caller as itself (the
    benchmark records it as "oom"), not as a BackendError ("skipped")."""
    q = torch.randn(1, 2, 8, 16)
    fastvit.attention(q, q, q, backend="sdpa-math")  # available here: probed and cached

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB")

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", out_of_memory)
    with pytest.raises(torch.OutOfMemoryError, match="Tried to allocate"):
        fastvit.attention(q, q, q, backend="sdpa-math")


BIAS_CASES = {  # Swin's window 7 at head dim 32: the bias broadcast over batch, heads, both, neither
    "1HNN": (1, 3, 49, 49), "B1NN": (2, 1, 49, 49), "BHNN": (2, 3, 49, 49), "NN": (49, 49),
}


@pytest.mark.parametrize("backend", [n for n in fastvit.ATTENTION.names() if fastvit.ATTENTION.get(n).takes_bias])
@pytest.mark.parametrize("pattern", list(BIAS_CASES))
@pytest.mark.parametrize("device", DEVICES)
def test_backend_with_bias_matches_float64_reference(backend, pattern, device):
    """Every backend that takes a bias, through fastvit.attention: out, dq, dk, dv and dbias (fp32)."""
    ok, reason = fastvit.ATTENTION.availability(backend, device, torch.float32, head_dim=32, bias=True, grad=True)
    if not ok:
        pytest.skip(f"{backend} on {device} with a bias: {reason}")
    gen = torch.Generator(device).manual_seed(0)
    q, k, v, grad_out = (torch.randn(2, 3, 49, 32, device=device, generator=gen) for _ in range(4))
    bias = torch.randn(*BIAS_CASES[pattern], device=device, generator=gen)

    def run(dtype):
        leaves = [t.detach().to(dtype).requires_grad_(True) for t in (q, k, v, bias)]
        out = fastvit.attention(*leaves[:3], backend=backend if dtype == torch.float32 else "naive", bias=leaves[3])
        out.backward(grad_out.to(dtype))
        return [out.detach()] + [t.grad for t in leaves]

    try:
        outs = run(torch.float32)
    except fastvit.BackendError as err:  # a pinned SDPA kernel refusing this broadcast, with PyTorch's reasons
        assert backend != "triton", err
        pytest.skip(str(err))
    for name, out, ref in zip(("out", "dq", "dk", "dv", "dbias"), outs, run(torch.float64)):
        assert out.shape == ref.shape and out.dtype == torch.float32, name
        assert_close(out, ref, dtype=torch.float32, name=f"{backend} bias {pattern} {name}")


def test_backends_without_bias_say_so():
    refusing = [b.name for b in fastvit.ATTENTION.backends() if not b.takes_bias]
    for name in refusing:
        ok, reason = fastvit.ATTENTION.availability(name, "cpu", torch.float32, head_dim=32, bias=True)
        assert not ok and "bias" in reason, name
    assert fastvit.ATTENTION.get("triton").takes_bias


# -- one semantics for every backend: biases of any rank, fully masked rows, large scores ------------------
# Each case runs every registered backend through fastvit.attention against the float64 naive
# reference. Whether a backend runs is decided at admission: where its availability check (with the
# bias, constant or trained) says yes it must give the reference's answer, where it says no the call
# must raise BackendError before anything runs; the test then skips with that reason.
SEMANTICS_SHAPE = (2, 3, 7, 16)  # (B, H, N, D): small, the interpreter runs triton on CPU
B_, H_, N_ = SEMANTICS_SHAPE[:3]
RANK_CASES = {  # name -> a function of a generator giving the bias, of every rank 0 to 4
    "scalar": lambda g: torch.randn((), generator=g),
    "1": lambda g: torch.randn(1, generator=g),
    "keys": lambda g: torch.randn(N_, generator=g),  # a key-padding vector
    "1N": lambda g: torch.randn(1, N_, generator=g),
    "N1": lambda g: torch.randn(N_, 1, generator=g),
    "NN": lambda g: torch.randn(N_, N_, generator=g),
    "H1N": lambda g: torch.randn(H_, 1, N_, generator=g),
    "1NN": lambda g: torch.randn(1, N_, N_, generator=g),
    "HNN": lambda g: torch.randn(H_, N_, N_, generator=g),
    "B11N": lambda g: torch.randn(B_, 1, 1, N_, generator=g),
    "1HNN": lambda g: torch.randn(1, H_, N_, N_, generator=g),
    "BHNN": lambda g: torch.randn(B_, H_, N_, N_, generator=g),
}
EXPANDED = {  # expand()-ed views of a smaller leaf: stride 0 along the broadcast dims
    "keys->BHNN": ((N_,), lambda b: b.expand(B_, H_, N_, N_)),
    "1H1N->BHNN": ((1, H_, 1, N_), lambda b: b.expand(B_, H_, N_, N_)),
    "NN->HNN": ((N_, N_), lambda b: b.expand(H_, N_, N_)),
    "scalar->NN": ((), lambda b: b.expand(N_, N_)),
}


def _admitted(backend, device, dtype, head_dim, bias):
    """The backend's availability for this call's route, as fastvit.attention admits it, for a call
    whose q, k and v need gradients (these tests all run the backward)."""
    key = (TRAINED if bias.requires_grad else True) if bias is not None else False
    return fastvit.ATTENTION.availability(backend, device, dtype, head_dim=head_dim, bias=key, grad=True)


def _semantics_run(backend, q, k, v, grad_out, bias=None, bias_view=None, dtype=torch.float32, scale=None):
    """out, dq, dk, dv (and dbias, when ``bias`` requires grad) of ``backend`` in ``dtype``; the bias
    reaches the op as ``bias_view(leaf)`` when given."""
    leaves = [t.detach().to(dtype).requires_grad_(True) for t in (q, k, v)]
    if bias is not None:
        bias = bias.detach().to(dtype).requires_grad_(bias.requires_grad)
        leaves += [bias] if bias.requires_grad else []
    view = bias if bias is None or bias_view is None else bias_view(bias)
    out = fastvit.attention(*leaves[:3], backend=backend, bias=view, scale=scale)
    out.backward(grad_out.to(dtype))
    return [out.detach()] + [t.grad for t in leaves]


def _holds_semantics(backend, device, q, k, v, grad_out, bias, bias_view=None, dtype=torch.float32,
                     scale=None, label=""):
    """Run ``backend`` where admitted and compare with the float64 reference (fastvit.testing's rule);
    where not admitted, the call must raise BackendError. Returns the backend's results (None if refused)."""
    ok, reason = _admitted(backend, device, dtype, q.shape[-1], bias)
    if not ok:
        with pytest.raises(fastvit.BackendError):
            _semantics_run(backend, q, k, v, grad_out, bias, bias_view, dtype, scale)
        pytest.skip(f"{backend} on {device}/{dtype} refuses this call (bias, or training) before it runs: {reason}")
    outs = _semantics_run(backend, q, k, v, grad_out, bias, bias_view, dtype, scale)
    refs = _semantics_run("naive", q, k, v, grad_out, bias, bias_view, torch.float64, scale)
    bases = [None] * len(outs)
    if is_low_precision(dtype):
        bases = _semantics_run(BASELINE_ATTENTION, q, k, v, grad_out, bias, bias_view, dtype, scale)
    for name, out, ref, base in zip(("out", "dq", "dk", "dv", "dbias"), outs, refs, bases):
        assert out.shape == ref.shape, f"{label}{name}: shape {tuple(out.shape)}, not {tuple(ref.shape)}"
        assert not out.isnan().any(), f"{backend} {label}{name} has NaN"
        assert_close(out, ref, baseline=base, dtype=dtype, name=f"{backend} {label}{name}")
    return outs


@pytest.mark.parametrize("trained", [False, True], ids=["constant", "trained"])
@pytest.mark.parametrize("case", list(RANK_CASES) + list(EXPANDED))
@pytest.mark.parametrize("backend", fastvit.ATTENTION.names())
@pytest.mark.parametrize("device", DEVICES)
def test_bias_of_every_rank(device, backend, case, trained):
    """Biases of rank 0 to 4 and expand()-ed views: the reference's answer (out, dq, dk, dv, and dbias
    in the bias's own shape when it is trained), or BackendError at admission."""
    gen = torch.Generator().manual_seed(0)
    q, k, v, grad_out = (torch.randn(*SEMANTICS_SHAPE, generator=gen).to(device) for _ in range(4))
    if case in RANK_CASES:
        bias, view = RANK_CASES[case](gen), None
    else:
        shape, view = EXPANDED[case]
        bias = torch.randn(shape, generator=gen)
    bias = bias.to(device).requires_grad_(trained)
    _holds_semantics(backend, device, q, k, v, grad_out, bias, view, label=f"bias {case} ")


MASKED_DTYPES = {"cpu": [torch.float32, torch.float16, torch.bfloat16],
                 "cuda": [torch.float32, torch.float16, torch.bfloat16]}


def _masked_bias(device):
    """(B, 1, N, N) bias of random finite values in which query 3 of batch 0 and query 0 of batch 1
    have every key at -inf (fully masked), and batch 1 masks keys 5 and 6 for every query (padding)."""
    gen = torch.Generator().manual_seed(1)
    bias = torch.randn(B_, 1, N_, N_, generator=gen)
    bias[0, :, 3, :] = float("-inf")
    bias[1, :, :, 5:] = float("-inf")
    bias[1, :, 0, :] = float("-inf")
    return bias.to(device)


@pytest.mark.parametrize("trained", [False, True], ids=["constant", "trained"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("backend", fastvit.ATTENTION.names())
@pytest.mark.parametrize("device", DEVICES)
def test_fully_masked_rows_give_zeros_and_no_nan(device, backend, dtype, trained):
    """A query whose every key is -inf attends to nothing: its output row is exactly 0, its dq row and
    dbias row are 0, and no NaN reaches any other row, dk or dv; every other row is the reference's."""
    if dtype not in MASKED_DTYPES[device]:
        pytest.skip(f"{dtype} is not tested on {device}")
    if backend == "triton" and device == "cpu" and dtype != torch.float32 and trained:
        pytest.skip("triton on CPU runs through Triton's slow interpreter: fp16 with a constant bias only")
    gen = torch.Generator().manual_seed(0)
    q, k, v, grad_out = (torch.randn(*SEMANTICS_SHAPE, generator=gen).to(device) for _ in range(4))
    bias = _masked_bias(device).requires_grad_(trained)
    outs = _holds_semantics(backend, device, q, k, v, grad_out, bias, dtype=dtype, label="masked rows ")
    dead = [(0, 3), (1, 0)]  # (batch, query)
    for b, i in dead:
        assert (outs[0][b, :, i] == 0).all(), f"{backend}: output row {(b, i)} is not 0"
        assert (outs[1][b, :, i] == 0).all(), f"{backend}: dq row {(b, i)} is not 0"
        if trained:
            assert (outs[4][b, :, i] == 0).all(), f"{backend}: dbias row {(b, i)} is not 0"


DOMINATED = [  # (head dim, scale): non-power-of-two scales and head dims that run as one or two pieces
    (16, None), (24, 0.3), (48, None), (80, 1 / 7),
]


@pytest.mark.parametrize("trained", [False, True], ids=["constant", "trained"])
@pytest.mark.parametrize("dim,scale", DOMINATED, ids=lambda x: "default" if x is None else str(x)[:5])
@pytest.mark.parametrize("backend", fastvit.ATTENTION.names())
@pytest.mark.parametrize("device", DEVICES)
def test_rows_dominated_by_large_scores(device, backend, dim, scale, trained):
    """Every row dominated by one score between 1e3 and 1e4 (through the bias), fp32: out, dq, dk, dv
    (and dbias, trained) within the fp32 rule. The saved statistics of a flash kernel must reproduce those rows'
    probabilities (1 and 0) exactly: one ulp of a log-sum-exp of 1e4 is 1e-4 of a probability."""
    gen = torch.Generator().manual_seed(dim)
    B, H, N = 1, 2, 13
    q, k, v, grad_out = (torch.randn(B, H, N, dim, generator=gen).to(device) for _ in range(4))
    bias = torch.randn(B, H, N, N, generator=gen)
    top = torch.empty(B, H, N, 1).uniform_(1e3, 1e4, generator=gen)
    bias.scatter_(-1, torch.randint(0, N, (B, H, N, 1), generator=gen), top)
    _holds_semantics(backend, device, q, k, v, grad_out, bias.to(device).requires_grad_(trained), scale=scale,
                     label=f"dominated D={dim} ")


@pytest.mark.parametrize("backend", fastvit.ATTENTION.names())
@pytest.mark.parametrize("device", DEVICES)
def test_one_hot_rows_give_exact_value_gradient(device, backend):
    """B = H = 1, N = 2, D = 32, bias [[5000, 0], [0, 7321.5]]: each softmax row is exactly one-hot, so
    dV equals dO = 1 exactly, at the default scale 32 ** -0.5 as at 0.25."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, 2, 32, generator=gen).to(device) for _ in range(3))
    bias = torch.tensor([[5000.0, 0.0], [0.0, 7321.5]], device=device)
    for scale in (None, 0.25):
        ok, reason = _admitted(backend, device, torch.float32, 32, bias)
        if not ok:
            pytest.skip(f"{backend} on {device}: {reason}")
        dv = _semantics_run(backend, q, k, v, torch.ones(1, 1, 2, 32, device=device), bias, scale=scale)[3]
        assert torch.equal(dv, torch.ones_like(dv)), f"{backend} scale={scale}: max|dV - 1| {(dv - 1).abs().max():.3e}"


def test_xformers_wrapper_drops_fully_masked_rows(monkeypatch):
    """xformers runs on CUDA only; its backend's handling of fully masked rows is tested here on CPU
    with a stand-in for xformers.ops.memory_efficient_attention that, like xformers' cutlass kernel,
    divides by a zero normaliser there (NaN). The backend must give the reference's answer anyway,
    and hand xformers a stride-0 view of the bias's distinct elements, not a (B, H, N, N) copy."""
    import sys
    import types

    seen = []

    def memory_efficient_attention(q, k, v, attn_bias=None, p=0.0, scale=None):  # (B, N, H, D)
        seen.append(attn_bias)
        scores = (q.transpose(1, 2) * q.shape[-1] ** -0.5) @ k.transpose(1, 2).transpose(-2, -1) + attn_bias
        return (scores.softmax(-1) @ v.transpose(1, 2)).transpose(1, 2)  # the plain softmax: NaN rows

    ops = types.SimpleNamespace(memory_efficient_attention=memory_efficient_attention)
    monkeypatch.setitem(sys.modules, "xformers", types.SimpleNamespace(ops=ops))
    monkeypatch.setitem(sys.modules, "xformers.ops", ops)
    gen = torch.Generator().manual_seed(0)
    q, k, v, grad_out = (torch.randn(*SEMANTICS_SHAPE, generator=gen) for _ in range(4))
    bias = _masked_bias("cpu")

    def run(fn, dtype):
        leaves = [t.detach().to(dtype).requires_grad_(True) for t in (q, k, v, bias)]
        out = fn(*leaves[:3], bias=leaves[3])
        out.backward(grad_out.to(dtype))
        return [out.detach()] + [t.grad for t in leaves]

    outs = run(fastvit.ATTENTION.get("xformers").fn, torch.float32)
    refs = run(naive_attention, torch.float64)
    for name, out, ref in zip(("out", "dq", "dk", "dv", "dbias"), outs, refs):
        assert not out.isnan().any(), f"xformers {name} has NaN"
        assert_close(out, ref, name=f"xformers (stand-in) {name}")
    assert seen[0].shape == (B_, H_, N_, N_) and seen[0].stride(1) == 0  # (B, 1, N, N) expanded over heads


# -- backends that run forward only here --------------------------------------------------------------------
# Few cases, so that a backend compiling a kernel per shape (seconds each on CPU) compiles three: a length
# and head dim that are no powers of two; fully masked rows in bfloat16 with a bias broadcast over the
# heads; a stride-0 key bias, one key dominating every row, at a scale that is no power of two (Swin's
# biases are tests/test_variants_backends.py's).
def _dominant_keys(gen):
    keys = torch.randn(N_, generator=gen)
    keys[2] = 5000.0
    return keys.expand(B_, H_, N_, N_)


FORWARD_CASES = {  # id -> ((B, H, N, D), dtype, bias of a generator or None, scale, fully masked (batch, query) rows)
    "197x80": ((2, 2, 197, 80), torch.float32, None, None, []),
    "masked-bf16": (SEMANTICS_SHAPE, torch.bfloat16, lambda g: _masked_bias("cpu"), None, [(0, 3), (1, 0)]),
    "keys-dominated": (SEMANTICS_SHAPE, torch.float32, _dominant_keys, 0.3, []),
}


def _forward_only(device) -> list:
    """The backends that run forward on ``device`` but refuse to train there, by availability."""
    names = [n for n in fastvit.ATTENTION.names()
             if fastvit.ATTENTION.availability(n, device, torch.float32, head_dim=64, bias=True)[0]
             and not fastvit.ATTENTION.availability(n, device, torch.float32, head_dim=64, bias=True, grad=True)[0]]
    return [pytest.param(device, n, id=f"{device}-{n}") for n in names] or [
        pytest.param(device, None, id=f"{device}-none", marks=pytest.mark.skip(
            reason=f"every attention backend that runs on {device} also trains there (the tests above)"))]


@pytest.mark.parametrize("case", list(FORWARD_CASES))
@pytest.mark.parametrize("device,backend", [p for d in DEVICES for p in _forward_only(d)])
def test_forward_only_backend_matches_float64_reference(device, backend, case):
    """Output of a backend that runs forward only here (no gradients recorded), held to the float64
    reference by the rule; fully masked rows are exactly 0 and nothing is NaN."""
    shape, dtype, make_bias, scale, dead = FORWARD_CASES[case]
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(*shape, generator=gen) for _ in range(3))
    bias = None if make_bias is None else make_bias(gen)

    def run(name, dt):
        cast = [t.to(device, dt) for t in (q, k, v)]
        return fastvit.attention(*cast, backend=name, scale=scale, bias=None if bias is None else bias.to(device, dt))

    with torch.no_grad():
        out, ref = run(backend, dtype), run("naive", torch.float64)
        base = run(BASELINE_ATTENTION, dtype) if is_low_precision(dtype) else None
    assert out.dtype == dtype and not out.isnan().any(), f"{backend} {case}: {out.dtype}, NaN {out.isnan().any()}"
    assert_close(out, ref, baseline=base, dtype=dtype, name=f"{backend} {case} out")
    for b, i in dead:
        assert (out[b, :, i] == 0).all(), f"{backend}: fully masked row {(b, i)} is not 0"


@pytest.mark.parametrize("backend", [b.name for b in fastvit.ATTENTION.backends() if b.compiles])
def test_compiling_backend_compiles_once_per_signature(backend):
    """A backend that compiles per shape compiles at the first call of a signature only: later calls
    with new tensors of that layout capture no new graph (dynamo's counters)."""
    from torch._dynamo.utils import counters

    ok, reason = fastvit.ATTENTION.availability(backend, "cpu", torch.float32, head_dim=80)
    if not ok:
        pytest.skip(f"{backend} on cpu: {reason}")
    shape = FORWARD_CASES["197x80"][0]  # compiled by that case already when it ran in this process
    with torch.no_grad():
        fastvit.attention(*(torch.randn(shape) for _ in range(3)), backend=backend)
        graphs = counters["stats"]["unique_graphs"]
        for _ in range(3):
            out = fastvit.attention(*(torch.randn(shape) for _ in range(3)), backend=backend)
    assert out.shape == shape
    assert counters["stats"]["unique_graphs"] == graphs, "a call at a compiled signature compiled again"
