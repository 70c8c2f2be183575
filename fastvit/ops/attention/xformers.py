"""``xformers``: xformers.ops.memory_efficient_attention (CUDA only, optional dependency).

xformers wants (B, N, H, D); the backend transposes views in and out, without copies. An attention
bias of any rank goes in as xformers' ``attn_bias`` tensor, an ``expand``-ed (B, H, N, N) view of
its distinct elements.

Fully masked rows: xformers' cutlass kernel, the one that takes a bias tensor, normalises each row by
its sum of exponentials, which is 0 for a row whose every score is -inf (0 / 0: NaN, and NaN in the
backward's dk and dv). So that such a row attends to nothing, as fastvit.attention defines it, the
backend gives xformers a copy of the bias's distinct elements with those rows set to 0 (finite) and
zeroes their output rows: no gradient then reaches them. Cost: one pass over the bias and one copy
of its distinct elements (H * N * N for Swin's (1, H, N, N) table; not the (B, H, N, N) expansion),
plus one masked copy of the output, on every call with a bias.

Packed sequences (a Packing) go in as xformers' ``BlockDiagonalMask.from_seqlens`` of the packing's
Python lengths: one kernel call over the whole packing, no score outside a sequence's block.
"""
from __future__ import annotations

import functools

from fastvit.errors import BackendError
from fastvit.ops.attention.registry import register


@functools.lru_cache(maxsize=None)
def _import_error() -> str:
    try:
        import xformers.ops  # noqa: F401
    except Exception as err:  # an import failure of any kind makes the backend unavailable
        return f"xformers is not importable ({type(err).__name__}: {err}); install it with pip install 'fastvit[xformers]'"
    return ""


def _check(device, dtype, bias=False, **shape):
    if device.type != "cuda":
        return False, f"xformers memory_efficient_attention runs only on CUDA tensors, not {device.type}"
    err = _import_error()
    return (not err), err


def finite_rows(bias):
    """(the bias's distinct elements as a 4-D tensor whose fully masked rows -- every key -inf -- are
    0, those rows as a bool tensor broadcastable to (B, H, N, 1)). Dims the bias broadcasts along
    (size 1, or stride 0 as an ``expand`` gives) stay size 1: nothing is expanded."""
    z = bias.reshape((1,) * (4 - bias.dim()) + tuple(bias.shape))  # a view
    z = z[tuple(slice(0, 1) if z.stride(i) == 0 else slice(None) for i in range(4))]  # distinct elements
    dead = (z == float("-inf")).all(dim=-1, keepdim=True)  # (B|1, H|1, N|1, 1)
    return z.masked_fill(dead, 0.0), dead


@register("xformers", check=_check, description="xformers.ops.memory_efficient_attention", peer=True,
          takes_bias=True, takes_packing=True)
def xformers_attention(q, k, v, *, scale=None, dropout_p=0.0, bias=None, packing=None):
    import xformers.ops as xops

    B, H, N, _ = q.shape
    attn_bias, dead = None, None
    if packing is not None:
        from xformers.ops.fmha.attn_bias import BlockDiagonalMask

        attn_bias = BlockDiagonalMask.from_seqlens(list(packing.lengths), device=q.device)
    elif bias is not None:
        attn_bias, dead = finite_rows(bias)
        attn_bias = attn_bias.expand(B, H, N, N)
    try:
        out = xops.memory_efficient_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=attn_bias, p=dropout_p, scale=scale
        )  # (B, N, H, D)
    except (NotImplementedError, ValueError) as err:
        raise BackendError(f"attention backend 'xformers' cannot run on q of shape {tuple(q.shape)}, "
                           f"{q.dtype}: {err}") from None
    out = out.transpose(1, 2)  # (B, H, N, D)
    return out if dead is None else out.masked_fill(dead, 0.0)
