"""``patch_embed``: the patch-embedding op's validated entry point."""
from __future__ import annotations

import torch

from fastvit.errors import DeviceError, DTypeError, ResolutionError, ShapeError
from fastvit.ops.patch.registry import PATCH

_ROUTES = PATCH.routes  # (name, device, dtype, *shape) -> backend function: the hot path's table


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
    # The hot path checks, in a few comparisons, what a backend would not reject by itself (a
    # non-square patch, a size that does not divide, operands that broadcast or promote); the
    # rest (the images' rank and channels, the weight's dtype, devices) is named by the full validation if the
    # backend fails. Anything unusual gets the full validation first.
    try:
        _, _, H, W = images.shape
        E, _, P, P2 = weight.shape
        one, T, E2 = prefix.shape
        dtype = images.dtype
        ok = (P == P2 and E == E2 and one == 1 and not H % P and not W % P
              and pos_embed.shape == (1, T + (H // P) * (W // P), E) and (bias is None or bias.shape == (E,))
              and dtype.is_floating_point and pos_embed.dtype is dtype and prefix.dtype is dtype)
    except (AttributeError, TypeError, ValueError, ZeroDivisionError):
        ok = False
    if not ok:
        validate_patch(images, weight, bias, pos_embed, prefix)
        P, T, dtype = weight.shape[-1], prefix.shape[1], images.dtype
    key = (PATCH.selected() if backend is None else backend, images.device, dtype, P, T)
    fn = _ROUTES.get(key) or PATCH.admit(key)  # PATCH.route, inlined
    try:
        return fn(images, weight, bias, pos_embed, prefix)
    except Exception:
        validate_patch(images, weight, bias, pos_embed, prefix)  # the typed error, if the inputs are at fault
        raise
