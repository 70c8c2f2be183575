"""``xformers``: xformers.ops.memory_efficient_attention (CUDA only, optional dependency).

xformers wants (B, N, H, D); the backend transposes views in and out, without copies.
"""
from __future__ import annotations

import functools

from fastvit.backends import ATTENTION
from fastvit.errors import BackendError


@functools.lru_cache(maxsize=None)
def _import_error() -> str:
    try:
        import xformers.ops  # noqa: F401
    except Exception as err:  # an import failure of any kind makes the backend unavailable
        return f"xformers is not importable ({type(err).__name__}: {err}); install it with pip install 'fastvit[xformers]'"
    return ""


def _check(device, dtype, **shape):
    if device.type != "cuda":
        return False, f"xformers memory_efficient_attention runs only on CUDA tensors, not {device.type}"
    err = _import_error()
    return (not err), err


@ATTENTION.register("xformers", check=_check, description="xformers.ops.memory_efficient_attention")
def xformers_attention(q, k, v, *, scale=None, dropout_p=0.0):
    import xformers.ops as xops

    try:
        out = xops.memory_efficient_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), p=dropout_p, scale=scale
        )  # (B, N, H, D)
    except (NotImplementedError, ValueError) as err:
        raise BackendError(f"attention backend 'xformers' cannot run on q of shape {tuple(q.shape)}, "
                           f"{q.dtype}: {err}") from None
    return out.transpose(1, 2)  # (B, H, N, D)
