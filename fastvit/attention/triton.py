"""``triton``: fastvit's own flash attention kernel (kernels.flash_attention)."""
from __future__ import annotations

from fastvit._triton import triton_check
from fastvit.backends import ATTENTION
from fastvit.errors import BackendError


def _check(device, dtype, head_dim=64, **shape):
    ok, reason = triton_check(device, dtype)
    if not ok:
        return ok, reason
    from kernels.flash_attention import head_dim_supported

    return head_dim_supported(int(head_dim))


@ATTENTION.register("triton", check=_check, description="fastvit Triton flash attention (fwd + bwd)")
def triton_attention(q, k, v, *, scale=None, dropout_p=0.0):
    if dropout_p > 0.0:
        raise BackendError("attention backend 'triton' has no attention dropout; "
                           f"got dropout_p={dropout_p} (use attn_drop_rate=0 or another backend)")
    from kernels import flash_attention

    return flash_attention(q, k, v, scale=scale)
