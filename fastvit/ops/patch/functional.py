"""``patch_embed``: the patch-embedding op's validated entry point."""
from __future__ import annotations

import torch

from fastvit.errors import DeviceError, DTypeError, ResolutionError, ShapeError
from fastvit.ops.patch.registry import PATCH


def validate_patch(images, weight, bias, pos_embed, prefix) -> None:
    """Raise the typed error for the first problem: images (B, C, H, W) with H and W divisible by the
    patch P, weight (E, C, P, P), bias (E,) or None, prefix (1, T, E), pos_embed (1, T + N, E) for the
    N = (H / P) (W / P) patches; one dtype and one device."""
    named = {"images": images, "weight": weight, "bias": bias, "pos_embed": pos_embed, "prefix": prefix}
    for name, t in named.items():
        if t is None and name == "bias":
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"patch embedding: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise DTypeError(f"patch embedding: {name} must be floating point, got dtype {t.dtype}")
        if t.dtype != images.dtype:
            raise DTypeError(f"patch embedding: {name} has dtype {t.dtype}, images {images.dtype}")
        if t.device != images.device:
            raise DeviceError(f"patch embedding: {name} is on {t.device}, images on {images.device}")
    if images.dim() != 4:
        raise ShapeError(f"patch embedding: images must be 4-D (B, C, H, W), got shape {tuple(images.shape)}")
    if weight.dim() != 4 or weight.shape[-1] != weight.shape[-2]:
        raise ShapeError(f"patch embedding: weight must be (E, C, P, P), got shape {tuple(weight.shape)}")
    E, C, P, _ = weight.shape
    if images.shape[1] != C:
        raise ShapeError(f"patch embedding: images have {images.shape[1]} channels, the weight expects {C}")
    H, W = images.shape[-2:]
    if H % P or W % P:
        raise ResolutionError(f"patch embedding: image size {H}x{W} is not divisible by the patch size {P}")
    if bias is not None and tuple(bias.shape) != (E,):
        raise ShapeError(f"patch embedding: bias must have shape ({E},), got {tuple(bias.shape)}")
    if prefix.dim() != 3 or prefix.shape[0] != 1 or prefix.shape[2] != E:
        raise ShapeError(f"patch embedding: prefix tokens must be (1, T, {E}), got {tuple(prefix.shape)}")
    tokens = prefix.shape[1] + (H // P) * (W // P)
    if tuple(pos_embed.shape) != (1, tokens, E):
        raise ShapeError(f"patch embedding: pos_embed must be (1, {tokens}, {E}) for {H}x{W} images, got "
                         f"{tuple(pos_embed.shape)}")


def patch_embed(images: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, pos_embed: torch.Tensor,
                prefix: torch.Tensor, *, backend: str | None = None) -> torch.Tensor:
    """Images (B, C, H, W) -> tokens (B, T + N, E): patchify, project, prefix rows, position embedding.

    Args:
        images: (B, C, H, W), H and W divisible by the patch size P.
        weight: (E, C, P, P) Conv2d-layout projection; bias: (E,) or None.
        pos_embed: (1, T + N, E), already at the images' patch grid.
        prefix: (1, T, E) rows put before the patches (the CLS token; DeiT adds its distillation token).
        backend: a registered patch backend; None follows ``use_backend(patch=...)``, then
            ``FASTVIT_PATCH_BACKEND``, then ``conv``. Resolved on every call.
    """
    validate_patch(images, weight, bias, pos_embed, prefix)
    impl = PATCH.require(backend, images.device, images.dtype, patch_size=weight.shape[-1],
                         prefix_tokens=prefix.shape[1])
    return impl.fn(images, weight, bias, pos_embed, prefix)
