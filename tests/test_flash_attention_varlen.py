"""kernels.flash_attention_varlen: attention within packed sequences, against each sequence alone.

Every packed result is held to the float64 reference of each sequence attended alone
(attention_varlen_ref), output and dq, dk, dv, under fastvit's tolerance rule; the kernels run
through Triton's interpreter on CPU (32 x 32 blocks), so the lengths are chosen around that block:
one token, a prime tail, more than two blocks, an exact block. Then isolation (new tokens in one
sequence change no other bit for bit), the saved LSE per sequence, the typed errors, and the
custom ops under torch.compile with fullgraph=True (the offsets are never read back: no graph
break) and opcheck. On CUDA every default-space tile of the packed launches is run pinned.
"""
import pytest
import torch
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd
from torch.nn.attention import SDPBackend, sdpa_kernel

import fastvit
from fastvit.testing import assert_close, is_low_precision
from kernels._common import interpreter_enabled, pinned_config, runnable_on
from kernels._flash_common import LOG2E
from kernels.audit.capture import record_launches
from kernels.flash_attention import attention_varlen_ref, flash_attention_varlen, flash_attn_varlen_fwd

DEVICES = ["cpu", "cuda"]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
CASES = [  # (lengths, H, D)
    ((1, 40, 70, 5), 2, 48),  # a single token, a tail after one block, more than two blocks; D = 32 + 16
    ((32, 17), 1, 80),        # an exact block, a prime length; ViT-H/14's head dim, 64 + 16
    ((9, 33), 1, 64),         # a one-token tail after a full block
]


def _skip_unless_runnable(device, dtype=torch.float32):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    ok, reason = runnable_on(device)
    if not ok:
        pytest.skip(reason)
    if dtype == torch.bfloat16 and interpreter_enabled():
        pytest.skip("Triton's interpreter does not support bf16 tl.dot; bf16 is tested on CUDA")


def _cu_seqlens(lengths, device):
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)


def _packed(lengths, H, D, device, dtype, seed=0):
    """q, k, v (1, H, T, D) as views of one fused (1, T, 3, H, D) projection (as the models give
    them), and a gradient of the output."""
    g = torch.Generator().manual_seed(seed)
    T = sum(lengths)
    qkv = torch.randn(1, T, 3, H, D, generator=g).to(device=device, dtype=dtype)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    return q, k, v, torch.randn(1, H, T, D, generator=g).to(device=device, dtype=dtype)


def _grads(fn, q, k, v, grad_out):
    """fn's output and the gradients of <fn(q, k, v), grad_out>; the leaves keep the inputs' strides
    (a clone of a qkv view would be contiguous)."""
    q, k, v = (torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device).copy_(t).requires_grad_(True)
               for t in (q, k, v))
    out = fn(q, k, v)
    out.backward(grad_out.to(out.dtype))
    return out.detach(), q.grad, k.grad, v.grad


def _torch_math_varlen(q, k, v, cu_seqlens):
    """The low-precision baseline: PyTorch's math SDPA on each sequence, in the tested dtype."""
    offsets = cu_seqlens.tolist()
    with sdpa_kernel(SDPBackend.MATH):
        return torch.cat([torch.nn.functional.scaled_dot_product_attention(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b])
                          for a, b in zip(offsets, offsets[1:])], dim=2)


def _check(q, k, v, grad_out, cu_seqlens, max_seqlen, label=""):
    """Packed kernel vs each sequence alone in float64, on the same (already rounded) inputs. Returns
    the comparisons by name."""
    dtype = q.dtype
    outs = _grads(lambda *a: flash_attention_varlen(*a, cu_seqlens, max_seqlen), q, k, v, grad_out)
    refs = _grads(lambda *a: attention_varlen_ref(*a, cu_seqlens), q.double(), k.double(), v.double(),
                  grad_out.double())
    bases = _grads(lambda *a: _torch_math_varlen(*a, cu_seqlens), q, k, v, grad_out) if is_low_precision(dtype) \
        else [None] * 4
    found = {}
    for name, out, ref, base in zip(("out", "dq", "dk", "dv"), outs, refs, bases):
        assert out.dtype == dtype and out.shape == ref.shape, (label, name, out.dtype, out.shape)
        found[name] = assert_close(out, ref, baseline=base, dtype=dtype, name=f"{label}{name}")
    return found


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c[0])) + f"_H{c[1]}_D{c[2]}")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("device", DEVICES)
def test_each_sequence_matches_float64_alone(device, dtype, case):
    _skip_unless_runnable(device, dtype)
    lengths, H, D = case
    q, k, v, grad_out = _packed(lengths, H, D, device, dtype)
    _check(q, k, v, grad_out, _cu_seqlens(lengths, device), max(lengths))


@pytest.mark.parametrize("device", DEVICES)
def test_a_larger_max_seqlen_changes_nothing(device):
    """max_seqlen only sizes the grid: the programs past each sequence's end do nothing."""
    _skip_unless_runnable(device)
    lengths = (3, 20)
    q, k, v, grad_out = _packed(lengths, 1, 16, device, torch.float32)
    cu = _cu_seqlens(lengths, device)
    tight = _grads(lambda *a: flash_attention_varlen(*a, cu, 20), q, k, v, grad_out)
    loose = _grads(lambda *a: flash_attention_varlen(*a, cu, 23), q, k, v, grad_out)
    for a, b in zip(tight, loose):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
def test_lse_is_each_sequences_logsumexp(device):
    """The saved statistic, per row in log2 units, over the row's own sequence's keys only."""
    _skip_unless_runnable(device)
    lengths = (5, 38)
    q, k, v, _ = _packed(lengths, 2, 16, device, torch.float32)
    cu = _cu_seqlens(lengths, device)
    _, lse = flash_attn_varlen_fwd(q, k, v, cu, max(lengths), 0.3)
    offsets = cu.tolist()
    ref = torch.cat([((q[:, :, a:b].double() * 0.3) @ k[:, :, a:b].double().transpose(-2, -1)).logsumexp(-1)
                     for a, b in zip(offsets, offsets[1:])], dim=2) * LOG2E
    assert lse.shape == (1, 2, sum(lengths)) and lse.dtype == torch.float32
    assert_close(lse, ref, name="lse")


@pytest.mark.parametrize("device", DEVICES)
def test_changing_one_sequence_changes_no_other(device):
    """New tokens in the middle sequence leave every other sequence's output and gradients bit for
    bit as they were (a program that read past its sequence would mix them)."""
    _skip_unless_runnable(device)
    lengths = (7, 35, 20)
    cu = _cu_seqlens(lengths, device)
    lo, hi = lengths[0], lengths[0] + lengths[1]

    def run(seed):
        q, k, v, grad_out = _packed(lengths, 2, 16, device, torch.float32)
        q2, k2, v2, g2 = _packed(lengths, 2, 16, device, torch.float32, seed=seed)
        for t, t2 in zip((q, k, v, grad_out), (q2, k2, v2, g2)):
            t[:, :, lo:hi] = t2[:, :, lo:hi] * 3
        return _grads(lambda *a: flash_attention_varlen(*a, cu, max(lengths)), q, k, v, grad_out)

    a, b = run(1), run(2)
    keep = torch.ones(sum(lengths), dtype=torch.bool)
    keep[lo:hi] = False
    assert not torch.equal(a[0][:, :, lo:hi], b[0][:, :, lo:hi])
    for x, y in zip(a, b):
        assert torch.equal(x[:, :, keep], y[:, :, keep])


def test_errors_are_typed():
    q = torch.randn(1, 2, 10, 16)
    cu = torch.tensor([0, 4, 10], dtype=torch.int32)
    cases = [
        (TypeError, "int32", lambda: flash_attention_varlen(q, q, q, cu.long(), 6)),
        (TypeError, "must be a torch.Tensor", lambda: flash_attention_varlen(q, q, q, [0, 4, 10], 6)),
        (ValueError, r"\(S \+ 1,\)", lambda: flash_attention_varlen(q, q, q, cu[:1], 6)),
        (ValueError, r"\(S \+ 1,\)", lambda: flash_attention_varlen(q, q, q, cu[None], 6)),
        (ValueError, "on meta", lambda: flash_attention_varlen(q, q, q, cu.to("meta"), 6)),
        (ValueError, r"\(1, H, T, D\)", lambda: flash_attention_varlen(*(torch.cat([q, q]),) * 3, cu, 6)),
        (ValueError, "one shape", lambda: flash_attention_varlen(q, q, q[:, :1], cu, 6)),
        (TypeError, "Python int", lambda: flash_attention_varlen(q, q, q, cu, 6.0)),
        (TypeError, "Python int", lambda: flash_attention_varlen(q, q, q, cu, True)),
        (ValueError, "from 1 to", lambda: flash_attention_varlen(q, q, q, cu, 0)),
        (ValueError, "from 1 to", lambda: flash_attention_varlen(q, q, q, cu, 11)),
        (ValueError, "head dim", lambda: flash_attention_varlen(*(torch.randn(1, 1, 10, 300),) * 3, cu, 6)),
    ]
    for error, match, call in cases:
        with pytest.raises(error, match=match):
            call()


# -- the custom ops under tracers ------------------------------------------------------------------
def _needs_interpreter():
    if not interpreter_enabled():
        pytest.skip("runs the kernels on CPU tensors, through Triton's interpreter")


def test_packed_triton_backend_compiles_without_graph_break():
    """fastvit.attention on a Packing with the triton backend, forward and backward, compiled with
    fullgraph=True under AOTAutograd: one graph, the varlen custom ops in it, the eager results."""
    _needs_interpreter()
    torch._dynamo.reset()
    packing = fastvit.Packing([3, 33, 1])
    q, k, v, grad_out = _packed(packing.lengths, 1, 16, "cpu", torch.float32)
    graphs = []

    def counting(gm, example_inputs):
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    def step(q, k, v):
        return fastvit.attention(q, k, v, backend="triton", packing=packing)

    try:
        compiled = torch.compile(step, backend=aot_autograd(fw_compiler=counting, bw_compiler=counting),
                                 fullgraph=True)
        got = _grads(compiled, q, k, v, grad_out)
    finally:
        torch._dynamo.reset()
    assert len(graphs) == 2, "one forward graph and one backward graph"
    targets = [{str(n.target) for n in g.graph.nodes} for g in graphs]
    assert "fastvit_kernels.flash_attn_varlen_fwd.default" in targets[0]
    assert "fastvit_kernels.flash_attn_varlen_bwd.default" in targets[1]
    for a, b in zip(got, _grads(step, q, k, v, grad_out)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_custom_op_passes_opcheck():
    _needs_interpreter()
    q, k, v = (torch.randn(1, 2, 9, 16, requires_grad=True) for _ in range(3))
    torch.library.opcheck(flash_attn_varlen_fwd, (q, k, v, _cu_seqlens((4, 5), "cpu"), 5, 0.25))


# -- CUDA: every default-space tile of the packed launches ------------------------------------------
@pytest.mark.parametrize("D", [64, 80])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
def test_every_default_config_on_cuda(dtype, D):
    """Each configuration the pruning keeps for the packed forward, dK/dV and dQ launches, pinned in
    turn: a packing of 197 (ViT-B/16 at 224 px), 577 (384 px) and 50 tokens against float64."""
    if not torch.cuda.is_available() or interpreter_enabled():
        pytest.skip("needs a CUDA GPU without the interpreter: runs the GPU autotuning space's configs")
    lengths = (197, 577, 50)
    q, k, v, grad_out = _packed(lengths, 3, D, "cuda", dtype)
    cu = _cu_seqlens(lengths, "cuda")
    launches = [launch for launch in record_launches(
        lambda: _grads(lambda *a: flash_attention_varlen(*a, cu, max(lengths)), q, k, v, grad_out))
        if launch.configs != [None]]
    assert [launch.name for launch in launches] == ["_flash_attn_fwd_kernel", "_flash_attn_bwd_dkdv_kernel",
                                                    "_flash_attn_bwd_dq_kernel"]
    assert all(launch.kwargs["VARLEN"] for launch in launches)
    for launch in launches:
        for config in launch.configs:
            with pinned_config(launch.kernel, config):
                _check(q, k, v, grad_out, cu, max(lengths), label=f"{launch.name} {config} ")
