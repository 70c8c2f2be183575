"""Fused residual-add + LayerNorm in Triton, forward and backward.

``add_layer_norm(x, residual, weight, bias)`` returns ``(y, s)`` with ``s = x + residual`` and
``y = LayerNorm(s)`` over the last dim; ``layer_norm(x, weight, bias)`` is the same kernel without the
residual. A pre-norm ViT block calls it twice per layer, so the add and the norm share one read of the
activations instead of the two (or three) an eager add followed by ``F.layer_norm`` needs.

Algorithm: inputs of any leading shape are viewed as rows (M, D) with last-dim stride 1 (a view
whenever the strides allow; inputs strided along D are copied once). Each forward program owns
BLOCK_M rows held entirely in registers, the hidden dim padded to BLOCK_D = next power of two with
masks, so any hidden size works (ViT's 192/384/768/1024/1280 and odd ones like 50 or 127). The sum
``x + residual`` is computed in fp32 and rounded to s's dtype before the statistics, so ``y`` is
exactly LayerNorm of the ``s`` returned. Mean and rstd are computed in fp32 (two-pass over
registers: mean, then the centred variance) and saved per row with ``s`` (or ``x``).

Backward (one kernel): with xhat = (s - mean) * rstd and g = dy * weight,
``ds = rstd * (g - mean(g) - xhat * mean(g * xhat)) + ds_in`` where ``ds_in`` is the gradient that
reached the output ``s`` (the residual stream). ``dx = dresidual = ds`` (written twice from registers
when both are needed, so the two gradients never alias). dweight and dbias are reduced without
atomics: each program walks a contiguous range of rows, accumulates ``dy * xhat`` and ``dy`` in fp32
and writes one row of a (num_programs, D) fp32 buffer, summed afterwards by ``torch.sum(0)`` --
deterministic run to run.

Dtypes: x and residual fp16, bf16 or fp32, each its own: under ``torch.autocast`` a block's branch
output is low precision while the residual stream and the parameters stay fp32. Every output comes
back in the dtype eager PyTorch would give it: s in ``torch.result_type(x, residual)``, y in s's
dtype or fp32 where autocast runs layer_norm in fp32 (CUDA's autocast does, CPU's does not: the
launcher asks PyTorch), each gradient in its input's dtype. Weight and bias are in s's dtype or fp32
(the usual mixed-precision setup keeps fp32 master parameters). Hidden sizes up to 65536. Launches
run with the inputs' CUDA device current.

PyTorch custom ops (namespace ``fastvit_kernels``): ``layer_norm_fwd`` (x, residual?, weight, bias?,
eps, y_dtype) -> (y, s, mean, rstd) with s empty without a residual, and ``layer_norm_bwd``; each has
a fake implementation and the forward its autograd formula, so torch.compile sees one opaque op per
pass (no graph break) and torch.export records it. Mixed dtypes, a missing residual or bias and eps
all go through the schema. Eagerly ``LayerNormFn`` runs the same implementations, setup and backward
without the dispatcher (kernels._common.tracing).

Known limits: the whole row lives in registers, so very large hidden sizes (> ~16k) spill on GPU;
no RMSNorm, no dropout. Block sizes are a heuristic of the hidden size (not autotuned); every one a
ViT or Swin launches compiles for sm_90 and sm_80 without spills with every audited Triton release
(``python -m kernels.audit``). Verified on
CPU through Triton's interpreter in fp32, fp16 and mixed fp16 / fp32 under ``torch.autocast``; bf16
only on GPU: the kernels use no tl.dot, but Triton 3.9's interpreter rounds fp32 -> bf16 toward zero
(the GPU rounds to nearest even), so its bf16 outputs carry up to one ulp of error, twice what the
kernel does on GPU. No GPU performance numbers are claimed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from kernels._common import NAMESPACE, check_inputs, device_guard, interpreter_enabled, require_runnable, tracing

MAX_HIDDEN = 65536


# ------------------------------------------------------------------------------------------------
# Triton kernels
# ------------------------------------------------------------------------------------------------
@triton.jit
def _layer_norm_fwd_kernel(
    X,  # (M, D) input rows, last-dim stride 1
    R,  # (M, D) residual rows, last-dim stride 1 (read only when HAS_RESIDUAL)
    W,  # (D,) weight, contiguous
    Bias,  # (D,) bias, contiguous (read only when HAS_BIAS)
    Y,  # (M, D) normalized output, last-dim stride 1
    S,  # (M, D) x + residual output, last-dim stride 1 (written only when HAS_RESIDUAL)
    Mean,  # (M,) fp32 per-row mean of s
    Rstd,  # (M,) fp32 per-row 1 / sqrt(var + eps)
    stride_xm, stride_rm, stride_ym, stride_sm,
    M, D, eps,
    HAS_RESIDUAL: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    mask_m = rows < M
    mask_d = cols < D
    mask = mask_m[:, None] & mask_d[None, :]
    rows = rows.to(tl.int64)

    x = tl.load(X + rows[:, None] * stride_xm + cols[None, :], mask=mask, other=0.0)
    if HAS_RESIDUAL:
        r = tl.load(R + rows[:, None] * stride_rm + cols[None, :], mask=mask, other=0.0)
        # Round s to the storage dtype first: y is then exactly LayerNorm of the s we return.
        s_lp = (x.to(tl.float32) + r.to(tl.float32)).to(S.dtype.element_ty)
        tl.store(S + rows[:, None] * stride_sm + cols[None, :], s_lp, mask=mask)
        s = s_lp.to(tl.float32)
    else:
        s = x.to(tl.float32)

    mean = tl.sum(s, axis=1) / D
    centred = tl.where(mask, s - mean[:, None], 0.0)
    var = tl.sum(centred * centred, axis=1) / D
    rstd = 1.0 / tl.sqrt(var + eps)
    tl.store(Mean + rows, mean, mask=mask_m)
    tl.store(Rstd + rows, rstd, mask=mask_m)

    w = tl.load(W + cols, mask=mask_d, other=0.0).to(tl.float32)
    y = centred * rstd[:, None] * w[None, :]
    if HAS_BIAS:
        b = tl.load(Bias + cols, mask=mask_d, other=0.0).to(tl.float32)
        y = y + b[None, :]
    tl.store(Y + rows[:, None] * stride_ym + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _layer_norm_bwd_kernel(
    S,  # (M, D) the normalized input (s, or x without residual), last-dim stride 1
    DY,  # (M, D) gradient of y, last-dim stride 1
    DSIn,  # (M, D) gradient arriving at the output s, last-dim stride 1 (read only when HAS_DS_IN)
    W,  # (D,) weight, contiguous
    Mean,  # (M,) fp32 saved per-row mean
    Rstd,  # (M,) fp32 saved per-row rstd
    DX,  # (M, D) gradient of x, last-dim stride 1
    DRes,  # (M, D) gradient of residual, last-dim stride 1 (written only when STORE_DRES)
    DWPart,  # (num_programs, D) fp32 partial dweight, one row per program
    DBPart,  # (num_programs, D) fp32 partial dbias, one row per program (written only when HAS_BIAS)
    stride_sm, stride_dym, stride_dsm, stride_dxm, stride_drm,
    M, D, rows_per_program,
    HAS_DS_IN: tl.constexpr, STORE_DRES: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_D)
    mask_d = cols < D
    w = tl.load(W + cols, mask=mask_d, other=0.0).to(tl.float32)
    dw_acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    db_acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    row_begin = pid * rows_per_program
    row_end = tl.minimum(row_begin + rows_per_program, M)
    for start in range(0, rows_per_program, BLOCK_M):
        rows = row_begin + start + tl.arange(0, BLOCK_M)
        mask_m = rows < row_end
        mask = mask_m[:, None] & mask_d[None, :]
        rows = rows.to(tl.int64)
        s = tl.load(S + rows[:, None] * stride_sm + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + rows[:, None] * stride_dym + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(Mean + rows, mask=mask_m, other=0.0)
        rstd = tl.load(Rstd + rows, mask=mask_m, other=0.0)
        xhat = tl.where(mask, (s - mean[:, None]) * rstd[:, None], 0.0)
        g = dy * w[None, :]  # zero in masked lanes: dy and w load as 0 there
        c_xhat = tl.sum(g * xhat, axis=1) / D
        c_g = tl.sum(g, axis=1) / D
        ds = (g - (xhat * c_xhat[:, None] + c_g[:, None])) * rstd[:, None]
        if HAS_DS_IN:
            ds += tl.load(DSIn + rows[:, None] * stride_dsm + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        tl.store(DX + rows[:, None] * stride_dxm + cols[None, :], ds.to(DX.dtype.element_ty), mask=mask)
        if STORE_DRES:
            tl.store(DRes + rows[:, None] * stride_drm + cols[None, :], ds.to(DRes.dtype.element_ty), mask=mask)
        dw_acc += dy * xhat
        if HAS_BIAS:
            db_acc += dy
    tl.store(DWPart + pid * D + cols, tl.sum(dw_acc, axis=0), mask=mask_d)
    if HAS_BIAS:
        tl.store(DBPart + pid * D + cols, tl.sum(db_acc, axis=0), mask=mask_d)


# ------------------------------------------------------------------------------------------------
# Block sizes: a fixed small configuration under the interpreter, a heuristic on GPU
# ------------------------------------------------------------------------------------------------
_INTERPRET = interpreter_enabled()
_INTERPRETER_BLOCK_M = 8  # rows per tile; the interpreter's cost is per program, not per element
# Backward rows per program: not a multiple of BLOCK_M, so the tests run row ranges that end mid-tile.
_INTERPRETER_ROWS_PER_PROGRAM = 12
_FWD_TILE, _BWD_TILE = 4096, 2048  # GPU: elements per tile, forward and backward
_SM_COUNT: dict[int, int] = {}


def _config(D: int, tile_elems: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_D, num_warps) for hidden size D.

    On GPU LayerNorm is memory bound and the tile is a function of D alone: about ``tile_elems``
    elements per tile (several short rows, or one long row), warps scaled with the row length. The
    backward keeps about twice as many live tiles as the forward and asks for half the elements. Not
    autotuned: autotuning a memory-bound kernel on every new M would cost more than it saves.
    """
    block_d = triton.next_power_of_2(D)
    if _INTERPRET:
        return _INTERPRETER_BLOCK_M, block_d, 4
    block_m = max(1, min(16, tile_elems // block_d))
    # Rows of 2048 and more get 16 warps: the fp32 forward's two rows of 2048 in 8 warps spill 16 B on
    # sm_90 with Triton 3.8 (ptxas 12.9); in 16 they fit with every audited release (kernels.audit).
    num_warps = 16 if block_d >= 2048 else max(4, block_d // 256)
    return block_m, block_d, num_warps


def _num_programs_bwd(M: int, block_m: int, device: torch.device) -> tuple[int, int]:
    """(num_programs, rows_per_program) for the backward: enough programs to fill the GPU, few enough
    that the (num_programs, D) partial buffers stay small."""
    if _INTERPRET or device.type != "cuda":
        rows = _INTERPRETER_ROWS_PER_PROGRAM
    else:
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index not in _SM_COUNT:  # queried on first use, never at import
            _SM_COUNT[index] = torch.cuda.get_device_properties(index).multi_processor_count
        target = 4 * _SM_COUNT[index]
        rows = max(block_m, triton.cdiv(triton.cdiv(M, target), block_m) * block_m)  # M = 0: no programs
    return triton.cdiv(M, rows), rows


# ------------------------------------------------------------------------------------------------
# Launchers
# ------------------------------------------------------------------------------------------------
def _rows(t: torch.Tensor, D: int) -> torch.Tensor:
    """View (..., D) as (M, D) with last-dim stride 1; copies only when no such view exists.

    Row strides are passed to the kernels, so row-strided views (a slice of a wider buffer, or
    (B, N, D) token tensors) are read in place; tensors strided along D (a transpose, an expanded
    incoming gradient) are copied once.
    """
    t2 = t.reshape(-1, D)
    if t2.stride(-1) != 1 and D != 1:
        t2 = t2.contiguous()
    return t2


def _validate(op: str, x, residual, weight, bias) -> None:
    tensors = {"x": x}
    if residual is not None:
        tensors["residual"] = residual
    tensors["weight"] = weight
    if bias is not None:
        tensors["bias"] = bias
    check_inputs(op, tensors)
    if x.dim() < 1:
        raise ValueError(f"{op}: x must have at least one dim (..., D), got a 0-d tensor")
    D = x.shape[-1]
    if not 1 <= D <= MAX_HIDDEN:
        raise ValueError(f"{op}: hidden size (last dim of x) must be 1 to {MAX_HIDDEN}, got {D}")
    normalized = x.dtype
    if residual is not None:
        if residual.shape != x.shape:
            raise ValueError(f"{op}: residual shape {tuple(residual.shape)} differs from x shape {tuple(x.shape)}")
        normalized = torch.promote_types(x.dtype, residual.dtype)
    for name, p in (("weight", weight), ("bias", bias)):
        if p is None:
            continue
        if p.shape != (D,):
            raise ValueError(f"{op}: {name} must have shape ({D},) to match the hidden size of x, got {tuple(p.shape)}")
        if p.dtype not in (normalized, torch.float32):
            what = "x's dtype" if residual is None else "the dtype of x + residual"
            raise TypeError(f"{op}: {name} dtype {p.dtype} must be {what} ({normalized}) or torch.float32")


_AUTOCAST_NORM_DTYPES: dict[tuple, torch.dtype] = {}


@torch.compiler.assume_constant_result  # a constant of any compiled graph: traced, the probe would break it
def _autocast_layer_norm_dtype(device_type: str, autocast_dtype: torch.dtype, dtype: torch.dtype) -> torch.dtype:
    key = (device_type, autocast_dtype, dtype)
    if key not in _AUTOCAST_NORM_DTYPES:
        probe = torch.zeros(1, 1, device=device_type, dtype=dtype)
        with torch.autocast(device_type, dtype=autocast_dtype):
            _AUTOCAST_NORM_DTYPES[key] = F.layer_norm(probe, (1,)).dtype
    return _AUTOCAST_NORM_DTYPES[key]


def _norm_dtype(t: torch.Tensor, dtype: torch.dtype) -> torch.dtype:
    """The dtype eager ``F.layer_norm`` returns for a ``dtype`` input on ``t``'s device: ``dtype``
    itself, unless autocast is on for that device type and its policy runs layer_norm in float32
    (CUDA's does; CPU's, in torch 2.13, does not). Asked of PyTorch once per setting."""
    device_type = t.device.type
    if not torch.is_autocast_enabled(device_type):
        return dtype
    return _autocast_layer_norm_dtype(device_type, torch.get_autocast_dtype(device_type), dtype)


def _layer_norm_fwd(x, residual, weight, bias, eps: float, y_dtype: torch.dtype):
    """Returns (y, s, mean, rstd): y shaped like x in ``y_dtype``, s = x + residual shaped like x in
    their promoted dtype (None without a residual), and the fp32 per-row statistics."""
    D = x.shape[-1]
    x2 = _rows(x, D)
    M = x2.shape[0]
    y = torch.empty(x.shape, device=x.device, dtype=y_dtype)
    y2 = y.view(-1, D)
    mean = torch.empty(M, device=x.device, dtype=torch.float32)
    rstd = torch.empty(M, device=x.device, dtype=torch.float32)
    s = s2 = r2 = None
    if residual is not None:
        r2 = _rows(residual, D)
        s = torch.empty(x.shape, device=x.device, dtype=torch.result_type(x, residual))
        s2 = s.view(-1, D)
    if M == 0:
        return y, s, mean, rstd
    block_m, block_d, num_warps = _config(D, _FWD_TILE)
    weight = weight.contiguous()
    bias_c = bias.contiguous() if bias is not None else weight  # dummy pointer when HAS_BIAS=False
    with device_guard(x):
        _layer_norm_fwd_kernel[(triton.cdiv(M, block_m),)](
            x2, r2 if r2 is not None else x2, weight, bias_c, y2, s2 if s2 is not None else y2, mean, rstd,
            x2.stride(0), r2.stride(0) if r2 is not None else 0, y2.stride(0), s2.stride(0) if s2 is not None else 0,
            M, D, eps,
            HAS_RESIDUAL=residual is not None, HAS_BIAS=bias is not None,
            BLOCK_M=block_m, BLOCK_D=block_d, num_warps=num_warps,
        )
    return y, s, mean, rstd


def _layer_norm_bwd(dy, ds_in, s, weight, mean, rstd, has_bias: bool, dx_dtype: torch.dtype, dres_dtype=None):
    """Returns (dx, dres, dweight, dbias) with dx (in ``dx_dtype``) and dres (in ``dres_dtype``) shaped
    like s; dres is None unless ``dres_dtype`` is given, dbias None without bias. ``dy`` and ``ds_in``
    may be None (no gradient reached y or s)."""
    D = s.shape[-1]
    s2 = _rows(s, D)
    M = s2.shape[0]
    dy2 = _rows(dy, D) if dy is not None else torch.zeros_like(s2)  # y unused: only ds_in flows back
    ds2 = _rows(ds_in, D) if ds_in is not None else None
    dx = torch.empty(s.shape, device=s.device, dtype=dx_dtype)
    dx2 = dx.view(-1, D)
    dres = torch.empty(s.shape, device=s.device, dtype=dres_dtype) if dres_dtype is not None else None
    dres2 = dres.view(-1, D) if dres is not None else dx2
    block_m, block_d, num_warps = _config(D, _BWD_TILE)
    num_programs, rows_per_program = _num_programs_bwd(M, block_m, s.device)
    dw_part = torch.empty((num_programs, D), device=s.device, dtype=torch.float32)
    db_part = torch.empty((num_programs, D), device=s.device, dtype=torch.float32) if has_bias else dw_part
    if M > 0:
        with device_guard(s):
            _layer_norm_bwd_kernel[(num_programs,)](
                s2, dy2, ds2 if ds2 is not None else dy2, weight.contiguous(), mean, rstd, dx2, dres2, dw_part,
                db_part, s2.stride(0), dy2.stride(0), ds2.stride(0) if ds2 is not None else 0, dx2.stride(0),
                dres2.stride(0), M, D, rows_per_program,
                HAS_DS_IN=ds2 is not None, STORE_DRES=dres is not None, HAS_BIAS=has_bias,
                BLOCK_M=block_m, BLOCK_D=block_d, num_warps=num_warps,
            )
    dweight = dw_part.sum(0)
    dbias = db_part.sum(0) if has_bias else None
    return dx, dres, dweight, dbias


# ------------------------------------------------------------------------------------------------
# Custom ops (traced) and the autograd.Function (eager) around the same implementations
# ------------------------------------------------------------------------------------------------
def _fwd_impl(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor | None,
              eps: float, y_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, s, mean, rstd): s = x + residual, or an empty tensor without a residual (s is x then)."""
    require_runnable("layer_norm", x)
    y, s, mean, rstd = _layer_norm_fwd(x, residual, weight, bias, eps, y_dtype)
    return y, (s if s is not None else x.new_empty(0)), mean, rstd


def _bwd_impl(dy: torch.Tensor | None, ds: torch.Tensor | None, s: torch.Tensor, weight: torch.Tensor,
              mean: torch.Tensor, rstd: torch.Tensor, has_bias: bool, dx_dtype: torch.dtype, dres_dtype: torch.dtype,
              store_dres: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dres, dweight, dbias): dres (in ``dres_dtype``) empty unless ``store_dres``, dweight and
    dbias fp32, dbias empty without a bias. ``dy`` / ``ds``: None where no gradient reached y / s."""
    dx, dres, dweight, dbias = _layer_norm_bwd(dy, ds, s, weight, mean, rstd, has_bias, dx_dtype,
                                               dres_dtype if store_dres else None)
    empty = s.new_empty(0)
    return dx, (dres if dres is not None else empty), dweight, (dbias if dbias is not None else empty.float())


layer_norm_fwd = torch.library.custom_op(f"{NAMESPACE}::layer_norm_fwd", mutates_args=())(_fwd_impl)
layer_norm_bwd = torch.library.custom_op(f"{NAMESPACE}::layer_norm_bwd", mutates_args=())(_bwd_impl)


@layer_norm_fwd.register_fake
def _(x, residual, weight, bias, eps, y_dtype):
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    s = x.new_empty(x.shape, dtype=torch.promote_types(x.dtype, residual.dtype)) if residual is not None \
        else x.new_empty(0)
    stats = x.new_empty((rows,), dtype=torch.float32)
    return x.new_empty(x.shape, dtype=y_dtype), s, stats, torch.empty_like(stats)


@layer_norm_bwd.register_fake
def _(dy, ds, s, weight, mean, rstd, has_bias, dx_dtype, dres_dtype, store_dres):
    D = s.shape[-1]
    dres = s.new_empty(s.shape, dtype=dres_dtype) if store_dres else s.new_empty(0)
    dbias = s.new_empty((D,), dtype=torch.float32) if has_bias else s.new_empty(0, dtype=torch.float32)
    return s.new_empty(s.shape, dtype=dx_dtype), dres, s.new_empty((D,), dtype=torch.float32), dbias


def _setup_context(ctx, inputs, output):
    x, residual, weight, bias, eps, y_dtype = inputs
    y, s, mean, rstd = output
    ctx.mark_non_differentiable(mean, rstd)
    if residual is None:
        ctx.mark_non_differentiable(s)  # the empty placeholder
    ctx.set_materialize_grads(False)  # a caller that drops y or s sends None: no zeros to read
    ctx.save_for_backward(x if residual is None else s, weight, mean, rstd)
    ctx.has_residual, ctx.has_bias = residual is not None, bias is not None
    ctx.dtypes = (x.dtype, residual.dtype if residual is not None else x.dtype, weight.dtype,
                  bias.dtype if bias is not None else None)


def _backward(ctx, dy, ds, _dmean, _drstd, bwd=layer_norm_bwd):
    """The autograd formula: ``bwd`` is the backward custom op (what a traced backward records); the
    eager LayerNormFn passes its implementation."""
    s, weight, mean, rstd = ctx.saved_tensors
    x_dtype, res_dtype, w_dtype, b_dtype = ctx.dtypes
    need_x, need_res = ctx.needs_input_grad[:2]
    if not ctx.has_residual:
        need_res, ds = False, None
    # dx = dresidual = ds, each in its input's dtype; the kernel writes the first buffer always.
    dx, dres, dw, db = bwd(dy, ds, s, weight, mean, rstd, ctx.has_bias,
                           x_dtype if need_x or not need_res else res_dtype, res_dtype, need_x and need_res)
    if not need_x:
        dx, dres = None, (dx if need_res else None)
    elif not need_res:
        dres = None
    db = db.to(b_dtype) if ctx.has_bias else None
    return dx, dres, dw.to(w_dtype), db, None, None


layer_norm_fwd.register_autograd(_backward, setup_context=_setup_context)


class LayerNormFn(torch.autograd.Function):
    """The eager path: the custom op's implementation, setup and backward, without its dispatcher."""

    @staticmethod
    def forward(ctx, x, residual, weight, bias, eps, y_dtype):
        output = _fwd_impl(x, residual, weight, bias, eps, y_dtype)
        _setup_context(ctx, (x, residual, weight, bias, eps, y_dtype), output)
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, ds, dmean, drstd):
        return _backward(ctx, dy, ds, dmean, drstd, bwd=_bwd_impl)


def _forward(*args):
    return (layer_norm_fwd if tracing() else LayerNormFn.apply)(*args)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float = 1e-6) -> torch.Tensor:
    """LayerNorm over the last dim in one Triton kernel, differentiable.

    Args:
        x: (..., D) fp16, bf16 or fp32 tensor on CUDA (or CPU under Triton's interpreter);
            1 <= D <= 65536. Read in place when its rows have stride 1 along D, else copied once.
        weight: (D,) scale, in x's dtype or fp32.
        bias: (D,) shift in x's dtype or fp32, or None.
        eps: added to the variance.

    Returns:
        y shaped like x (statistics computed in fp32), in the dtype eager ``F.layer_norm`` gives:
        x's, or fp32 under a ``torch.autocast`` that runs layer_norm in fp32 (CUDA's does).
    """
    _validate("layer_norm", x, None, weight, bias)
    return _forward(x, None, weight, bias, float(eps), _norm_dtype(x, x.dtype))[0]


def add_layer_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """``s = x + residual; y = LayerNorm(s)`` in one pass over memory, differentiable in all inputs.

    Args:
        x: (..., D) fp16, bf16 or fp32 tensor on CUDA (or CPU under Triton's interpreter);
            1 <= D <= 65536. Read in place when its rows have stride 1 along D, else copied once.
        residual: same shape as x, fp16, bf16 or fp32 (any strides, as for x). Its dtype may differ
            from x's, as under ``torch.autocast`` (low-precision branch output, fp32 residual stream).
        weight: (D,) scale, in the dtype of x + residual or fp32.
        bias: (D,) shift in the dtype of x + residual or fp32, or None.
        eps: added to the variance.

    Returns:
        (y, s) shaped like x, each in the dtype eager PyTorch gives: s = x + residual in their promoted
        dtype (``torch.result_type``), y in s's dtype, or fp32 under a ``torch.autocast`` that runs
        layer_norm in fp32 (CUDA's does). The sum is computed in fp32 and rounded to s's dtype before
        the norm, so y is exactly the LayerNorm of the returned s. Gradients flowing into s (the
        residual stream) are added to those from y; x and residual get theirs in their own dtypes.
    """
    _validate("add_layer_norm", x, residual, weight, bias)
    s_dtype = torch.promote_types(x.dtype, residual.dtype)  # torch.result_type, which dynamo cannot trace
    y, s, _, _ = _forward(x, residual, weight, bias, float(eps), _norm_dtype(x, s_dtype))
    return y, s


# ------------------------------------------------------------------------------------------------
# Plain-PyTorch references
# ------------------------------------------------------------------------------------------------
def layer_norm_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float = 1e-6,
                   upcast: bool = True) -> torch.Tensor:
    """``F.layer_norm`` over the last dim. ``upcast=True`` computes fp16/bf16 in fp32 and casts back;
    float64 inputs give the float64 reference; ``upcast=False`` is PyTorch's own low-precision math."""
    dtype = x.dtype
    if upcast and dtype in (torch.float16, torch.bfloat16):
        x = x.float()
        weight = weight.float()
        bias = bias.float() if bias is not None else None
    else:
        weight = weight.to(x.dtype)
        bias = bias.to(x.dtype) if bias is not None else None
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps).to(dtype)


def add_layer_norm_ref(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                       eps: float = 1e-6, upcast: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(layer_norm_ref(x + residual), x + residual)``; the sum is taken in the promoted dtype, as the
    kernel does."""
    s = x + residual
    return layer_norm_ref(s, weight, bias, eps, upcast=upcast), s
