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
            the patch size for a ViT).
        num_classes: head size (0 for no head).
        **overrides: any other field of the family's config, e.g. ``dynamic_img_size=True``,
            ``norm_backend="triton"``, ``patch_backend="einops"``, ``drop_rate=0.1``.
    """
    for key, value in (("attn_backend", attn_backend), ("img_size", img_size), ("num_classes", num_classes)):
        if value is not None:
            overrides[key] = value
    cfg = preset_config(name, **overrides)
    return get_preset(name).family.model(cfg)
