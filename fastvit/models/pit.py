"""PiT, the Pooling-based Vision Transformer (Heo et al. 2021, "Rethinking Spatial Dimensions of
Vision Transformers"), timm-compatible (``timm.models.pit.PoolingVisionTransformer``).

images (B, C, H, W)
  -> patch_embed.conv: Conv2d (kernel P, stride S, no padding)   (B, C_0, h, w), h = floor((H - P) / S) + 1
  -> + pos_embed (1, C_0, h, w), a spatial map added before any token exists
  -> stage i = 0..2, width C_i = base_dims[i] * num_heads[i]:
       pool (i > 0): the map through a grouped 3x3 stride-2 Conv2d (C_{i-1} -> C_i, groups C_{i-1}),
                     the CLS token through a Linear (C_{i-1} -> C_i)      (B, C_i, ceil(h/2), ceil(w/2))
       tokens [CLS, map flattened]                                       (B, 1 + h_i w_i, C_i)
       depth_i ViT blocks (fastvit.models.vit.Block: pre-norm, fused qkv attention, GELU MLP)
       split back into CLS (B, 1, C_i) and the map (B, C_i, h_i, w_i)
  -> LayerNorm on the CLS token only -> head                           (B, num_classes)

The blocks are the ViT's, so every attention and LayerNorm backend serves PiT, and each block hands
its MLP branch to the next LayerNorm to add (fused with the triton norm backend); the stem and the
pooling are PiT's own convolutions, not the patch op. A model runs at its ``img_size``; a checkpoint
of another resolution has its position map resampled by load_checkpoint (bicubic, antialiased, as
timm resamples ViT embeddings; timm itself has no PiT resampling). LayerNorm eps 1e-6 as timm's PiT.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from fastvit.errors import ConfigError, ResolutionError
from fastvit.models.base import BackendModel, check_images, check_integers, check_positive, check_rates
from fastvit.models.pos_embed import resample_pos_embed_map
from fastvit.models.vit import Block, ViTConfig
from fastvit.ops import ATTENTION, NORM, PATCH, LayerNorm


@dataclass
class PiTConfig:
    img_size: int | tuple[int, int] = 224
    patch_size: int = 16                      # stem kernel
    stride: int = 8                           # stem stride
    in_chans: int = 3
    num_classes: int = 1000
    base_dims: tuple[int, ...] = (48, 48, 48)  # channels per head, per stage
    depths: tuple[int, ...] = (2, 6, 4)       # blocks per stage
    num_heads: tuple[int, ...] = (2, 4, 8)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0        # dropout after the MLP layers, attention projection and head
    pos_drop_rate: float = 0.0    # dropout after the position embedding is added
    attn_drop_rate: float = 0.0   # dropout on the attention probabilities
    drop_path_rate: float = 0.0   # stochastic depth, rising linearly over all blocks
    norm_eps: float = 1e-6
    attn_backend: str | None = None
    norm_backend: str | None = None
    patch_backend: str | None = None  # unused: PiT's stem is its own convolution, not the patch op

    def __post_init__(self):
        if isinstance(self.img_size, int):
            self.img_size = (self.img_size, self.img_size)
        self.img_size, self.base_dims = tuple(self.img_size), tuple(self.base_dims)
        self.depths, self.num_heads = tuple(self.depths), tuple(self.num_heads)
        check_positive(self, "img_size", "patch_size", "stride", "in_chans", "base_dims", "depths", "num_heads",
                       "mlp_ratio", "norm_eps")
        check_integers(self, "img_size", "patch_size", "stride", "in_chans", "base_dims", "depths", "num_heads")
        check_rates(self, "drop_rate", "pos_drop_rate", "attn_drop_rate", "drop_path_rate")
        if not isinstance(self.num_classes, int) or self.num_classes < 0:
            raise ConfigError(f"PiTConfig.num_classes must be a non-negative integer, got {self.num_classes!r}")
        if not len(self.depths) == len(self.num_heads) == len(self.base_dims):
            raise ConfigError(f"PiTConfig.depths={self.depths}, num_heads={self.num_heads} and "
                              f"base_dims={self.base_dims} must have one entry per stage each")
        if min(self.img_size) < self.patch_size:
            raise ResolutionError(f"img_size {self.img_size} is smaller than the stem's kernel (patch size "
                                  f"{self.patch_size})")
        ATTENTION.validate(self.attn_backend)
        NORM.validate(self.norm_backend)
        PATCH.validate(self.patch_backend)

    @property
    def grid_size(self) -> tuple[int, int]:
        """The stem's output map (and pos_embed's grid)."""
        return tuple((side - self.patch_size) // self.stride + 1 for side in self.img_size)

    @property
    def stage_dims(self) -> list[int]:
        return [d * h for d, h in zip(self.base_dims, self.num_heads)]

    @property
    def stage_maps(self) -> list[tuple[int, int]]:
        maps = [self.grid_size]
        for _ in self.depths[1:]:
            maps.append(tuple(-(-side // 2) for side in maps[-1]))  # the pooling's ceil(side / 2)
        return maps

    def stage_config(self, i: int) -> ViTConfig:
        """Stage i's blocks are those of a ViT of width C_i over its map (of patch size 1)."""
        return ViTConfig(img_size=self.stage_maps[i], patch_size=1, num_classes=0, embed_dim=self.stage_dims[i],
                         depth=self.depths[i], num_heads=self.num_heads[i], mlp_ratio=self.mlp_ratio,
                         qkv_bias=self.qkv_bias, drop_rate=self.drop_rate, attn_drop_rate=self.attn_drop_rate,
                         norm_eps=self.norm_eps, attn_backend=self.attn_backend, norm_backend=self.norm_backend)


class ConvEmbedding(nn.Module):
    def __init__(self, cfg: PiTConfig):
        super().__init__()
        self.conv = nn.Conv2d(cfg.in_chans, cfg.stage_dims[0], kernel_size=cfg.patch_size, stride=cfg.stride)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images)  # (B, C_0, h, w)


class Pooling(nn.Module):
    """The map through a depthwise-grouped 3x3 stride-2 Conv2d (output channel o reads input channel
    o // (C_out / C_in)), the CLS token through a Linear."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, kernel_size=3, stride=2, padding=1, groups=in_dim)
        self.fc = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor, cls: torch.Tensor):
        return self.conv(x), self.fc(cls)  # (B, C_out, ceil(h/2), ceil(w/2)), (B, T, C_out)


class PiTStage(nn.Module):
    def __init__(self, cfg: PiTConfig, index: int, drop_path_ps: list[float]):
        super().__init__()
        self.pool = Pooling(cfg.stage_dims[index - 1], cfg.stage_dims[index]) if index > 0 else None
        stage_cfg = cfg.stage_config(index)
        self.blocks = nn.ModuleList(Block(stage_cfg, p) for p in drop_path_ps)

    def forward(self, x: torch.Tensor, cls: torch.Tensor):
        """Map (B, C, h, w) and CLS (B or 1, T, C) -> tokens (B, T + h_i w_i, C_i) and the last block's
        pending MLP branch (the tokens are their sum)."""
        if self.pool is not None:
            x, cls = self.pool(x, cls)
        cls = cls.expand(x.shape[0], -1, -1)  # (B, T, C_i)
        tokens, pending = torch.cat([cls, x.flatten(2).transpose(1, 2)], dim=1), None  # CLS first
        for blk in self.blocks:
            tokens, pending = blk(tokens, pending)
        return tokens, pending


class PoolingVisionTransformer(BackendModel):
    def __init__(self, cfg: PiTConfig):
        super().__init__()
        self.cfg = cfg
        C0 = cfg.stage_dims[0]
        self.patch_embed = ConvEmbedding(cfg)
        self.pos_embed = nn.Parameter(torch.zeros(1, C0, *cfg.grid_size))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C0))
        self.pos_drop = nn.Dropout(cfg.pos_drop_rate)
        total = sum(cfg.depths)
        rates = [cfg.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        starts = [sum(cfg.depths[:i]) for i in range(len(cfg.depths))]
        self.transformers = nn.ModuleList(PiTStage(cfg, i, rates[s:s + d])
                                          for i, (s, d) in enumerate(zip(starts, cfg.depths)))
        self.norm = LayerNorm(cfg.stage_dims[-1], cfg.norm_eps, cfg.norm_backend)
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = nn.Linear(cfg.stage_dims[-1], cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self):
        """Truncated normal(0.02) for the position map, CLS token and Linear weights, zero biases: the
        ViT's (timm's PiT initialises only the first two so, leaving PyTorch's default Linear init, whose
        weights are several times larger)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def op_shapes(self) -> dict[str, list[dict]]:
        cfg = self.cfg
        return {"attention": [{"head_dim": d} for d in dict.fromkeys(cfg.base_dims)],
                "norm": [{"hidden": d} for d in dict.fromkeys(cfg.stage_dims)]}

    def resample_state(self, key: str, value: torch.Tensor) -> torch.Tensor | None:
        """A checkpoint's (1, C, h, w) position map resampled to this model's grid."""
        if key != "pos_embed" or value.dim() != 4:
            return None
        return resample_pos_embed_map(value, self.cfg.grid_size)

    # -- forward ----------------------------------------------------------------------------------
    def check_images(self, images: torch.Tensor) -> None:
        cfg = self.cfg
        check_images(images, cfg.in_chans, self.pos_embed)
        H, W = images.shape[-2:]
        if (H, W) != cfg.img_size:
            raise ResolutionError(f"image size {H}x{W} differs from the model's {cfg.img_size[0]}x{cfg.img_size[1]}; "
                                  f"build the model with img_size=({H}, {W}) (load_checkpoint resamples pos_embed)")

    def stages(self, images: torch.Tensor):
        """Yield each stage's (tokens, pending): its tokens [CLS, map] are their sum (B, T + h_i w_i, C_i)."""
        self.check_images(images)
        x = self.pos_drop(self.patch_embed(images) + self.pos_embed)  # (B, C_0, h, w)
        cls = self.cls_token  # (1, T, C_0), expanded to the batch by the first stage
        T, last = cls.shape[1], len(self.transformers) - 1
        for i, (stage, (h, w)) in enumerate(zip(self.transformers, self.cfg.stage_maps)):
            tokens, pending = stage(x, cls)
            yield tokens, pending
            if i < last:
                tokens = tokens + pending
                cls, x = tokens[:, :T], tokens[:, T:].transpose(1, 2).reshape(x.shape[0], -1, h, w)

    def stage_outputs(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Each stage's map (B, C_i, h_i, w_i) (timm's forward_intermediates)."""
        T = self.cls_token.shape[1]
        return [(t + p)[:, T:].transpose(1, 2).reshape(t.shape[0], -1, h, w)
                for (t, p), (h, w) in zip(self.stages(images), self.cfg.stage_maps)]

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """The CLS token(s) after the final norm, (B, T, C) (timm's forward_features)."""
        *_, (tokens, pending) = self.stages(images)
        T = self.cls_token.shape[1]
        return self.norm.add_forward(pending[:, :T], tokens[:, :T])[0]

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(x[:, 0]))  # (B, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))
