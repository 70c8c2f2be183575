"""Local attention that also returns its log-sum-exp: the block step of ring attention.

Ring attention (fastvit/distributed/ring.py) runs attention of this rank's queries against one block
of keys at a time and merges the partial outputs through their log-sum-exp; its backward hands each
block the *global* output and log-sum-exp, from which a flash-style backward recomputes the block's
probabilities exactly. So a local backend must offer

* ``fwd(q, k, v, bias, scale) -> (out, lse)``: q (B, H, n, D), k and v (B, H, m, D), bias None or
  broadcastable to (B, H, n, m); lse (B, H, n), ``-inf`` for a row whose every score is -inf (its
  out row 0), in natural-log units or, where ``log2`` is set, in log2 units;
* ``bwd(do, q, k, v, bias, out, lse, scale, bias_grad) -> (dq, dk, dv, dbias or None)`` given any
  (out, lse) -- the global ones in the ring.

Three backends can: ``naive`` (plain PyTorch, the reference; fp16 / bf16 computed in fp32),
``sdpa-flash`` (PyTorch's CPU flash kernel, ``aten._scaled_dot_product_flash_attention_for_cpu`` and
its backward; natural-log LSE; no bias gradient), and ``triton`` (fastvit's kernel through its custom
ops ``flash_attn_fwd`` / ``flash_attn_bwd``; log2 LSE; q, k, v of one shape, so the ring pads a
shorter shard). Every other attention backend computes no log-sum-exp it would hand out (PyTorch's
SDPA returns only the output): asked for, it raises BackendError with that reason.

PyTorch's CPU flash kernel reports LSE 0, not -inf, for a fully masked row; ``fwd`` sets those rows
to -inf from the bias (the only source of -inf scores), and ``bwd`` gives the kernel 0 back for a
global -inf, where every block's scores are -inf and its probabilities exp(-inf - 0) are 0.
"""
from __future__ import annotations

import math

import torch

from fastvit.errors import BackendError

_NEG_INF = float("-inf")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _safe(lse: torch.Tensor) -> torch.Tensor:
    """lse with -inf (fully masked rows) replaced by 0, so that exp(s - lse) is exp(-inf) = 0 there."""
    return lse.masked_fill(lse == _NEG_INF, 0.0)


def bias_4d(bias: torch.Tensor | None) -> torch.Tensor | None:
    """``bias`` viewed with leading dims of size 1 up to 4-D (no copy)."""
    if bias is None or bias.dim() == 4:
        return bias
    return bias.reshape((1,) * (4 - bias.dim()) + tuple(bias.shape))


class Naive:
    """softmax with the (B, H, n, m) block materialized: the reference; any device and dtype."""

    name, log2, equal_lengths, bias_grad = "naive", False, False, True

    @staticmethod
    def _scores(q, k, bias, scale):
        ct = _compute_dtype(q.dtype)
        s = (q.to(ct) * scale) @ k.to(ct).transpose(-2, -1)  # (B, H, n, m)
        return s if bias is None else s + bias.to(ct)

    def fwd(self, q, k, v, bias, scale):
        s = self._scores(q, k, bias, scale)
        lse = torch.logsumexp(s, dim=-1)  # (B, H, n); -inf where the whole row is
        p = torch.exp(s - _safe(lse)[..., None])
        return (p @ v.to(s.dtype)).to(q.dtype), lse

    def bwd(self, do, q, k, v, bias, out, lse, scale, bias_grad):
        s = self._scores(q, k, bias, scale)
        ct = s.dtype
        p = torch.exp(s - _safe(lse.to(ct))[..., None])  # the global probabilities of this block
        do_, v_ = do.to(ct), v.to(ct)
        dv = p.transpose(-2, -1) @ do_
        delta = (do_ * out.to(ct)).sum(-1, keepdim=True)  # (B, H, n, 1)
        ds = p * (do_ @ v_.transpose(-2, -1) - delta)  # gradient of the scores
        dq = (ds @ k.to(ct)) * scale
        dk = (ds.transpose(-2, -1) @ q.to(ct)) * scale
        return dq, dk, dv, (ds if bias_grad else None)


class CpuFlash:
    """PyTorch's CPU flash kernel: the tiled forward that returns its natural-log LSE, and the
    backward that takes one."""

    name, log2, equal_lengths, bias_grad = "sdpa-flash", False, False, False

    def fwd(self, q, k, v, bias, scale):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, 0.0, False, attn_mask=bias, scale=scale)
        if bias is not None:
            dead = bias.amax(dim=-1) == _NEG_INF  # (b, h, n) rows the bias masks whole
            if dead.any():
                lse = lse.masked_fill(dead, _NEG_INF)
        return out, lse

    def bwd(self, do, q, k, v, bias, out, lse, scale, bias_grad):
        dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            do.contiguous(), q, k, v, out, _safe(lse), 0.0, False, attn_mask=bias, scale=scale)
        return dq, dk, dv, None


class Triton:
    """fastvit's flash kernel through its custom ops (kernels/flash_attention.py): LSE in log2 units."""

    name, log2, equal_lengths, bias_grad = "triton", True, True, True

    def fwd(self, q, k, v, bias, scale):
        from kernels.flash_attention import flash_attn_fwd

        return flash_attn_fwd(q, k, v, bias, scale)

    def bwd(self, do, q, k, v, bias, out, lse, scale, bias_grad):
        from kernels.flash_attention import flash_attn_bwd

        dq, dk, dv, dbias = flash_attn_bwd(do.contiguous(), q, k, v, bias, out, lse, scale, bias_grad)
        return dq, dk, dv, (dbias if bias_grad else None)


LOCAL = {"naive": Naive(), "sdpa-flash": CpuFlash(), "triton": Triton()}
DEFAULTS = {"cpu": "sdpa-flash", "cuda": "triton"}


def local_backend(name: str | None, q: torch.Tensor, bias: torch.Tensor | None, bias_needs_grad: bool):
    """The local backend ``name`` (None: ``sdpa-flash`` on CPU, ``triton`` on CUDA) if it can serve
    these inputs; BackendError with the reason otherwise."""
    device = q.device.type
    if name is None:
        name = DEFAULTS.get(device, "naive")
    if name not in LOCAL:
        from fastvit.ops.attention.registry import ATTENTION

        why = ("it returns no log-sum-exp, which ring attention merges partial results by"
               if name in ATTENTION.names() else "it is no attention backend")
        raise BackendError(f"ring attention cannot run on attention backend {name!r}: {why}; "
                           f"backends that can: {', '.join(LOCAL)}")
    if name == "sdpa-flash":
        if device != "cpu":
            raise BackendError(f"ring attention backend 'sdpa-flash' is PyTorch's CPU flash kernel; the inputs are "
                               f"on {q.device} (use 'triton' or 'naive' there)")
        if bias_needs_grad:
            raise BackendError("ring attention backend 'sdpa-flash': PyTorch's CPU flash kernel gives no gradient "
                               "for the attention bias, which requires one here (use 'naive' or 'triton')")
    if name == "triton":
        from fastvit.ops._triton import triton_check
        from kernels.flash_attention import head_dim_supported

        ok, reason = triton_check(q.device, q.dtype)
        if ok:
            ok, reason = head_dim_supported(q.shape[-1])
        if not ok:
            raise BackendError(f"ring attention backend 'triton' cannot run here: {reason}")
    return LOCAL[name]


def default_scale(head_dim: int, scale: float | None) -> float:
    return 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
