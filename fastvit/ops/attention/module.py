"""The attention module the models use: multi-head self-attention with one fused qkv projection."""
from __future__ import annotations

import torch
import torch.nn as nn

from fastvit.ops.attention.functional import attention
from fastvit.ops.attention.packing import Packing
from fastvit.ops.attention.registry import ATTENTION


class Attention(nn.Module):
    """x (B, N, E) -> qkv Linear -> attention per head (any backend) -> proj Linear -> (B, N, E).

    Parameter names (``qkv``, ``proj``) are timm's. ``backend=None`` follows ``use_backend``, then
    FASTVIT_ATTN_BACKEND, then the default, at every call.
    """

    op = "attention"

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, backend: str | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attn_drop = attn_drop
        self.backend = ATTENTION.validate(backend)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv.unbind(0)  # 3 x (B, H, N, D), views into the projection

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None, packing: Packing | None = None,
                attend=None) -> torch.Tensor:
        """``packing``: x is (1, T, E), sequences end to end, each attending only to itself.
        ``attend``: None (the attention op, with this module's backend), or a function
        ``attend(q, k, v, *, bias, dropout_p)`` that replaces it for this call, e.g. ring attention
        over a sequence sharded across processes (fastvit/distributed/sharded.py)."""
        B, N, C = x.shape
        q, k, v = self.split_heads(x)
        dropout_p = self.attn_drop if self.training else 0.0
        if attend is None:
            out = attention(q, k, v, backend=self.backend, bias=bias, packing=packing, dropout_p=dropout_p)
        else:
            out = attend(q, k, v, bias=bias, dropout_p=dropout_p)
        out = out.transpose(1, 2).reshape(B, N, C)  # (B, N, E)
        return self.proj_drop(self.proj(out))
