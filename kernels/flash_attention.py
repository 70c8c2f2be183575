"""Flash attention in Triton: softmax(q k^T * scale) v without ever forming the N x N matrix.

Algorithm (FlashAttention-2, Dao 2023): each program owns a block of BLOCK_M queries of one (batch,
head) and streams the keys and values in blocks of BLOCK_N, keeping a running row maximum ``m``, a
running normaliser ``l`` and an unnormalised accumulator (online softmax). Exponentials use ``exp2``
with log2(e) folded into the scale. The forward saves only the output and the per-row
log-sum-exp (in log2 units); the backward recomputes the probabilities from it:

* ``_flash_attn_bwd_preprocess_kernel``: delta = rowsum(dO * O);
* ``_flash_attn_bwd_dkdv_kernel``: one program per key block accumulates dK and dV over all queries;
* ``_flash_attn_bwd_dq_kernel``: one program per query block accumulates dQ over all keys.

dQ gets its own pass instead of atomic adds, so the backward is deterministic.

What differs from the Triton tutorial: any sequence length (ViT's 197, 577, 1025 are no multiple of
a block; the tutorial's backward needs N % 128 == 0): query rows and key columns past N are masked,
and masked keys get -inf scores. Any head dim up to 256 (ViT-H/14 uses 80): the head dim is padded to
the next power of two *inside* the kernel with masked loads, never by copying inputs. Inputs may have
any strides (q, k, v as views into a fused qkv projection need no copy). Non-causal only, no dropout.

Precision: fp16, bf16 and fp32 inputs, fp32 accumulation and softmax statistics. fp32 inputs use
``input_precision="ieee"`` so that the fp32 path is true fp32, not TF32.

Tested on CPU through Triton's interpreter (TRITON_INTERPRET=1) in fp32 and fp16; the interpreter
computes bf16 ``tl.dot`` wrongly, so bf16 is verified on CUDA only. Block sizes are autotuned per
(N, D, dtype) on GPU; under the interpreter one small fixed configuration is used.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernels._common import check_inputs, interpreter_enabled

LOG2E = 1.4426950408889634
MAX_HEAD_DIM = 256


# ------------------------------------------------------------------------------------------------
# Triton kernels
# ------------------------------------------------------------------------------------------------
@triton.jit
def _flash_attn_fwd_kernel(
    Q, K, V,  # (B, H, N, D) each, any strides
    Out,  # (B, H, N, D), any strides
    Lse,  # (B, H, N) fp32 contiguous: log2-sum-exp2 of each query row's scaled scores
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    H, N, D,
    qk_scale,  # softmax scale * log2(e)
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, IEEE: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < N
    mask_d = offs_d < D

    q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=mask_m[:, None] & mask_d[None, :], other=0.0)  # (BLOCK_M, BLOCK_D)
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in range(0, N, BLOCK_N):
        cols = start_n + offs_n
        mask_n = cols < N
        # k loaded transposed: (BLOCK_D, BLOCK_N)
        kt = tl.load(k_base + cols[None, :] * stride_kn + offs_d[:, None] * stride_kd,
                     mask=mask_d[:, None] & mask_n[None, :], other=0.0)
        if IEEE:
            s = tl.dot(q, kt, input_precision="ieee")
        else:
            s = tl.dot(q, kt)
        s = tl.where(mask_n[None, :], s * qk_scale, float("-inf"))  # (BLOCK_M, BLOCK_N)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                    mask=mask_n[:, None] & mask_d[None, :], other=0.0)  # (BLOCK_N, BLOCK_D)
        if IEEE:
            acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new

    acc = acc / l_i[:, None]
    tl.store(Lse + pid_bh * N + offs_m, m_i + tl.math.log2(l_i), mask=mask_m)
    o_ptrs = Out + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od
    tl.store(o_ptrs, acc.to(Out.dtype.element_ty), mask=mask_m[:, None] & mask_d[None, :])


@triton.jit
def _flash_attn_bwd_preprocess_kernel(
    Out, DOut,  # (B, H, N, D), any strides
    Delta,  # (B, H, N) fp32 contiguous: rowsum(dO * O)
    stride_ob, stride_oh, stride_on, stride_od,
    stride_dob, stride_doh, stride_don, stride_dod,
    H, N, D,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_m[:, None] < N) & (offs_d[None, :] < D)
    o = tl.load(Out + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od,
                mask=mask, other=0.0).to(tl.float32)
    do = tl.load(DOut + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_don + offs_d[None, :] * stride_dod,
                 mask=mask, other=0.0).to(tl.float32)
    tl.store(Delta + pid_bh * N + offs_m, tl.sum(o * do, 1), mask=offs_m < N)


@triton.jit
def _flash_attn_bwd_dkdv_kernel(
    Q, K, V, DOut,  # (B, H, N, D) each, any strides
    DK, DV,  # (B, H, N, D) contiguous outputs
    Lse, Delta,  # (B, H, N) fp32 contiguous
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_gb, stride_gh, stride_gn, stride_gd,  # strides of DK and DV
    H, N, D,
    sm_scale, qk_scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, IEEE: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask_n = offs_n < N
    mask_d = offs_d < D
    mask_nd = mask_n[:, None] & mask_d[None, :]

    # k and v loaded transposed: (BLOCK_D, BLOCK_N)
    kt = tl.load(K + b * stride_kb + h * stride_kh + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd,
                 mask=mask_d[:, None] & mask_n[None, :], other=0.0)
    vt = tl.load(V + b * stride_vb + h * stride_vh + offs_n[None, :] * stride_vn + offs_d[:, None] * stride_vd,
                 mask=mask_d[:, None] & mask_n[None, :], other=0.0)
    q_base = Q + b * stride_qb + h * stride_qh
    do_base = DOut + b * stride_dob + h * stride_doh

    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    for start_m in range(0, N, BLOCK_M):
        rows = start_m + offs_m
        mask_m = rows < N
        mask_md = mask_m[:, None] & mask_d[None, :]
        q = tl.load(q_base + rows[:, None] * stride_qn + offs_d[None, :] * stride_qd, mask=mask_md, other=0.0)
        do = tl.load(do_base + rows[:, None] * stride_don + offs_d[None, :] * stride_dod, mask=mask_md, other=0.0)
        lse = tl.load(Lse + pid_bh * N + rows, mask=mask_m, other=0.0)
        delta = tl.load(Delta + pid_bh * N + rows, mask=mask_m, other=0.0)
        if IEEE:
            s = tl.dot(q, kt, input_precision="ieee")
        else:
            s = tl.dot(q, kt)
        p = tl.math.exp2(s * qk_scale - lse[:, None])  # (BLOCK_M, BLOCK_N) probabilities
        p = tl.where(mask_m[:, None] & mask_n[None, :], p, 0.0)
        if IEEE:
            dv += tl.dot(tl.trans(p), do, input_precision="ieee")
            dp = tl.dot(do, vt, input_precision="ieee")
        else:
            dv += tl.dot(tl.trans(p.to(do.dtype)), do)
            dp = tl.dot(do, vt)
        ds = p * (dp - delta[:, None])  # (BLOCK_M, BLOCK_N) gradient of the scaled scores
        if IEEE:
            dk += tl.dot(tl.trans(ds), q, input_precision="ieee")
        else:
            dk += tl.dot(tl.trans(ds.to(q.dtype)), q)

    g_off = b * stride_gb + h * stride_gh + offs_n[:, None] * stride_gn + offs_d[None, :] * stride_gd
    tl.store(DK + g_off, (dk * sm_scale).to(DK.dtype.element_ty), mask=mask_nd)
    tl.store(DV + g_off, dv.to(DV.dtype.element_ty), mask=mask_nd)


@triton.jit
def _flash_attn_bwd_dq_kernel(
    Q, K, V, DOut,  # (B, H, N, D) each, any strides
    DQ,  # (B, H, N, D) contiguous output
    Lse, Delta,  # (B, H, N) fp32 contiguous
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_gb, stride_gh, stride_gn, stride_gd,  # strides of DQ
    H, N, D,
    sm_scale, qk_scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, IEEE: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < N
    mask_d = offs_d < D
    mask_md = mask_m[:, None] & mask_d[None, :]

    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd,
                mask=mask_md, other=0.0)
    do = tl.load(DOut + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_don + offs_d[None, :] * stride_dod,
                 mask=mask_md, other=0.0)
    lse = tl.load(Lse + pid_bh * N + offs_m, mask=mask_m, other=0.0)
    delta = tl.load(Delta + pid_bh * N + offs_m, mask=mask_m, other=0.0)
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh

    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in range(0, N, BLOCK_N):
        cols = start_n + offs_n
        mask_n = cols < N
        kt = tl.load(k_base + cols[None, :] * stride_kn + offs_d[:, None] * stride_kd,
                     mask=mask_d[:, None] & mask_n[None, :], other=0.0)  # (BLOCK_D, BLOCK_N)
        vt = tl.load(v_base + cols[None, :] * stride_vn + offs_d[:, None] * stride_vd,
                     mask=mask_d[:, None] & mask_n[None, :], other=0.0)  # (BLOCK_D, BLOCK_N)
        if IEEE:
            s = tl.dot(q, kt, input_precision="ieee")
            dp = tl.dot(do, vt, input_precision="ieee")
        else:
            s = tl.dot(q, kt)
            dp = tl.dot(do, vt)
        p = tl.math.exp2(s * qk_scale - lse[:, None])
        p = tl.where(mask_m[:, None] & mask_n[None, :], p, 0.0)
        ds = p * (dp - delta[:, None])  # (BLOCK_M, BLOCK_N)
        if IEEE:
            dq += tl.dot(ds, tl.trans(kt), input_precision="ieee")
        else:
            dq += tl.dot(ds.to(kt.dtype), tl.trans(kt))

    g_ptrs = DQ + b * stride_gb + h * stride_gh + offs_m[:, None] * stride_gn + offs_d[None, :] * stride_gd
    tl.store(g_ptrs, (dq * sm_scale).to(DQ.dtype.element_ty), mask=mask_md)


# ------------------------------------------------------------------------------------------------
# Block sizes: autotuned on GPU, one small fixed configuration under the interpreter
# ------------------------------------------------------------------------------------------------
_INTERPRET = interpreter_enabled()
_INTERPRETER_META = dict(BLOCK_M=32, BLOCK_N=32)


def _gpu_configs(block_ms, block_ns):
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
        for bm in block_ms for bn in block_ns for w in (4, 8) for s in (2, 3, 4)
        if not (bm == 128 and bn == 128 and w == 4)
    ]


if _INTERPRET:
    _fwd_kernel = _flash_attn_fwd_kernel
    _dkdv_kernel = _flash_attn_bwd_dkdv_kernel
    _dq_kernel = _flash_attn_bwd_dq_kernel
else:
    # Keyed on N and the padded head dim; the autotuner adds the tensors' dtypes to the key.
    _fwd_kernel = triton.autotune(_gpu_configs((64, 128), (32, 64, 128)), key=["N", "BLOCK_D", "IEEE"])(
        _flash_attn_fwd_kernel)
    _dkdv_kernel = triton.autotune(_gpu_configs((32, 64), (64, 128)), key=["N", "BLOCK_D", "IEEE"])(
        _flash_attn_bwd_dkdv_kernel)
    _dq_kernel = triton.autotune(_gpu_configs((64, 128), (32, 64)), key=["N", "BLOCK_D", "IEEE"])(
        _flash_attn_bwd_dq_kernel)


def _meta():
    return dict(_INTERPRETER_META) if _INTERPRET else {}


# ------------------------------------------------------------------------------------------------
# Launchers
# ------------------------------------------------------------------------------------------------
def head_dim_supported(head_dim: int) -> tuple[bool, str]:
    """Can the kernel take this head dim? Returns (ok, reason)."""
    if 1 <= head_dim <= MAX_HEAD_DIM:
        return True, ""
    return False, f"flash_attention supports head dims 1 to {MAX_HEAD_DIM}, got {head_dim}"


def _validate(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    check_inputs("flash_attention", {"q": q, "k": k, "v": v})
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"flash_attention: {name} must be 4-D (B, H, N, D), got shape {tuple(t.shape)}")
    if not (q.shape == k.shape == v.shape):
        raise ValueError(f"flash_attention: q, k, v must have one shape (B, H, N, D); got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"flash_attention: q, k, v must share one dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    ok, reason = head_dim_supported(q.shape[-1])
    if not ok:
        raise ValueError(reason)


def _block_d(D: int) -> int:
    return max(16, triton.next_power_of_2(D))


def _flash_attn_fwd(q, k, v, scale: float):
    B, H, N, D = q.shape
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty((B, H, N), device=q.device, dtype=torch.float32)
    grid = lambda meta: (triton.cdiv(N, meta["BLOCK_M"]), B * H)  # noqa: E731
    _fwd_kernel[grid](
        q, k, v, out, lse, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        H, N, D, scale * LOG2E,
        BLOCK_D=_block_d(D), IEEE=q.dtype == torch.float32, **_meta(),
    )
    return out, lse


def _flash_attn_bwd(do, q, k, v, out, lse, scale: float):
    B, H, N, D = q.shape
    block_d = _block_d(D)
    delta = torch.empty_like(lse)
    pre_m = 32 if _INTERPRET else 64
    _flash_attn_bwd_preprocess_kernel[(triton.cdiv(N, pre_m), B * H)](
        out, do, delta, *out.stride(), *do.stride(), H, N, D, BLOCK_M=pre_m, BLOCK_D=block_d,
    )
    dq = torch.empty((B, H, N, D), device=q.device, dtype=q.dtype)
    dk = torch.empty_like(dq)
    dv = torch.empty_like(dq)
    common = (*q.stride(), *k.stride(), *v.stride(), *do.stride())
    ieee = q.dtype == torch.float32
    _dkdv_kernel[lambda meta: (triton.cdiv(N, meta["BLOCK_N"]), B * H)](
        q, k, v, do, dk, dv, lse, delta, *common, *dk.stride(), H, N, D, scale, scale * LOG2E,
        BLOCK_D=block_d, IEEE=ieee, **_meta(),
    )
    _dq_kernel[lambda meta: (triton.cdiv(N, meta["BLOCK_M"]), B * H)](
        q, k, v, do, dq, lse, delta, *common, *dq.stride(), H, N, D, scale, scale * LOG2E,
        BLOCK_D=block_d, IEEE=ieee, **_meta(),
    )
    return dq, dk, dv


# ------------------------------------------------------------------------------------------------
# autograd
# ------------------------------------------------------------------------------------------------
class FlashAttentionFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale):
        out, lse = _flash_attn_fwd(q, k, v, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, do):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = _flash_attn_bwd(do, q, k, v, out, lse, ctx.scale)
        return dq, dk, dv, None


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float | None = None) -> torch.Tensor:
    """softmax(q k^T * scale) v, tiled, differentiable, never materializing the N x N matrix.

    Args:
        q, k, v: (B, H, N, D) tensors of one shape and dtype (fp16, bf16 or fp32) on one CUDA device,
            or on the CPU under Triton's interpreter. Any strides.
        scale: softmax scale; default ``1 / sqrt(D)``.

    Returns:
        (B, H, N, D) contiguous tensor in the inputs' dtype.
    """
    _validate(q, k, v)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return FlashAttentionFn.apply(q, k, v, scale)


def attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float | None = None,
                  upcast: bool = True) -> torch.Tensor:
    """Plain PyTorch reference: the materialized softmax(q k^T * scale) v.

    ``upcast=True`` computes fp16/bf16 inputs in fp32 and casts the result back; float64 inputs give
    the float64 reference the tests compare against.
    """
    dtype = q.dtype
    if upcast and dtype in (torch.float16, torch.bfloat16):
        q, k, v = q.float(), k.float(), v.float()
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    probs = ((q * scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, H, N, N)
    return (probs @ v).to(dtype)
