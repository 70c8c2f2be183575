"""``naive``: softmax(q k^T * scale + bias) v with the full (B, H, N, N) matrix materialized.

The memory baseline (it holds the N x N scores and probabilities) and the reference the others are
held to. Runs anywhere torch does, in the inputs' own precision. :func:`attention_probs` is also what
``fastvit.attention_maps`` computes.

A fully masked row (every score -inf, possible only with a bias) is defined as attending to nothing:
probabilities and output 0, gradients 0 (fastvit.attention's semantics). The plain softmax gives NaN
there, and its backward spreads the NaN to dk and dv of the whole (batch, head) slice; here such a
row's scores are set to 0 before the softmax (in place: no extra N x N tensor), and its output row is
zeroed after it, so no gradient reaches the row's probabilities. Other rows are computed exactly as
by the plain softmax, bit for bit.

Packed sequences (a Packing) become the packing's (T, T) block-diagonal bias: -inf between tokens of
different sequences. The reference materializes T x T scores, the whole packing's, as it does N x N.
"""
import torch
import torch.nn.functional as F

from fastvit.ops.attention.registry import register


def _probs(q, k, scale, bias):
    """(softmax(q k^T * scale + bias), the fully masked rows as a (B, H, N, 1) bool tensor or None);
    a fully masked row's probabilities are uniform here, for the caller to zero."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = (q * scale) @ k.transpose(-2, -1)  # (B, H, N, N)
    if bias is None:  # finite scores: no row can be fully masked
        return scores.softmax(dim=-1), None
    scores = scores + bias
    dead = scores.detach().amax(dim=-1, keepdim=True) == float("-inf")  # (B, H, N, 1)
    return scores.masked_fill_(dead, 0.0).softmax(dim=-1), dead


def attention_probs(q: torch.Tensor, k: torch.Tensor, scale: float | None = None,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T * scale + bias) on (B, H, N, D) inputs: (B, H, N, N) probabilities, 0 on a
    fully masked row."""
    probs, dead = _probs(q, k, scale, bias)
    return probs if dead is None else probs.masked_fill(dead, 0.0)


@register("naive", description="explicit softmax(q k^T) v, N x N materialized", reference=True,
          materializes=True, takes_bias=True, takes_packing=True)
def naive_attention(q, k, v, *, scale=None, dropout_p=0.0, bias=None, packing=None):
    if packing is not None:
        bias = packing.block_bias(q.dtype)
    probs, dead = _probs(q, k, scale, bias)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p, training=True)
    out = probs @ v  # (B, H, N, D)
    return out if dead is None else out.masked_fill(dead, 0.0)
