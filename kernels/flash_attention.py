"""Flash attention in Triton: softmax(q k^T * scale) v without ever forming the N x N matrix.

Algorithm (FlashAttention-2, Dao 2023). Forward: one program per (block of BLOCK_M queries, batch,
head) streams the keys and values in blocks of BLOCK_N and keeps, per query row, a running maximum
``m``, a running normaliser ``l`` and an unnormalised fp32 accumulator (online softmax); the
accumulator is rescaled by exp(m_old - m_new) whenever the maximum grows. Exponentials use ``exp2``
with log2(e) folded into the scale. The forward saves only the output and the per-row log-sum-exp
(natural log, fp32); the backward recomputes the probabilities from it, in three kernels:

* ``_flash_attn_bwd_preprocess_kernel``: delta = rowsum(dO * O), one value per query row;
* ``_flash_attn_bwd_dkdv_kernel``: one program per key block accumulates dK and dV over all queries;
* ``_flash_attn_bwd_dq_kernel``: one program per query block accumulates dQ over all keys.

dQ gets its own pass (it recomputes the scores once more) instead of atomic adds, so every gradient
element is written by exactly one program: the backward is deterministic and needs no zeroed buffer.

What differs from the Triton tutorial: any sequence length (ViT's 197, 577, 1025 are no multiple of
a block; the tutorial's backward needs N % 128 == 0): rows and key columns past N are masked on load,
and masked keys get a -inf score before the softmax. Any head dim from 1 to 256, as one or two column
pieces, each a power of two >= 16 (the smallest tensor-core dot): ``BLOCK_D`` and, where it saves
work, ``BLOCK_D2`` (a constexpr switch of the same kernels; 0: one piece). ViT-H/14's 80 runs as
64 + 16, so no MMA work goes to padding (padded to 128 it wasted 37.5%); 48 is 32 + 16, 112 is padded
to 128. Loads are masked on d < D; inputs may have any strides (q, k, v as views into a fused qkv
projection are read in place). fp32 uses ``input_precision="ieee"`` (true fp32, not TF32); fp16/bf16
use tensor-core dots with fp32 accumulation. Launches run with the inputs' CUDA device current.

Known limits: self-attention only (q, k, v of one shape), non-causal, no attention mask, no dropout;
not twice differentiable; 32-bit offsets within one (batch, head) slice: an input whose slice spans
2**31 elements or more is copied to the contiguous layout first, and N * D must be at most 2**31.

Block sizes are autotuned on GPU per (N, head-dim pieces, dtype), keyed on the exact N (a ViT uses a
handful; Triton reuses the compiled kernels across N). FASTVIT_AUTOTUNE picks the space
(kernels._common.autotune_mode): compact by default, ``full`` wide, ``off`` the single 32 x 32
blocking the interpreter runs. A space holds two families and the pruning gives a launch its dtype's:
tensor-core tiles of 64 rows and up for fp16 / bf16 (wgmma on Hopper), small tiles for fp32, whose
IEEE dots run as FMAs with both operands in registers. Every default-space tile compiles for sm_90
and sm_80 at head dims 64 and 80 without spills or shared-memory overflow (``python -m kernels.audit``).

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

from kernels._common import autotune, by_precision, check_inputs, device_guard, interpreter_enabled

LOG2E = 1.4426950408889634  # exp(x) == exp2(x * LOG2E)
MIN_HEAD_DIM, MAX_HEAD_DIM = 1, 256


# ------------------------------------------------------------------------------------------------
# Triton kernels
# ------------------------------------------------------------------------------------------------
@triton.jit
def _dot(a, b, IEEE: tl.constexpr):
    """a @ b accumulated in fp32: true fp32 when IEEE, else both operands in b's (16-bit) dtype."""
    if IEEE:
        c = tl.dot(a, b, input_precision="ieee")
    else:
        c = tl.dot(a.to(b.dtype), b)
    return c


@triton.jit
def _program_ids(N, H, BLOCK: tl.constexpr):
    """This program's sequence block, batch, head and first row of (batch, head) in Lse / Delta.

    One flat grid axis of cdiv(N, BLOCK) * B * H programs, the block varying fastest: CUDA caps grid
    axis y at 65535, which B * H may pass. Batch, head and row offsets are 64-bit."""
    num_blocks = tl.cdiv(N, BLOCK)
    pid_bh = tl.program_id(0) // num_blocks
    return tl.program_id(0) % num_blocks, (pid_bh // H).to(tl.int64), (pid_bh % H).to(tl.int64), \
        pid_bh.to(tl.int64) * N


@triton.jit
def _load_rows(Base, rows, mask_rows, cols, D, stride_n, stride_d):
    """The (rows, cols) tile of one (N, D) slice; rows outside mask_rows and columns >= D read as 0."""
    return tl.load(Base + rows[:, None] * stride_n + cols[None, :] * stride_d,
                   mask=mask_rows[:, None] & (cols[None, :] < D), other=0.0)


@triton.jit
def _store_rows(Base, rows, mask_rows, cols, D, stride_n, stride_d, value):
    tl.store(Base + rows[:, None] * stride_n + cols[None, :] * stride_d, value,
             mask=mask_rows[:, None] & (cols[None, :] < D))


@triton.jit
def _flash_attn_fwd_kernel(
    Q,    # (B, H, N, D) queries, any strides
    K,    # (B, H, N, D) keys, any strides
    V,    # (B, H, N, D) values, any strides
    Out,  # (B, H, N, D) output (written), any strides
    Lse,  # (B, H, N) fp32 contiguous (written): log-sum-exp of each row of scale * q k^T
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    H, N, D,
    qk_scale,  # softmax scale * log2(e): scores feed exp2 directly
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,   # head-dim columns [0, BLOCK_D)
    BLOCK_D2: tl.constexpr,  # 0, or a second piece of columns [BLOCK_D, BLOCK_D + BLOCK_D2)
    IEEE: tl.constexpr,
):
    pid_m, b, h, row0 = _program_ids(N, H, BLOCK_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < N
    Qs = Q + b * stride_qb + h * stride_qh
    Ks = K + b * stride_kb + h * stride_kh
    Vs = V + b * stride_vb + h * stride_vh

    q = _load_rows(Qs, offs_m, mask_m, offs_d, D, stride_qn, stride_qd)  # (BLOCK_M, BLOCK_D)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    if BLOCK_D2 > 0:
        offs_d2 = BLOCK_D + tl.arange(0, BLOCK_D2)
        q2 = _load_rows(Qs, offs_m, mask_m, offs_d2, D, stride_qn, stride_qd)  # (BLOCK_M, BLOCK_D2)
        acc2 = tl.zeros([BLOCK_M, BLOCK_D2], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running max, log2 units
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running sum of exp2(s - m_i)
    for start_n in range(0, N, BLOCK_N):
        cols = start_n + offs_n
        mask_n = cols < N
        s = _dot(q, tl.trans(_load_rows(Ks, cols, mask_n, offs_d, D, stride_kn, stride_kd)), IEEE)
        if BLOCK_D2 > 0:
            s += _dot(q2, tl.trans(_load_rows(Ks, cols, mask_n, offs_d2, D, stride_kn, stride_kd)), IEEE)
        s = tl.where(mask_n[None, :], s * qk_scale, float("-inf"))  # (BLOCK_M, BLOCK_N); key tail: no weight
        m_new = tl.maximum(m_i, tl.max(s, 1))  # finite: every block holds at least one key
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _dot(p, _load_rows(Vs, cols, mask_n, offs_d, D, stride_vn, stride_vd), IEEE)
        if BLOCK_D2 > 0:
            acc2 = acc2 * alpha[:, None] + _dot(p, _load_rows(Vs, cols, mask_n, offs_d2, D, stride_vn, stride_vd),
                                                IEEE)
        m_i = m_new

    # Natural-log LSE: (m + log2 l) * ln 2.
    tl.store(Lse + row0 + offs_m, (m_i + tl.math.log2(l_i)) * 0.6931471805599453, mask=mask_m)
    Os = Out + b * stride_ob + h * stride_oh
    _store_rows(Os, offs_m, mask_m, offs_d, D, stride_on, stride_od, (acc / l_i[:, None]).to(Out.dtype.element_ty))
    if BLOCK_D2 > 0:
        _store_rows(Os, offs_m, mask_m, offs_d2, D, stride_on, stride_od,
                    (acc2 / l_i[:, None]).to(Out.dtype.element_ty))


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
    DOut,     # (B, H, N, D) gradient of the output, any strides
    DK, DV,   # (B, H, N, D) gradients (written), sharing the strides stride_g*
    Lse,      # (B, H, N) fp32 contiguous: the forward's log-sum-exp
    Delta,    # (B, H, N) fp32 contiguous: rowsum(dO * O)
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_gb, stride_gh, stride_gn, stride_gd,
    H, N, D,
    sm_scale, qk_scale,  # softmax scale, and softmax scale * log2(e)
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_D2: tl.constexpr,
    IEEE: tl.constexpr,
):
    # Works on the transposed problem (keys along rows) so that no probability tile needs transposing.
    pid_n, b, h, row0 = _program_ids(N, H, BLOCK_N)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask_n = offs_n < N
    Qs = Q + b * stride_qb + h * stride_qh
    Ks = K + b * stride_kb + h * stride_kh
    Vs = V + b * stride_vb + h * stride_vh
    DOs = DOut + b * stride_dob + h * stride_doh

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
    for start_m in range(0, N, BLOCK_M):
        rows = start_m + offs_m
        mask_m = rows < N
        q = _load_rows(Qs, rows, mask_m, offs_d, D, stride_qn, stride_qd)  # (BLOCK_M, BLOCK_D)
        do = _load_rows(DOs, rows, mask_m, offs_d, D, stride_don, stride_dod)  # (BLOCK_M, BLOCK_D)
        lse2 = tl.load(Lse + row0 + rows, mask=mask_m, other=0.0) * 1.4426950408889634  # log2 units
        delta = tl.load(Delta + row0 + rows, mask=mask_m, other=0.0)
        st = _dot(k, tl.trans(q), IEEE)  # (BLOCK_N, BLOCK_M) scores, transposed
        if BLOCK_D2 > 0:
            q2 = _load_rows(Qs, rows, mask_m, offs_d2, D, stride_qn, stride_qd)
            do2 = _load_rows(DOs, rows, mask_m, offs_d2, D, stride_don, stride_dod)
            st += _dot(k2, tl.trans(q2), IEEE)
        # Mask before exp2: a padded lane would otherwise get exp2(-lse), which overflows when every
        # score of the row is very negative (and inf * 0 is NaN).
        st = tl.where(mask_n[:, None] & mask_m[None, :], st * qk_scale - lse2[None, :], float("-inf"))
        pt = tl.math.exp2(st)  # probabilities, transposed
        dv += _dot(pt, do, IEEE)
        dpt = _dot(v, tl.trans(do), IEEE)  # (BLOCK_N, BLOCK_M) gradient of the probabilities
        if BLOCK_D2 > 0:
            dv2 += _dot(pt, do2, IEEE)
            dpt += _dot(v2, tl.trans(do2), IEEE)
        dst = pt * (dpt - delta[None, :])  # gradient of the scaled scores; dK = sm_scale * dst q
        dk += _dot(dst, q, IEEE)
        if BLOCK_D2 > 0:
            dk2 += _dot(dst, q2, IEEE)

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
    DOut,     # (B, H, N, D) gradient of the output, any strides
    DQ,       # (B, H, N, D) gradient of q (written), strides stride_g*
    Lse,      # (B, H, N) fp32 contiguous: the forward's log-sum-exp
    Delta,    # (B, H, N) fp32 contiguous: rowsum(dO * O)
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_gb, stride_gh, stride_gn, stride_gd,
    H, N, D,
    sm_scale, qk_scale,  # softmax scale, and softmax scale * log2(e)
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_D2: tl.constexpr,
    IEEE: tl.constexpr,
):
    pid_m, b, h, row0 = _program_ids(N, H, BLOCK_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < N
    Qs = Q + b * stride_qb + h * stride_qh
    Ks = K + b * stride_kb + h * stride_kh
    Vs = V + b * stride_vb + h * stride_vh
    DOs = DOut + b * stride_dob + h * stride_doh

    q = _load_rows(Qs, offs_m, mask_m, offs_d, D, stride_qn, stride_qd)  # (BLOCK_M, BLOCK_D)
    do = _load_rows(DOs, offs_m, mask_m, offs_d, D, stride_don, stride_dod)  # (BLOCK_M, BLOCK_D)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    if BLOCK_D2 > 0:
        offs_d2 = BLOCK_D + tl.arange(0, BLOCK_D2)
        q2 = _load_rows(Qs, offs_m, mask_m, offs_d2, D, stride_qn, stride_qd)  # (BLOCK_M, BLOCK_D2)
        do2 = _load_rows(DOs, offs_m, mask_m, offs_d2, D, stride_don, stride_dod)
        dq2 = tl.zeros([BLOCK_M, BLOCK_D2], dtype=tl.float32)
    lse2 = tl.load(Lse + row0 + offs_m, mask=mask_m, other=0.0) * 1.4426950408889634
    delta = tl.load(Delta + row0 + offs_m, mask=mask_m, other=0.0)
    for start_n in range(0, N, BLOCK_N):
        cols = start_n + offs_n
        mask_n = cols < N
        k = _load_rows(Ks, cols, mask_n, offs_d, D, stride_kn, stride_kd)  # (BLOCK_N, BLOCK_D)
        v = _load_rows(Vs, cols, mask_n, offs_d, D, stride_vn, stride_vd)  # (BLOCK_N, BLOCK_D)
        s = _dot(q, tl.trans(k), IEEE)  # (BLOCK_M, BLOCK_N)
        dp = _dot(do, tl.trans(v), IEEE)  # (BLOCK_M, BLOCK_N)
        if BLOCK_D2 > 0:
            k2 = _load_rows(Ks, cols, mask_n, offs_d2, D, stride_kn, stride_kd)
            v2 = _load_rows(Vs, cols, mask_n, offs_d2, D, stride_vn, stride_vd)
            s += _dot(q2, tl.trans(k2), IEEE)
            dp += _dot(do2, tl.trans(v2), IEEE)
        s = s * qk_scale - lse2[:, None]
        p = tl.math.exp2(tl.where(mask_m[:, None] & mask_n[None, :], s, float("-inf")))  # masked first, as in dK/dV
        ds = p * (dp - delta[:, None])
        dq += _dot(ds, k, IEEE)
        if BLOCK_D2 > 0:
            dq2 += _dot(ds, k2, IEEE)

    DQs = DQ + b * stride_gb + h * stride_gh
    _store_rows(DQs, offs_m, mask_m, offs_d, D, stride_gn, stride_gd, (dq * sm_scale).to(DQ.dtype.element_ty))
    if BLOCK_D2 > 0:
        _store_rows(DQs, offs_m, mask_m, offs_d2, D, stride_gn, stride_gd, (dq2 * sm_scale).to(DQ.dtype.element_ty))


# ------------------------------------------------------------------------------------------------
# Block sizes: autotuned on GPU (search space from FASTVIT_AUTOTUNE), fixed under the interpreter
# ------------------------------------------------------------------------------------------------
_INTERPRET = interpreter_enabled()  # read once at import; never queries a GPU
_INTERPRETER_BLOCKS = {"BLOCK_M": 32, "BLOCK_N": 32}
_PREPROCESS_BLOCK_M = 32 if _INTERPRET else 64


def _config(bm, bn, w, s):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)


# FASTVIT_AUTOTUNE=off: the blocking the interpreter tests run in CI (dK/dV with 8 warps: with 4 its
# fp32 build spills).
_FIXED = _config(32, 32, 4, 2)
_OFF = {"fwd": _FIXED, "dkdv": _config(32, 32, 8, 2), "dq": _FIXED}

# Two families of tiles per kernel, (BLOCK_M, BLOCK_N, num_warps, num_stages): "mma" for fp16 / bf16,
# whose dots run on tensor cores (64-row tiles and up: Hopper's wgmma), and "fp32" for true-fp32
# dots, which run as FMAs with both operands in registers and need small tiles. Each listed tile
# compiles for sm_90 and sm_80 without spilling or overflowing shared memory at head dims 64 and 80
# (python -m kernels.audit); the pruning gives a launch its dtype's family.
_TILES = {
    "fwd": dict(mma=[(128, 64, 8, 3), (128, 128, 8, 3), (128, 32, 4, 3), (64, 64, 4, 3), (64, 32, 4, 2)],
                fp32=[(32, 32, 4, 2), (32, 64, 8, 2), (16, 64, 4, 2)]),
    "dkdv": dict(  # BLOCK_N: the program's key block; BLOCK_M: queries streamed
        mma=[(64, 128, 8, 3), (64, 64, 8, 2), (64, 64, 4, 2)],
        fp32=[(32, 32, 8, 2), (16, 64, 8, 2), (32, 16, 4, 2)]),
    "dq": dict(mma=[(128, 64, 8, 3), (128, 32, 8, 3), (64, 64, 4, 3), (64, 32, 4, 2)],
               fp32=[(32, 32, 4, 2), (64, 16, 8, 2), (16, 32, 4, 2)]),
}
# FASTVIT_AUTOTUNE=full, for tuning work (not audited clean: some of these spill).
_WIDE = dict(mma=[(bm, bn, w, s) for bm in (64, 128) for bn in (32, 64, 128) for w in (4, 8) for s in (2, 3, 4)],
             fp32=[(bm, bn, w, 2) for bm in (16, 32, 64) for bn in (16, 32, 64) for w in (2, 4, 8)
                   if bm < 64 or bn < 32])  # disjoint from the mma family


def _prune(kernel: str):
    """The autotuner's early prune: the launch's family of tiles; for heads wider than 128 only tiles
    of at most 64 x 64 (larger ones overflow shared memory)."""
    by_dtype = by_precision([_config(*t) for t in _TILES[kernel]["mma"] + _WIDE["mma"]],
                            [_config(*t) for t in _TILES[kernel]["fp32"] + _WIDE["fp32"]], _FIXED)

    def prune(configs, named_args, **kwargs):
        kept = by_dtype(configs, named_args, **kwargs)
        if kwargs["BLOCK_D"] + kwargs["BLOCK_D2"] > 128:
            kept = [c for c in kept if c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= 64 * 64] or [_FIXED]
        return kept
    return prune


def _tuned(fn, kernel: str):
    # Every kernel tuned here overwrites all of its outputs, so the tuner's repeated launches need no
    # reset_to_zero / restore_value. The autotuner adds the tensors' dtypes to the key by itself.
    tiles = _TILES[kernel]
    return autotune(fn, off=_OFF[kernel], on=[_config(*t) for t in dict.fromkeys(tiles["mma"] + tiles["fp32"])],
                    full=[_config(*t) for t in dict.fromkeys(_WIDE["mma"] + _WIDE["fp32"])],
                    key=["N", "BLOCK_D", "BLOCK_D2", "IEEE"], prune=_prune(kernel))


_fwd_kernel = _tuned(_flash_attn_fwd_kernel, "fwd")
_dkdv_kernel = _tuned(_flash_attn_bwd_dkdv_kernel, "dkdv")
_dq_kernel = _tuned(_flash_attn_bwd_dq_kernel, "dq")


def _blocks() -> dict:
    return dict(_INTERPRETER_BLOCKS) if _INTERPRET else {}


def head_dim_tiles(D: int) -> tuple[int, int]:
    """(BLOCK_D, BLOCK_D2): the head dim as one or two power-of-two column pieces of at least 16 (the
    smallest tensor-core dot), e.g. 64 -> (64, 0), 80 -> (64, 16), 48 -> (32, 16), 96 -> (64, 32).
    Two pieces only where they cover less than one padded piece would: 112 -> (128, 0)."""
    padded = max(16, triton.next_power_of_2(D))
    first = max(16, padded // 2)
    second = max(16, triton.next_power_of_2(D - first)) if D > first else 0
    if D > first and first + second < padded:
        return first, second
    return padded, 0


# ------------------------------------------------------------------------------------------------
# Launchers
# ------------------------------------------------------------------------------------------------
def head_dim_supported(head_dim: int) -> tuple[bool, str]:
    """Can the kernel take this head dim? Returns (ok, reason)."""
    if MIN_HEAD_DIM <= head_dim <= MAX_HEAD_DIM:
        return True, ""
    return False, (f"flash_attention: head dim {head_dim} is not supported; supported head dims are "
                   f"{MIN_HEAD_DIM} to {MAX_HEAD_DIM} (e.g. 16, 32, 64, 80, 128)")


def _validate(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    check_inputs("flash_attention", {"q": q, "k": k, "v": v})
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


def _flash_attn_fwd(q, k, v, scale: float):
    """Launch the forward. Returns out (B, H, N, D) contiguous and lse (B, H, N) fp32."""
    B, H, N, D = q.shape
    out = torch.empty((B, H, N, D), device=q.device, dtype=q.dtype)
    lse = torch.empty((B, H, N), device=q.device, dtype=torch.float32)
    if out.numel() == 0:
        return out, lse
    block_d, block_d2 = head_dim_tiles(D)
    grid = lambda meta: (triton.cdiv(N, meta["BLOCK_M"]) * B * H,)  # noqa: E731
    with device_guard(q):
        _fwd_kernel[grid](
            q, k, v, out, lse, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
            H, N, D, scale * LOG2E,
            BLOCK_D=block_d, BLOCK_D2=block_d2, IEEE=q.dtype == torch.float32, **_blocks(),
        )
    return out, lse


def _flash_attn_bwd(do, q, k, v, out, lse, scale: float):
    """Launch the backward (preprocess, dK/dV, dQ). Returns contiguous (dq, dk, dv)."""
    do = _within_int32(do, "grad_output")  # q, k, v were fitted before the forward saved them
    B, H, N, D = q.shape
    dq = torch.empty((B, H, N, D), device=q.device, dtype=q.dtype)
    dk = torch.empty_like(dq)
    dv = torch.empty_like(dq)
    if dq.numel() == 0:
        return dq, dk, dv
    (block_d, block_d2), ieee = head_dim_tiles(D), q.dtype == torch.float32
    delta = torch.empty_like(lse)
    strides = (*q.stride(), *k.stride(), *v.stride(), *do.stride())
    with device_guard(q):
        _flash_attn_bwd_preprocess_kernel[(triton.cdiv(N, _PREPROCESS_BLOCK_M) * B * H,)](
            out, do, delta, *out.stride(), *do.stride(), H, N, D,
            BLOCK_M=_PREPROCESS_BLOCK_M, BLOCK_D=triton.next_power_of_2(D),
        )
        _dkdv_kernel[lambda meta: (triton.cdiv(N, meta["BLOCK_N"]) * B * H,)](
            q, k, v, do, dk, dv, lse, delta, *strides, *dk.stride(), H, N, D, scale, scale * LOG2E,
            BLOCK_D=block_d, BLOCK_D2=block_d2, IEEE=ieee, **_blocks(),
        )
        _dq_kernel[lambda meta: (triton.cdiv(N, meta["BLOCK_M"]) * B * H,)](
            q, k, v, do, dq, lse, delta, *strides, *dq.stride(), H, N, D, scale, scale * LOG2E,
            BLOCK_D=block_d, BLOCK_D2=block_d2, IEEE=ieee, **_blocks(),
        )
    return dq, dk, dv


# ------------------------------------------------------------------------------------------------
# autograd and the public functions
# ------------------------------------------------------------------------------------------------
class FlashAttentionFn(torch.autograd.Function):
    """Differentiable flash attention; saves q, k, v, out and the fp32 log-sum-exp, never N x N."""

    @staticmethod
    def forward(ctx, q, k, v, scale):
        q, k, v = _within_int32(q, "q"), _within_int32(k, "k"), _within_int32(v, "v")
        out, lse = _flash_attn_fwd(q, k, v, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.scale = scale
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, do):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = _flash_attn_bwd(do, q, k, v, out, lse, ctx.scale)
        needs = ctx.needs_input_grad
        return (dq if needs[0] else None), (dk if needs[1] else None), (dv if needs[2] else None), None


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float | None = None) -> torch.Tensor:
    """softmax(q k^T * scale) v, tiled, differentiable, never materializing the N x N matrix.

    Args:
        q, k, v: (B, H, N, D) tensors of one shape and one dtype (float16, bfloat16 or float32) on
            one CUDA device, or on the CPU under Triton's interpreter. Any strides (views into a
            fused qkv projection are read in place). Head dim D from 1 to 256; any N.
        scale: softmax scale; default ``1 / sqrt(D)``.

    Returns:
        (B, H, N, D) contiguous tensor in the inputs' dtype.

    Raises:
        TypeError: an input is not a tensor, or the dtypes are unsupported or differ.
        ValueError: wrong rank, mismatched shapes or devices, unsupported head dim, or CPU tensors
            without Triton's interpreter.
    """
    _validate(q, k, v)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return FlashAttentionFn.apply(q, k, v, scale)


def attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float | None = None,
                  upcast: bool = True) -> torch.Tensor:
    """Plain PyTorch reference: the materialized softmax(q k^T * scale) v, differentiable by autograd.

    ``upcast=True`` computes float16/bfloat16 inputs in float32 and casts the result back; float32 and
    float64 inputs are computed in their own dtype (float64 inputs give the tests' reference).
    ``upcast=False`` computes in the inputs' dtype whatever it is.
    """
    dtype = q.dtype
    if upcast and dtype in (torch.float16, torch.bfloat16):
        q, k, v = q.float(), k.float(), v.float()
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    probs = ((q * scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, H, N, N)
    return (probs @ v).to(dtype)
