"""``naive``: softmax(q k^T * scale + bias) v with the full (B, H, N, N) matrix materialized.

The memory baseline (it holds the N x N scores and probabilities) and the reference the others are
held to. Runs anywhere torch does, in the inputs' own precision. :func:`attention_probs` is also what
``fastvit.attention_maps`` computes.
"""
import torch
import torch.nn.functional as F

from fastvit.ops.attention.registry import register


def attention_probs(q: torch.Tensor, k: torch.Tensor, scale: float | None = None,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T * scale + bias) on (B, H, N, D) inputs: (B, H, N, N) probabilities."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = (q * scale) @ k.transpose(-2, -1)  # (B, H, N, N)
    if bias is not None:
        scores = scores + bias
    return scores.softmax(dim=-1)


@register("naive", description="explicit softmax(q k^T) v, N x N materialized", reference=True,
          materializes=True, takes_bias=True)
def naive_attention(q, k, v, *, scale=None, dropout_p=0.0, bias=None):
    probs = attention_probs(q, k, scale, bias)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p, training=True)
    return probs @ v  # (B, H, N, D)
