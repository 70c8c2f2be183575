"""kernels.flash_attention against a float64 reference, forward and backward.

On CPU these run through Triton's interpreter (tests/conftest.py switches it on), in fp32 and fp16;
bf16 needs CUDA because the interpreter computes bf16 tl.dot wrongly.
"""
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch.nn.attention import SDPBackend, sdpa_kernel

from conftest import DEVICES
from fastvit.testing import assert_close, is_low_precision
from kernels.flash_attention import attention_ref, flash_attention

CASES = [  # (B, H, N, D)
    (2, 3, 1, 64),      # a single token
    (2, 3, 17, 16),     # prime N, smaller than one block
    (1, 2, 70, 32),     # several blocks plus a tail
    (1, 2, 197, 64),    # ViT-B/16 at 224 px
    (1, 2, 50, 80),     # ViT-H/14's head dim, padded inside the kernel
    (1, 1, 33, 128),
]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _skip_unsupported(device, dtype):
    if device == "cpu" and dtype == torch.bfloat16:
        pytest.skip("Triton's interpreter computes bf16 tl.dot wrongly; bf16 is tested on CUDA")


def _grads(fn, q, k, v, grad_out):
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    out = fn(q, k, v)
    out.backward(grad_out.to(out.dtype))
    return out.detach(), q.grad, k.grad, v.grad


def _torch_math(q, k, v):
    """PyTorch's own math attention, run in the inputs' precision: the low-precision baseline."""
    with sdpa_kernel(SDPBackend.MATH):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v)


def _check(q, k, v, dtype, label=""):
    grad_out = torch.randn_like(q, dtype=torch.float64)
    outs = _grads(flash_attention, *(t.to(dtype) for t in (q, k, v)), grad_out)
    refs = _grads(attention_ref, *(t.double() for t in (q, k, v)), grad_out)
    bases = _grads(_torch_math, *(t.to(dtype) for t in (q, k, v)), grad_out) if is_low_precision(dtype) else [None] * 4
    for name, out, ref, base in zip(("out", "dq", "dk", "dv"), outs, refs, bases):
        assert out.dtype == dtype
        assert_close(out, ref, baseline=base, dtype=dtype, name=f"{label}{name}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_matches_float64_reference(device, dtype, case):
    _skip_unsupported(device, dtype)
    q, k, v = (torch.randn(*case, device=device) for _ in range(3))
    _check(q, k, v, dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_custom_scale(device):
    q, k, v = (torch.randn(1, 2, 40, 32, device=device) for _ in range(3))
    out = flash_attention(q, k, v, scale=0.3)
    assert_close(out, attention_ref(q.double(), k.double(), v.double(), scale=0.3))


@pytest.mark.parametrize("device", DEVICES)
def test_views_into_fused_qkv_need_no_copy(device):
    """q, k, v as a ViT makes them: slices of one (B, N, 3, H, D) projection, permuted to (B, H, N, D)."""
    B, N, H, D = 2, 37, 3, 32
    qkv = torch.randn(B, N, 3, H, D, device=device).permute(2, 0, 3, 1, 4)  # (3, B, H, N, D)
    q, k, v = qkv.unbind(0)
    assert not q.is_contiguous()
    _check(q, k, v, torch.float32, label="strided ")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=lambda d: str(d)[6:])
def test_tail_blocks_never_read_out_of_bounds(device, dtype):
    """Inputs are views into NaN-filled buffers: any read past N or D would surface as NaN."""
    B, H, N, D = 1, 2, 45, 80   # N leaves a tail in every block size; D pads to 128 inside

    def nan_framed(t):
        buf = torch.full((B, H, N + 19, D + 24), float("nan"), device=device, dtype=dtype)
        buf[:, :, 7:7 + N, 5:5 + D] = t.to(dtype)
        return buf[:, :, 7:7 + N, 5:5 + D]

    q, k, v = (torch.randn(B, H, N, D, device=device) for _ in range(3))
    qn, kn, vn = (nan_framed(t) for t in (q, k, v))
    grad_out = torch.randn(B, H, N, D, device=device)
    out, dq, dk, dv = _grads(flash_attention, qn, kn, vn, nan_framed(grad_out))
    for name, t in (("out", out), ("dq", dq), ("dk", dk), ("dv", dv)):
        assert not torch.isnan(t).any(), f"{name} has NaN: a tail block read outside the inputs"
    refs = _grads(attention_ref, *(t.to(dtype).double() for t in (q, k, v)), grad_out.to(dtype).double())
    bases = (_grads(_torch_math, *(t.to(dtype) for t in (q, k, v)), grad_out) if is_low_precision(dtype)
             else [None] * 4)
    for name, o, r, b in zip(("out", "dq", "dk", "dv"), (out, dq, dk, dv), refs, bases):
        assert_close(o, r, baseline=b, dtype=dtype, name=name)


@settings(max_examples=8, deadline=None)
@given(B=st.integers(1, 2), H=st.integers(1, 3), N=st.integers(1, 80), D=st.sampled_from([8, 16, 24, 40, 64]))
def test_property_any_shape_fp32(B, H, N, D):
    q, k, v = (torch.randn(B, H, N, D) for _ in range(3))
    _check(q, k, v, torch.float32, label=f"{(B, H, N, D)} ")


def test_errors_name_the_problem():
    x = torch.randn(1, 2, 8, 16)
    with pytest.raises(ValueError, match="4-D"):
        flash_attention(x[0], x[0], x[0])
    with pytest.raises(ValueError, match="one shape"):
        flash_attention(x, x[:, :, :4], x)
    with pytest.raises(TypeError, match="one dtype"):
        flash_attention(x, x.half(), x)
    with pytest.raises(TypeError, match="dtype torch.float64"):
        flash_attention(x.double(), x.double(), x.double())
    big = torch.randn(1, 1, 4, 300)
    with pytest.raises(ValueError, match="head dims 1 to 256, got 300"):
        flash_attention(big, big, big)


def test_cpu_tensors_need_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    x = torch.randn(1, 1, 4, 16)
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        flash_attention(x, x, x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: mixed CPU/CUDA inputs")
def test_mixed_devices_rejected():
    x = torch.randn(1, 1, 4, 16)
    with pytest.raises(ValueError, match="one device"):
        flash_attention(x, x.cuda(), x)
