"""``attention(q, k, v)``: the attention op's validated entry point, dispatching to a backend."""
from __future__ import annotations

import math

import torch

from fastvit.errors import ArgumentError, DeviceError, DTypeError, ShapeError
from fastvit.ops.attention.packing import Packing
from fastvit.ops.attention.registry import ATTENTION, TRAINED


def validate_qkv(q, k, v, bias=None, scale=None, dropout_p=0.0) -> None:
    """Raise the typed error (a :class:`~fastvit.errors.FastViTError`) for the first problem with these
    attention arguments: q, k, v must be same-shaped floating (B, H, N, D) tensors of one dtype on one
    device; ``bias`` None or a tensor of q's dtype and device, of rank 0 to 4, broadcastable to
    (B, H, N, N); ``scale`` None or a positive finite number; ``dropout_p`` in [0, 1)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise DTypeError(f"attention: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ShapeError(f"attention: {name} must be 4-D (B, H, N, D), got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise DTypeError(f"attention: {name} must be a floating-point tensor, got dtype {t.dtype}")
    if not (q.shape == k.shape == v.shape):
        raise ShapeError(f"attention: q, k, v must have one shape (B, H, N, D); got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise DTypeError(f"attention: q, k, v must share one dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise DeviceError(f"attention: q, k, v must be on one device; got {q.device}, {k.device}, {v.device}")
    if bias is not None:
        B, H, N, _ = q.shape
        if not isinstance(bias, torch.Tensor):
            raise DTypeError(f"attention: bias must be a torch.Tensor or None, got {type(bias).__name__}")
        if bias.dim() > 4 or any(s not in (1, t) for s, t in zip(bias.shape[::-1], (N, N, H, B))):
            raise ShapeError(f"attention: bias of shape {tuple(bias.shape)} does not broadcast to (B, H, N, N) = "
                             f"{(B, H, N, N)}")
        if bias.dtype != q.dtype:
            raise DTypeError(f"attention: bias dtype {bias.dtype} differs from q's {q.dtype}")
        if bias.device != q.device:
            raise DeviceError(f"attention: bias is on {bias.device}, q on {q.device}")
    if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ArgumentError(f"attention: scale must be a positive finite number or None, got {scale!r}")
    if not (isinstance(dropout_p, (int, float)) and 0.0 <= dropout_p < 1.0):
        raise ArgumentError(f"attention: dropout_p must be in [0, 1), got {dropout_p!r}")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, backend: str | None = None,
              scale: float | None = None, dropout_p: float = 0.0, bias: torch.Tensor | None = None,
              packing: Packing | None = None) -> torch.Tensor:
    """softmax(q k^T * scale + bias) v with the selected backend.

    One semantics for every backend (tests/test_attention.py holds each registered backend to it):

    * ``bias`` is added to the scaled scores before the softmax. Every rank from 0 to 4 that
      broadcasts to (B, H, N, N) is accepted: a scalar, a key-padding vector (N,), (N, N),
      (B, 1, 1, N), (1, H, N, N), ``expand``-ed views. Backends read it as the view it is (the SDPA
      ones see it with leading dims of size 1 added, a view); none copies it to (B, H, N, N).
    * A fully masked row, a query whose every score is -inf, attends to nothing: its output row is 0
      and it adds 0 to every gradient (its dq row, dk, dv, dbias), with no NaN reaching any other
      row or the rest of its (batch, head) slice. This is PyTorch SDPA's answer; the materialized
      softmax alone would give NaN. A mask should use -inf: a large finite value (-1e30,
      ``finfo.min``) is a score like any other, and a row made only of those is averaged, not
      dropped, by the materialized backends (see README, Correctness, for what the flash kernels do).
    * A backend that cannot honour this for the inputs at hand says so at admission, before it runs:
      BackendError with the reason, never a raw exception from inside a kernel.

    Args:
        q, k, v: (B, H, N, D) tensors of one shape, dtype and device.
        backend: a registered attention backend; None follows ``use_backend``, then
            ``FASTVIT_ATTN_BACKEND``, then the default ``sdpa``. Resolved on every call.
        scale: softmax scale, a positive finite number; default ``D ** -0.5``.
        dropout_p: dropout on the attention probabilities, in [0, 1) (training only; pass 0.0 in eval).
        bias: None or an additive bias tensor of q's dtype and device, as above (Swin's relative
            position bias and window mask, a key-padding mask); backends that take none report
            themselves unavailable.
        packing: None, or a :class:`~fastvit.ops.attention.packing.Packing`: q, k, v are then
            (1, H, T, D), several sequences end to end, and each token attends only to the tokens of
            its own sequence (fastvit/ops/attention/packing.py); not with a bias. Backends that
            cannot run packed sequences report themselves unavailable (BackendError).

    Raises:
        BackendError: unknown backend, or one that cannot run on these inputs (with the reason).
        ShapeError, DTypeError, DeviceError: malformed or mismatched tensors (DTypeError also for
            q, k, v or a bias that is not a tensor).
        ArgumentError: ``scale`` or ``dropout_p`` out of range or not a number (a ValueError).
    """
    # The hot path checks, in a few comparisons, what a backend would not reject by itself (a rank or
    # shape that broadcasts, a bias of another dtype, a bad scale or dropout_p); the rest -- q, k, v
    # of mixed dtypes or devices, which every backend refuses -- is named by the full validation if
    # the backend fails. Anything unusual gets the full validation first.
    if packing is not None:
        return _packed(q, k, v, backend, scale, dropout_p, bias, packing)
    try:
        shape, dtype = q.shape, q.dtype
        ok = (len(shape) == 4 and k.shape == shape and v.shape == shape and dtype.is_floating_point
              and (scale is None or 0.0 < scale < _INF) and (dropout_p == 0.0 or 0.0 < dropout_p < 1.0)
              and (bias is None or (bias.dtype is dtype and bias.device == q.device
                                    and (bias.shape, shape) in _BROADCASTS)))
    except (AttributeError, TypeError):
        ok = False
    if not ok:
        validate_qkv(q, k, v, bias, scale, dropout_p)
        shape, dtype = q.shape, q.dtype
        if bias is not None:
            _remember_broadcast(bias.shape, shape)
    key = (ATTENTION.selected() if backend is None else backend, q.device, dtype, shape[3],
           bias is not None and (TRAINED if bias.requires_grad and torch.is_grad_enabled() else True), False)
    fn = _ROUTES.get(key) or ATTENTION.admit(key)  # ATTENTION.route, inlined
    try:
        return fn(q, k, v, scale=scale, dropout_p=dropout_p, bias=bias)
    except Exception:
        validate_qkv(q, k, v, bias, scale, dropout_p)  # the typed error, if the inputs are at fault
        raise


def _packed(q, k, v, backend, scale, dropout_p, bias, packing):
    """attention over packed sequences: validated in full on every call (one call per block)."""
    if not isinstance(packing, Packing):
        raise ArgumentError(f"attention: packing must be a fastvit Packing or None, got {type(packing).__name__}")
    validate_qkv(q, k, v, None, scale, dropout_p)
    packing.check(q, bias)
    key = (ATTENTION.selected() if backend is None else backend, q.device, q.dtype, q.shape[3], False, True)
    fn = _ROUTES.get(key) or ATTENTION.admit(key)
    return fn(q, k, v, scale=scale, dropout_p=dropout_p, bias=None, packing=packing)


_INF = math.inf
_ROUTES = ATTENTION.routes
_BROADCASTS: set = set()  # (bias shape, q shape) pairs validated to broadcast to (B, H, N, N)


def _remember_broadcast(bias_shape, q_shape) -> None:
    if len(_BROADCASTS) > 4096:  # bounded: many resolutions make many shapes
        _BROADCASTS.clear()
    _BROADCASTS.add((bias_shape, q_shape))
