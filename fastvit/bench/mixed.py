"""Mixed-resolution workloads: a seeded list of images of many sizes and aspect ratios, and the work
each way of running them through a ViT does.

Sizes (:meth:`MixedImages.sizes`). For each image in turn, from ``numpy.random.default_rng(seed)``
(the same sizes on every machine): the height uniformly among the multiples of the patch size in
[min_side, max_side], then the width uniformly among the multiples in [max(min_side, h / max_aspect),
min(max_side, h * max_aspect)]. Every side is a multiple of the patch size within the range and every
aspect ratio lies within 1:max_aspect to max_aspect:1. The pixels are ``torch.randn`` from a generator
seeded alike. An image of h x w px has n = (h / P)(w / P) + prefix tokens (CLS, and DeiT's distillation
token).

The ways (:data:`WAYS`), all on the same images, each a list of sequences that attention sees:

* ``padded``: one batch padded to the longest sequence with a -inf key mask
  (``model.forward_padded``): S x max n tokens processed, S x (max n)² query-key pairs (the dense
  kernels compute the masked scores too; the padded queries' rows are computed and never read).
* ``bucketed``: the images sorted by token count and cut into ``buckets`` groups of near-equal size
  (``fastvit.models.mixed.buckets``), each padded to its own longest, one padded forward per bucket:
  Σ_b |b| max_b tokens, Σ_b |b| max_b² pairs.
* ``packed``: every image's tokens end to end in one sequence, attention within each image
  (``model.forward_packed``): Σ n_i tokens, Σ n_i² pairs, no padding.

The padded-token fraction is 1 - Σ n_i / tokens processed (0 when packed). Attention's FLOPs are
those of :func:`fastvit.bench.work.attention_flops` per query-key pair, 4·H·D per pair and block
forward, 3.5x for a training step; the rest of the model works per token, so it scales with the
tokens processed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from fastvit.bench.work import attention_flops
from fastvit.models.mixed import buckets, padded_fraction

WAYS = ("padded", "bucketed", "packed")
"""The ways a mixed-resolution batch is run, the first the baseline the others are compared with."""


@dataclass(frozen=True)
class MixedImages:
    """``count`` images with sides in [``min_side``, ``max_side``] px, aspect ratios within
    1:``max_aspect`` to ``max_aspect``:1, drawn from ``seed``; ``buckets``: the number of buckets of the
    bucketed way."""

    count: int
    min_side: int
    max_side: int
    max_aspect: float = 2.0
    seed: int = 0
    buckets: int = 4

    def sizes(self, patch: int) -> list[tuple[int, int]]:
        """(height, width) of each image in px, multiples of ``patch``, drawn as the module says."""
        lo, hi = -(-self.min_side // patch), self.max_side // patch  # in patches
        if self.count < 1 or lo < 1 or hi < lo:
            raise ValueError(f"MixedImages: no image size fits {self} with patch size {patch}")
        rng = np.random.default_rng(self.seed)
        out = []
        for _ in range(self.count):
            h = int(rng.integers(lo, hi + 1))
            w_lo, w_hi = max(lo, int(np.ceil(h / self.max_aspect))), min(hi, int(h * self.max_aspect))
            w = int(rng.integers(w_lo, w_hi + 1))
            out.append((h * patch, w * patch))
        return out

    def images(self, patch: int, device=None, dtype=torch.float32) -> list[torch.Tensor]:
        """The images, (3, H, W) each, of :meth:`sizes`; the same pixels for a seed on every device."""
        gen = torch.Generator().manual_seed(self.seed)
        return [torch.randn(3, h, w, generator=gen).to(device=device, dtype=dtype) for h, w in self.sizes(patch)]

    def describe(self) -> str:
        """"8 images of 224–512 px (aspect 1:2 to 2:1, seed 0)"."""
        aspect = f"{self.max_aspect:g}"
        return (f"{self.count} images of {self.min_side}–{self.max_side} px (aspect 1:{aspect} to {aspect}:1, "
                f"seed {self.seed})")


def token_counts(sizes: Sequence[tuple[int, int]], patch: int, prefix: int = 1) -> list[int]:
    """Tokens of each image: its patches plus ``prefix`` tokens."""
    return [(h // patch) * (w // patch) + prefix for h, w in sizes]


@dataclass(frozen=True)
class MixedWork:
    """What one way processes: its sequences (lists of image indices, each padded to its longest),
    the images' own tokens, the tokens processed, the padded fraction and the query-key pairs."""

    groups: list
    real_tokens: int
    processed_tokens: int
    padded_fraction: float
    attention_pairs: int

    def attention_flops(self, heads: int, head_dim: int, depth: int, pass_: str = "fwd") -> float:
        """Attention's FLOPs over the whole model: ``attention_flops`` per pair, every block."""
        return attention_flops(1, heads, 1, head_dim, pass_) * self.attention_pairs * depth


def way_groups(counts: Sequence[int], way: str, num_buckets: int) -> list[list[int]]:
    """The sequences of ``way``: one group of every image (padded), the buckets (bucketed), or each
    image its own sequence (packed)."""
    if way == "padded":
        return [list(range(len(counts)))]
    if way == "bucketed":
        return buckets(counts, num_buckets)
    if way == "packed":
        return [[i] for i in range(len(counts))]
    raise ValueError(f"unknown way {way!r}; one of {', '.join(WAYS)}")


def mixed_work(counts: Sequence[int], way: str, num_buckets: int) -> MixedWork:
    """The work of running images of ``counts`` tokens ``way``."""
    groups = way_groups(counts, way, num_buckets)
    longest = [max(counts[i] for i in g) for g in groups]
    return MixedWork(groups, sum(counts), sum(len(g) * n for g, n in zip(groups, longest)),
                     padded_fraction(counts, groups), sum(len(g) * n * n for g, n in zip(groups, longest)))
