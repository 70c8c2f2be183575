"""Attention maps from any model, whatever backend it runs with.

Fused kernels never form the (N, N) probabilities, so they are computed on the side: a forward hook
on each attention layer takes the layer's input and recomputes softmax(q k^T * scale) from the same
qkv weights. The model's forward itself is unchanged.
"""
from __future__ import annotations

import torch

from fastvit.ops import Attention
from fastvit.ops.attention import attention_probs


@torch.no_grad()
def attention_maps(model, images: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's attention probabilities, a list of ``depth`` tensors of shape (B, H, N, N).

    Probabilities are computed in float32 (returned in float32) from the layer's actual input.
    """
    maps: list[torch.Tensor] = []

    def hook(module: Attention, args, output):
        q, k, _ = module.split_heads(args[0])  # (B, H, N, D)
        maps.append(attention_probs(q.float(), k.float()))  # (B, H, N, N)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, Attention)]
    try:
        model(images)
    finally:
        for h in handles:
            h.remove()
    return maps
