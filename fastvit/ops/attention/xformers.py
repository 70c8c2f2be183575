"""``xformers``: xformers.ops.memory_efficient_attention (CUDA only, optional dependency).

xformers wants (B, N, H, D); the backend transposes views in and out, without copies. An attention
bias goes in as xformers' ``attn_bias`` tensor, expanded to (B, H, N, N).
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


@register("xformers", check=_check, description="xformers.ops.memory_efficient_attention", peer=True,
          takes_bias=True)
def xformers_attention(q, k, v, *, scale=None, dropout_p=0.0, bias=None):
    import xformers.ops as xops

    B, H, N, _ = q.shape
    attn_bias = bias.expand(B, H, N, N) if bias is not None else None
    try:
        out = xops.memory_efficient_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=attn_bias, p=dropout_p, scale=scale
        )  # (B, N, H, D)
    except (NotImplementedError, ValueError) as err:
        raise BackendError(f"attention backend 'xformers' cannot run on q of shape {tuple(q.shape)}, "
                           f"{q.dtype}: {err}") from None
    return out.transpose(1, 2)  # (B, H, N, D)
