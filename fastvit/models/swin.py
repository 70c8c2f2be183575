"""Swin Transformer (Liu et al. 2021, "Hierarchical Vision Transformer using Shifted Windows"),
timm-compatible (``timm.models.swin_transformer.SwinTransformer``: parameter names, shapes, numerics).

images (B, C, H, W)
  -> patch_embed: Conv2d (kernel = stride = P), LayerNorm          (B, H/P, W/P, E)   NHWC throughout
  -> stage i = 0..S-1, width C_i = E * 2^i:
       downsample (i > 0): 2x2 neighbours -> 4 C_{i-1} channels -> LayerNorm -> Linear (no bias) -> C_i
       depth_i blocks: x + WindowAttn(LN(x)), then x + MLP(LN(x))  (odd blocks on shifted windows)
  -> LayerNorm -> mean over the map -> head.fc                     (B, num_classes)

Window attention: the map is cut into non-overlapping ws x ws windows (batch-major: window b * nW + w),
and attention runs inside each window, over N = ws^2 tokens, through ``fastvit.ops.attention`` with
an additive bias: the learned relative position bias, table[index] (1, heads, N, N), plus -- in the
shifted blocks -- the mask (nW, N, N) of 0 / -100 that keeps tokens brought together by the cyclic
shift (torch.roll by -ws/2) from attending across the map's wrap-around. The bias handed to the
backend is (1, heads, N, N), or (B * nW, heads, N, N) with the mask: every attention backend that
takes a bias serves Swin; those that take none say so through the registry (``bias=True``).

As timm decides at construction (``always_partition=False``): a stage whose map is not larger than
the window (per side) uses the map as its window, unshifted -- so the relative-position table's shape
follows the resolution there -- and a map that is not a multiple of the window is zero-padded at the
bottom/right after the shift, the padded tokens taking part unmasked. The masks are built for the
configured ``img_size``, so a model runs at that resolution only (build another with ``img_size=``;
the weights load unchanged while no stage's map falls below the window).

Residual stream: as in the ViT (fastvit.models.vit), a block hands the MLP branch to the next
LayerNorm (the next block's norm1, or the final norm) to add, fused with the triton norm backend.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from fastvit.errors import CheckpointError, ConfigError, ResolutionError
from fastvit.models.base import BackendModel, check_images, check_integers, check_positive, check_rates
from fastvit.models.vit import Mlp, drop_path
from fastvit.ops import ATTENTION, NORM, PATCH, Attention, LayerNorm, attention

MASK_VALUE = -100.0  # timm's (and the original Swin's) mask value, not -inf


@dataclass
class SwinConfig:
    img_size: int | tuple[int, int] = 224
    patch_size: int = 4
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 96                       # width of stage 0; stage i has embed_dim * 2^i
    depths: tuple[int, ...] = (2, 2, 6, 2)    # blocks per stage
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0        # dropout after the MLP layers, attention projection and head
    attn_drop_rate: float = 0.0   # dropout on the attention probabilities
    drop_path_rate: float = 0.0   # stochastic depth, rising linearly over all blocks (timm's default is 0.1)
    norm_eps: float = 1e-5        # plain nn.LayerNorm's, as timm's Swin
    attn_backend: str | None = None
    norm_backend: str | None = None
    patch_backend: str | None = None  # unused: Swin's stem is its own Conv2d + LayerNorm, not the patch op

    def __post_init__(self):
        if isinstance(self.img_size, int):
            self.img_size = (self.img_size, self.img_size)
        self.img_size, self.depths, self.num_heads = tuple(self.img_size), tuple(self.depths), tuple(self.num_heads)
        check_positive(self, "img_size", "patch_size", "in_chans", "embed_dim", "depths", "num_heads", "window_size",
                       "mlp_ratio", "norm_eps")
        check_integers(self, "img_size", "patch_size", "in_chans", "embed_dim", "depths", "num_heads", "window_size")
        check_rates(self, "drop_rate", "attn_drop_rate", "drop_path_rate")
        if not isinstance(self.num_classes, int) or self.num_classes < 0:
            raise ConfigError(f"SwinConfig.num_classes must be a non-negative integer, got {self.num_classes!r}")
        if len(self.num_heads) != len(self.depths):
            raise ConfigError(f"SwinConfig.num_heads={self.num_heads} must name one head count per stage of "
                              f"depths={self.depths}")
        for i, (width, heads) in enumerate(zip(self.stage_dims, self.num_heads)):
            if width % heads:
                raise ConfigError(f"SwinConfig.num_heads[{i}]={heads} does not divide stage {i}'s width "
                                  f"embed_dim * 2**{i} = {width}")
        if any(side % self.divisor for side in self.img_size):
            raise ResolutionError(f"img_size {self.img_size} is not divisible by {self.divisor} (patch size "
                                  f"{self.patch_size} x 2^{len(self.depths) - 1} for the patch mergings)")
        ATTENTION.validate(self.attn_backend)
        NORM.validate(self.norm_backend)
        PATCH.validate(self.patch_backend)

    @property
    def divisor(self) -> int:
        """Image sides must be multiples of this: the patch size times 2 per patch merging."""
        return self.patch_size * 2 ** (len(self.depths) - 1)

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size

    @property
    def stage_dims(self) -> list[int]:
        return [self.embed_dim * 2 ** i for i in range(len(self.depths))]

    @property
    def stage_maps(self) -> list[tuple[int, int]]:
        return [(self.grid_size[0] >> i, self.grid_size[1] >> i) for i in range(len(self.depths))]


# -- windows, their relative positions and the shift mask --------------------------------------------
def window_and_shift(map_hw: tuple[int, int], window: int, shifted: bool):
    """The block's (window, shift) per side: a side not longer than the window becomes the window,
    unshifted; otherwise the window and, in shifted blocks, a shift of half of it (timm's rule)."""
    size = tuple(min(m, window) for m in map_hw)
    shift = tuple(window // 2 if shifted and m > window else 0 for m in map_hw)
    return size, shift


def relative_position_index(wh: int, ww: int) -> torch.Tensor:
    """(N, N) int64, N = wh * ww: row of the relative-position table for tokens i, j of a window,
    from their offset p_i - p_j, each coordinate shifted to start at 0, row-major over (2wh-1, 2ww-1)."""
    rows, cols = torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()  # (N,)
    drow = rows[:, None] - rows[None, :] + (wh - 1)  # (N, N) in [0, 2wh - 2]
    dcol = cols[:, None] - cols[None, :] + (ww - 1)
    return drow * (2 * ww - 1) + dcol


def shift_mask(map_hw: tuple[int, int], window: tuple[int, int], shift: tuple[int, int]) -> torch.Tensor:
    """(nW, N, N) additive mask of a shifted block: MASK_VALUE between tokens of one window that come
    from different regions of the map before the cyclic shift, 0 elsewhere. The regions are laid on
    the padded map (Hp, Wp), as timm does."""
    def regions(n, w, s):  # region of each row (column) of the padded, shifted map
        r = torch.zeros(n, dtype=torch.long)
        if s:
            r[n - w:] = 1
            r[n - s:] = 2
        return r

    (wh, ww), (sh, sw) = window, shift
    hp, wp = math.ceil(map_hw[0] / wh) * wh, math.ceil(map_hw[1] / ww) * ww
    ids = regions(hp, wh, sh)[:, None] * 3 + regions(wp, ww, sw)[None, :]  # (Hp, Wp)
    ids = rearrange(ids, "(nh wh) (nw ww) -> (nh nw) (wh ww)", wh=wh, ww=ww)  # (nW, N)
    return torch.where(ids[:, :, None] != ids[:, None, :], MASK_VALUE, 0.0)  # (nW, N, N)


# -- modules ---------------------------------------------------------------------------------------
class WindowAttention(Attention):
    """fastvit's Attention with timm's WindowAttention parameters: ``qkv``, ``proj`` and the learned
    ``relative_position_bias_table`` ((2wh-1)(2ww-1), heads), indexed by the non-persistent buffer
    ``relative_position_index``. ``forward(windows (B', N, C), bias)``: the bias (the relative position
    bias, with the mask) goes to the attention backend, cast to q's dtype (autocast)."""

    def __init__(self, dim: int, num_heads: int, window: tuple[int, int], qkv_bias: bool, attn_drop: float,
                 proj_drop: float, backend: str | None):
        super().__init__(dim, num_heads, qkv_bias, attn_drop, proj_drop, backend)
        wh, ww = window
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads))
        self.register_buffer("relative_position_index", relative_position_index(wh, ww), persistent=False)

    def relative_position_bias(self) -> torch.Tensor:
        N = self.relative_position_index.shape[0]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]  # (N * N, heads)
        return bias.view(N, N, -1).permute(2, 0, 1).unsqueeze(0)  # (1, heads, N, N)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        B_, N, C = x.shape
        q, k, v = self.split_heads(x)  # (B', heads, N, D)
        out = attention(q, k, v, backend=self.backend, bias=None if bias is None else bias.to(q.dtype),
                        dropout_p=self.attn_drop if self.training else 0.0)
        out = out.transpose(1, 2)  # (B', N, heads, D)
        if torch.compiler.is_exporting():
            # A copy of its own layout, so that the reshape below is never recorded as a view of SDPA's
            # output, whose layout on CPU depends on the kernel PyTorch picks: flash ((B', N, heads, D) in
            # memory) for a bias needing no gradient, math ((B', heads, N, D)) for one that does. The
            # ONNX exporter decomposes the program with the bias needing none, then runs the graph again
            # with it needing one (type promotion), where such a view cannot be taken.
            out = out.clone(memory_format=torch.contiguous_format)
        return self.proj_drop(self.proj(out.reshape(B_, N, C)))  # (B', N, C)


class SwinBlock(nn.Module):
    """``forward(x, pending) -> (x, pending)`` on (B, H, W, C) maps; ``pending`` is the MLP branch
    the next LayerNorm adds (see the module docstring)."""

    def __init__(self, cfg: SwinConfig, dim: int, num_heads: int, map_hw: tuple[int, int], shifted: bool,
                 drop_path_p: float):
        super().__init__()
        self.map_size = map_hw  # (h, w) of the stage's map, which the window, shift and mask are built for
        self.window, self.shift = window_and_shift(map_hw, cfg.window_size, shifted)
        self.drop_path_p = drop_path_p
        self.norm1 = LayerNorm(dim, cfg.norm_eps, cfg.norm_backend)
        self.attn = WindowAttention(dim, num_heads, self.window, cfg.qkv_bias, cfg.attn_drop_rate, cfg.drop_rate,
                                    cfg.attn_backend)
        self.norm2 = LayerNorm(dim, cfg.norm_eps, cfg.norm_backend)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), "gelu", cfg.drop_rate)
        mask = shift_mask(map_hw, self.window, self.shift) if any(self.shift) else None
        self.register_buffer("attn_mask", mask, persistent=False)  # (nW, N, N) or None

    def attention_bias(self, batch: int) -> torch.Tensor:
        """What the attention adds to the scores: (1, heads, N, N), or with the shift mask
        (batch * nW, heads, N, N), windows batch-major."""
        bias = self.attn.relative_position_bias()  # (1, heads, N, N)
        if self.attn_mask is None:
            return bias
        bias = bias + self.attn_mask.unsqueeze(1)  # (nW, heads, N, N)
        return bias.expand(batch, *bias.shape).reshape(-1, *bias.shape[1:])  # (B * nW, heads, N, N)

    def window_attention(self, h: torch.Tensor) -> torch.Tensor:
        B, H, W, C = h.shape
        (wh, ww), (sh, sw) = self.window, self.shift
        if sh or sw:
            h = torch.roll(h, shifts=(-sh, -sw), dims=(1, 2))
        pad_h, pad_w = -H % wh, -W % ww
        if pad_h or pad_w:
            h = F.pad(h, (0, 0, 0, pad_w, 0, pad_h))  # zeros at the bottom / right, after the shift
        nh, nw = (H + pad_h) // wh, (W + pad_w) // ww
        windows = rearrange(h, "b (nh wh) (nw ww) c -> (b nh nw) (wh ww) c", wh=wh, ww=ww)  # (B * nW, N, C)
        windows = self.attn(windows, bias=self.attention_bias(B))
        h = rearrange(windows, "(b nh nw) (wh ww) c -> b (nh wh) (nw ww) c", nh=nh, nw=nw, wh=wh)[:, :H, :W]
        if sh or sw:
            h = torch.roll(h, shifts=(sh, sw), dims=(1, 2))
        return h  # (B, H, W, C)

    def forward(self, x: torch.Tensor, pending: torch.Tensor | None = None):
        if pending is None:
            h = self.norm1(x)
        else:
            h, x = self.norm1.add_forward(pending, x)  # x <- x + pending
        h = drop_path(self.window_attention(h), self.drop_path_p, self.training)
        h, x = self.norm2.add_forward(h, x)  # x <- x + WindowAttn(LN(x))
        return x, drop_path(self.mlp(h), self.drop_path_p, self.training)  # the MLP branch: added by the next norm


class PatchMerging(nn.Module):
    """(B, H, W, C) -> (B, H/2, W/2, 2C): each 2x2 neighbourhood's channels concatenated in the order
    x(0,0), x(1,0), x(0,1), x(1,1) (row offset fastest, as timm and the original Swin), LayerNorm, Linear."""

    def __init__(self, dim: int, eps: float, backend: str | None):
        super().__init__()
        self.norm = LayerNorm(4 * dim, eps, backend)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = rearrange(x, "b (h dh) (w dw) c -> b h w (dw dh c)", dh=2, dw=2)  # (B, H/2, W/2, 4C)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    def __init__(self, cfg: SwinConfig, index: int, drop_path_ps: list[float]):
        super().__init__()
        dim, map_hw = cfg.stage_dims[index], cfg.stage_maps[index]
        self.downsample = PatchMerging(dim // 2, cfg.norm_eps, cfg.norm_backend) if index > 0 else nn.Identity()
        self.blocks = nn.ModuleList(SwinBlock(cfg, dim, cfg.num_heads[index], map_hw, j % 2 == 1, p)
                                    for j, p in enumerate(drop_path_ps))

    def forward(self, x: torch.Tensor, pending: torch.Tensor | None = None):
        if pending is not None:
            x = x + pending  # the merging needs the stream itself
        x, pending = self.downsample(x), None  # (B, h, w, C_i)
        for blk in self.blocks:
            x, pending = blk(x, pending)
        return x, pending


class SwinPatchEmbed(nn.Module):
    def __init__(self, cfg: SwinConfig):
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.norm = LayerNorm(cfg.embed_dim, cfg.norm_eps, cfg.norm_backend)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(images).permute(0, 2, 3, 1))  # (B, H/P, W/P, E)


class SwinHead(nn.Module):
    """timm's ClassifierHead (key ``head.fc``): mean over the map, dropout, Linear."""

    def __init__(self, dim: int, num_classes: int, drop: float):
        super().__init__()
        self.drop = nn.Dropout(drop)
        self.fc = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(x.mean(dim=(1, 2))))  # (B, h, w, C) -> (B, num_classes)


class SwinTransformer(BackendModel):
    derived_state_keys = ("relative_position_index", "attn_mask")

    def __init__(self, cfg: SwinConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = SwinPatchEmbed(cfg)
        total = sum(cfg.depths)
        rates = [cfg.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        starts = [sum(cfg.depths[:i]) for i in range(len(cfg.depths))]
        self.layers = nn.ModuleList(SwinStage(cfg, i, rates[s:s + d])
                                    for i, (s, d) in enumerate(zip(starts, cfg.depths)))
        self.norm = LayerNorm(cfg.stage_dims[-1], cfg.norm_eps, cfg.norm_backend)
        self.head = SwinHead(cfg.stage_dims[-1], cfg.num_classes, cfg.drop_rate)
        self.init_weights()

    def init_weights(self):
        """timm's: truncated normal(0.02) for Linear weights and the relative-position tables, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, WindowAttention):
                nn.init.trunc_normal_(m.relative_position_bias_table, std=0.02)

    def op_shapes(self) -> dict[str, list[dict]]:
        cfg = self.cfg
        dims = cfg.stage_dims
        head_dims = dict.fromkeys(d // h for d, h in zip(dims, cfg.num_heads))
        # in order: the stem's and stage 0's norms, then per stage the merging's (4 C_{i-1} = 2 C_i) and the blocks'
        widths = dict.fromkeys([dims[0]] + [w for d in dims[1:] for w in (2 * d, d)])
        return {"attention": [{"head_dim": hd, "bias": True} for hd in head_dims],
                "norm": [{"hidden": w} for w in widths]}

    # -- checkpoints -----------------------------------------------------------------------------
    def convert_checkpoint(self, state: dict) -> dict:
        """Original Microsoft checkpoints merge patches at the END of stage i (``layers.{i}.downsample``)
        and name the classifier ``head.*``; timm and fastvit merge at the start of stage i + 1 and
        name it ``head.fc.*``. Their stale ``relative_position_index`` / ``attn_mask`` entries are
        dropped by load_checkpoint (``derived_state_keys``)."""
        if "layers.0.downsample.reduction.weight" not in state:
            return state
        out = {}
        for key, value in state.items():
            moved = re.match(r"layers\.(\d+)\.downsample\.(.*)", key)
            if moved:
                key = f"layers.{int(moved[1]) + 1}.downsample.{moved[2]}"
            elif key.startswith("head.") and not key.startswith("head.fc."):
                key = "head.fc." + key[len("head."):]
            out[key] = value
        return out

    def resample_state(self, key: str, value: torch.Tensor) -> torch.Tensor | None:
        if key.endswith("relative_position_bias_table"):
            own = tuple(self.get_parameter(key).shape)
            raise CheckpointError(
                f"{key}: checkpoint {tuple(value.shape)} vs model {own}: the relative-position table has "
                "(2 wh - 1)(2 ww - 1) rows for the block's window, which is clamped to the stage's map when the map "
                "is not larger than the window; fastvit does not resize the table -- build the model at a "
                "resolution where this stage's map is at least the checkpoint's window")
        return None

    # -- forward ----------------------------------------------------------------------------------
    def check_images(self, images: torch.Tensor) -> None:
        cfg = self.cfg
        check_images(images, cfg.in_chans, self.patch_embed.proj.weight)
        H, W = images.shape[-2:]
        if H % cfg.divisor or W % cfg.divisor:
            raise ResolutionError(f"image size {H}x{W} is not divisible by {cfg.divisor} (patch size {cfg.patch_size} "
                                  f"x 2^{len(cfg.depths) - 1} for the patch mergings)")
        if (H, W) != cfg.img_size:
            raise ResolutionError(f"image size {H}x{W} differs from the model's {cfg.img_size[0]}x{cfg.img_size[1]}; "
                                  "Swin's windows and shift masks are fixed at construction: build the model with "
                                  f"img_size=({H}, {W}) (the weights load unchanged)")

    def stages(self, images: torch.Tensor):
        """Yield each stage's (x, pending): its output map is x + pending, (B, h_i, w_i, C_i)."""
        self.check_images(images)
        x, pending = self.patch_embed(images), None  # (B, H/P, W/P, E)
        for stage in self.layers:
            x, pending = stage(x, pending)
            yield x, pending

    def stage_outputs(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Each stage's output (B, C_i, h_i, w_i), before the final norm (timm's forward_intermediates)."""
        return [(x + pending).permute(0, 3, 1, 2) for x, pending in self.stages(images)]

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        *_, (x, pending) = self.stages(images)
        return self.norm.add_forward(pending, x)[0]  # (B, h, w, C)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(images))  # (B, num_classes)
