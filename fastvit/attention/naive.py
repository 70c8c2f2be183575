"""``naive``: softmax(q k^T * scale) v with the full (B, H, N, N) matrix materialized.

The memory baseline (it holds the N x N scores and probabilities) and the reference the others are
held to. Runs anywhere torch does, in the inputs' own precision.
"""
import torch
import torch.nn.functional as F

from fastvit.backends import ATTENTION


def _always(device, dtype, **shape):
    return True, ""


@ATTENTION.register("naive", check=_always, description="explicit softmax(q k^T) v, N x N materialized")
def naive_attention(q, k, v, *, scale=None, dropout_p=0.0):
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = (q * scale) @ k.transpose(-2, -1)  # (B, H, N, N)
    probs = scores.softmax(dim=-1)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p, training=True)
    return probs @ v  # (B, H, N, D)
