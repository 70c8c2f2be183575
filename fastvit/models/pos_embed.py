"""Resampling a learned position embedding to another patch grid (timm-compatible).

Two layouts exist: a token sequence (1, T + N, E) whose first T rows belong to prefix tokens (ViT's
CLS; distilled DeiT's CLS and distillation token), and a spatial map (1, E, H, W) added to a
convolution's output (PiT). Both are resampled the same way: bicubic with antialiasing, in float32,
cast back -- timm's recipe for the sequence, applied by fastvit to PiT's map too (timm has none).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def resample_pos_embed_map(pos_embed: torch.Tensor, new_grid: tuple[int, int]) -> torch.Tensor:
    """Resize a spatial position embedding (1, E, Ho, Wo) to (1, E, Hn, Wn).

    Bicubic with antialiasing (which changes the result when upsampling too), computed in float32.
    """
    if tuple(pos_embed.shape[-2:]) == tuple(new_grid):
        return pos_embed
    out = F.interpolate(pos_embed.float(), size=tuple(new_grid), mode="bicubic", antialias=True, align_corners=False)
    return out.to(pos_embed.dtype)


def resample_pos_embed(pos_embed: torch.Tensor, new_grid: tuple[int, int], old_grid: tuple[int, int] | None = None,
                       num_prefix_tokens: int = 1) -> torch.Tensor:
    """Resize the grid part of ``pos_embed`` (1, prefix + Ho*Wo, E) to (1, prefix + Hn*Wn, E).

    Bicubic with antialiasing, computed in float32 and cast back, prefix rows kept as they are -- the
    same recipe timm uses, so checkpoints resampled by either library agree.

    Args:
        pos_embed: (1, num_prefix_tokens + Ho * Wo, E).
        new_grid: (Hn, Wn) patch grid to resample to.
        old_grid: (Ho, Wo); default: the square grid implied by the token count.
        num_prefix_tokens: rows before the grid (1 for the CLS token, 2 for distilled DeiT).
    """
    n_grid = pos_embed.shape[1] - num_prefix_tokens
    if old_grid is None:
        side = int(round(max(n_grid, 0) ** 0.5))
        if n_grid <= 0 or side * side != n_grid:
            raise ValueError(f"pos_embed has {n_grid} grid tokens after {num_prefix_tokens} prefix tokens, not a "
                             "square grid; pass old_grid")
        old_grid = (side, side)
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = grid.shape[-1]
    grid = grid.reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)  # (1, E, Ho, Wo)
    grid = resample_pos_embed_map(grid, new_grid).permute(0, 2, 3, 1).reshape(1, -1, dim)  # (1, Hn*Wn, E)
    return torch.cat([prefix, grid], dim=1)
