"""The patch-embedding op's registry. Every backend computes the whole token stem,
``(images, weight, bias, pos_embed, prefix) -> tokens``: patchify, project with the Conv2d-layout
weight (E, C, P, P), add the bias, put the prefix rows (the CLS token, and DeiT's distillation token)
first and add the position embedding, giving (B, T + N, E) for T prefix tokens."""
import torch

from fastvit.registry import Registry

PATCH = Registry("patch", "FASTVIT_PATCH_BACKEND", "conv", keys=("patch_size", "prefix_tokens"),
                 probe_shape={"patch_size": 16, "prefix_tokens": 1})


def prepend(patches: torch.Tensor, pos_embed: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
    """(B, N, E) patch rows -> (B, T + N, E): the (1, T, E) prefix rows first, plus the position embedding."""
    return torch.cat([prefix.expand(patches.shape[0], -1, -1), patches], dim=1) + pos_embed
