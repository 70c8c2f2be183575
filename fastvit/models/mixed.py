"""Images of many sizes in one forward: packed into one sequence, or padded to the largest.

A ViT or DeiT takes a list of images, each (C, H, W) at its own size and aspect ratio (each side a
multiple of the patch size). Each image is embedded alone: its patches, its own prefix tokens
(CLS; DeiT's distillation token) and the position embedding resampled to its grid (bicubic,
antialiased, as ``dynamic_img_size`` does; the model need not be built with it). Then, two ways:

* **packed** (:func:`forward_packed`): the images' token sequences end to end in one (1, T, E)
  sequence, T = the sum of their token counts, with a :class:`~fastvit.ops.attention.packing.Packing`
  so that attention stays within each image. No padded token: attention does sum(n_i^2) work instead
  of S * max(n_i)^2. LayerNorms and MLPs act per token, so they see the packing as any batch.
* **padded** (:func:`forward_padded`): each sequence padded with zeros to the longest, a batch
  (S, max n, E), and a key mask (S, 1, 1, max n), -inf on the padded keys, as the attention bias.
  Padded query rows compute something, which no real token reads.

Either gives, per image, the logits the image alone gives (tests/test_mixed_resolution.py holds
every attention backend to that). Bucketing (images grouped by size, each group padded) is the
padded forward run per group: :func:`buckets` makes the groups.
"""
from __future__ import annotations

from typing import Sequence

import torch

from fastvit.errors import ArgumentError, DTypeError, ResolutionError, ShapeError
from fastvit.models.pos_embed import resample_pos_embed
from fastvit.ops.attention.packing import Packing


def check_image_list(model, images) -> list[torch.Tensor]:
    """``images`` as a list of (1, C, H, W) tensors, each checked as a one-image batch of the model's
    channels, dtype and device, with sides multiples of the patch size."""
    if isinstance(images, torch.Tensor) or not isinstance(images, (list, tuple)) or not images:
        raise ArgumentError("mixed-resolution forward: images must be a non-empty list of (C, H, W) tensors, "
                            f"got {type(images).__name__}")
    out, P = [], model.cfg.patch_size
    for i, img in enumerate(images):
        if not isinstance(img, torch.Tensor):
            raise DTypeError(f"mixed-resolution forward: image {i} is a {type(img).__name__}, not a tensor")
        if img.dim() != 3:
            raise ShapeError(f"mixed-resolution forward: image {i} must be 3-D (C, H, W), got shape {tuple(img.shape)}")
        H, W = img.shape[-2:]
        if H % P or W % P:
            raise ResolutionError(f"mixed-resolution forward: image {i} of size {H}x{W} is not divisible by the "
                                  f"patch size {P}")
        out.append(img[None])
        model.check_images(out[-1], any_size=True)
    return out


def embed_each(model, images: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Each image's tokens, (1, prefix + n_i, E): its patches, prefix tokens and position embedding
    resampled to its grid."""
    P, grid0, prefix = model.cfg.patch_size, model.cfg.grid_size, model.num_prefix_tokens
    tokens = []
    for img in check_image_list(model, images):
        grid = (img.shape[-2] // P, img.shape[-1] // P)
        pos = resample_pos_embed(model.pos_embed, grid, grid0, num_prefix_tokens=prefix)
        tokens.append(model.pos_drop(model.patch_embed(img, pos, model.prefix_tokens())))
    return tokens


def _run_blocks(model, x, **attention_args):
    pending = None
    for blk in model.blocks:
        x, pending = blk(x, pending, **attention_args)
    return model.norm(x) if pending is None else model.norm.add_forward(pending, x)[0]


def forward_packed(model, images: Sequence[torch.Tensor]) -> torch.Tensor:
    """Logits (S, num_classes) of S images of any sizes, run as one packed sequence."""
    tokens = embed_each(model, images)
    packing = Packing([t.shape[1] for t in tokens], tokens[0].device)
    x = _run_blocks(model, torch.cat(tokens, dim=1), packing=packing)  # (1, T, E)
    starts = torch.tensor(packing.offsets[:-1], device=x.device)
    prefix = torch.stack([x[0, starts + j] for j in range(model.num_prefix_tokens)], dim=1)  # (S, prefix, E)
    return model.forward_head(prefix)


def forward_padded(model, images: Sequence[torch.Tensor]) -> torch.Tensor:
    """Logits (S, num_classes) of S images of any sizes, run as one batch padded to the longest
    sequence with a key mask."""
    tokens = embed_each(model, images)
    lengths = [t.shape[1] for t in tokens]
    longest = max(lengths)
    x = torch.cat([torch.nn.functional.pad(t, (0, 0, 0, longest - t.shape[1])) for t in tokens])  # (S, n, E)
    keys = torch.arange(longest, device=x.device)
    padded = keys[None, :] >= torch.tensor(lengths, device=x.device)[:, None]  # (S, n)
    mask = torch.zeros(padded.shape, dtype=x.dtype, device=x.device).masked_fill_(padded, float("-inf"))
    bias = mask[:, None, None, :] if longest > min(lengths) else None  # (S, 1, 1, n); none when nothing is padded
    x = _run_blocks(model, x, bias=bias)
    return model.forward_head(x[:, :model.num_prefix_tokens])


def buckets(token_counts: Sequence[int], num_buckets: int) -> list[list[int]]:
    """Indices of the images grouped into at most ``num_buckets`` buckets of similar token counts
    (sorted by count, cut into groups of near-equal size): each bucket is padded to its own longest."""
    if not isinstance(num_buckets, int) or num_buckets < 1:
        raise ArgumentError(f"buckets: num_buckets must be a positive int, got {num_buckets!r}")
    order = sorted(range(len(token_counts)), key=lambda i: token_counts[i])
    n = min(num_buckets, len(order))
    bounds = [round(len(order) * b / n) for b in range(n + 1)]
    return [order[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def padded_fraction(token_counts: Sequence[int], groups: Sequence[Sequence[int]] | None = None) -> float:
    """The fraction of padded tokens when each group (default: all images) is padded to its longest."""
    groups = groups if groups is not None else [list(range(len(token_counts)))]
    total = sum(max(token_counts[i] for i in g) * len(g) for g in groups)
    return 1.0 - sum(token_counts) / total
