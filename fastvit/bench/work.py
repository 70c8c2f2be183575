"""Work models: the FLOPs and bytes behind the throughput columns of a report.

Tokens of a square image: N = (res / patch)^2 + 1 (the patches plus the CLS token). Attention's work
grows as N^2; everything else in a ViT as N.
"""
from __future__ import annotations

from typing import Callable

import torch


def num_tokens(resolution: int, patch: int, prefix: int = 1) -> int:
    """Tokens of a square image: (res / patch)^2 patches plus ``prefix`` tokens (the CLS token)."""
    return (resolution // patch) ** 2 + prefix


def attention_flops(batch: int, heads: int, tokens: int, head_dim: int, pass_: str = "fwd") -> float:
    """softmax(q k^T) v on (B, H, N, D): forward 4 * B * H * N^2 * D (two N x N x D matmuls of
    2 * N^2 * D FLOPs each); backward 2.5x the forward (five matmuls, counting the recomputed
    q k^T, as FlashAttention and PyTorch's SDPA benchmarks do), so a training step is 3.5x."""
    fwd = 4.0 * batch * heads * tokens ** 2 * head_dim
    return fwd * (3.5 if pass_ == "train" else 1.0)


def model_flops(build: Callable[[], torch.nn.Module], images_shape: tuple, pass_: str = "fwd") -> float:
    """FLOPs of a whole model's forward, counted by ``torch.utils.flop_counter.FlopCounterMode`` on the
    meta device, where nothing is allocated or computed: 2 x MACs of every matmul and convolution,
    attention's matmuls included; norms, softmax and elementwise ops are not counted. A training step
    counts the backward as 2x the forward, so 3x in all (the usual convention; counting the backward's
    kernels instead would depend on how each library writes its gradients). ``build`` makes the
    model (called under ``torch.device("meta")``); the count serves every library's build of one
    architecture."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build().eval().requires_grad_(False)  # no autograd bookkeeping for the counter's hooks
        images = torch.empty(images_shape)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(images)
    return float(counter.get_total_flops()) * (3.0 if pass_ == "train" else 1.0)


def add_layer_norm_bytes(rows: int, hidden: int, elem: int, pass_: str = "fwd") -> float:
    """Bytes a fused ``y = LN(x + residual)`` (also returning ``s = x + residual``) must move.

    Forward: read x and residual, write y and s (4 * M * E elements, plus weight and bias).
    Backward: read dy, ds and s, write dx (which is also d residual), 4 * M * E, plus the
    parameters and their gradients. An unfused implementation moves more; every backend is
    charged the same minimum, so GB/s compares like with like (the "effective bandwidth")."""
    fwd = (4 * rows * hidden + 2 * hidden) * elem
    bwd = (4 * rows * hidden + 4 * hidden) * elem
    return float(fwd + (bwd if pass_ == "train" else 0))


def patch_embed_bytes(batch: int, chans: int, resolution: int, patch: int, embed: int, elem: int,
                      pass_: str = "fwd") -> float:
    """Bytes of the token stem: read the images, the (E, C, P, P) weight, bias, CLS row and position
    embedding, write (B, 1 + N, E) tokens. Backward (the images need no gradient): read the token
    gradient and the images again, write the weight, bias, CLS and position-embedding gradients."""
    tokens = num_tokens(resolution, patch)
    images = batch * chans * resolution * resolution
    weight = embed * chans * patch * patch
    out = batch * tokens * embed
    params = weight + embed + tokens * embed + embed
    fwd = images + params + out
    bwd = out + images + params
    return float((fwd + (bwd if pass_ == "train" else 0)) * elem)


def patch_embed_flops(batch: int, chans: int, resolution: int, patch: int, embed: int, pass_: str = "fwd") -> float:
    """2 * MACs of the patch GEMM (B * N, C * P * P) x (C * P * P, E); the weight gradient doubles
    it in a training step (the images need no gradient)."""
    fwd = 2.0 * batch * (resolution // patch) ** 2 * embed * chans * patch * patch
    return fwd * (2.0 if pass_ == "train" else 1.0)

