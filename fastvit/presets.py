"""Model presets under timm's names, with the ViT paper's sizes (and timm's 384 px variants)."""
from __future__ import annotations

import difflib

from fastvit.errors import UnknownModelError
from fastvit.model import ViTConfig, VisionTransformer, config_fields

_SIZES = {
    # name: (patch, embed_dim, depth, num_heads)
    "tiny_patch16": (16, 192, 12, 3),
    "small_patch16": (16, 384, 12, 6),
    "base_patch16": (16, 768, 12, 12),
    "base_patch32": (32, 768, 12, 12),
    "large_patch16": (16, 1024, 24, 16),
    "huge_patch14": (14, 1280, 32, 16),
}
PRESETS: dict[str, dict] = {}
for _key, (_p, _e, _d, _h) in _SIZES.items():
    for _res in (224, 384):
        if _key == "huge_patch14" and _res == 384:
            continue  # timm has no 384 px ViT-H/14
        PRESETS[f"vit_{_key}_{_res}"] = dict(img_size=_res, patch_size=_p, embed_dim=_e, depth=_d, num_heads=_h)


def list_models() -> list[str]:
    return sorted(PRESETS)


def preset_config(name: str, **overrides) -> ViTConfig:
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownModelError(f"unknown model preset {name!r}.{hint} Known: {', '.join(list_models())}")
    unknown = set(overrides) - config_fields()
    if unknown:
        raise TypeError(f"unknown model option(s) {sorted(unknown)}; options: {sorted(config_fields())}")
    return ViTConfig(**{**PRESETS[name], **overrides})


def create_model(name: str, *, attn_backend: str | None = None, img_size=None, num_classes: int | None = None,
                 **overrides) -> VisionTransformer:
    """Build a preset ViT with freshly initialised weights.

    Args:
        name: a preset such as ``vit_base_patch16_224`` (see :func:`list_models`).
        attn_backend: pin the attention backend (None follows use_backend / FASTVIT_ATTN_BACKEND).
        img_size: build for another resolution (int or (H, W)); must be divisible by the patch size.
        num_classes: head size (0 for no head).
        **overrides: any other :class:`ViTConfig` field, e.g. ``dynamic_img_size=True``,
            ``norm_backend="triton"``, ``patch_backend="einops"``, ``drop_rate=0.1``.
    """
    if attn_backend is not None:
        overrides["attn_backend"] = attn_backend
    if img_size is not None:
        overrides["img_size"] = img_size
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    return VisionTransformer(preset_config(name, **overrides))
