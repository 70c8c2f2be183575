"""kernels.flash_attention with an additive bias against a float64 reference: Swin's shapes and
broadcast patterns (out, dq, dk, dv and dbias), masks, fully masked rows and rows dominated by very
large scores. Helpers and the interpreter notes: tests/test_flash_attention.py.
"""
import pytest
import torch

from fastvit.testing import assert_close
from kernels._flash_common import LOG2E
from kernels.flash_attention import _flash_attn_fwd, attention_ref, flash_attention
from test_flash_attention import DEVICES, DTYPES, _check, _grads, _randn, _skip_unless_runnable

# -- additive bias (Swin: window 7 -> N = 49, head dim 32; bias (1 or B', H, N, N)) ----------------------
BIAS_SHAPES = {"1HNN": (1, 3, 49, 49), "B1NN": (2, 1, 49, 49), "BHNN": (2, 3, 49, 49), "NN": (49, 49),
               "keys": (2, 1, 1, 49)}


@pytest.mark.parametrize("pattern", list(BIAS_SHAPES))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("device", DEVICES)
def test_bias_matches_float64_reference(device, dtype, pattern):
    """out, dq, dk, dv and dbias, the bias broadcast over batch, heads, both or neither (its gradient
    then summed over the broadcast dims), read through stride-0 views, never copied."""
    _skip_unless_runnable(device, dtype)
    q, k, v, grad_out = (_randn(2, 3, 49, 32, device=device, dtype=dtype) for _ in range(4))
    bias = _randn(*BIAS_SHAPES[pattern], device=device, dtype=dtype, mult=2.0)
    _check(q, k, v, grad_out, label=f"bias {pattern} ", bias=bias)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("device", DEVICES)
def test_bias_as_swin_builds_it(device, dtype):
    """Swin's shifted block: table[index] (1, H, N, N) plus the window mask (0 / -100, and -inf for a
    mask that removes a row's whole first key block), expanded over windows; window 12 -> N = 144."""
    _skip_unless_runnable(device, dtype)
    windows, H, N, D = 2, 2, 144, 32
    q, k, v, grad_out = (_randn(windows, H, N, D, device=device, dtype=dtype) for _ in range(4))
    mask = torch.zeros(windows, 1, N, N, device=device)
    mask[0, :, :, 60:100], mask[1, :, 70:, :64] = -100.0, float("-inf")  # rows 70+: keys 0..63 masked
    mask = mask.to(dtype)

    def swin_bias(rel):  # the learned (1, H, N, N) table lookup plus the window mask, per window
        return (rel + mask).expand(windows, H, N, N)

    _check(q, k, v, grad_out, label="swin ", bias=_randn(1, H, N, N, device=device, dtype=dtype), bias_view=swin_bias)


@pytest.mark.parametrize("device", DEVICES)
def test_bias_tails_never_read_out_of_bounds(device):
    """The bias as a view into a NaN-filled buffer (NaN past every row and column), broadcast over
    heads through a stride of 0: any read past N surfaces as NaN."""
    _skip_unless_runnable(device)
    B, H, N, D = 2, 2, 37, 16
    buf = torch.full((B, 1, N + 9, N + 11), float("nan"), device=device)
    buf[:, :, 3:3 + N, 4:4 + N] = torch.randn(B, 1, N, N, device=device)
    q, k, v, grad_out = (_randn(B, H, N, D, device=device) for _ in range(4))

    def framed(t):  # a slice of the NaN buffer, broadcast over heads with a stride of 0
        view = t[:, :, 3:3 + N, 4:4 + N].expand(B, H, N, N)
        assert view.stride(1) == 0 and not view.is_contiguous()
        return view

    _check(q, k, v, grad_out, label="NaN-framed bias ", bias=buf, bias_view=framed)


@pytest.mark.parametrize("device", DEVICES)
def test_bias_without_gradient_and_lse(device):
    """A bias that needs no gradient (a fixed mask): no dS is written; the LSE includes the bias."""
    _skip_unless_runnable(device)
    q, k, v = (_randn(1, 2, 40, 32, device=device) for _ in range(3))
    bias = _randn(1, 2, 40, 40, device=device)
    q.requires_grad_(True)
    out = flash_attention(q, k, v, bias=bias)
    out.sum().backward()
    assert bias.grad is None and q.grad is not None
    _, lse = _flash_attn_fwd(q.detach(), k, v, bias, 0.25)
    scores = q.detach().double() @ k.double().transpose(-2, -1) * 0.25 + bias.double()
    assert_close(lse, torch.logsumexp(scores, dim=-1) * LOG2E, name="lse with bias")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("device", DEVICES)
def test_fully_masked_rows(device, dtype):
    """Queries whose every key is -inf: output row 0, LSE -inf, zero dq and dbias rows, no NaN in any
    gradient (before, the row was NaN and its NaN filled dk and dv of the whole (batch, head) slice).
    N = 45: the rows sit in both query blocks, and one row is masked only in its first key block."""
    _skip_unless_runnable(device, dtype)
    B, H, N, D = 2, 2, 45, 32
    q, k, v, grad_out = (_randn(B, H, N, D, device=device, dtype=dtype) for _ in range(4))
    bias = _randn(B, 1, N, N, device=device, mult=2.0)  # as test_bias_matches_float64_reference draws it
    dead = [(0, 3), (0, 40), (1, 33), (1, 44)]  # (batch, query): one row per query block and batch
    for b, i in dead:
        bias[b, :, i] = float("-inf")
    bias[1, :, 10, :32] = float("-inf")  # masked through the whole first key block, not beyond
    bias = bias.to(dtype)
    _check(q, k, v, grad_out, label="fully masked ", bias=bias)
    outs = _grads(flash_attention, q, k, v, grad_out, bias)
    _, lse = _flash_attn_fwd(q, k, v, bias, D ** -0.5)
    for b, i in dead:
        assert (outs[0][b, :, i] == 0).all() and (outs[1][b, :, i] == 0).all() and (outs[4][b, :, i] == 0).all()
        assert (lse[b, :, i] == float("-inf")).all()
    assert torch.isfinite(lse[1, :, 10]).all()


@pytest.mark.parametrize("D", [16, 24, 32, 48, 80, 128])
@pytest.mark.parametrize("device", DEVICES)
def test_rows_dominated_by_large_scores(device, D):
    """Every row dominated by one score between 1e3 and 1e4 (through a bias), at head dims of one and two
    pieces and scales that are no power of two, fp32: out, dq, dk, dv, dbias within the fp32 rule.
    The backward recomputes each probability as exp2(s - lse); with the LSE saved in natural log and
    converted back, an ulp of it at 1e4 was 1e-4 of a probability (dv errors of about 2e-3)."""
    _skip_unless_runnable(device)
    gen = torch.Generator().manual_seed(D)
    B, H, N = 1, 2, 37
    q, k, v, grad_out = (torch.randn(B, H, N, D, generator=gen).to(device) for _ in range(4))
    bias = torch.randn(B, H, N, N, generator=gen)
    top = torch.empty(B, H, N, 1).uniform_(1e3, 1e4, generator=gen)
    bias = bias.scatter_(-1, torch.randint(0, N, (B, H, N, 1), generator=gen), top).to(device)
    for scale in (None, 0.3, 1 / 7):
        _check(q, k, v, grad_out, label=f"dominated scale={scale} ", scale=scale, bias=bias)


@pytest.mark.parametrize("device", DEVICES)
def test_one_hot_rows_give_the_exact_value_gradient(device):
    """Softmax rows that are exactly one-hot give dV = dO exactly: through a bias of 5000 and 7321.5
    (N = 2, D = 32; the error was 3.4e-4 at the default scale, 0 at 0.25), and without a bias through
    q = k = 12 * randn (top scores about 1.5e3; dV error 8.5e-5 against the fp32 bound of 2e-5)."""
    _skip_unless_runnable(device)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, 2, 32, generator=gen).to(device) for _ in range(3))
    bias = torch.tensor([[5000.0, 0.0], [0.0, 7321.5]], device=device)
    for scale in (None, 0.25, 0.3):
        dv = _grads(lambda *a, **kw: flash_attention(*a, scale=scale, **kw), q, k, v, torch.ones_like(q), bias)[3]
        assert torch.equal(dv, torch.ones_like(dv)), f"scale={scale}: max|dV - 1| = {(dv - 1).abs().max():.3e}"
    gen = torch.Generator().manual_seed(1)
    x, v, grad_out = (m * torch.randn(1, 2, 64, 32, generator=gen).to(device) for m in (12.0, 1.0, 1.0))
    assert ((x @ x.transpose(-2, -1)) * 32 ** -0.5).max() > 1e3
    out, _, _, dv = _grads(flash_attention, x, x, v, grad_out)
    assert torch.equal(dv, grad_out), f"max|dV - dO| = {(dv - grad_out).abs().max():.3e}"
    assert_close(out, attention_ref(x.double(), x.double(), v.double()), name="q = k out")
