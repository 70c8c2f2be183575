"""The backward of kernels.flash_attention: dQ, dK, dV (and dBias) recomputed from the log-sum-exp.

With P = softmax(S), S = scale * q k^T + bias and the gradient dO of the output, the backward needs
dP = dO v^T and dS = P * (dP - delta) with delta = rowsum(dO * O) (FlashAttention-2, Dao 2023). P is
recomputed from the forward's per-row log-sum-exp, saved in log2 units, as exp2(s - lse), tile by
tile, in three kernels:

* ``_flash_attn_bwd_preprocess_kernel``: delta, one value per query row;
* ``_flash_attn_bwd_dkdv_kernel``: one program per key block accumulates dK = scale * dS^T q and
  dV = P^T dO over all queries (the transposed problem: keys along rows, no tile is transposed);
* ``_flash_attn_bwd_dq_kernel``: one program per query block accumulates dQ = scale * dS k over all
  keys, and, when the bias needs a gradient, writes its tile of dS: every (query, key) element once.

dQ gets its own pass (it recomputes the scores once more) instead of atomic adds, so every gradient
element is written by exactly one program: the backward is deterministic and needs no zeroed buffer.

dBias is dS (the bias is added to the scores before the softmax) summed over the dimensions the bias
broadcasts along. The dQ pass writes the full (B, H, N, N) dS in fp32 and torch sums it over those
dimensions in a fixed order: deterministic, no atomics, at a cost of 4 * B * H * N^2 bytes of memory
for the length of the backward (Swin-T's first stage at batch 32, 224 px: B = 32 * 64 windows, H = 3,
N = 49: 59 MB), and only when the bias requires a gradient. Masked keys and padded rows get dS = 0.

Packed sequences (``VARLEN``, kernels/flash_attention.py): the dK/dV and dQ programs are per (block
of one sequence's keys or queries, sequence, head) and loop over their own sequence's rows only;
delta is per row, so the preprocess runs on the packed rows as they are.

A fully masked row (every score -inf: a bias that masks every key) has output 0 and LSE -inf; its
LSE is read as +inf (``_load_lse``), so its recomputed probabilities are 0, its dS is 0 (delta is 0
too, its output being 0) and it adds nothing to dQ, dK, dV or dBias: no NaN anywhere.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._common import device_guard
from kernels._flash_common import (PREPROCESS_BLOCK_M, LOG2E, _dot, _dot_acc, _load_bias, _load_lse, _load_rows,
                                   _program_ids, _sequence_program_ids, _store_rows, blocks, head_dim_tiles, tuned)


# ------------------------------------------------------------------------------------------------
# Triton kernels
# ------------------------------------------------------------------------------------------------
@triton.jit
def _flash_attn_bwd_preprocess_kernel(
    Out,    # (B, H, N, D) forward output, any strides
    DOut,   # (B, H, N, D) gradient of the output, any strides
    Delta,  # (B, H, N) fp32 contiguous (written): rowsum(dO * O)
    stride_ob, stride_oh, stride_on, stride_od,
    stride_dob, stride_doh, stride_don, stride_dod,
    H, N, D,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_m, b, h, row0 = _program_ids(N, H, BLOCK_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_m[:, None] < N) & (offs_d[None, :] < D)
    o = tl.load(Out + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od,
                mask=mask, other=0.0).to(tl.float32)
    do = tl.load(DOut + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_don + offs_d[None, :] * stride_dod,
                 mask=mask, other=0.0).to(tl.float32)
    tl.store(Delta + row0 + offs_m, tl.sum(o * do, 1), mask=offs_m < N)


@triton.jit
def _flash_attn_bwd_dkdv_kernel(
    Q, K, V,  # (B, H, N, D) forward inputs, any strides
    Bias,     # (B|1, H|1, N|1, N|1) additive bias, strides stride_z* (0 where it broadcasts); read when HAS_BIAS
    DOut,     # (B, H, N, D) gradient of the output, any strides
    DK, DV,   # (B, H, N, D) gradients (written), sharing the strides stride_g*
    Lse,      # (B, H, N) fp32 contiguous: the forward's base-2 log-sum-exp
    Delta,    # (B, H, N) fp32 contiguous: rowsum(dO * O)
    CuSeqlens,  # (S + 1,) int32 with VARLEN: sequence s is rows CuSeqlens[s] to CuSeqlens[s + 1] (B = 1); else None
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_zb, stride_zh, stride_zm, stride_zn,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_gb, stride_gh, stride_gn, stride_gd,
    H, N, D,
    N_TOTAL,  # with VARLEN the T rows of each head's (1, H, T, D) slice (N is then the longest sequence's); else None
    sm_scale, qk_scale,  # softmax scale, and softmax scale * log2(e)
    inv_scale,  # 1 / softmax scale: the bias's factor as the accumulator of the scores' dot
    HAS_BIAS: tl.constexpr,
    VARLEN: tl.constexpr,  # packed sequences: programs per (key block, sequence, head); never with HAS_BIAS
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_D2: tl.constexpr,
    IEEE: tl.constexpr,
):
    # Works on the transposed problem (keys along rows) so that no probability tile needs transposing.
    if VARLEN:  # this program's keys and the queries it loops over: its own sequence's rows only
        pid_n, h, start, seqlen, row0 = _sequence_program_ids(CuSeqlens, N, N_TOTAL, H, BLOCK_N)
        steps = tl.where(pid_n * BLOCK_N < seqlen, seqlen, 0)  # past a shorter sequence's end: no query block
        Qs = Q + h * stride_qh + start * stride_qn
        Ks = K + h * stride_kh + start * stride_kn
        Vs = V + h * stride_vh + start * stride_vn
        DOs = DOut + h * stride_doh + start * stride_don
    else:
        pid_n, b, h, row0 = _program_ids(N, H, BLOCK_N)
        seqlen = N
        steps = N
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask_n = offs_n < seqlen
    if not VARLEN:
        Qs = Q + b * stride_qb + h * stride_qh
        Ks = K + b * stride_kb + h * stride_kh
        Vs = V + b * stride_vb + h * stride_vh
        DOs = DOut + b * stride_dob + h * stride_doh
    if HAS_BIAS:
        Zs = Bias + b * stride_zb + h * stride_zh

    k = _load_rows(Ks, offs_n, mask_n, offs_d, D, stride_kn, stride_kd)  # (BLOCK_N, BLOCK_D)
    v = _load_rows(Vs, offs_n, mask_n, offs_d, D, stride_vn, stride_vd)  # (BLOCK_N, BLOCK_D)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    if BLOCK_D2 > 0:
        offs_d2 = BLOCK_D + tl.arange(0, BLOCK_D2)
        k2 = _load_rows(Ks, offs_n, mask_n, offs_d2, D, stride_kn, stride_kd)  # (BLOCK_N, BLOCK_D2)
        v2 = _load_rows(Vs, offs_n, mask_n, offs_d2, D, stride_vn, stride_vd)
        dk2 = tl.zeros([BLOCK_N, BLOCK_D2], dtype=tl.float32)
        dv2 = tl.zeros([BLOCK_N, BLOCK_D2], dtype=tl.float32)
    for start_m in range(0, steps, BLOCK_M):
        rows = start_m + offs_m
        mask_m = rows < seqlen
        q = _load_rows(Qs, rows, mask_m, offs_d, D, stride_qn, stride_qd)  # (BLOCK_M, BLOCK_D)
        do = _load_rows(DOs, rows, mask_m, offs_d, D, stride_don, stride_dod)  # (BLOCK_M, BLOCK_D)
        lse2 = _load_lse(Lse + row0, rows, mask_m, HAS_BIAS)  # log2 units
        delta = tl.load(Delta + row0 + rows, mask=mask_m, other=0.0)
        if HAS_BIAS:  # k q^T + bias^T / scale (as in the forward), the bias tile transposed by its strides
            st = _dot_acc(k, tl.trans(q), _load_bias(Zs, offs_n, mask_n, rows, mask_m, stride_zn, stride_zm, inv_scale),
                          IEEE)
        else:
            st = _dot(k, tl.trans(q), IEEE)  # (BLOCK_N, BLOCK_M) scores, transposed
        if BLOCK_D2 > 0:
            q2 = _load_rows(Qs, rows, mask_m, offs_d2, D, stride_qn, stride_qd)
            do2 = _load_rows(DOs, rows, mask_m, offs_d2, D, stride_don, stride_dod)
            st += _dot(k2, tl.trans(q2), IEEE)
        st = st * qk_scale
        # Mask before exp2: a padded lane would otherwise get exp2(-lse), which overflows when every
        # score of the row is very negative (and inf * 0 is NaN).
        st = tl.where(mask_n[:, None] & mask_m[None, :], st - lse2[None, :], float("-inf"))
        pt = tl.math.exp2(st)  # probabilities, transposed
        dv += _dot(pt, do, IEEE)
        dpt = _dot(v, tl.trans(do), IEEE)  # (BLOCK_N, BLOCK_M) gradient of the probabilities
        if BLOCK_D2 > 0:
            dv2 += _dot(pt, do2, IEEE)
            dpt += _dot(v2, tl.trans(do2), IEEE)
        dst = pt * (dpt - delta[None, :])  # gradient of the scores; dK = sm_scale * dst q
        dk += _dot(dst, q, IEEE)
        if BLOCK_D2 > 0:
            dk2 += _dot(dst, q2, IEEE)

    if VARLEN:
        DKs = DK + h * stride_gh + start * stride_gn
        DVs = DV + h * stride_gh + start * stride_gn
    else:
        DKs = DK + b * stride_gb + h * stride_gh
        DVs = DV + b * stride_gb + h * stride_gh
    _store_rows(DKs, offs_n, mask_n, offs_d, D, stride_gn, stride_gd, (dk * sm_scale).to(DK.dtype.element_ty))
    _store_rows(DVs, offs_n, mask_n, offs_d, D, stride_gn, stride_gd, dv.to(DV.dtype.element_ty))
    if BLOCK_D2 > 0:
        _store_rows(DKs, offs_n, mask_n, offs_d2, D, stride_gn, stride_gd, (dk2 * sm_scale).to(DK.dtype.element_ty))
        _store_rows(DVs, offs_n, mask_n, offs_d2, D, stride_gn, stride_gd, dv2.to(DV.dtype.element_ty))


@triton.jit
def _flash_attn_bwd_dq_kernel(
    Q, K, V,  # (B, H, N, D) forward inputs, any strides
    Bias,     # (B|1, H|1, N|1, N|1) additive bias, strides stride_z* (0 where it broadcasts); read when HAS_BIAS
    DOut,     # (B, H, N, D) gradient of the output, any strides
    DQ,       # (B, H, N, D) gradient of q (written), strides stride_g*
    DS,       # (B, H, N, N) fp32 contiguous (written when STORE_DS): gradient of the scores, dBias unreduced
    Lse,      # (B, H, N) fp32 contiguous: the forward's base-2 log-sum-exp
    Delta,    # (B, H, N) fp32 contiguous: rowsum(dO * O)
    CuSeqlens,  # (S + 1,) int32 with VARLEN: sequence s is rows CuSeqlens[s] to CuSeqlens[s + 1] (B = 1); else None
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_zb, stride_zh, stride_zm, stride_zn,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_gb, stride_gh, stride_gn, stride_gd,
    H, N, D,
    N_TOTAL,  # with VARLEN the T rows of each head's (1, H, T, D) slice (N is then the longest sequence's); else None
    sm_scale, qk_scale,  # softmax scale, and softmax scale * log2(e)
    inv_scale,  # 1 / softmax scale: the bias's factor as the accumulator of the scores' dot
    HAS_BIAS: tl.constexpr, STORE_DS: tl.constexpr,
    VARLEN: tl.constexpr,  # packed sequences: programs per (query block, sequence, head); never with HAS_BIAS
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_D2: tl.constexpr,
    IEEE: tl.constexpr,
):
    if VARLEN:  # this program's queries and the keys it loops over: its own sequence's rows only
        pid_m, h, start, seqlen, row0 = _sequence_program_ids(CuSeqlens, N, N_TOTAL, H, BLOCK_M)
        steps = tl.where(pid_m * BLOCK_M < seqlen, seqlen, 0)  # past a shorter sequence's end: no key block
        Qs = Q + h * stride_qh + start * stride_qn
        Ks = K + h * stride_kh + start * stride_kn
        Vs = V + h * stride_vh + start * stride_vn
        DOs = DOut + h * stride_doh + start * stride_don
    else:
        pid_m, b, h, row0 = _program_ids(N, H, BLOCK_M)
        seqlen = N
        steps = N
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < seqlen
    if not VARLEN:
        Qs = Q + b * stride_qb + h * stride_qh
        Ks = K + b * stride_kb + h * stride_kh
        Vs = V + b * stride_vb + h * stride_vh
        DOs = DOut + b * stride_dob + h * stride_doh
    if HAS_BIAS:
        Zs = Bias + b * stride_zb + h * stride_zh
    if STORE_DS:
        DSs = DS + row0 * N  # this (batch, head)'s (N, N) slice

    q = _load_rows(Qs, offs_m, mask_m, offs_d, D, stride_qn, stride_qd)  # (BLOCK_M, BLOCK_D)
    do = _load_rows(DOs, offs_m, mask_m, offs_d, D, stride_don, stride_dod)  # (BLOCK_M, BLOCK_D)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    if BLOCK_D2 > 0:
        offs_d2 = BLOCK_D + tl.arange(0, BLOCK_D2)
        q2 = _load_rows(Qs, offs_m, mask_m, offs_d2, D, stride_qn, stride_qd)  # (BLOCK_M, BLOCK_D2)
        do2 = _load_rows(DOs, offs_m, mask_m, offs_d2, D, stride_don, stride_dod)
        dq2 = tl.zeros([BLOCK_M, BLOCK_D2], dtype=tl.float32)
    lse2 = _load_lse(Lse + row0, offs_m, mask_m, HAS_BIAS)  # log2 units
    delta = tl.load(Delta + row0 + offs_m, mask=mask_m, other=0.0)
    for start_n in range(0, steps, BLOCK_N):
        cols = start_n + offs_n
        mask_n = cols < seqlen
        k = _load_rows(Ks, cols, mask_n, offs_d, D, stride_kn, stride_kd)  # (BLOCK_N, BLOCK_D)
        v = _load_rows(Vs, cols, mask_n, offs_d, D, stride_vn, stride_vd)  # (BLOCK_N, BLOCK_D)
        if HAS_BIAS:  # q k^T + bias / scale, as in the forward
            s = _dot_acc(q, tl.trans(k), _load_bias(Zs, offs_m, mask_m, cols, mask_n, stride_zm, stride_zn, inv_scale),
                         IEEE)
        else:
            s = _dot(q, tl.trans(k), IEEE)  # (BLOCK_M, BLOCK_N)
        dp = _dot(do, tl.trans(v), IEEE)  # (BLOCK_M, BLOCK_N)
        if BLOCK_D2 > 0:
            k2 = _load_rows(Ks, cols, mask_n, offs_d2, D, stride_kn, stride_kd)
            v2 = _load_rows(Vs, cols, mask_n, offs_d2, D, stride_vn, stride_vd)
            s += _dot(q2, tl.trans(k2), IEEE)
            dp += _dot(do2, tl.trans(v2), IEEE)
        s = s * qk_scale
        mask = mask_m[:, None] & mask_n[None, :]
        p = tl.math.exp2(tl.where(mask, s - lse2[:, None], float("-inf")))  # masked first, as in dK/dV
        ds = p * (dp - delta[:, None])  # gradient of the scores (of the bias, before its reduction)
        if STORE_DS:
            tl.store(DSs + offs_m[:, None] * N + cols[None, :], ds, mask=mask)
        dq += _dot(ds, k, IEEE)
        if BLOCK_D2 > 0:
            dq2 += _dot(ds, k2, IEEE)

    if VARLEN:
        DQs = DQ + h * stride_gh + start * stride_gn
    else:
        DQs = DQ + b * stride_gb + h * stride_gh
    _store_rows(DQs, offs_m, mask_m, offs_d, D, stride_gn, stride_gd, (dq * sm_scale).to(DQ.dtype.element_ty))
    if BLOCK_D2 > 0:
        _store_rows(DQs, offs_m, mask_m, offs_d2, D, stride_gn, stride_gd, (dq2 * sm_scale).to(DQ.dtype.element_ty))


_dkdv_kernel = tuned(_flash_attn_bwd_dkdv_kernel, "dkdv")
_dq_kernel = tuned(_flash_attn_bwd_dq_kernel, "dq")


# ------------------------------------------------------------------------------------------------
# Launcher
# ------------------------------------------------------------------------------------------------
def launch_bwd(do, q, k, v, bias, bias_strides: tuple, out, lse, scale: float, bias_grad: bool,
               cu_seqlens=None, max_seqlen: int = 0):
    """Launch the backward (preprocess, dK/dV, dQ). ``do`` must already fit 32-bit slice offsets;
    ``bias`` (or None) is read through ``bias_strides`` (0 along broadcast dims). With ``cu_seqlens``
    (int32 (S + 1,), no bias) the (1, H, T, D) inputs are S packed sequences of at most ``max_seqlen``
    tokens. Returns contiguous (dq, dk, dv) and, when ``bias_grad``, the fp32 (B, H, N, N) gradient
    of the scores (else None)."""
    B, H, N, D = q.shape
    dq = torch.empty((B, H, N, D), device=q.device, dtype=q.dtype)
    dk = torch.empty_like(dq)
    dv = torch.empty_like(dq)
    ds = torch.empty((B, H, N, N), device=q.device, dtype=torch.float32) if bias_grad else None
    if dq.numel() == 0:
        return dq, dk, dv, ds.zero_() if ds is not None else None
    (block_d, block_d2), ieee = head_dim_tiles(D), q.dtype == torch.float32
    delta = torch.empty_like(lse)
    # Per head: B sequences of N rows, or the packing's S sequences of at most max_seqlen rows (the
    # kernels' N; T rows in all). Unpacked, cu_seqlens and T are None: constexprs, no kernel parameters.
    has_bias, varlen = bias is not None, cu_seqlens is not None
    seqs, n, total = (cu_seqlens.shape[0] - 1, max_seqlen, N) if varlen else (B, N, None)
    strides = (*q.stride(), *k.stride(), *v.stride(), *bias_strides, *do.stride())
    with device_guard(q):
        _flash_attn_bwd_preprocess_kernel[(triton.cdiv(N, PREPROCESS_BLOCK_M) * B * H,)](  # per row: packed or not
            out, do, delta, *out.stride(), *do.stride(), H, N, D,
            BLOCK_M=PREPROCESS_BLOCK_M, BLOCK_D=triton.next_power_of_2(D),
        )
        _dkdv_kernel[lambda meta: (triton.cdiv(n, meta["BLOCK_N"]) * seqs * H,)](
            q, k, v, bias if has_bias else q, do, dk, dv, lse, delta, cu_seqlens, *strides, *dk.stride(),
            H, n, D, total, scale, scale * LOG2E, 1.0 / scale, HAS_BIAS=has_bias, VARLEN=varlen,
            BLOCK_D=block_d, BLOCK_D2=block_d2, IEEE=ieee, **blocks(),
        )
        _dq_kernel[lambda meta: (triton.cdiv(n, meta["BLOCK_M"]) * seqs * H,)](
            q, k, v, bias if has_bias else q, do, dq, ds if bias_grad else lse, lse, delta, cu_seqlens, *strides,
            *dq.stride(), H, n, D, total, scale, scale * LOG2E, 1.0 / scale, HAS_BIAS=has_bias, STORE_DS=bias_grad,
            VARLEN=varlen, BLOCK_D=block_d, BLOCK_D2=block_d2, IEEE=ieee, **blocks(),
        )
    return dq, dk, dv, ds
