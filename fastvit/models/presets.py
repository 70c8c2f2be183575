"""Model presets under timm's names, with the papers' sizes, and ``create_model``.

A family is a config dataclass and the model class built from it; a preset is a family and the
config values of one published size. Families and presets are registered here, so ``create_model``,
``list_models``, ``fastvit check`` and the sweep cover every family alike.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, fields
from typing import Any

from fastvit.errors import UnknownModelError
from fastvit.models.deit import DeiT, DeiTConfig
from fastvit.models.pit import PiTConfig, PoolingVisionTransformer
from fastvit.models.swin import SwinConfig, SwinTransformer
from fastvit.models.vit import ViTConfig, VisionTransformer


@dataclass(frozen=True)
class Family:
    name: str
    config: type
    model: type


@dataclass(frozen=True)
class Preset:
    name: str
    family: Family
    values: dict[str, Any]


FAMILIES: dict[str, Family] = {}
PRESETS: dict[str, Preset] = {}


def register_family(name: str, config: type, model: type) -> Family:
    FAMILIES[name] = Family(name, config, model)
    return FAMILIES[name]


def register_preset(name: str, family: str, **values) -> None:
    if name in PRESETS:
        raise ValueError(f"model preset {name!r} is registered twice")
    PRESETS[name] = Preset(name, FAMILIES[family], values)


# -- ViT (Dosovitskiy et al. 2021), and timm's 384 px variants ---------------------------------------
register_family("vit", ViTConfig, VisionTransformer)
_VIT_SIZES = {
    # name: (patch, embed_dim, depth, num_heads)
    "tiny_patch16": (16, 192, 12, 3),
    "small_patch16": (16, 384, 12, 6),
    "base_patch16": (16, 768, 12, 12),
    "base_patch32": (32, 768, 12, 12),
    "large_patch16": (16, 1024, 24, 16),
    "huge_patch14": (14, 1280, 32, 16),
}
for _key, (_p, _e, _d, _h) in _VIT_SIZES.items():
    for _res in (224, 384):
        if _key == "huge_patch14" and _res == 384:
            continue  # timm has no 384 px ViT-H/14
        register_preset(f"vit_{_key}_{_res}", "vit", img_size=_res, patch_size=_p, embed_dim=_e, depth=_d,
                        num_heads=_h)


# -- DeiT (Touvron et al. 2021): ViT-Ti/S/B/16, and with the distillation token -----------------------
register_family("deit", DeiTConfig, DeiT)
_DEIT_SIZES = {"tiny": (192, 3), "small": (384, 6), "base": (768, 12)}  # name: (embed_dim, num_heads)
for _distilled in (False, True):
    for _key, (_e, _h) in _DEIT_SIZES.items():
        for _res in (224, 384) if _key == "base" else (224,):  # timm has no tiny / small DeiT at 384
            _name = f"deit_{_key}_{'distilled_' if _distilled else ''}patch16_{_res}"
            register_preset(_name, "deit", img_size=_res, patch_size=16, embed_dim=_e, depth=12, num_heads=_h,
                            distilled=_distilled)


# -- Swin (Liu et al. 2021): patch 4, window 7 at 224 px, window 12 at 384 px ----------------------------
register_family("swin", SwinConfig, SwinTransformer)
_SWIN_SIZES = {"tiny": (96, (2, 2, 6, 2), (3, 6, 12, 24)), "small": (96, (2, 2, 18, 2), (3, 6, 12, 24)),
               "base": (128, (2, 2, 18, 2), (4, 8, 16, 32))}  # name: (embed_dim, depths, num_heads)
for _key, (_e, _d, _h) in _SWIN_SIZES.items():
    register_preset(f"swin_{_key}_patch4_window7_224", "swin", img_size=224, embed_dim=_e, depths=_d, num_heads=_h,
                    window_size=7)
register_preset("swin_base_patch4_window12_384", "swin", img_size=384, embed_dim=128, depths=(2, 2, 18, 2),
                num_heads=(4, 8, 16, 32), window_size=12)


# -- PiT (Heo et al. 2021) ------------------------------------------------------------------------------
register_family("pit", PiTConfig, PoolingVisionTransformer)
_PIT_SIZES = {  # name: (patch, stride, base_dims, depths, num_heads)
    "ti": (16, 8, (32, 32, 32), (2, 6, 4), (2, 4, 8)),
    "xs": (16, 8, (48, 48, 48), (2, 6, 4), (2, 4, 8)),
    "s": (16, 8, (48, 48, 48), (2, 6, 4), (3, 6, 12)),
    "b": (14, 7, (64, 64, 64), (3, 6, 4), (4, 8, 16)),
}
for _key, (_p, _s, _b, _d, _h) in _PIT_SIZES.items():
    register_preset(f"pit_{_key}_224", "pit", img_size=224, patch_size=_p, stride=_s, base_dims=_b, depths=_d,
                    num_heads=_h)


# -- lookup and construction ---------------------------------------------------------------------
def list_models(family: str | None = None) -> list[str]:
    return sorted(n for n, p in PRESETS.items() if family is None or p.family.name == family)


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownModelError(f"unknown model preset {name!r}.{hint} Known: {', '.join(list_models())}")
    return PRESETS[name]


def preset_config(name: str, **overrides):
    """The config of preset ``name`` with ``overrides`` applied (any field of the family's config)."""
    preset = get_preset(name)
    allowed = {f.name for f in fields(preset.family.config)}
    unknown = set(overrides) - allowed
    if unknown:
        raise TypeError(f"unknown model option(s) {sorted(unknown)} for {name}; options: {sorted(allowed)}")
    return preset.family.config(**{**preset.values, **overrides})


def create_model(name: str, *, attn_backend: str | None = None, img_size=None, num_classes: int | None = None,
                 **overrides):
    """Build a preset model with freshly initialised weights.

    Args:
        name: a preset such as ``vit_base_patch16_224`` (see :func:`list_models`).
        attn_backend: pin the attention backend (None follows use_backend / FASTVIT_ATTN_BACKEND).
        img_size: build for another resolution (int or (H, W)); must suit the family (divisible by
            the patch size for a ViT / DeiT, by the patch size x 2 per patch merging for a Swin: 32).
        num_classes: head size (0 for no head).
        **overrides: any other field of the family's config, e.g. ``dynamic_img_size=True``,
            ``norm_backend="triton"``, ``patch_backend="einops"``, ``drop_rate=0.1``.
    """
    for key, value in (("attn_backend", attn_backend), ("img_size", img_size), ("num_classes", num_classes)):
        if value is not None:
            overrides[key] = value
    cfg = preset_config(name, **overrides)
    return get_preset(name).family.model(cfg)
