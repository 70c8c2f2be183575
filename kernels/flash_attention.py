"""Flash attention in Triton: softmax(q k^T * scale + bias) v without ever forming the N x N matrix.

Algorithm (FlashAttention-2, Dao 2023). Forward: one program per (block of BLOCK_M queries, batch,
head) streams the keys and values in blocks of BLOCK_N and keeps, per query row, a running maximum
``m``, a running normaliser ``l`` and an unnormalised fp32 accumulator (online softmax); the
accumulator is rescaled by exp(m_old - m_new) whenever the maximum grows. Exponentials use ``exp2``
with log2(e) folded into the scale. The forward saves only the output and the per-row log-sum-exp,
fp32 in the log2 units the exponentials use (m + log2 l, the natural log-sum-exp times log2(e)); the
backward (kernels/flash_attention_bwd.py) recomputes the probabilities from it, exp2(s - lse), in a
dK/dV pass and a separate dQ pass: no atomics, deterministic. Log2 units, not the natural log: the
conversion to it and back is an ulp off for many values, and at scores of 1e3-1e4 an ulp of the
log-sum-exp is 1e-4 of a probability (dV of exactly one-hot rows came out 3.4e-4 off); kept in log2
units, a row dominated by one score gets exactly the forward's probabilities back.

Additive bias (Swin's relative position bias and shift mask): ``bias`` broadcastable to (B, H, N, N),
added to the scaled scores before the softmax (``HAS_BIAS``, a constexpr switch of the same kernels).
It is read through its strides, 0 along the dimensions it broadcasts over: (1, H, N, N), (B, 1, N, N),
(N, N) or an ``expand``-ed view are never expanded; only a bias whose key dim is not unit-stride (a
permuted view, as Swin's table lookup gives) has its distinct elements copied compact first (H * N * N
for Swin), so that its rows load contiguously. The tile enters as the accumulator of the q k^T dot
(as bias / scale, the scale applied after): the scores then stay in the dot's register layout through
the softmax; added after the dot, the bias tile's load layout spread to the softmax and doubled the
registers (its 64- and 128-wide tiles spilled). With a bias the pruning also drops the few tiles
that still spill (``BIAS_SPILLS`` in kernels/_flash_common.py). Entries may be -inf (a mask). A fully
masked row, every score -inf, attends to nothing: its output is 0 (its normaliser l is 0; it is taken
as 1) and its saved LSE -inf, which the backward reads as +inf, so exp2(s - lse) = 0 and the row adds
nothing to any gradient (PyTorch SDPA's answer; the materialized softmax gives NaN, and in the
backward its NaN filled dK and dV of the whole (batch, head) slice). A finite bias whose bias / scale
passes fp32's range (finfo.min at scale < 1) reads as -inf there, so a row masked only by such values
counts as fully masked. Rows whose scores all lie beyond about 2**24 in magnitude (-1e30 masks) have
an LSE that cannot hold their normaliser: their gradients are wrong, as in PyTorch's CPU flash kernel.
The bias gets its gradient (it is trained in Swin): the dQ pass writes the gradient of the scores,
the broadcast dimensions are summed by torch (memory and determinism: kernels/flash_attention_bwd.py).

Packed sequences (``flash_attention_varlen``, the ``VARLEN`` constexpr of the same kernels): q, k, v
(1, H, T, D) hold S sequences end to end, sequence s at rows cu_seqlens[s] to cu_seqlens[s + 1]
(int32 (S + 1,) on the device, FlashAttention's varlen layout). The grid has cdiv(max_seqlen, BLOCK)
programs per (sequence, head); each reads its sequence's offsets from cu_seqlens, starts its pointers
at the sequence's first row and runs the unpacked algorithm on the sequence alone (its length in
place of N: the same tail masking), so no score across two sequences is ever computed. The
backward's dK/dV and dQ passes do the same; the LSE and delta stay (1, H, T) rows, so the
preprocess needs no offsets. No bias with packing. A program whose block lies past the end of a
shorter sequence does nothing: the forward returns at once, the backward's programs visit no block
(with an early ``return`` ptxas spilled dQ's fp32 tiles; without one, the forward's). Unpacked, the
offsets pointer and T are passed as None, constexprs rather than kernel parameters, so the unpacked
kernels compile as they did before the mode existed (with the parameter list merely grown, ptxas
allocated one of Swin's dQ tiles differently and spilled). With packing the pruning also drops the
tiles that spill only there (``VARLEN_SPILLS`` in kernels/_flash_common.py). ``max_seqlen`` is a
Python int (it sizes the grid) and the offsets are never read back to the host: no synchronisation,
no graph break under torch.compile. The autotuner keys a packed launch on max_seqlen rather than T,
so packings that differ only in their shorter sequences reuse the tuned configuration.

What differs from the Triton tutorial: any sequence length (ViT's 197, 577, 1025 and Swin's 49 and
144 are no multiple of a block; the tutorial's backward needs N % 128 == 0): rows and key columns past
N are masked on load, and masked keys get a -inf score before the softmax. Any head dim from 1 to 256,
as one or two column pieces, each a power of two >= 16 (the smallest tensor-core dot): ``BLOCK_D``
and, where it saves work, ``BLOCK_D2`` (0: one piece). ViT-H/14's 80 runs as 64 + 16, so no MMA work
goes to padding (padded to 128 it wasted 37.5%); 48 is 32 + 16, 112 is padded to 128. Loads are
masked on d < D; inputs may have any strides (q, k, v as views into a fused qkv projection are read in
place). fp32 uses ``input_precision="ieee"`` (true fp32, not TF32) on fp32 tiles; fp16/bf16 use
tensor-core dots with fp32 accumulation. Launches run with the inputs' CUDA device current.

PyTorch custom ops (namespace ``fastvit_kernels``): ``flash_attn_fwd`` (q, k, v, bias?, scale) ->
(out, lse), lse (B, H, N) fp32 in log2 units, and ``flash_attn_bwd``; for packed sequences
``flash_attn_varlen_fwd`` (q, k, v, cu_seqlens, max_seqlen, scale) -> (out, lse) and
``flash_attn_varlen_bwd`` -> (dq, dk, dv). Each has a fake implementation (shapes only) and each
forward its autograd formula (``register_autograd``, calling the backward op), so torch.compile sees
one opaque op per pass (no graph break) and torch.export records it. Eagerly ``FlashAttentionFn`` and
``FlashAttentionVarlenFn`` run the same implementations, setup and backward without the dispatcher
(kernels._common.tracing).

Known limits: self-attention only (q, k, v of one shape), non-causal, no dropout; not twice
differentiable; 32-bit offsets within one (batch, head) slice: an input whose slice spans 2**31
elements or more is copied to the contiguous layout first, and N * D (with a bias, N * N) must be at
most 2**31.

Block sizes are autotuned on GPU per (N, head-dim pieces, dtype, bias), keyed on the exact N (a ViT
uses a handful; Triton reuses the compiled kernels across N). FASTVIT_AUTOTUNE picks the space
(kernels._common.autotune_mode): compact by default, ``full`` wide, ``off`` the single 32 x 32
blocking the interpreter runs. A space holds two families and the pruning gives a launch its dtype's:
tensor-core tiles of 64 rows and up for fp16 / bf16 (wgmma on Hopper), small tiles for fp32, whose
IEEE dots run as FMAs with both operands in registers (kernels/_flash_common.py). Every default-space
tile compiles for sm_90 and sm_80 at head dims 64 and 80, and at Swin's 32 with a bias (N = 49, 144),
without spills or shared-memory overflow, and so does every tile a packed launch keeps, for the
audited packings of mixed 224-768 px images at head dims 64 and 80 (``python -m kernels.audit``).

Verified on CPU through Triton's interpreter (TRITON_INTERPRET=1) in fp32 and fp16. The interpreter
computes bf16 ``tl.dot`` wrongly, so bf16 is verified only on GPU (tests/test_flash_attention.py runs
it, and every default-space configuration, when CUDA is present); GPU speed is not measured here.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from kernels._common import NAMESPACE, check_inputs, device_guard, require_runnable, tracing
from kernels._flash_common import (LOG2E, MAX_HEAD_DIM, MIN_HEAD_DIM, _dot, _dot_acc, _load_bias, _load_rows,
                                   _program_ids, _sequence_program_ids, _store_rows, blocks, head_dim_tiles, tuned)
from kernels.flash_attention_bwd import launch_bwd


# ------------------------------------------------------------------------------------------------
# Triton kernel
# ------------------------------------------------------------------------------------------------
@triton.jit
def _flash_attn_fwd_kernel(
    Q,     # (B, H, N, D) queries, any strides
    K,     # (B, H, N, D) keys, any strides
    V,     # (B, H, N, D) values, any strides
    Bias,  # (B|1, H|1, N|1, N|1) additive bias, strides stride_z* (0 where it broadcasts); read when HAS_BIAS
    Out,   # (B, H, N, D) output (written), any strides
    Lse,   # (B, H, N) fp32 contiguous (written): base-2 log-sum-exp of each row of scale * q k^T + bias
    CuSeqlens,  # (S + 1,) int32 with VARLEN: sequence s is rows CuSeqlens[s] to CuSeqlens[s + 1] (B = 1); else None
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_zb, stride_zh, stride_zm, stride_zn,
    stride_ob, stride_oh, stride_on, stride_od,
    H, N, D,
    N_TOTAL,  # with VARLEN the T rows of each head's (1, H, T, D) slice (N is then the longest sequence's); else None
    qk_scale,  # softmax scale * log2(e): scores feed exp2 directly
    inv_scale,  # 1 / softmax scale: the bias's factor as the accumulator of q k^T
    HAS_BIAS: tl.constexpr,
    VARLEN: tl.constexpr,  # packed sequences: programs per (query block, sequence, head); never with HAS_BIAS
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,   # head-dim columns [0, BLOCK_D)
    BLOCK_D2: tl.constexpr,  # 0, or a second piece of columns [BLOCK_D, BLOCK_D + BLOCK_D2)
    IEEE: tl.constexpr,
):
    if VARLEN:  # this program's sequence: its rows from `start` on, `seqlen` of them, are its whole world
        pid_m, h, start, seqlen, row0 = _sequence_program_ids(CuSeqlens, N, N_TOTAL, H, BLOCK_M)
        if pid_m * BLOCK_M >= seqlen:  # a block past the end of a shorter sequence
            return
        Qs = Q + h * stride_qh + start * stride_qn
        Ks = K + h * stride_kh + start * stride_kn
        Vs = V + h * stride_vh + start * stride_vn
    else:
        pid_m, b, h, row0 = _program_ids(N, H, BLOCK_M)
        seqlen = N
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < seqlen
    if not VARLEN:
        Qs = Q + b * stride_qb + h * stride_qh
        Ks = K + b * stride_kb + h * stride_kh
        Vs = V + b * stride_vb + h * stride_vh
    if HAS_BIAS:
        Zs = Bias + b * stride_zb + h * stride_zh

    q = _load_rows(Qs, offs_m, mask_m, offs_d, D, stride_qn, stride_qd)  # (BLOCK_M, BLOCK_D)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    if BLOCK_D2 > 0:
        offs_d2 = BLOCK_D + tl.arange(0, BLOCK_D2)
        q2 = _load_rows(Qs, offs_m, mask_m, offs_d2, D, stride_qn, stride_qd)  # (BLOCK_M, BLOCK_D2)
        acc2 = tl.zeros([BLOCK_M, BLOCK_D2], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running max, log2 units
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running sum of exp2(s - m_i)
    for start_n in range(0, seqlen, BLOCK_N):
        cols = start_n + offs_n
        mask_n = cols < seqlen
        kt = tl.trans(_load_rows(Ks, cols, mask_n, offs_d, D, stride_kn, stride_kd))
        if HAS_BIAS:  # q k^T + bias / scale: times qk_scale below, scale * q k^T + bias in log2 units
            s = _dot_acc(q, kt, _load_bias(Zs, offs_m, mask_m, cols, mask_n, stride_zm, stride_zn, inv_scale), IEEE)
        else:
            s = _dot(q, kt, IEEE)
        if BLOCK_D2 > 0:
            s += _dot(q2, tl.trans(_load_rows(Ks, cols, mask_n, offs_d2, D, stride_kn, stride_kd)), IEEE)
        s = s * qk_scale
        s = tl.where(mask_n[None, :], s, float("-inf"))  # (BLOCK_M, BLOCK_N); key tail: no weight
        m_new = tl.maximum(m_i, tl.max(s, 1))  # without a bias finite: every block holds a key
        if HAS_BIAS:  # a -inf bias may mask a row's every key so far: exponents then relative to 0
            m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        else:
            m_ref = m_new
        alpha = tl.math.exp2(m_i - m_ref)
        p = tl.math.exp2(s - m_ref[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _dot(p, _load_rows(Vs, cols, mask_n, offs_d, D, stride_vn, stride_vd), IEEE)
        if BLOCK_D2 > 0:
            acc2 = acc2 * alpha[:, None] + _dot(p, _load_rows(Vs, cols, mask_n, offs_d2, D, stride_vn, stride_vd),
                                                IEEE)
        m_i = m_new

    if HAS_BIAS:  # a fully masked row (every score -inf): l = 0 and acc = 0; output 0, LSE m = -inf
        l_i = tl.where(l_i == 0.0, 1.0, l_i)
    # The LSE in log2 units, m + log2 l, as the backward's exp2 uses it (no conversion: see the docstring)
    tl.store(Lse + row0 + offs_m, m_i + tl.math.log2(l_i), mask=mask_m)
    if VARLEN:
        Os = Out + h * stride_oh + start * stride_on
    else:
        Os = Out + b * stride_ob + h * stride_oh
    _store_rows(Os, offs_m, mask_m, offs_d, D, stride_on, stride_od, (acc / l_i[:, None]).to(Out.dtype.element_ty))
    if BLOCK_D2 > 0:
        _store_rows(Os, offs_m, mask_m, offs_d2, D, stride_on, stride_od,
                    (acc2 / l_i[:, None]).to(Out.dtype.element_ty))


_fwd_kernel = tuned(_flash_attn_fwd_kernel, "fwd")


# ------------------------------------------------------------------------------------------------
# Launchers
# ------------------------------------------------------------------------------------------------
def head_dim_supported(head_dim: int) -> tuple[bool, str]:
    """Can the kernel take this head dim? Returns (ok, reason)."""
    if MIN_HEAD_DIM <= head_dim <= MAX_HEAD_DIM:
        return True, ""
    return False, (f"flash_attention: head dim {head_dim} is not supported; supported head dims are "
                   f"{MIN_HEAD_DIM} to {MAX_HEAD_DIM} (e.g. 16, 32, 64, 80, 128)")


def _validate(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> None:
    check_inputs("flash_attention", {"q": q, "k": k, "v": v, **({"bias": bias} if bias is not None else {})})
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"flash_attention: {name} must be 4-D (B, H, N, D), got shape {tuple(t.shape)}")
    if not (q.shape == k.shape == v.shape):
        raise ValueError(f"flash_attention: q, k, v must have one shape (B, H, N, D); got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"flash_attention: q, k, v must share one dtype; got q {q.dtype}, k {k.dtype}, v {v.dtype}")
    ok, reason = head_dim_supported(q.shape[-1])
    if not ok:
        raise ValueError(reason)
    if bias is not None:
        B, H, N, _ = q.shape
        if bias.dim() > 4 or any(s not in (1, t) for s, t in zip(bias.shape[::-1], (N, N, H, B))):
            raise ValueError(f"flash_attention: bias of shape {tuple(bias.shape)} does not broadcast to "
                             f"(B, H, N, N) = {(B, H, N, N)}")


_INT32_LIMIT = 2 ** 31


def _within_int32(t: torch.Tensor, name: str) -> torch.Tensor:
    """``t`` itself if its (batch, head) slices are addressable with 32-bit offsets, as the kernels
    address them; otherwise its contiguous copy (a slice then spans N * D elements), e.g. for a
    sequence-first view of a very large tensor. Raises ValueError where even that does not fit."""
    N, D = t.shape[2], t.shape[3]
    if (N - 1) * abs(t.stride(2)) + (D - 1) * abs(t.stride(3)) < _INT32_LIMIT:
        return t
    if N * D > _INT32_LIMIT:  # contiguous, the last element of a slice sits at offset N * D - 1
        raise ValueError(f"flash_attention: {name} has N * D = {N} * {D} = {N * D} elements per (batch, head) "
                         f"slice; at most 2**31 are supported")
    return t.contiguous()


def _bias_4d(bias: torch.Tensor) -> torch.Tensor:
    """``bias`` viewed with leading dims of size 1 up to 4-D (no copy)."""
    return bias.reshape((1,) * (4 - bias.dim()) + tuple(bias.shape)) if bias.dim() < 4 else bias


def _bias_layout(bias: torch.Tensor | None, N: int) -> tuple[torch.Tensor | None, tuple[int, int, int, int]]:
    """(the bias to read, its four strides over (B, H, N, N)): 0 along every dim it broadcasts over,
    given as size 1 or as an ``expand``-ed stride 0 (never copied). The distinct elements are copied
    compact only where their key dim is not unit-stride (a permuted view, e.g. Swin's (1, H, N, N)
    relative position bias: H * N * N elements), so that the kernels' bias rows load contiguously,
    or where one (N, N) slice would need offsets past 32 bits."""
    if bias is None:
        return None, (0, 0, 0, 0)
    z = _bias_4d(bias)
    z = z[tuple(slice(0, 1) if z.stride(i) == 0 else slice(None) for i in range(4))]  # a view: broadcast dims size 1
    far = (N - 1) * (abs(z.stride(2)) * (z.shape[2] > 1) + abs(z.stride(3)) * (z.shape[3] > 1)) >= _INT32_LIMIT
    if (z.shape[3] > 1 and z.stride(3) != 1) or far:
        if far and N * N > _INT32_LIMIT:
            raise ValueError(f"flash_attention: a bias slice of N * N = {N * N} elements is more than 2**31")
        z = z.contiguous()
    return z, tuple(0 if z.shape[i] == 1 else z.stride(i) for i in range(4))


def _flash_attn_fwd(q, k, v, bias, scale: float, cu_seqlens=None, max_seqlen: int = 0):
    """Launch the forward. Returns out (B, H, N, D) contiguous and lse (B, H, N) fp32, in log2 units
    (the natural log-sum-exp of each row times log2(e); -inf for a fully masked row). With
    ``cu_seqlens`` (int32 (S + 1,), no bias) the (1, H, T, D) inputs are S packed sequences of at most
    ``max_seqlen`` tokens."""
    B, H, N, D = q.shape
    out = torch.empty((B, H, N, D), device=q.device, dtype=q.dtype)
    lse = torch.empty((B, H, N), device=q.device, dtype=torch.float32)
    if out.numel() == 0:
        return out, lse
    bias, bias_strides = _bias_layout(bias, N)
    block_d, block_d2 = head_dim_tiles(D)
    # Per head: B sequences of N rows, or the packing's S sequences of at most max_seqlen rows (the
    # kernel's N; T rows in all). Unpacked, cu_seqlens and T are None: constexprs, no kernel parameters.
    varlen = cu_seqlens is not None
    seqs, n, total = (cu_seqlens.shape[0] - 1, max_seqlen, N) if varlen else (B, N, None)
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK_M"]) * seqs * H,)  # noqa: E731
    with device_guard(q):
        _fwd_kernel[grid](
            q, k, v, bias if bias is not None else q, out, lse, cu_seqlens,
            *q.stride(), *k.stride(), *v.stride(), *bias_strides, *out.stride(), H, n, D, total,
            scale * LOG2E, 1.0 / scale, HAS_BIAS=bias is not None, VARLEN=varlen, BLOCK_D=block_d,
            BLOCK_D2=block_d2, IEEE=q.dtype == torch.float32, **blocks(),
        )
    return out, lse


# ------------------------------------------------------------------------------------------------
# Custom ops (traced) and the autograd.Function (eager) around the same implementations
# ------------------------------------------------------------------------------------------------
def _fwd_impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None,
              scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(out (B, H, N, D) contiguous, lse (B, H, N) fp32 in log2 units); q, k, v already fitted to 32-bit
    offsets."""
    require_runnable("flash_attention", q)
    return _flash_attn_fwd(q, k, v, bias, scale)


def _bwd_impl(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None,
              out: torch.Tensor, lse: torch.Tensor, scale: float,
              bias_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv, dbias): dbias shaped and typed as ``bias`` when ``bias_grad``, else empty."""
    do = _within_int32(do, "grad_output")  # q, k, v were fitted before the forward saved them
    N = q.shape[2]
    if bias_grad and N * N > _INT32_LIMIT:
        raise ValueError(f"flash_attention: the bias gradient of N * N = {N * N} elements per slice is more than 2**31")
    z, bias_strides = _bias_layout(bias, N)
    dq, dk, dv, ds = launch_bwd(do, q, k, v, z, bias_strides, out, lse, scale, bias_grad)
    if not bias_grad:
        return dq, dk, dv, q.new_empty(0)
    full = _bias_4d(bias).shape
    dims = [i for i in range(4) if full[i] == 1 and ds.shape[i] != 1]  # the dims the bias broadcasts along
    dbias = ds.sum(dims, keepdim=True) if dims else ds
    return dq, dk, dv, dbias.reshape(bias.shape).to(bias.dtype)


flash_attn_fwd = torch.library.custom_op(f"{NAMESPACE}::flash_attn_fwd", mutates_args=())(_fwd_impl)
flash_attn_bwd = torch.library.custom_op(f"{NAMESPACE}::flash_attn_bwd", mutates_args=())(_bwd_impl)


@flash_attn_fwd.register_fake
def _(q, k, v, bias, scale):
    return q.new_empty(q.shape), q.new_empty(q.shape[:3], dtype=torch.float32)


@flash_attn_bwd.register_fake
def _(do, q, k, v, bias, out, lse, scale, bias_grad):
    dbias = bias.new_empty(bias.shape) if bias_grad else q.new_empty(0)
    return q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty(q.shape), dbias


def _setup_context(ctx, inputs, output):
    q, k, v, bias, scale = inputs
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(q, k, v, bias, out, lse)  # never the N x N matrix
    ctx.scale = scale


def _backward(ctx, dout, _dlse, bwd=flash_attn_bwd):
    """The autograd formula: ``bwd`` is the backward custom op (what a traced backward records); the
    eager FlashAttentionFn passes its implementation."""
    q, k, v, bias, out, lse = ctx.saved_tensors
    need = ctx.needs_input_grad  # q, k, v, bias, scale
    bias_grad = bias is not None and need[3]
    dq, dk, dv, dbias = bwd(dout, q, k, v, bias, out, lse, ctx.scale, bias_grad)
    return (dq if need[0] else None), (dk if need[1] else None), (dv if need[2] else None), \
        (dbias if bias_grad else None), None


flash_attn_fwd.register_autograd(_backward, setup_context=_setup_context)


class FlashAttentionFn(torch.autograd.Function):
    """The eager path: the custom op's implementation, setup and backward, without its dispatcher."""

    @staticmethod
    def forward(ctx, q, k, v, bias, scale):
        output = _fwd_impl(q, k, v, bias, scale)
        _setup_context(ctx, (q, k, v, bias, scale), output)
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dlse):
        return _backward(ctx, dout, dlse, bwd=_bwd_impl)


# Packed sequences: their own pair of ops (the kernels above with VARLEN), so that flash_attn_fwd /
# flash_attn_bwd keep their schemas. cu_seqlens is an input tensor, max_seqlen a Python int: nothing
# is read back to the host, and a tracer records one opaque op per pass.
def _varlen_fwd_impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
                     scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(out (1, H, T, D) contiguous, lse (1, H, T) fp32 in log2 units) of the packed sequences."""
    require_runnable("flash_attention_varlen", q)
    return _flash_attn_fwd(q, k, v, None, scale, cu_seqlens, max_seqlen)


def _varlen_bwd_impl(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                     lse: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
                     scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) of the packed sequences, each (1, H, T, D) contiguous."""
    do = _within_int32(do, "grad_output")
    dq, dk, dv, _ = launch_bwd(do, q, k, v, None, (0, 0, 0, 0), out, lse, scale, False, cu_seqlens, max_seqlen)
    return dq, dk, dv


flash_attn_varlen_fwd = torch.library.custom_op(f"{NAMESPACE}::flash_attn_varlen_fwd",
                                                mutates_args=())(_varlen_fwd_impl)
flash_attn_varlen_bwd = torch.library.custom_op(f"{NAMESPACE}::flash_attn_varlen_bwd",
                                                mutates_args=())(_varlen_bwd_impl)


@flash_attn_varlen_fwd.register_fake
def _(q, k, v, cu_seqlens, max_seqlen, scale):
    return q.new_empty(q.shape), q.new_empty(q.shape[:3], dtype=torch.float32)


@flash_attn_varlen_bwd.register_fake
def _(do, q, k, v, out, lse, cu_seqlens, max_seqlen, scale):
    return q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty(q.shape)


def _varlen_setup_context(ctx, inputs, output):
    q, k, v, cu_seqlens, max_seqlen, scale = inputs
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(q, k, v, out, lse, cu_seqlens)
    ctx.max_seqlen, ctx.scale = max_seqlen, scale


def _varlen_backward(ctx, dout, _dlse, bwd=flash_attn_varlen_bwd):
    """The packed autograd formula (``bwd`` as in _backward)."""
    q, k, v, out, lse, cu_seqlens = ctx.saved_tensors
    need = ctx.needs_input_grad  # q, k, v, cu_seqlens, max_seqlen, scale
    dq, dk, dv = bwd(dout, q, k, v, out, lse, cu_seqlens, ctx.max_seqlen, ctx.scale)
    return (dq if need[0] else None), (dk if need[1] else None), (dv if need[2] else None), None, None, None


flash_attn_varlen_fwd.register_autograd(_varlen_backward, setup_context=_varlen_setup_context)


class FlashAttentionVarlenFn(torch.autograd.Function):
    """The packed eager path, as FlashAttentionFn."""

    @staticmethod
    def forward(ctx, q, k, v, cu_seqlens, max_seqlen, scale):
        output = _varlen_fwd_impl(q, k, v, cu_seqlens, max_seqlen, scale)
        _varlen_setup_context(ctx, (q, k, v, cu_seqlens, max_seqlen, scale), output)
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dlse):
        return _varlen_backward(ctx, dout, dlse, bwd=_varlen_bwd_impl)


# ------------------------------------------------------------------------------------------------
# The public functions and the references
# ------------------------------------------------------------------------------------------------
def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, bias: torch.Tensor | None = None,
                    scale: float | None = None) -> torch.Tensor:
    """softmax(q k^T * scale + bias) v, tiled, differentiable, never materializing the N x N matrix.

    Args:
        q, k, v: (B, H, N, D) tensors of one shape and one dtype (float16, bfloat16 or float32) on
            one CUDA device, or on the CPU under Triton's interpreter. Any strides (views into a
            fused qkv projection are read in place). Head dim D from 1 to 256; any N.
        bias: None, or an additive bias broadcastable to (B, H, N, N) (any of the three dtypes, on
            q's device), read through its strides; it gets a gradient like q, k, v.
        scale: softmax scale; default ``1 / sqrt(D)``.

    Returns:
        (B, H, N, D) contiguous tensor in the inputs' dtype.

    Raises:
        TypeError: an input is not a tensor, or the dtypes are unsupported or differ.
        ValueError: wrong rank, mismatched shapes or devices, a bias that does not broadcast, an
            unsupported head dim, or CPU tensors without Triton's interpreter.
    """
    _validate(q, k, v, bias)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    q, k, v = _within_int32(q, "q"), _within_int32(k, "k"), _within_int32(v, "v")
    return (flash_attn_fwd if tracing() else FlashAttentionFn.apply)(q, k, v, bias, scale)[0]


def _validate_varlen(q, k, v, cu_seqlens, max_seqlen) -> None:
    _validate(q, k, v, None)
    if q.shape[0] != 1:
        raise ValueError(f"flash_attention_varlen: packed q, k, v must be (1, H, T, D), got shape {tuple(q.shape)}")
    check_inputs("flash_attention_varlen", {"cu_seqlens": cu_seqlens}, dtypes=(torch.int32,))
    if cu_seqlens.device != q.device:
        raise ValueError(f"flash_attention_varlen: cu_seqlens is on {cu_seqlens.device} but q is on {q.device}; "
                         "all inputs must be on one device")
    if cu_seqlens.dim() != 1 or cu_seqlens.shape[0] < 2:
        raise ValueError("flash_attention_varlen: cu_seqlens must be 1-D (S + 1,) with S >= 1 sequences, got shape "
                         f"{tuple(cu_seqlens.shape)}")
    if isinstance(max_seqlen, bool) or not isinstance(max_seqlen, (int, torch.SymInt)):
        raise TypeError(f"flash_attention_varlen: max_seqlen must be a Python int, got {type(max_seqlen).__name__}")
    if not 1 <= max_seqlen <= max(q.shape[2], 1):
        raise ValueError(f"flash_attention_varlen: max_seqlen must be from 1 to the T = {q.shape[2]} packed tokens, "
                         f"got {max_seqlen}")


def flash_attention_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                           max_seqlen: int, *, scale: float | None = None) -> torch.Tensor:
    """Attention within each of S packed sequences: for every s, softmax(q_s k_s^T * scale) v_s, with
    q_s = q[:, :, cu_seqlens[s]:cu_seqlens[s + 1]] and likewise k_s, v_s; differentiable.

    The same kernels as :func:`flash_attention` (VARLEN): one program per (block of one sequence's
    queries, sequence, head), which reads its sequence's offsets from ``cu_seqlens`` on the device,
    masks past the sequence's end and attends only to its keys. Nothing is read back to the host, so
    torch.compile records one custom op per pass (``flash_attn_varlen_fwd`` / ``_bwd``), no graph break.

    Args:
        q, k, v: (1, H, T, D) tensors of one shape and dtype (float16, bfloat16 or float32), the S
            sequences' tokens end to end along T; as for flash_attention otherwise (any strides,
            head dim D from 1 to 256).
        cu_seqlens: int32 (S + 1,) offsets on q's device: 0 first, T last, non-decreasing
            (fastvit's Packing.cu_seqlens). Their values are not checked: that would read them back.
        max_seqlen: a Python int at least the longest sequence's length (Packing.max_len): the
            kernels cover max_seqlen rows of each sequence, so a smaller one leaves rows unwritten.
        scale: softmax scale; default ``1 / sqrt(D)``.

    Returns:
        (1, H, T, D) contiguous tensor in the inputs' dtype.

    Raises:
        TypeError: an input is not a tensor, an unsupported or mismatched dtype, cu_seqlens not int32,
            max_seqlen not an int.
        ValueError: wrong rank or a batch other than 1, mismatched shapes or devices, cu_seqlens not
            (S + 1,), max_seqlen outside 1..T, an unsupported head dim, or CPU tensors without
            Triton's interpreter.
    """
    _validate_varlen(q, k, v, cu_seqlens, max_seqlen)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    q, k, v = _within_int32(q, "q"), _within_int32(k, "k"), _within_int32(v, "v")
    cu_seqlens = cu_seqlens.contiguous()  # read with stride 1
    return (flash_attn_varlen_fwd if tracing() else FlashAttentionVarlenFn.apply)(q, k, v, cu_seqlens, max_seqlen,
                                                                                  scale)[0]


def attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, bias: torch.Tensor | None = None,
                  scale: float | None = None, upcast: bool = True) -> torch.Tensor:
    """Plain PyTorch reference: the materialized softmax(q k^T * scale + bias) v, differentiable by
    autograd; a fully masked row (every score -inf) gives 0 and zero gradients, as the kernel does.

    ``upcast=True`` computes float16/bfloat16 inputs in float32 and casts the result back; float32 and
    float64 inputs are computed in their own dtype (float64 inputs give the tests' reference).
    ``upcast=False`` computes in the inputs' dtype whatever it is.
    """
    dtype = q.dtype
    if upcast and dtype in (torch.float16, torch.bfloat16):
        q, k, v = q.float(), k.float(), v.float()
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q * scale) @ k.transpose(-2, -1)  # (B, H, N, N)
    if bias is None:
        return (scores.softmax(dim=-1) @ v).to(dtype)
    scores = scores + bias.to(scores.dtype)
    dead = scores.detach().amax(dim=-1, keepdim=True) == float("-inf")  # (B, H, N, 1) fully masked rows
    # Their scores set to 0 (a finite softmax, no NaN in its backward), their output rows to 0.
    return (scores.masked_fill(dead, 0.0).softmax(dim=-1) @ v).masked_fill(dead, 0.0).to(dtype)


def attention_varlen_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, *,
                         scale: float | None = None, upcast: bool = True) -> torch.Tensor:
    """Plain PyTorch reference of :func:`flash_attention_varlen`: :func:`attention_ref` on each packed
    sequence's (1, H, n, D) views, concatenated along the tokens; reads ``cu_seqlens`` back to the host
    (a reference, not a hot path)."""
    offsets = [int(x) for x in cu_seqlens.tolist()]
    parts = [attention_ref(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], scale=scale, upcast=upcast)
             for a, b in zip(offsets, offsets[1:])]
    return torch.cat(parts, dim=2)
