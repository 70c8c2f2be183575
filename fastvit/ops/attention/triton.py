"""``triton``: fastvit's own flash attention kernel (kernels.flash_attention), with the additive bias
read in place through its strides (Swin's relative position bias and shift mask) and its gradient.
Packed sequences run the kernel's varlen mode on the packing's device offsets (``cu_seqlens``) and
its longest length (``max_len``, a Python int): one custom op per pass, nothing read back."""
from __future__ import annotations

from fastvit.errors import BackendError
from fastvit.ops._triton import triton_check
from fastvit.ops.attention.registry import register


def _check(device, dtype, head_dim=64, bias=False, **shape):
    ok, reason = triton_check(device, dtype)
    if not ok:
        return ok, reason
    from kernels.flash_attention import head_dim_supported

    return head_dim_supported(int(head_dim))


@register("triton", check=_check, description="fastvit Triton flash attention (fwd + bwd, additive bias, packed)",
          own_kernel=True, takes_bias=True, takes_packing=True)
def triton_attention(q, k, v, *, scale=None, dropout_p=0.0, bias=None, packing=None):
    if dropout_p > 0.0:
        raise BackendError("attention backend 'triton' has no attention dropout; "
                           f"got dropout_p={dropout_p} (use attn_drop_rate=0 or another backend)")
    from kernels.flash_attention import flash_attention, flash_attention_varlen

    if packing is not None:
        return flash_attention_varlen(q, k, v, packing.cu_seqlens, packing.max_len, scale=scale)
    return flash_attention(q, k, v, bias=bias, scale=scale)
