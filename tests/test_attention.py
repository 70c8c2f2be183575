"""Every registered attention backend against a float64 reference: output and dq, dk, dv.

The reference is the naive attention in float64. In fp32 the tolerance is tight; in fp16/bf16 a
backend may be at most twice as far from the reference as PyTorch's math SDPA in the same precision
(fastvit.testing). Backends that cannot run here are skipped with their reason (pytest -rs).
"""
import pytest
import torch

import fastvit
from fastvit.ops.attention.naive import naive_attention
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
    ok, reason = fastvit.ATTENTION.availability(backend, device, dtype, head_dim=D)
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
    ok, reason = fastvit.ATTENTION.availability(backend, device, torch.float32, head_dim=32, bias=True)
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
