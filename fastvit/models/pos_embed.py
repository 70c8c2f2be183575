"""Resampling a learned position embedding to another patch grid (timm-compatible)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def resample_pos_embed(pos_embed: torch.Tensor, new_grid: tuple[int, int], old_grid: tuple[int, int] | None = None,
                       num_prefix_tokens: int = 1) -> torch.Tensor:
    """Resize the grid part of ``pos_embed`` (1, prefix + Ho*Wo, E) to (1, prefix + Hn*Wn, E).

    Bicubic with antialiasing, computed in float32 and cast back, prefix (CLS) rows kept as they
    are -- the same recipe timm uses, so checkpoints resampled by either library agree.

    Args:
        pos_embed: (1, num_prefix_tokens + Ho * Wo, E).
        new_grid: (Hn, Wn) patch grid to resample to.
        old_grid: (Ho, Wo); default: the square grid implied by the token count.
        num_prefix_tokens: rows before the grid (1 for the CLS token).
    """
    n_grid = pos_embed.shape[1] - num_prefix_tokens
    if old_grid is None:
        side = int(round(n_grid ** 0.5))
        if side * side != n_grid:
            raise ValueError(f"pos_embed has {n_grid} grid tokens, not a square grid; pass old_grid")
        old_grid = (side, side)
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = grid.shape[-1]
    grid = grid.float().reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)  # (1, E, Ho, Wo)
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", antialias=True, align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos_embed.dtype)  # (1, Hn*Wn, E)
    return torch.cat([prefix, grid], dim=1)
