"""Patch-embedding backends and the PatchEmbed module the model uses.

Every backend computes the whole token stem, ``(images, weight, bias, pos_embed, cls_token) ->
tokens``: patchify, project with the Conv2d-layout weight (E, C, P, P), add the bias, put the CLS
row first and add the position embedding, giving (B, 1 + N, E).

- ``conv``: Conv2d -> flatten -> transpose -> cat CLS -> add pos_embed (timm's path).
- ``einops``: Rearrange('b c (h p1) (w p2) -> b (h w) (p1 p2 c)') + Linear, the tutorial form, with
  the same Conv2d weight viewed as a (E, P*P*C) matrix; numerically the same map.
- ``triton``: all of it in one fused kernel (kernels.patch_embed).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from fastvit._triton import triton_check
from fastvit.backends import PATCH


def _prepend_cls(patches: torch.Tensor, pos_embed: torch.Tensor, cls_token: torch.Tensor) -> torch.Tensor:
    cls = cls_token.expand(patches.shape[0], -1, -1)  # (B, 1, E)
    return torch.cat([cls, patches], dim=1) + pos_embed  # (B, 1 + N, E)


def _always(device, dtype, **shape):
    return True, ""


@PATCH.register("conv", check=_always, description="Conv2d + flatten + transpose + cat + add")
def conv_patch_embed(images, weight, bias, pos_embed, cls_token):
    patch = weight.shape[-1]
    x = F.conv2d(images, weight, bias, stride=patch)  # (B, E, H/P, W/P)
    return _prepend_cls(x.flatten(2).transpose(1, 2), pos_embed, cls_token)


@PATCH.register("einops", check=_always, description="einops Rearrange + Linear")
def einops_patch_embed(images, weight, bias, pos_embed, cls_token):
    patch = weight.shape[-1]
    patches = rearrange(images, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=patch, p2=patch)
    matrix = rearrange(weight, "e c p1 p2 -> e (p1 p2 c)")
    return _prepend_cls(F.linear(patches, matrix, bias), pos_embed, cls_token)


@PATCH.register("triton", check=lambda device, dtype, **shape: triton_check(device, dtype),
                description="fastvit Triton fused patchify + GEMM + bias + CLS + pos_embed")
def triton_patch_embed(images, weight, bias, pos_embed, cls_token):
    from kernels import patch_embed

    return patch_embed(images, weight, bias, pos_embed, cls_token)


class PatchEmbed(nn.Module):
    """Images (B, C, H, W) -> tokens (B, 1 + N, E), N = (H / P) * (W / P).

    Holds ``proj`` as an nn.Conv2d so the state-dict keys (``patch_embed.proj.*``) match timm's for
    every backend. ``backend=None`` follows ``use_backend(patch=...)``, FASTVIT_PATCH_BACKEND, ``conv``.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, backend: str | None = None):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.backend = PATCH.validate(backend)

    def forward(self, images: torch.Tensor, pos_embed: torch.Tensor, cls_token: torch.Tensor) -> torch.Tensor:
        impl = PATCH.require(self.backend, images.device, images.dtype, patch_size=self.patch_size)
        return impl.fn(images, self.proj.weight, self.proj.bias, pos_embed, cls_token)
