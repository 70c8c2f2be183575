"""kernels.layer_norm (LayerNorm and fused residual-add + LayerNorm) against float64 references.

On CPU these run through Triton's interpreter (tests/conftest.py switches it on), in fp32 and fp16.
bf16 cases are skipped there: the kernels use no tl.dot, but Triton 3.9's interpreter converts
fp32 -> bf16 by truncation (round toward zero) where the GPU rounds to nearest even, so bf16 outputs
carry up to a whole ulp of error where PyTorch's carry half an ulp, and some cases break the
tolerance rule for that reason alone (with the interpreter's conversion patched to round to nearest
even, a scratch check, every bf16 case here passes).

Mixed dtypes (x and residual apart, as under ``torch.autocast``) are compared with eager PyTorch
under the same autocast, each output in its own dtype's rule.

Low-precision baseline: ``*_ref(..., upcast=False)`` run in fp16/bf16, i.e. PyTorch's own
``x + residual`` and ``F.layer_norm`` (and its autograd) in that dtype. On CPU PyTorch computes the
statistics in fp32 internally but rounds s, y and every gradient to the low-precision dtype, so its
error against float64 is the real rounding error of a good fp16/bf16 implementation (never zero: the
helper asserts that); the kernel may be at most twice as far off, per fastvit.testing. The float64
reference gets the very fp16 values (inputs and incoming gradients) the kernel gets, so input rounding
is not counted as error.
"""
import importlib

import pytest
import torch
from hypothesis import given, settings, strategies as st

from conftest import DEVICES, KERNEL_DEVICE, TRITON_INTERPRETER, skip_unless_kernels_run_on
from fastvit.testing import assert_close, compare, is_low_precision
from kernels.layer_norm import MAX_HIDDEN, add_layer_norm, add_layer_norm_ref, layer_norm, layer_norm_ref

pytestmark = pytest.mark.usefixtures("kernel_device_runs")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
CASES = [  # (M rows, D hidden)
    (1, 50),      # one row, odd hidden size
    (37, 127),    # prime rows, prime hidden size: tails everywhere, several backward programs
    (64, 192),    # ViT-Ti
    (100, 768),   # ViT-B, many row blocks
    (3, 1280),    # ViT-H
    (9, 1),       # degenerate hidden size 1: y == bias
]


def _skip_unsupported(device, dtype):
    if device == "cpu" and dtype == torch.bfloat16:
        pytest.skip("Triton's interpreter rounds fp32 -> bf16 toward zero (GPU: to nearest even), "
                    "doubling bf16 output error; bf16 is tested on CUDA")


def _run(fn, tensors, grads):
    """Forward ``fn`` on fresh leaves, backward with ``grads`` for its outputs; returns outputs + input grads."""
    leaves = [t.detach().requires_grad_(True) if t is not None else None for t in tensors]
    outs = fn(*leaves)
    outs = outs if isinstance(outs, tuple) else (outs,)
    torch.autograd.backward(outs, [g.to(o.dtype) for o, g in zip(outs, grads)])
    return [o.detach() for o in outs] + [t.grad for t in leaves if t is not None]


def _check(x, residual, weight, bias, dtype, param_dtype=None, label="", eps=1e-6):
    """Runs the kernel in ``dtype`` (params in ``param_dtype``) and checks outputs and all gradients.

    With a residual the loss uses both y and s, so a gradient also flows into s (the residual stream).
    """
    param_dtype = param_dtype or dtype
    has_res = residual is not None
    # Incoming gradients in the kernel's dtype, so the float64 reference sees the same (rounded) values.
    grads = [torch.randn(x.shape, device=x.device).to(dtype) for _ in range(1 + has_res)]
    names = ["y"] + (["s"] if has_res else []) + ["dx"] + (["dresidual"] if has_res else []) + ["dweight"]
    names += ["dbias"] if bias is not None else []

    def inputs(act, par):
        return ([x.to(act)] + ([residual.to(act)] if has_res else [])
                + [weight.to(par), bias.to(par) if bias is not None else None])

    fn = add_layer_norm if has_res else layer_norm
    ref_fn = add_layer_norm_ref if has_res else layer_norm_ref

    def kernel(*a):
        return fn(*a, eps=eps)

    def ref(*a, upcast=True):
        return ref_fn(*a, eps=eps, upcast=upcast)

    outs = _run(kernel, inputs(dtype, param_dtype), grads)
    # The float64 reference sees exactly the kernel's (rounded) inputs.
    refs = _run(ref, [t.double() if t is not None else None for t in inputs(dtype, param_dtype)], grads)
    if is_low_precision(dtype):
        bases = _run(lambda *a: ref(*a, upcast=False), inputs(dtype, param_dtype), grads)
        # The baseline must carry a real low-precision error, or the bound would be just one eps.
        assert max(compare(b, r, baseline=b).max_abs for b, r in zip(bases, refs)) > 0
    else:
        bases = [None] * len(outs)
    for name, out, r, b in zip(names, outs, refs, bases):
        expect = param_dtype if name in ("dweight", "dbias") else dtype
        assert out.dtype == expect, f"{label}{name} has dtype {out.dtype}, expected {expect}"
        assert_close(out, r, baseline=b, dtype=dtype, name=f"{label}{name}")
    return outs


def _params(D, device, with_bias=True):
    weight = 1.0 + 0.5 * torch.randn(D, device=device)
    bias = torch.randn(D, device=device) if with_bias else None
    return weight, bias


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("residual", [True, False], ids=["add", "plain"])
def test_matches_float64_reference(device, dtype, case, residual):
    _skip_unsupported(device, dtype)
    M, D = case
    x = torch.randn(M, D, device=device)
    r = torch.randn(M, D, device=device) if residual else None
    _check(x, r, *_params(D, device), dtype, label=f"{case} ")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=lambda d: str(d)[6:])
def test_token_tensors_without_bias(device, dtype):
    """(B, N, D) activations as a ViT block passes them, bias=None."""
    B, N, D = 2, 17, 96
    x, r = torch.randn(B, N, D, device=device), torch.randn(B, N, D, device=device)
    outs = _check(x, r, *_params(D, device, with_bias=False), dtype)
    assert outs[0].shape == (B, N, D) and outs[1].shape == (B, N, D)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=lambda d: str(d)[6:])
def test_fp32_parameters_with_low_precision_activations(device, dtype):
    _skip_unsupported(device, dtype)
    D = 80
    x, r = torch.randn(2, 5, D, device=device), torch.randn(2, 5, D, device=device)
    _check(x, r, *_params(D, device), dtype, param_dtype=torch.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=lambda d: str(d)[6:])
def test_tails_never_read_out_of_bounds(device, dtype):
    """x, residual and the incoming gradients are views into NaN-filled buffers (row stride D + 13):
    any read past a row's D columns or past the last row would surface as NaN."""
    B, N, D = 2, 13, 100

    def nan_framed(t):  # rows of stride D + 13, NaN before, after and below them
        buf = torch.full((B * N + 3, D + 13), float("nan"), device=device, dtype=dtype)
        buf[:B * N, 4:4 + D] = t.reshape(B * N, D).to(dtype)
        view = buf[:B * N, 4:4 + D].view(B, N, D)
        assert view.reshape(-1, D).data_ptr() == view.data_ptr()  # the kernel will read this memory
        return view

    x, r, gy, gs = (torch.randn(B, N, D, device=device) for _ in range(4))
    weight, bias = _params(D, device)
    xn, rn = nan_framed(x), nan_framed(r)
    outs = _run(add_layer_norm, [xn, rn, weight.to(dtype), bias.to(dtype)], [nan_framed(gy), nan_framed(gs)])
    for name, t in zip(("y", "s", "dx", "dresidual", "dweight", "dbias"), outs):
        assert not torch.isnan(t).any(), f"{name} has NaN: a tail read outside the inputs"
    lo = [t.to(dtype) for t in (x, r, weight, bias)]
    grads = [gy.to(dtype), gs.to(dtype)]
    refs = _run(add_layer_norm_ref, [t.double() for t in lo], grads)
    bases = (_run(lambda *a: add_layer_norm_ref(*a, upcast=False), lo, grads) if is_low_precision(dtype)
             else [None] * 6)
    for name, o, ref, base in zip(("y", "s", "dx", "dresidual", "dweight", "dbias"), outs, refs, bases):
        assert_close(o, ref, baseline=base, dtype=dtype, name=name)


@pytest.mark.parametrize("device", DEVICES)
def test_weight_gradients_are_deterministic_and_grads_do_not_alias(device):
    """Bitwise-equal reruns (meaningful on CUDA, where atomically reduced dweight would reorder sums;
    the interpreter runs programs in order) and x.grad / residual.grad as separate tensors."""
    D = 64
    x, r = torch.randn(50, D, device=device), torch.randn(50, D, device=device)
    weight, bias = _params(D, device)
    gy, gs = torch.randn(50, D, device=device), torch.randn(50, D, device=device)
    first = _run(add_layer_norm, [x, r, weight, bias], [gy, gs])
    second = _run(add_layer_norm, [x, r, weight, bias], [gy, gs])
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    dx, dres = first[2], first[3]
    assert torch.equal(dx, dres)
    assert dx.data_ptr() != dres.data_ptr(), "x.grad and residual.grad must not share memory"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=lambda d: str(d)[6:])
def test_inputs_strided_along_the_hidden_dim(device, dtype):
    """x a transpose (stride M along D) and residual a (B, N, D) view whose leading dims cannot be
    merged: both are copied to rows once, and outputs / gradients come back in the inputs' shapes."""
    B, N, D = 3, 7, 40
    x = torch.randn(D, B, N, device=device).permute(1, 2, 0)  # strides (N, 1, B * N)
    r = torch.randn(N, B, D, device=device).transpose(0, 1)  # (B, N, D), rows not mergeable
    assert x.stride(-1) != 1 and not r.is_contiguous()
    outs = _check(x, r, *_params(D, device), dtype)
    assert all(t.shape == (B, N, D) for t in outs[:4])
    _check(x, None, *_params(D, device), dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("residual", [True, False], ids=["add", "plain"])
def test_constant_rows_and_a_large_eps(device, residual):
    """Rows with zero variance (rstd = 1 / sqrt(eps): y = bias, finite gradients) beside ordinary rows,
    with eps = 0.05 so that dropping or misplacing eps shows in every row."""
    M, D = 12, 72
    x = torch.randn(M, D, device=device)
    x[::3] = torch.randn(M // 3 + (M % 3 > 0), 1, device=device)  # every third row constant
    r = torch.zeros(M, D, device=device) if residual else None
    weight, bias = _params(D, device)
    _check(x, r, weight, bias, torch.float32, eps=0.05)  # y of the constant rows is bias (float64 ref)


@pytest.mark.parametrize("device", DEVICES)
def test_gradient_through_only_y_or_only_s(device):
    """A caller that uses only y (s gets no gradient) or only s (y gets none): autograd then passes
    None for the unused output's gradient, and each case must still be right."""
    D = 48
    x, r = torch.randn(2, 9, D, device=device), torch.randn(2, 9, D, device=device)
    weight, bias = _params(D, device)
    g = torch.randn(2, 9, D, device=device)

    def grads(fn, which, tensors):
        leaves = [t.detach().requires_grad_(True) for t in tensors]
        fn(*leaves)[which].backward(g.to(tensors[0].dtype))
        return [t.grad for t in leaves]

    ours = grads(add_layer_norm, 0, [x, r, weight, bias])
    refs = grads(add_layer_norm_ref, 0, [t.double() for t in (x, r, weight, bias)])
    for name, o, ref in zip(("dx", "dresidual", "dweight", "dbias"), ours, refs):
        assert_close(o, ref, name=f"y only: {name}")
    dx, dres, dw, db = grads(add_layer_norm, 1, [x, r, weight, bias])
    assert torch.equal(dx, g) and torch.equal(dres, g), "with only s used, dx = dresidual = ds"
    assert dw is None or not dw.any(), "y got no gradient, so neither may weight"
    assert db is None or not db.any(), "y got no gradient, so neither may bias"


MIXED = {  # (x dtype, residual dtype): what autocast makes of a block (branch output, residual stream)
    "fp16-branch-fp32-stream": (torch.float16, torch.float32),
    "fp32-branch-fp16-stream": (torch.float32, torch.float16),
    "fp16-both": (torch.float16, torch.float16),
}


def _eager_add_norm(x, residual, weight, bias, eps=1e-6):
    """What fastvit's ``torch`` norm backend computes: eager PyTorch, whatever autocast is active."""
    s = x + residual
    return torch.nn.functional.layer_norm(s, s.shape[-1:], weight, bias, eps), s


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("autocast", [True, False], ids=["autocast", "no-autocast"])
@pytest.mark.parametrize("case", list(MIXED))
def test_mixed_dtypes_as_autocast_makes_them(device, case, autocast):
    """x and residual in different dtypes, fp32 parameters, under ``torch.autocast(device, float16)``
    or not: every output and gradient comes back in the dtype eager PyTorch gives it, and is as close
    to float64 as the fastvit rule asks: the fp32 bound for fp32 outputs computed from an fp32 s, twice
    eager's own error (eager under the same autocast) for fp16 outputs and for whatever an fp16 s
    feeds."""
    x_dtype, r_dtype = MIXED[case]
    B, N, D = 2, 9, 80
    x = torch.randn(B, N, D, device=device).to(x_dtype)
    r = torch.randn(B, N, D, device=device).to(r_dtype)
    weight, bias = _params(D, device)
    s_dtype = torch.result_type(x, r)
    grads = [torch.randn(B, N, D, device=device) for _ in range(2)]

    def run(fn, tensors, dtypes):
        leaves = [t.detach().requires_grad_(True) for t in tensors]
        with torch.autocast(device_type=device, dtype=torch.float16, enabled=autocast):
            outs = fn(*leaves)
        # incoming gradients rounded to each output's dtype, so every implementation sees the same values
        torch.autograd.backward(outs, [g.to(dt) for g, dt in zip(grads, dtypes or [o.dtype for o in outs])])
        return [o.detach() for o in outs] + [t.grad for t in leaves]

    eager = run(_eager_add_norm, [x, r, weight, bias], None)
    ours = run(add_layer_norm, [x, r, weight, bias], None)
    ref = run(_eager_add_norm, [t.double() for t in (x, r, weight, bias)], [eager[0].dtype, eager[1].dtype])
    names = ("y", "s", "dx", "dresidual", "dweight", "dbias")
    expected = [eager[0].dtype, s_dtype, x_dtype, r_dtype, torch.float32, torch.float32]
    for name, out, base, r64, dtype in zip(names, ours, eager, ref, expected):
        assert out.dtype == base.dtype == dtype, f"{name}: {out.dtype}, eager {base.dtype}, expected {dtype}"
        precision = dtype if is_low_precision(dtype) else s_dtype  # an fp16 s rounds everything after it
        assert_close(out, r64, baseline=base if is_low_precision(precision) else None, dtype=precision,
                     name=f"{case} {name}")


@pytest.mark.parametrize("device", DEVICES)
def test_output_dtype_follows_the_autocast_policy(device):
    """y's dtype is the one eager ``F.layer_norm`` has under autocast on this device: fp16 on CPU
    (torch 2.13 keeps layer_norm in the input dtype there), fp32 on CUDA (its autocast runs
    layer_norm in fp32), for plain LayerNorm as for the fused add."""
    x = torch.randn(3, 40, device=device).half()
    weight, bias = _params(40, device)
    with torch.autocast(device_type=device, dtype=torch.float16):
        eager = torch.nn.functional.layer_norm(x, (40,), weight, bias)
        y = layer_norm(x, weight, bias)
        y2, s2 = add_layer_norm(x, x, weight, bias)
    assert y.dtype == y2.dtype == eager.dtype == (torch.float32 if device == "cuda" else torch.float16)
    assert s2.dtype == torch.float16
    assert layer_norm(x, weight, bias).dtype == torch.float16, "outside autocast: x's dtype"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("which", ["x", "residual"])
def test_mixed_dtypes_gradient_for_one_input_only(device, which):
    """Only one of x / residual requires a gradient: it gets it in its own dtype."""
    x = torch.randn(4, 24, device=device).half()
    r = torch.randn(4, 24, device=device)
    weight, bias = _params(24, device)
    leaf = (x if which == "x" else r).requires_grad_(True)
    y, s = add_layer_norm(x, r, weight, bias)
    (y.sum() + s.sum()).backward()
    assert leaf.grad.dtype == leaf.dtype
    other = r if which == "x" else x
    assert other.grad is None


@settings(max_examples=8, deadline=None)
@given(M=st.integers(1, 40), D=st.integers(1, 300), residual=st.booleans())
def test_property_any_shape_fp32(M, D, residual):
    skip_unless_kernels_run_on(KERNEL_DEVICE)
    x = torch.randn(M, D, device=KERNEL_DEVICE)
    r = torch.randn(M, D, device=KERNEL_DEVICE) if residual else None
    _check(x, r, *_params(D, KERNEL_DEVICE), torch.float32, label=f"{(M, D)} ")


def test_errors_name_the_problem():
    dev = KERNEL_DEVICE
    skip_unless_kernels_run_on(dev)
    x = torch.randn(4, 8, device=dev)
    w, b = torch.ones(8, device=dev), torch.zeros(8, device=dev)
    with pytest.raises(ValueError, match=r"residual shape \(4, 7\) differs from x shape \(4, 8\)"):
        add_layer_norm(x, torch.randn(4, 7, device=dev), w, b)
    with pytest.raises(TypeError, match=r"weight dtype torch.float16 must be the dtype of x \+ residual \(torch"):
        add_layer_norm(x.half(), x, w.half(), b)
    with pytest.raises(ValueError, match=r"weight must have shape \(8,\)"):
        layer_norm(x, torch.ones(9, device=dev), b)
    with pytest.raises(ValueError, match=r"bias must have shape \(8,\)"):
        layer_norm(x, w, torch.zeros(4, 2, device=dev))
    with pytest.raises(TypeError, match="weight dtype torch.float16 must be x's dtype"):
        layer_norm(x, w.half(), b)
    with pytest.raises(TypeError, match="dtype torch.float64"):
        layer_norm(x.double(), w.double(), b.double())
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        layer_norm([[1.0] * 8], w, b)
    with pytest.raises(ValueError, match="hidden size .* got 0"):
        layer_norm(torch.randn(4, 0, device=dev), torch.ones(0, device=dev), None)
    wide = torch.randn(1, MAX_HIDDEN + 1, device=dev)
    with pytest.raises(ValueError, match=f"hidden size .* 1 to {MAX_HIDDEN}, got {MAX_HIDDEN + 1}"):
        layer_norm(wide, torch.ones(MAX_HIDDEN + 1, device=dev), None)


def test_cpu_tensors_need_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    x = torch.randn(2, 8)
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        layer_norm(x, torch.ones(8), None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: mixed CPU/CUDA inputs")
def test_mixed_devices_rejected():
    x = torch.randn(2, 8, device="cuda")
    with pytest.raises(ValueError, match="one device"):
        add_layer_norm(x, x, torch.ones(8), None)


def test_inputs_on_a_second_gpu():
    """Tensors on cuda:1 while cuda:0 is current: the launches run on the tensors' device."""
    if torch.cuda.device_count() < 2 or TRITON_INTERPRETER:
        pytest.skip("needs two CUDA GPUs")
    x, r = torch.randn(37, 127, device="cuda:1"), torch.randn(37, 127, device="cuda:1")
    with torch.cuda.device(0):
        _check(x, r, *_params(127, "cuda:1"), torch.float32, label="cuda:1 ")


@pytest.mark.parametrize("device", DEVICES)
def test_empty_rows_forward_and_backward(device):
    """Zero rows: empty outputs and zero weight / bias gradients, forward and backward."""
    x = torch.randn(0, 48, device=device, requires_grad=True)
    r = torch.randn(0, 48, device=device, requires_grad=True)
    w = torch.randn(48, device=device, requires_grad=True)
    b = torch.randn(48, device=device, requires_grad=True)
    y, s = add_layer_norm(x, r, w, b)
    assert y.shape == s.shape == (0, 48)
    (y.sum() + s.sum()).backward()
    assert x.grad.shape == r.grad.shape == (0, 48)
    assert torch.equal(w.grad, torch.zeros(48, device=device)) and torch.equal(b.grad, torch.zeros(48, device=device))


def test_backward_split_on_gpu_never_divides_by_zero(monkeypatch):
    """The GPU's split of the backward's rows over programs (no GPU needed: the SM count is given)."""
    ln = importlib.import_module("kernels.layer_norm")  # the module, not the function kernels exports

    monkeypatch.setattr(ln, "_INTERPRET", False)
    monkeypatch.setitem(ln._SM_COUNT, 0, 132)
    cuda0 = torch.device("cuda", 0)
    assert ln._num_programs_bwd(0, 16, cuda0) == (0, 16)
    for M in (1, 15, 16, 1000, 197 * 64, 10 ** 6):
        programs, rows = ln._num_programs_bwd(M, 16, cuda0)
        assert rows % 16 == 0 and (programs - 1) * rows < M <= programs * rows and programs <= 4 * 132
