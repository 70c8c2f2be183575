"""The patch-embedding module the ViT-family models use."""
from __future__ import annotations

import torch
import torch.nn as nn

from fastvit.ops.patch.functional import patch_embed
from fastvit.ops.patch.registry import PATCH


class PatchEmbed(nn.Module):
    """Images (B, C, H, W) -> tokens (B, T + N, E), N = (H / P) * (W / P), T prefix tokens.

    Holds ``proj`` as an nn.Conv2d so the state-dict keys (``patch_embed.proj.*``) match timm's for
    every backend. ``backend=None`` follows ``use_backend(patch=...)``, FASTVIT_PATCH_BACKEND, ``conv``.
    """

    op = "patch"

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, backend: str | None = None):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.backend = PATCH.validate(backend)

    def forward(self, images: torch.Tensor, pos_embed: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        return patch_embed(images, self.proj.weight, self.proj.bias, pos_embed, prefix, backend=self.backend)
