"""Attention backends on (B, H, N, D) tensors, behind one function.

Every backend takes ``(q, k, v, *, scale=None, dropout_p=0.0)`` in the canonical (B, H, N, D)
layout and returns (B, H, N, D); a backend that wants another layout converts inside.
"""
from __future__ import annotations

import torch

from fastvit.backends import ATTENTION
from fastvit.errors import DeviceError, DTypeError, ShapeError

# Importing the modules registers their backends, in the order they are listed.
from fastvit.attention import naive, sdpa, xformers, triton  # noqa: E402,F401


def validate_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Check that q, k, v are same-shaped floating (B, H, N, D) tensors on one device."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"attention: {name} must be a torch.Tensor, got {type(t).__name__}")
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


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, backend: str | None = None,
              scale: float | None = None, dropout_p: float = 0.0) -> torch.Tensor:
    """softmax(q k^T * scale) v with the selected backend.

    Args:
        q, k, v: (B, H, N, D) tensors of one shape, dtype and device.
        backend: a registered attention backend; None follows ``use_backend``, then
            ``FASTVIT_ATTN_BACKEND``, then the default ``sdpa``.
        scale: softmax scale, default ``D ** -0.5``.
        dropout_p: dropout on the attention probabilities (training only; pass 0.0 in eval).

    Raises:
        BackendError: unknown backend, or one that cannot run on these inputs (with the reason).
        ShapeError, DTypeError, DeviceError: malformed q, k, v.
    """
    validate_qkv(q, k, v)
    impl = ATTENTION.require(backend, q.device, q.dtype, head_dim=q.shape[-1])
    return impl.fn(q, k, v, scale=scale, dropout_p=dropout_p)


__all__ = ["attention", "validate_qkv", "ATTENTION"]
