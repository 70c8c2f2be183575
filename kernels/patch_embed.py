"""Fused ViT patch embedding in Triton: patchify + GEMM + bias + prefix tokens + position embedding.

``patch_embed(images, weight, bias, pos_embed, prefix)`` computes what timm's
``Conv2d(stride=P) -> flatten(2).transpose(1, 2) -> cat(prefix) -> + pos_embed`` computes, in one
kernel that writes the (B, T + N, E) tokens once. ``prefix`` holds the T >= 1 rows put before the
patches: ViT's CLS token (T = 1), DeiT's CLS and distillation tokens (T = 2).

* Patchify by strided gathers: output row ``m`` is token ``t = m % (T + N)`` of image
  ``b = m // (T + N)``; token ``t >= T`` is patch ``(i, j) = divmod(t - T, Nw)``, and reduction index
  ``k = (c, p1, p2)`` (K = C * P * P, the Conv2d weight's own order) reads
  ``images[b, c, i * P + p1, j * P + p2]`` straight from the image through its strides -- no unfold
  copy, any image strides (a crop view works).
* A tl.dot GEMM tiled over (B * (1 + N) rows, E cols) with K in BLOCK_K steps, masked tails (K = 768
  for C=3 P=16, 588 for P=14, 3 for C=1 P=1), fp32 accumulation; fp32 inputs use
  ``input_precision="ieee"`` (true fp32, not TF32).
* Epilogue: ``+ pos_embed[0, t]`` for every row, ``+ bias`` for patch rows, ``+ prefix[0, t]`` for
  the prefix rows (t < T), whose GEMM operand is masked to zero: the prefix rows come out of the same
  kernel and the output is written in one contiguous sweep.

Backward, with dT = dtokens[:, T:] viewed as (B * N, E) (T a constexpr of the two backward kernels:
one compile each for ViT's 1 and DeiT's 2, the row offset folded as it always was for T = 1):

* Triton: ``d_weight = dT^T @ patches`` (``_patch_embed_bwd_dweight_kernel``, patches gathered from
  the image as in the forward; the B * N reduction is split into row ranges whose fp32 partials
  are summed by torch in a fixed order -- deterministic, no atomics) and
  ``d_images = dT @ W`` scattered back into image layout (``_patch_embed_bwd_dimages_kernel``; patches
  do not overlap, so every pixel is written by exactly one program: no atomics).
* torch reductions: ``d_bias = dT.sum`` over tokens and batch, ``d_pos_embed = dtokens.sum(0)``,
  ``d_prefix = dtokens[:, :T].sum(0)`` (all in fp32, cast to the parameter dtype).

Dtypes: fp16, bf16 or fp32, one dtype for all inputs, fp32 accumulation, output in that dtype.
Block sizes are autotuned on GPU over FASTVIT_AUTOTUNE's space, two families of tiles, and the
pruning gives a launch its dtype's: tensor-core tiles with a 32- or 64-wide reduction step for fp16 /
bf16 (wgmma on Hopper), and for fp32, whose IEEE dots run as FMAs with both operands in registers,
tiles with a reduction step of 16. Every tile of the default space compiles for sm_90 and sm_80
without spills or shared-memory overflow at patch sizes 14, 16 and 32, with one or two prefix rows,
with every audited Triton release (``python -m kernels.audit``). Launches run with the inputs' CUDA device current.

PyTorch custom ops (namespace ``fastvit_kernels``): ``patch_embed_fwd`` (images, weight, bias?,
pos_embed, prefix) -> tokens and ``patch_embed_bwd`` -> (d_images, d_weight), each with a fake
implementation and the forward with its autograd formula (the reductions above in torch around the
backward op), so torch.compile sees one opaque op per pass and torch.export records it. Eagerly
``PatchEmbedFn`` runs the same implementations, setup and backward without the dispatcher
(kernels._common.tracing).

Known limits: square patches with stride = patch size (ViT's), images whose sides divide by P,
pos_embed already at the image's grid (no interpolation here). Verified on CPU through Triton's
interpreter in fp32 and fp16; bf16 only on GPU (the interpreter computes bf16 tl.dot wrongly), and no
GPU performance numbers are claimed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from kernels._common import (NAMESPACE, autotune, by_precision, check_inputs, device_guard, interpreter_enabled,
                             min_dot_k, require_runnable, tracing)


# ------------------------------------------------------------------------------------------------
# Triton kernels
# ------------------------------------------------------------------------------------------------
@triton.jit
def _patch_embed_fwd_kernel(
    Img,  # (B, C, Hi, Wi) images, any strides
    W,  # (E, C, P, P) Conv2d weight, any strides
    Bias,  # (E,) bias, contiguous (read only when HAS_BIAS)
    Pos,  # (1, T + N, E) position embedding, any strides
    Prefix,  # (1, T, E) rows before the patches (CLS, distillation token), any strides
    Out,  # (B, T + N, E) tokens, contiguous
    stride_ib, stride_ic, stride_ih, stride_iw,
    stride_we, stride_wc, stride_wh, stride_ww,
    stride_pn, stride_pe,
    stride_xn, stride_xe,
    stride_ob, stride_on, stride_oe,
    B, N, Nw, E, K, T,
    P: tl.constexpr, HAS_BIAS: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    L = T + N  # tokens per image
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # output rows over B * (T + N)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # embedding columns
    mask_m = rows < B * L
    mask_e = cols < E
    b = (rows // L).to(tl.int64)
    t = rows % L
    is_patch = mask_m & (t >= T)
    patch = tl.where(t >= T, t - T, 0)
    pi = patch // Nw
    pj = patch % Nw
    row_off = b * stride_ib + (pi * P) * stride_ih + (pj * P) * stride_iw  # top-left pixel of the patch
    offs_k = tl.arange(0, BLOCK_K)

    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + offs_k
        mask_k = k < K
        c = k // (P * P)
        p1 = (k // P) % P
        p2 = k % P
        a = tl.load(Img + row_off[:, None] + (c * stride_ic + p1 * stride_ih + p2 * stride_iw)[None, :],
                    mask=is_patch[:, None] & mask_k[None, :], other=0.0)  # (BLOCK_M, BLOCK_K)
        w = tl.load(W + cols[None, :] * stride_we + (c * stride_wc + p1 * stride_wh + p2 * stride_ww)[:, None],
                    mask=mask_k[:, None] & mask_e[None, :], other=0.0)  # (BLOCK_K, BLOCK_N) = W^T tile
        if IEEE:
            acc += tl.dot(a, w, input_precision="ieee")
        else:
            acc += tl.dot(a, w)

    mask = mask_m[:, None] & mask_e[None, :]
    pos = tl.load(Pos + t[:, None] * stride_pn + cols[None, :] * stride_pe, mask=mask, other=0.0)
    acc += pos.to(tl.float32)
    is_prefix = mask_m & (t < T)
    prefix = tl.load(Prefix + tl.where(t < T, t, 0)[:, None] * stride_xn + cols[None, :] * stride_xe,
                     mask=is_prefix[:, None] & mask_e[None, :], other=0.0).to(tl.float32)  # (BLOCK_M, BLOCK_N)
    if HAS_BIAS:
        bias = tl.load(Bias + cols, mask=mask_e, other=0.0).to(tl.float32)
        acc += tl.where((t >= T)[:, None], bias[None, :], prefix)
    else:
        acc += prefix
    out_ptrs = Out + b[:, None] * stride_ob + t[:, None] * stride_on + cols[None, :] * stride_oe
    tl.store(out_ptrs, acc.to(Out.dtype.element_ty), mask=mask)


@triton.jit
def _patch_embed_bwd_dweight_kernel(
    Img,  # (B, C, Hi, Wi) images, any strides
    DOut,  # (B, T + N, E) gradient of the tokens, any strides (the T prefix rows are skipped)
    DWPart,  # (SPLIT, E, K) fp32 partial weight gradients, contiguous: one slice per row split
    stride_ib, stride_ic, stride_ih, stride_iw,
    stride_db, stride_dn, stride_de,
    B, N, Nw, E, K, rows_per_split,
    T: tl.constexpr,  # prefix rows (1 or 2): a constant, as ViT's 1 always compiled
    P: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_E: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
):
    """DWPart[s, e, k] = sum over the patch rows r of split s of dT[r, e] * patches[r, k]."""
    pid_e = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_s = tl.program_id(2)
    offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    mask_e = offs_e < E
    mask_k = offs_k < K
    c = offs_k // (P * P)
    p1 = (offs_k // P) % P
    p2 = offs_k % P
    k_off = c * stride_ic + p1 * stride_ih + p2 * stride_iw
    acc = tl.zeros([BLOCK_E, BLOCK_K], dtype=tl.float32)
    row_begin = pid_s * rows_per_split
    row_end = tl.minimum(row_begin + rows_per_split, B * N)
    for r0 in range(row_begin, row_end, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        mask_r = r < row_end
        b = (r // N).to(tl.int64)
        n = r % N
        row_off = b * stride_ib + ((n // Nw) * P) * stride_ih + ((n % Nw) * P) * stride_iw
        a = tl.load(Img + row_off[:, None] + k_off[None, :], mask=mask_r[:, None] & mask_k[None, :],
                    other=0.0)  # (BLOCK_R, BLOCK_K) patches
        dt = tl.load(DOut + b[None, :] * stride_db + (n + T)[None, :] * stride_dn + offs_e[:, None] * stride_de,
                     mask=mask_e[:, None] & mask_r[None, :], other=0.0)  # (BLOCK_E, BLOCK_R) = dT^T tile
        if IEEE:
            acc += tl.dot(dt, a, input_precision="ieee")
        else:
            acc += tl.dot(dt, a)
    part = DWPart + pid_s.to(tl.int64) * E * K
    tl.store(part + offs_e[:, None] * K + offs_k[None, :], acc, mask=mask_e[:, None] & mask_k[None, :])


@triton.jit
def _patch_embed_bwd_dimages_kernel(
    DOut,  # (B, T + N, E) gradient of the tokens, any strides (the T prefix rows are skipped)
    W,  # (E, C, P, P) Conv2d weight, any strides
    DImg,  # (B, C, Hi, Wi) image gradient, contiguous
    stride_db, stride_dn, stride_de,
    stride_we, stride_wc, stride_wh, stride_ww,
    stride_gb, stride_gc, stride_gh, stride_gw,
    B, N, Nw, E, K,
    T: tl.constexpr,  # prefix rows (1 or 2): a constant, as ViT's 1 always compiled
    P: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_E: tl.constexpr,
):
    """d_images[patch r, k] = sum over e of dT[r, e] * W[e, k], scattered to the patch's pixels."""
    pid_m = tl.program_id(0)
    pid_k = tl.program_id(1)
    r = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    mask_r = r < B * N
    mask_k = offs_k < K
    b = (r // N).to(tl.int64)
    n = r % N
    c = offs_k // (P * P)
    p1 = (offs_k // P) % P
    p2 = offs_k % P
    w_k = c * stride_wc + p1 * stride_wh + p2 * stride_ww
    acc = tl.zeros([BLOCK_M, BLOCK_K], dtype=tl.float32)
    for e0 in range(0, E, BLOCK_E):
        e = e0 + tl.arange(0, BLOCK_E)
        mask_e = e < E
        dt = tl.load(DOut + b[:, None] * stride_db + (n + T)[:, None] * stride_dn + e[None, :] * stride_de,
                     mask=mask_r[:, None] & mask_e[None, :], other=0.0)  # (BLOCK_M, BLOCK_E)
        w = tl.load(W + e[:, None] * stride_we + w_k[None, :],
                    mask=mask_e[:, None] & mask_k[None, :], other=0.0)  # (BLOCK_E, BLOCK_K)
        if IEEE:
            acc += tl.dot(dt, w, input_precision="ieee")
        else:
            acc += tl.dot(dt, w)
    row_off = b * stride_gb + ((n // Nw) * P) * stride_gh + ((n % Nw) * P) * stride_gw
    k_off = c * stride_gc + p1 * stride_gh + p2 * stride_gw
    tl.store(DImg + row_off[:, None] + k_off[None, :], acc.to(DImg.dtype.element_ty),
             mask=mask_r[:, None] & mask_k[None, :])


# ------------------------------------------------------------------------------------------------
# Block sizes: autotuned on GPU (search space from FASTVIT_AUTOTUNE), fixed under the interpreter
# ------------------------------------------------------------------------------------------------
_INTERPRET = interpreter_enabled()
_INTERPRETER_META = {
    "fwd": dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32),
    "dweight": dict(BLOCK_E=32, BLOCK_K=32, BLOCK_R=32),
    "dimages": dict(BLOCK_M=32, BLOCK_K=32, BLOCK_E=32),
}


# Two families of (tile, num_warps, num_stages) per kernel, each tile (output rows, output columns,
# reduction step) in the kernel's own block names: "mma" for fp16 / bf16, whose dots run on tensor
# cores, and "fp32" for true-fp32 dots, which run as FMAs with both operands in registers and take a
# short reduction step instead: 16, the smallest K that Triton 3.7's tl.dot accepts for fp32 (3.8
# and later take 8). Each listed one compiles for sm_90 and sm_80 without spilling or overflowing
# shared memory at patch sizes 14, 16 and 32 with every audited Triton release (python -m
# kernels.audit; kernels/audit/versions.py); the pruning gives a launch its dtype's family.
_NAMES = {"fwd": ("BLOCK_M", "BLOCK_N", "BLOCK_K"), "dweight": ("BLOCK_E", "BLOCK_K", "BLOCK_R"),
          "dimages": ("BLOCK_M", "BLOCK_K", "BLOCK_E")}
_MMA = [((128, 128, 32), 8, 3), ((128, 64, 32), 4, 4), ((64, 128, 32), 4, 4), ((64, 64, 32), 4, 3),
        ((128, 128, 64), 8, 3)]
_TILES = {
    "fwd": dict(mma=[((128, 128, 32), 8, 3), ((128, 64, 32), 4, 4), ((64, 128, 32), 8, 4), ((64, 64, 32), 4, 3),
                     ((128, 128, 64), 8, 3)],
                fp32=[((128, 64, 16), 8, 2), ((64, 128, 16), 8, 2), ((64, 64, 16), 4, 2), ((32, 64, 16), 4, 2)]),
    "dweight": dict(mma=_MMA, fp32=[((128, 64, 16), 8, 2), ((128, 128, 16), 8, 2), ((64, 64, 16), 4, 2),
                                    ((64, 128, 16), 8, 2)]),
    "dimages": dict(mma=_MMA, fp32=[((128, 64, 16), 8, 2), ((128, 128, 16), 8, 2), ((64, 64, 16), 8, 2),
                                    ((64, 128, 16), 8, 2)]),
}
_FP32_MIN_K = min_dot_k(32)
# FASTVIT_AUTOTUNE=full, for tuning work (not audited clean: some of these spill); its fp32 tiles with
# a reduction step of 8 only where this Triton's tl.dot takes K = 8 for fp32 (3.8 and later).
_WIDE = dict(mma=[(t, w, s) for t in [(64, 64, 32), (128, 64, 32), (64, 128, 32), (128, 128, 32), (128, 128, 64)]
                  for w in (4, 8) for s in (3, 4)],
             fp32=[(t, w, 2) for t in [(64, 64, 8), (64, 64, 16), (128, 64, 8), (64, 128, 8), (128, 128, 8),
                                       (128, 64, 16), (64, 128, 16), (128, 128, 16), (32, 64, 16), (64, 32, 16)]
                   for w in (4, 8) if t[2] >= _FP32_MIN_K])


def _tuned(fn, kernel: str):
    """``fn``'s autotuner over the three spaces of FASTVIT_AUTOTUNE: off -> the interpreter's blocking
    (num_warps 4, num_stages 2); on (default) -> _TILES; full -> _WIDE."""
    def family(entries):
        return [triton.Config(dict(zip(_NAMES[kernel], t)), num_warps=w, num_stages=s)
                for t, w, s in dict.fromkeys(entries)]
    on, wide = _TILES[kernel], _WIDE
    fixed = family([(tuple(_INTERPRETER_META[kernel][n] for n in _NAMES[kernel]), 4, 2)])[0]
    return autotune(fn, off=fixed, on=family(on["mma"] + on["fp32"]), full=family(wide["mma"] + wide["fp32"]),
                    key=["N", "E", "K", "T", "P", "IEEE"],
                    prune=by_precision(family(on["mma"] + wide["mma"]), family(on["fp32"] + wide["fp32"]), fixed))


_fwd_kernel = _tuned(_patch_embed_fwd_kernel, "fwd")
_dweight_kernel = _tuned(_patch_embed_bwd_dweight_kernel, "dweight")
_dimages_kernel = _tuned(_patch_embed_bwd_dimages_kernel, "dimages")


# Rows of the d_weight reduction per program (the split over B * N). Under the interpreter it is not a
# multiple of BLOCK_R, so the tests run splits that end mid-block.
_ROWS_PER_SPLIT = 48 if _INTERPRET else 4096


def _meta(kind: str) -> dict:
    return dict(_INTERPRETER_META[kind]) if _INTERPRET else {}


# ------------------------------------------------------------------------------------------------
# Launchers
# ------------------------------------------------------------------------------------------------
def _validate(images, weight, bias, pos_embed, prefix) -> None:
    tensors = {"images": images, "weight": weight, "pos_embed": pos_embed, "prefix": prefix}
    if bias is not None:
        tensors["bias"] = bias
    check_inputs("patch_embed", tensors)
    for name, t in tensors.items():
        if t.dtype != images.dtype:
            raise TypeError(f"patch_embed: {name} dtype {t.dtype} differs from images dtype {images.dtype}; "
                            "pass all inputs in one dtype")
    if images.dim() != 4:
        raise ValueError(f"patch_embed: images must be 4-D (B, C, H, W), got shape {tuple(images.shape)}")
    if weight.dim() != 4:
        raise ValueError("patch_embed: weight must be 4-D (E, C, P, P) (Conv2d layout), "
                         f"got shape {tuple(weight.shape)}")
    E, Cw, P, P2 = weight.shape
    if P != P2 or P < 1:
        raise ValueError(f"patch_embed: weight must hold square patches (E, C, P, P), got shape {tuple(weight.shape)}")
    B, C, Hi, Wi = images.shape
    if C != Cw:
        raise ValueError(f"patch_embed: images have {C} channels but weight expects {Cw}")
    if Hi % P or Wi % P:
        raise ValueError(f"patch_embed: image size {Hi}x{Wi} is not divisible by the patch size {P}")
    Nh, Nw = Hi // P, Wi // P
    N = Nh * Nw
    if bias is not None and tuple(bias.shape) != (E,):
        raise ValueError(f"patch_embed: bias must have shape ({E},), got {tuple(bias.shape)}")
    if prefix.dim() != 3 or prefix.shape[0] != 1 or prefix.shape[1] < 1 or prefix.shape[2] != E:
        raise ValueError(f"patch_embed: prefix must have shape (1, T, {E}) with T >= 1 rows (CLS, distillation "
                         f"token), got {tuple(prefix.shape)}")
    T = prefix.shape[1]
    if pos_embed.dim() != 3 or pos_embed.shape[0] != 1 or pos_embed.shape[2] != E:
        raise ValueError(f"patch_embed: pos_embed must have shape (1, T + N, {E}), got {tuple(pos_embed.shape)}")
    if pos_embed.shape[1] != T + N:
        raise ValueError(f"patch_embed: pos_embed has {pos_embed.shape[1]} tokens but {T} prefix rows and a "
                         f"{Nh}x{Nw} patch grid need {T} + {N} = {T + N}; interpolate it to the grid first")


def _geometry(images, weight) -> tuple[int, int, int, int]:
    """(N, Nw, P, K): patches per image, patches per row, patch size, reduction length."""
    P = weight.shape[-1]
    Nw = images.shape[-1] // P
    return (images.shape[-2] // P) * Nw, Nw, P, weight.shape[1] * P * P


def _patch_embed_fwd(images, weight, bias, pos_embed, prefix):
    N, Nw, P, K = _geometry(images, weight)
    B, E, T = images.shape[0], weight.shape[0], prefix.shape[1]
    out = torch.empty((B, T + N, E), device=images.device, dtype=images.dtype)
    if out.numel() == 0:
        return out
    bias_c = bias.contiguous() if bias is not None else out  # dummy pointer when HAS_BIAS=False
    grid = lambda meta: (triton.cdiv(B * (T + N), meta["BLOCK_M"]), triton.cdiv(E, meta["BLOCK_N"]))  # noqa: E731
    with device_guard(images):
        _fwd_kernel[grid](
            images, weight, bias_c, pos_embed, prefix, out,
            *images.stride(), *weight.stride(), pos_embed.stride(1), pos_embed.stride(2), prefix.stride(1),
            prefix.stride(2), *out.stride(), B, N, Nw, E, K, T,
            P=P, HAS_BIAS=bias is not None, IEEE=images.dtype == torch.float32, **_meta("fwd"),
        )
    return out


def _patch_embed_bwd(dout, images, weight, T: int, need_dimages: bool, need_dweight: bool):
    N, Nw, P, K = _geometry(images, weight)
    B, E = images.shape[0], weight.shape[0]
    ieee = images.dtype == torch.float32
    dimages = dweight = None
    if need_dweight:
        # Split the B * N reduction so that small E x K grids still fill the GPU; the fp32 partials are
        # summed in a fixed order afterwards (deterministic, no atomics).
        split = max(1, triton.cdiv(B * N, _ROWS_PER_SPLIT))
        rows_per_split = triton.cdiv(B * N, split)
        part = torch.zeros((split, E, K), device=weight.device, dtype=torch.float32)
        if B * N > 0:
            grid = lambda meta: (triton.cdiv(E, meta["BLOCK_E"]), triton.cdiv(K, meta["BLOCK_K"]), split)  # noqa: E731
            with device_guard(images):
                _dweight_kernel[grid](
                    images, dout, part, *images.stride(), *dout.stride(), B, N, Nw, E, K, rows_per_split,
                    T=T, P=P, IEEE=ieee, **_meta("dweight"),
                )
        dweight = part.sum(0).to(weight.dtype).view(weight.shape)
    if need_dimages:
        dimages = torch.empty(images.shape, device=images.device, dtype=images.dtype)
        if dimages.numel():
            grid = lambda meta: (triton.cdiv(B * N, meta["BLOCK_M"]), triton.cdiv(K, meta["BLOCK_K"]))  # noqa: E731
            with device_guard(images):
                _dimages_kernel[grid](
                    dout, weight, dimages, *dout.stride(), *weight.stride(), *dimages.stride(), B, N, Nw, E, K,
                    T=T, P=P, IEEE=ieee, **_meta("dimages"),
                )
    return dimages, dweight


# ------------------------------------------------------------------------------------------------
# Custom ops (traced) and the autograd.Function (eager) around the same implementations
# ------------------------------------------------------------------------------------------------
def _fwd_impl(images: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, pos_embed: torch.Tensor,
              prefix: torch.Tensor) -> torch.Tensor:
    """The (B, T + N, E) tokens, contiguous."""
    require_runnable("patch_embed", images)
    return _patch_embed_fwd(images, weight, bias, pos_embed, prefix)


def _bwd_impl(dout: torch.Tensor, images: torch.Tensor, weight: torch.Tensor, prefix_tokens: int,
              need_dimages: bool, need_dweight: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(d_images, d_weight) by the two GEMM kernels; each empty where it is not needed."""
    dimages, dweight = _patch_embed_bwd(dout, images, weight, prefix_tokens, need_dimages, need_dweight)
    return (dimages if dimages is not None else images.new_empty(0)), \
        (dweight if dweight is not None else weight.new_empty(0))


patch_embed_fwd = torch.library.custom_op(f"{NAMESPACE}::patch_embed_fwd", mutates_args=())(_fwd_impl)
patch_embed_bwd = torch.library.custom_op(f"{NAMESPACE}::patch_embed_bwd", mutates_args=())(_bwd_impl)


@patch_embed_fwd.register_fake
def _(images, weight, bias, pos_embed, prefix):
    N = _geometry(images, weight)[0]
    return images.new_empty((images.shape[0], prefix.shape[1] + N, weight.shape[0]))


@patch_embed_bwd.register_fake
def _(dout, images, weight, prefix_tokens, need_dimages, need_dweight):
    return (images.new_empty(images.shape) if need_dimages else images.new_empty(0)), \
        (weight.new_empty(weight.shape) if need_dweight else weight.new_empty(0))


def _setup_context(ctx, inputs, output):
    images, weight, bias, pos_embed, prefix = inputs
    ctx.save_for_backward(images, weight)
    ctx.prefix_tokens, ctx.has_bias = prefix.shape[1], bias is not None


def _backward(ctx, dout, bwd=patch_embed_bwd):
    """The autograd formula: ``bwd`` is the backward custom op (what a traced backward records); the
    eager PatchEmbedFn passes its implementation."""
    images, weight = ctx.saved_tensors
    T, need = ctx.prefix_tokens, ctx.needs_input_grad  # images, weight, bias, pos_embed, prefix
    # Triton GEMMs: d_images = dT @ W (scattered to pixels), d_weight = dT^T @ patches.
    dimages, dweight = bwd(dout, images, weight, T, need[0], need[1])
    # torch reductions over batch (and tokens), accumulated in fp32.
    d32 = dout.float()
    dbias = d32[:, T:].sum((0, 1)).to(dout.dtype) if ctx.has_bias and need[2] else None
    dpos = d32.sum(0, keepdim=True).to(dout.dtype) if need[3] else None
    dprefix = d32[:, :T].sum(0, keepdim=True).to(dout.dtype) if need[4] else None
    return (dimages if need[0] else None), (dweight if need[1] else None), dbias, dpos, dprefix


patch_embed_fwd.register_autograd(_backward, setup_context=_setup_context)


class PatchEmbedFn(torch.autograd.Function):
    """The eager path: the custom op's implementation, setup and backward, without its dispatcher."""

    @staticmethod
    def forward(ctx, images, weight, bias, pos_embed, prefix):
        output = _fwd_impl(images, weight, bias, pos_embed, prefix)
        _setup_context(ctx, (images, weight, bias, pos_embed, prefix), output)
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        return _backward(ctx, dout, bwd=_bwd_impl)


def patch_embed(images: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, pos_embed: torch.Tensor,
                prefix: torch.Tensor) -> torch.Tensor:
    """ViT patch embedding in one Triton kernel: patchify, project, add bias, prepend the prefix rows,
    add pos_embed.

    Args:
        images: (B, C, Hi, Wi), Hi and Wi divisible by P; any strides (crop views need no copy).
        weight: (E, C, P, P) Conv2d weight (kernel = stride = P).
        bias: (E,) or None.
        pos_embed: (1, T + (Hi / P) * (Wi / P), E), already at this image's grid.
        prefix: (1, T, E), T >= 1: the rows before the patches (the CLS token; DeiT adds its
            distillation token).

        All fp16, bf16 or fp32 in one dtype, on one CUDA device (or CPU under Triton's interpreter).

    Returns:
        (B, T + N, E) contiguous tokens in the inputs' dtype; row t < T is prefix[0, t] + pos_embed[0, t].
        Differentiable in every tensor argument.
    """
    _validate(images, weight, bias, pos_embed, prefix)
    return (patch_embed_fwd if tracing() else PatchEmbedFn.apply)(images, weight, bias, pos_embed, prefix)


def patch_embed_ref(images: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, pos_embed: torch.Tensor,
                    prefix: torch.Tensor) -> torch.Tensor:
    """Plain PyTorch: conv2d -> flatten(2).transpose(1, 2) -> cat prefix -> + pos_embed, in the inputs' dtype."""
    P = weight.shape[-1]
    x = F.conv2d(images, weight, bias, stride=P).flatten(2).transpose(1, 2)  # (B, N, E)
    return torch.cat([prefix.expand(x.shape[0], -1, -1), x], dim=1) + pos_embed
