"""DeiT (Touvron et al. 2021, "Training data-efficient image transformers"), timm-compatible.

The architecture is the ViT's (fastvit.models.vit); DeiT adds, when ``distilled``, a distillation
token and a second head:

images (B, C, H, W)
  -> patch embedding, [CLS, DIST] tokens first, position embedding   (B, 2 + N, E)
  -> the ViT's blocks and final LayerNorm                           (B, 2 + N, E)
  -> head(CLS), head_dist(DIST)                                     2 x (B, num_classes)
  -> their mean; in training with ``set_distilled_training(True)``, the pair (head, head_dist)

The position embedding covers all N + 2 tokens (it is added after the tokens are concatenated) and is
resampled with its two prefix rows kept, for checkpoints of another resolution and for
``dynamic_img_size``. Without ``distilled`` a DeiT is exactly a ViT (the four plain DeiT presets have
the ViT presets' layouts; only their training recipe differs). Parameter names and shapes are timm's
(``VisionTransformerDistilled``: ``dist_token``, ``head_dist``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from fastvit.errors import ConfigError
from fastvit.models.vit import ViTConfig, VisionTransformer


@dataclass
class DeiTConfig(ViTConfig):
    distilled: bool = False  # add the distillation token and head_dist

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.distilled, bool):
            raise ConfigError(f"DeiTConfig.distilled must be True or False, got {self.distilled!r}")

    @property
    def num_prefix_tokens(self) -> int:
        return 2 if self.distilled else 1

    @property
    def num_tokens(self) -> int:
        return self.grid_size[0] * self.grid_size[1] + self.num_prefix_tokens


class DeiT(VisionTransformer):
    """A ViT with, when ``cfg.distilled``, DeiT's distillation token and head (see the module docstring)."""

    def __init__(self, cfg: DeiTConfig):
        super().__init__(cfg)  # pos_embed (1, N + num_prefix_tokens, E): cfg.num_tokens counts the prefix
        self.num_prefix_tokens = cfg.num_prefix_tokens
        self.distilled_training = False  # train mode returns (head, head_dist) only when this is set
        if cfg.distilled:
            E = cfg.embed_dim
            self.dist_token = nn.Parameter(torch.zeros(1, 1, E))
            self.head_dist = nn.Linear(E, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
            nn.init.trunc_normal_(self.dist_token, std=0.02)
            if cfg.num_classes > 0:
                nn.init.trunc_normal_(self.head_dist.weight, std=0.02)
                nn.init.zeros_(self.head_dist.bias)

    def set_distilled_training(self, enable: bool = True) -> None:
        """In train mode, return the two heads' logits as a tuple (for a distillation loss) instead of
        their mean. Eval mode always returns the mean."""
        self.distilled_training = enable

    def op_shapes(self) -> dict[str, list[dict]]:
        shapes = super().op_shapes()
        shapes["patch"] = [{**shape, "prefix_tokens": self.num_prefix_tokens} for shape in shapes["patch"]]
        return shapes

    def prefix_tokens(self) -> torch.Tensor:
        """The (1, T, E) rows before the patches: [CLS] or [CLS, DIST]."""
        if not self.cfg.distilled:
            return self.cls_token
        return torch.cat([self.cls_token, self.dist_token], dim=1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False):
        """(B, T + N, E) features -> logits (B, num_classes), or the pair of heads' logits (distilled
        training); ``pre_logits``: the features the heads read ((CLS + DIST) / 2 when distilled)."""
        if not self.cfg.distilled:
            return self.head_drop(x[:, 0]) if pre_logits else super().forward_head(x)
        x, x_dist = self.head_drop(x[:, 0]), self.head_drop(x[:, 1])  # (B, E) each
        if pre_logits:
            return (x + x_dist) / 2
        x, x_dist = self.head(x), self.head_dist(x_dist)
        if self.distilled_training and self.training:
            return x, x_dist
        return (x + x_dist) / 2
