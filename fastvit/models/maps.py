"""Attention maps from any model, whatever backend it runs with.

Fused kernels never form the (N, N) probabilities, so they are computed on the side: a forward hook
on every attention module of the model -- every module whose ``op`` is ``"attention"``, the same
mark ``set_backend`` goes by -- takes the module's input and recomputes softmax(q k^T * scale + bias)
from the module's own projection (``split_heads(x) -> q, k, v``) and the ``bias`` it was called with
(Swin's relative position bias and shift mask): that pair is what an attention module exposes so
its probabilities can be recomputed. The model's forward itself is unchanged.
"""
from __future__ import annotations

import torch

from fastvit.ops.attention import attention_probs


def _probs(module, args, kwargs) -> torch.Tensor:
    """The probabilities ``module(*args, **kwargs)`` used, in float32."""
    q, k, _ = module.split_heads(args[0])  # (B, H, N, D)
    bias = kwargs.get("bias", args[1] if len(args) > 1 else None)
    scale = getattr(module, "scale", None)
    return attention_probs(q.float(), k.float(), scale, None if bias is None else bias.float())  # (B, H, N, N)


@torch.no_grad()
def attention_maps(model, images: torch.Tensor) -> list[torch.Tensor]:
    """Each attention layer's probabilities, in the order the layers run, in float32, computed from
    the layer's actual input.

    Shapes: ViT, DeiT: (B, H, N, N) per block, N counting the prefix tokens (N + 1 for ViT, N + 2
    for distilled DeiT); PiT: (B, H_i, 1 + h_i w_i, 1 + h_i w_i) per block, CLS first; Swin:
    (B * nW, H_i, ws^2, ws^2) per block, the windows batch-major (window w of image b at b * nW + w),
    including the relative position bias and, in shifted blocks, the shift mask -- the probabilities
    the block used.
    """
    maps: list[torch.Tensor] = []

    def hook(module, args, kwargs, output):
        maps.append(_probs(module, args, kwargs))

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in model.modules()
               if getattr(m, "op", None) == "attention"]
    try:
        model(images)
    finally:
        for h in handles:
            h.remove()
    return maps
