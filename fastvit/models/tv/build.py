"""torchvision's ViT and Swin with fastvit's weights (``to_torchvision``), for running torchvision's
implementation of the same architecture. torchvision is imported only here, inside the functions
(through :mod:`fastvit.optional`, which copes with a torchvision built for another torch).

``to_torchvision(family, cfg, state_dict)`` returns ``(model, attention)``: the torchvision model in
eval mode and the attention it runs, for the caller to record: ``nn.MultiheadAttention`` in the ViT
(PyTorch's fused MHA kernel in inference, SDPA otherwise), ``shifted_window_attention`` in Swin (its
own matmul, softmax, matmul). What makes its outputs differ from fastvit's is listed in
``model.fastvit_notes`` (empty when nothing does).
"""
from __future__ import annotations

from functools import partial

import torch.nn as nn

from fastvit.errors import CheckpointError, ConfigError, MissingExtraError
from fastvit.optional import import_peer
from fastvit.models.hf.build import swin_padding_notes
from fastvit.models.tv.keys import CLASSES, timm_to_tv

INSTALL = "pip install 'fastvit[peers]'"
ATTENTION = {"vit": "nn.MultiheadAttention", "swin": "shifted_window_attention"}
BUILDERS = {  # torchvision's builder functions, by the config values they fix (patch, width, depth(s), heads)
    "vit_b_16": ("vit", (16, 768, 12, 12)), "vit_b_32": ("vit", (32, 768, 12, 12)),
    "vit_l_16": ("vit", (16, 1024, 24, 16)), "vit_l_32": ("vit", (32, 1024, 24, 16)),
    "vit_h_14": ("vit", (14, 1280, 32, 16)),
    "swin_t": ("swin", (4, 96, (2, 2, 6, 2), (3, 6, 12, 24))), "swin_s": ("swin", (4, 96, (2, 2, 18, 2), (3, 6, 12, 24))),
    "swin_b": ("swin", (4, 128, (2, 2, 18, 2), (4, 8, 16, 32))),
}


def torchvision_available() -> tuple[bool, str]:
    """Whether torchvision's ViT and Swin classes import here, and why not ("" if so)."""
    try:
        _models()
    except MissingExtraError as err:
        return False, str(err)
    return True, ""


def _models():
    try:
        tv = import_peer("torchvision")
        return tv.models.vision_transformer, tv.models.swin_transformer
    except Exception as err:  # noqa: BLE001 - any import failure makes the classes unusable here
        raise MissingExtraError(f"torchvision's ViT and Swin do not import here ({type(err).__name__}: "
                                f"{str(err)[:160]}); {INSTALL}") from err


def builder_name(family: str, cfg) -> str | None:
    """The torchvision builder (vit_b_16, swin_t, ...) whose architecture ``cfg`` has, or None."""
    fixed = ((cfg.patch_size, cfg.embed_dim, cfg.depth, cfg.num_heads) if family == "vit" else
             (cfg.patch_size, cfg.embed_dim, tuple(cfg.depths), tuple(cfg.num_heads)))
    return next((name for name, (fam, values) in BUILDERS.items() if fam == family and values == fixed), None)


def _square(cfg) -> int:
    h, w = (cfg.img_size, cfg.img_size) if isinstance(cfg.img_size, int) else tuple(cfg.img_size)
    if h != w:
        raise ConfigError(f"torchvision's ViT takes square images only; this model has img_size={(h, w)}")
    return h


def _common(cfg, family: str) -> None:
    if getattr(cfg, "in_chans", 3) != 3:
        raise ConfigError(f"torchvision's {family} stem takes 3 channels; this model has in_chans={cfg.in_chans}")
    if not cfg.num_classes:
        raise ConfigError("torchvision's models always have a classifier; this model has num_classes=0")
    if not getattr(cfg, "qkv_bias", True):
        raise ConfigError(f"torchvision's {family} attention always has q, k and v biases; this model has "
                          "qkv_bias=False")


def _vit(cfg):
    vit_module, _ = _models()
    if getattr(cfg, "norm_position", "pre") != "pre" or getattr(cfg, "mlp_act", "gelu") != "gelu":
        raise ConfigError(f"torchvision's ViT is pre-norm with GELU; this model has norm_position="
                          f"{cfg.norm_position!r}, mlp_act={cfg.mlp_act!r}")
    if getattr(cfg, "distilled", False):
        raise ConfigError("torchvision has no distilled DeiT (a distillation token and a second head)")
    return vit_module.VisionTransformer(
        image_size=_square(cfg), patch_size=cfg.patch_size, num_layers=cfg.depth, num_heads=cfg.num_heads,
        hidden_dim=cfg.embed_dim, mlp_dim=int(cfg.embed_dim * cfg.mlp_ratio), num_classes=cfg.num_classes,
        norm_layer=partial(nn.LayerNorm, eps=cfg.norm_eps)), []


def _swin(cfg):
    _, swin_module = _models()
    ws = cfg.window_size
    for stage, (h, w) in enumerate(cfg.stage_maps):
        if min(h, w) < ws:
            raise ConfigError(f"Swin stage {stage}: map {h}x{w} is smaller than the {ws}x{ws} window; fastvit then "
                              "uses the map as its window (a smaller relative-position table), torchvision pads the "
                              "map up to the window: their weights differ in shape, build at a larger size")
    model = swin_module.SwinTransformer(
        patch_size=[cfg.patch_size] * 2, embed_dim=cfg.embed_dim, depths=list(cfg.depths),
        num_heads=list(cfg.num_heads), window_size=[ws, ws], mlp_ratio=cfg.mlp_ratio, stochastic_depth_prob=0.0,
        num_classes=cfg.num_classes, norm_layer=partial(nn.LayerNorm, eps=cfg.norm_eps))
    return model, swin_padding_notes(cfg, library="torchvision")


def to_torchvision(family: str, cfg, state_dict: dict) -> tuple[nn.Module, str]:
    """torchvision's model of ``family`` with the weights of a timm-layout ``state_dict``.

    Args:
        family: "vit" (a ViT or a non-distilled DeiT -> VisionTransformer) or "swin" (SwinTransformer, V1).
        cfg: the fastvit config (ViTConfig / SwinConfig).
        state_dict: the model's weights, timm's keys.

    Returns:
        ``(model, attention)``: the model in eval mode and the attention it runs.
        ``model.fastvit_notes`` lists what makes its outputs differ from fastvit's.

    Raises:
        MissingExtraError: torchvision does not import here, with the reason.
        ConfigError: a config torchvision cannot express; CheckpointError: weights that do not fit.
    """
    if family == "deit":
        family = "vit"
    if family not in ATTENTION:
        raise ConfigError(f"torchvision has no {family!r} transformer here; to_torchvision builds vit and swin")
    _common(cfg, family)
    model, notes = (_vit if family == "vit" else _swin)(cfg)
    tv_state = timm_to_tv(state_dict, family)
    own = model.state_dict()
    kept = {k: v for k, v in own.items() if k not in tv_state and not v.is_floating_point()}  # Swin's index
    missing, unexpected = sorted(set(own) - set(tv_state) - set(kept)), sorted(set(tv_state) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"weights do not fit {CLASSES[family]} built from the config: missing {missing[:6]}, "
                              f"unexpected {unexpected[:6]}")
    bad = [f"{k}: fastvit {tuple(v.shape)} vs torchvision {tuple(own[k].shape)}" for k, v in tv_state.items()
           if v.shape != own[k].shape]
    if bad:
        raise CheckpointError(f"weights do not fit {CLASSES[family]}: " + "; ".join(bad[:6]))
    model.load_state_dict({**tv_state, **kept}, strict=True)
    model.eval()
    model.fastvit_notes = notes
    return model, ATTENTION[family]
