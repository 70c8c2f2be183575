"""What the flash-attention forward (kernels.flash_attention) and backward (kernels.flash_attention_bwd)
kernels share: the jit helpers (dots, program ids, masked tile loads and stores, the bias tile), the
head dim as column pieces, and the block sizes -- autotuned on a GPU over FASTVIT_AUTOTUNE's space,
fixed under the interpreter. See kernels/flash_attention.py for the algorithm.
"""
from __future__ import annotations

import triton
import triton.language as tl

from kernels._common import autotune, by_precision, config_key, interpreter_enabled

LOG2E = 1.4426950408889634  # exp(x) == exp2(x * LOG2E)
MIN_HEAD_DIM, MAX_HEAD_DIM = 1, 256


# ------------------------------------------------------------------------------------------------
# Triton helpers
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
def _dot_acc(a, b, acc, IEEE: tl.constexpr):
    """acc + a @ b in fp32 (as _dot). The attention bias enters the scores as the accumulator of the
    q k^T dot: the sum then stays in the dot's layout, so the softmax after it does too (added after
    the dot, the bias tile's load layout spread to the whole softmax, at twice the registers)."""
    if IEEE:
        c = tl.dot(a, b, acc, input_precision="ieee")
    else:
        c = tl.dot(a.to(b.dtype), b, acc)
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
def _sequence_program_ids(CuSeqlens, N, N_TOTAL, H, BLOCK: tl.constexpr):
    """Packed sequences (VARLEN): this program's block of its sequence, head, the sequence's first row
    and length, and the first row of its (head, sequence) in Lse / Delta.

    q, k, v are (1, H, N_TOTAL, D) with sequence s at rows CuSeqlens[s] to CuSeqlens[s + 1]. One flat
    grid axis of cdiv(N, BLOCK) * S * H programs, N at least the longest sequence, the block varying
    fastest (as in _program_ids); a program whose block starts past its sequence's end has no work."""
    num_blocks = tl.cdiv(N, BLOCK)
    pid_sh = tl.program_id(0) // num_blocks
    seq = pid_sh // H
    h = (pid_sh % H).to(tl.int64)
    start = tl.load(CuSeqlens + seq)
    seqlen = tl.load(CuSeqlens + seq + 1) - start
    return tl.program_id(0) % num_blocks, h, start, seqlen, h * N_TOTAL + start


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
def _load_bias(Base, rows, mask_rows, cols, mask_cols, stride_r, stride_c, mult):
    """The (rows, cols) tile of one (N, N) bias slice, in fp32 times ``mult``; 0 outside the masks.
    Strides of 0 broadcast: one row or column serves them all."""
    z = tl.load(Base + rows[:, None] * stride_r + cols[None, :] * stride_c,
                mask=mask_rows[:, None] & mask_cols[None, :], other=0.0)
    return z.to(tl.float32) * mult


@triton.jit
def _load_lse(Base, rows, mask_rows, HAS_BIAS: tl.constexpr):
    """The forward's base-2 log-sum-exp of these rows of one (batch, head), for exp2(s - lse). With a
    bias, a fully masked row's -inf reads as +inf: exp2(s - lse) is then 0 for each of its scores
    (-inf - -inf would be NaN), so the row adds nothing to any gradient."""
    lse = tl.load(Base + rows, mask=mask_rows, other=0.0)
    if HAS_BIAS:
        lse = tl.where(lse == float("-inf"), float("inf"), lse)
    return lse


# ------------------------------------------------------------------------------------------------
# Head-dim pieces and block sizes
# ------------------------------------------------------------------------------------------------
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


_INTERPRET = interpreter_enabled()  # read once at import; never queries a GPU
_INTERPRETER_BLOCKS = {"BLOCK_M": 32, "BLOCK_N": 32}
PREPROCESS_BLOCK_M = 32 if _INTERPRET else 64


def _config(bm, bn, w, s):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)


# FASTVIT_AUTOTUNE=off: the blocking the interpreter tests run in CI (dK/dV with 8 warps: with 4 its
# fp32 build spills).
_FIXED = _config(32, 32, 4, 2)
_OFF = {"fwd": _FIXED, "dkdv": _config(32, 32, 8, 2), "dq": _FIXED}

# Two families of tiles per kernel, (BLOCK_M, BLOCK_N, num_warps, num_stages): "mma" for fp16 / bf16,
# whose dots run on tensor cores (64-row tiles and up: Hopper's wgmma), and "fp32" for true-fp32
# dots, which run as FMAs with both operands in registers and need small tiles. Each listed tile
# compiles for sm_90 and sm_80 without spilling or overflowing shared memory at head dims 32 (with an
# attention bias, but for BIAS_SPILLS), 64 and 80 with every audited Triton release (python -m
# kernels.audit; kernels/audit/versions.py); the pruning gives a launch its dtype's family.
TILES = {
    "fwd": dict(mma=[(128, 64, 8, 3), (128, 128, 8, 3), (128, 32, 4, 3), (64, 64, 4, 3), (64, 32, 4, 2)],
                fp32=[(32, 32, 4, 2), (32, 64, 8, 2), (16, 64, 4, 2)]),
    "dkdv": dict(  # BLOCK_N: the program's key block; BLOCK_M: queries streamed (64 x 128 w8, 32 x 32 w8 and
        # 16 x 64 w8 spill on sm_80 with Triton 3.7, at head dim 80 or 64 or with a bias; 16 x 32 at head
        # dim 80 with 3.8 and 3.9)
        mma=[(32, 128, 8, 3), (64, 64, 8, 2), (64, 64, 4, 2)],
        fp32=[(32, 16, 8, 2), (32, 16, 4, 2), (16, 16, 4, 2)]),
    "dq": dict(mma=[(128, 64, 8, 3), (128, 32, 8, 3), (64, 64, 4, 3), (64, 32, 4, 2)],
               fp32=[(32, 32, 4, 2), (64, 16, 8, 2), (16, 32, 4, 2)]),
}
# Tiles that spill with an attention bias (the bias tile, and in dQ the dS store, take registers): a
# launch with a bias keeps the rest of its family (python -m kernels.audit, Swin's head dim 32, with
# every audited Triton release: the fp32 forward's 32 x 32 w4 and 32 x 64 w8 spill 8 B on sm_90 with
# Triton 3.7 and 3.8, the 16-bit forward's 128 x 64 w8 8 B on sm_80 with 3.7; none of them with 3.9).
BIAS_SPILLS = {"fwd": [(128, 128, 8, 3), (128, 64, 8, 3), (32, 32, 4, 2), (32, 64, 8, 2)],
               "dkdv": [(64, 64, 8, 2), (64, 64, 4, 2), (32, 32, 8, 2)],
               "dq": [(128, 64, 8, 3), (64, 64, 4, 3)]}
# Tiles that spill with packed sequences (VARLEN: the sequence's offsets and length take registers), at
# ViT-H/14's head dim 80 on sm_80 with Triton 3.9 (python -m kernels.audit): the fp32 forward's
# 32 x 64 w8 (24 B) and the 16-bit dK/dV's 64 x 64 w8 (24 B; unpacked it sits at 255 registers already).
# A packed launch keeps the rest of its family, which compiles clean with every audited release.
VARLEN_SPILLS = {"fwd": [(32, 64, 8, 2)], "dkdv": [(64, 64, 8, 2)], "dq": []}
# FASTVIT_AUTOTUNE=full, for tuning work (not audited clean: some of these spill).
_WIDE = dict(mma=[(bm, bn, w, s) for bm, bn in [(b, c) for b in (64, 128) for c in (32, 64, 128)] + [(32, 128)]
                  for w in (4, 8) for s in (2, 3, 4)],
             fp32=[(bm, bn, w, 2) for bm in (16, 32, 64) for bn in (16, 32, 64) for w in (2, 4, 8)
                   if bm < 64 or bn < 32])  # disjoint from the mma family


def prune(kernel: str):
    """The autotuner's early prune: the launch's family of tiles; for heads wider than 128 only tiles
    of at most 64 x 64 (larger ones overflow shared memory); with a bias, not the BIAS_SPILLS ones;
    with packed sequences, not the VARLEN_SPILLS ones."""
    by_dtype = by_precision([_config(*t) for t in TILES[kernel]["mma"] + _WIDE["mma"]],
                            [_config(*t) for t in TILES[kernel]["fp32"] + _WIDE["fp32"]], _FIXED)
    spilling = {config_key(_config(*t)) for t in BIAS_SPILLS[kernel]}
    spilling_packed = {config_key(_config(*t)) for t in VARLEN_SPILLS[kernel]}

    def early_prune(configs, named_args, **kwargs):
        kept = by_dtype(configs, named_args, **kwargs)
        if kwargs["BLOCK_D"] + kwargs["BLOCK_D2"] > 128:
            kept = [c for c in kept if c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= 64 * 64] or [_FIXED]
        if kwargs["HAS_BIAS"]:
            kept = [c for c in kept if config_key(c) not in spilling] or [_FIXED]
        if kwargs.get("VARLEN"):
            kept = [c for c in kept if config_key(c) not in spilling_packed] or [_FIXED]
        return kept
    return early_prune


def tuned(fn, kernel: str):
    """``fn``'s autotuner (``fn`` itself under the interpreter), keyed on the exact N (with packed
    sequences the longest one's length: a packing of other lengths but the same longest reuses the
    tuned choice), the head-dim pieces, the precision, whether a bias is read and whether the
    sequences are packed. Every kernel tuned here overwrites all of its
    outputs, so the tuner's repeated launches need no reset_to_zero / restore_value. The autotuner
    adds the tensors' dtypes to the key by itself."""
    tiles = TILES[kernel]
    return autotune(fn, off=_OFF[kernel], on=[_config(*t) for t in dict.fromkeys(tiles["mma"] + tiles["fp32"])],
                    full=[_config(*t) for t in dict.fromkeys(_WIDE["mma"] + _WIDE["fp32"])],
                    key=["N", "BLOCK_D", "BLOCK_D2", "IEEE", "HAS_BIAS", "VARLEN"], prune=prune(kernel))


def blocks() -> dict:
    """The block sizes a launch passes: the interpreter's fixed ones; on a GPU none (autotuned)."""
    return dict(_INTERPRETER_BLOCKS) if _INTERPRET else {}
