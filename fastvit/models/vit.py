"""The reference Vision Transformer (ViT, Dosovitskiy et al. 2021), timm-compatible.

images (B, C, H, W)
  -> patch embedding, CLS token, position embedding      (B, 1 + N, E), N = (H / P) * (W / P)
  -> depth x Block: x + Attn(LN(x)), then x + MLP(LN(x))  (pre-norm; post-norm as an option)
  -> LayerNorm -> head on the CLS token                  (B, num_classes)

Parameter names and shapes equal timm's VisionTransformer, so timm state dicts load unchanged.
Attention, LayerNorm and patch embedding each dispatch to a swappable backend (fastvit.ops).

Residual stream and fused add + LayerNorm: a pre-norm block's residual add is always followed by a
LayerNorm (the block's norm2, the next block's norm1, or the final norm). Blocks therefore hand the
next LayerNorm the stream ``x`` and the branch output not yet added, ``pending``, and the norm does
``s = x + pending; y = LN(s)`` in one call -- one fused pass over memory with the triton norm backend,
and the same arithmetic as ``x = x + branch`` with the torch one.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from fastvit.errors import ConfigError, ResolutionError
from fastvit.models.base import (BackendModel, check_choice, check_divisible, check_images, check_positive,
                                 check_rates)
from fastvit.models import mixed
from fastvit.models.pos_embed import resample_pos_embed
from fastvit.ops import ATTENTION, NORM, PATCH, Attention, LayerNorm, PatchEmbed


@dataclass
class ViTConfig:
    img_size: int | tuple[int, int] = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0        # dropout after the MLP layers, attention projection and head
    pos_drop_rate: float = 0.0    # dropout after the position embedding is added
    attn_drop_rate: float = 0.0   # dropout on the attention probabilities
    drop_path_rate: float = 0.0   # stochastic depth, linearly increasing over the blocks
    norm_eps: float = 1e-6
    norm_position: str = "pre"    # "pre" (ViT) or "post" (original Transformer)
    mlp_act: str = "gelu"         # "gelu" (exact, as timm) or "relu"
    dynamic_img_size: bool = False
    attn_backend: str | None = None
    norm_backend: str | None = None
    patch_backend: str | None = None

    def __post_init__(self):
        if isinstance(self.img_size, int):
            self.img_size = (self.img_size, self.img_size)
        self.img_size = tuple(self.img_size)
        check_positive(self, "img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads", "mlp_ratio",
                       "norm_eps")
        check_rates(self, "drop_rate", "pos_drop_rate", "attn_drop_rate", "drop_path_rate")
        if not isinstance(self.num_classes, int) or self.num_classes < 0:
            raise ConfigError(f"ViTConfig.num_classes must be a non-negative integer, got {self.num_classes!r}")
        for side in self.img_size:
            if side % self.patch_size:
                raise ResolutionError(f"img_size {self.img_size} is not divisible by patch size {self.patch_size}")
        check_divisible(self, "embed_dim", "num_heads")
        check_choice(self, "norm_position", ("pre", "post"))
        check_choice(self, "mlp_act", ("gelu", "relu"))
        ATTENTION.validate(self.attn_backend)
        NORM.validate(self.norm_backend)
        PATCH.validate(self.patch_backend)

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size

    @property
    def num_tokens(self) -> int:
        return self.grid_size[0] * self.grid_size[1] + 1


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero a sample's whole branch with probability p, rescale the rest."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - p)
    return x * keep / (1.0 - p)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str, drop: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU() if act == "gelu" else nn.ReLU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Block(nn.Module):
    """One transformer block. ``forward(x, pending) -> (x, pending)``: see the module docstring."""

    def __init__(self, cfg: ViTConfig, drop_path_p: float):
        super().__init__()
        dim = cfg.embed_dim
        self.pre_norm = cfg.norm_position == "pre"
        self.drop_path_p = drop_path_p
        self.norm1 = LayerNorm(dim, cfg.norm_eps, cfg.norm_backend)
        self.attn = Attention(dim, cfg.num_heads, cfg.qkv_bias, cfg.attn_drop_rate, cfg.drop_rate, cfg.attn_backend)
        self.norm2 = LayerNorm(dim, cfg.norm_eps, cfg.norm_backend)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), cfg.mlp_act, cfg.drop_rate)

    def _branch(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_path_p, self.training)

    def forward(self, x: torch.Tensor, pending: torch.Tensor | None = None, **attention_args):
        """``attention_args``: ``bias`` or ``packing`` for the attention (fastvit/models/mixed.py), or
        ``attend``, a function replacing it (fastvit/distributed/sharded.py)."""
        if not self.pre_norm:
            # post-norm: x = LN(x + Attn(x)); x = LN(x + MLP(x))
            x = self.norm1.add_forward(self._branch(self.attn(x, **attention_args)), x)[0]
            x = self.norm2.add_forward(self._branch(self.mlp(x)), x)[0]
            return x, None
        if pending is None:
            h = self.norm1(x)
        else:
            h, x = self.norm1.add_forward(pending, x)  # x <- x + pending
        h, x = self.norm2.add_forward(self._branch(self.attn(h, **attention_args)), x)  # x <- x + Attn(LN(x))
        return x, self._branch(self.mlp(h))  # the MLP branch is added by the next norm


class VisionTransformer(BackendModel):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        E = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, E, cfg.patch_backend)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, E))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, E))
        self.pos_drop = nn.Dropout(cfg.pos_drop_rate)
        # stochastic-depth rates rising linearly over the blocks (plain floats: no tensor, so the model
        # can also be built on the meta device)
        rates = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(Block(cfg, rates[i]) for i in range(cfg.depth))
        self.norm = LayerNorm(E, cfg.norm_eps, cfg.norm_backend)
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = nn.Linear(E, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self):
        """timm's default initialisation: truncated normal(0.02) for weights, zero biases."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def op_shapes(self) -> dict[str, list[dict]]:
        cfg = self.cfg
        return {"attention": [{"head_dim": cfg.embed_dim // cfg.num_heads}], "norm": [{"hidden": cfg.embed_dim}],
                "patch": [{"patch_size": cfg.patch_size, "prefix_tokens": 1}]}

    # -- forward ----------------------------------------------------------------------------------
    def check_images(self, images: torch.Tensor, any_size: bool = False) -> tuple[int, int]:
        """Validate an image batch; return its patch grid (H / P, W / P). ``any_size``: a size other
        than the model's is accepted without ``dynamic_img_size`` (the mixed-resolution forwards)."""
        cfg = self.cfg
        check_images(images, cfg.in_chans, self.pos_embed)
        H, W = images.shape[-2:]
        if H % cfg.patch_size or W % cfg.patch_size:
            raise ResolutionError(f"image size {H}x{W} is not divisible by the patch size {cfg.patch_size}")
        if (H, W) != cfg.img_size and not (cfg.dynamic_img_size or any_size):
            raise ResolutionError(f"image size {H}x{W} differs from the model's {cfg.img_size[0]}x{cfg.img_size[1]}; "
                                  "build the model with img_size=... or dynamic_img_size=True")
        return H // cfg.patch_size, W // cfg.patch_size

    def prefix_tokens(self) -> torch.Tensor:
        """The (1, T, E) rows before the patches: [CLS]."""
        return self.cls_token

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        grid = self.check_images(images)
        pos_embed = resample_pos_embed(self.pos_embed, grid, self.cfg.grid_size,
                                       num_prefix_tokens=self.num_prefix_tokens)  # (1, T + N, E)
        return self.pos_drop(self.patch_embed(images, pos_embed, self.prefix_tokens()))  # (B, T + N, E)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        x, pending = self.embed(images), None
        for blk in self.blocks:
            x, pending = blk(x, pending)
        if pending is None:
            return self.norm(x)
        return self.norm.add_forward(pending, x)[0]  # (B, 1 + N, E)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(x[:, 0]))  # CLS token -> (B, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))

    def forward_packed(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Logits (S, num_classes) of S images (C, H, W) of any sizes, packed into one sequence with
        attention within each image (fastvit/models/mixed.py)."""
        return mixed.forward_packed(self, images)

    def forward_padded(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Logits (S, num_classes) of S images (C, H, W) of any sizes, padded to the longest token
        sequence with a key mask (fastvit/models/mixed.py)."""
        return mixed.forward_padded(self, images)
