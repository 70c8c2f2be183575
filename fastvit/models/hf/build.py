"""HF transformers models with fastvit's weights (``to_hf``), for running HF's implementation of the
same architecture. transformers is imported only here, inside the functions, never at import.

``to_hf(family, cfg, state_dict, attn_implementation)`` returns ``(model, impl)``: the transformers
model in eval mode and the attention implementation it actually runs (its
``config._attn_implementation``, e.g. "sdpa" or "eager"), for the caller to record. Caveats that
make its outputs differ from fastvit's / timm's are listed in ``model.fastvit_notes`` (a list of
strings, empty when none apply).
"""
from __future__ import annotations

import math

import torch.nn as nn

from fastvit.errors import CheckpointError, ConfigError, MissingExtraError
from fastvit.optional import import_peer
from fastvit.models.hf.keys import FAMILIES, INSTALL, SWIN_EPS, timm_to_hf

_CLASSES = tuple(f.hf_class for f in FAMILIES.values())


def _root_cause(err: BaseException) -> BaseException:
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__
    return err


def _transformers(*classes: str):
    """The transformers module with ``classes`` importable, or MissingExtraError saying why not."""
    try:
        transformers = import_peer("transformers")
    except ImportError as err:
        raise MissingExtraError(f"transformers is not installed; {INSTALL}") from err
    for name in classes or _CLASSES:
        try:
            getattr(transformers, name)  # the lazy module imports the modeling code here
        except Exception as err:  # noqa: BLE001 - any failure means the class is unusable here
            cause = _root_cause(err)
            why = f"{type(cause).__name__}: {str(cause)[:200]}"
            if "torchvision" in str(cause):
                why += (" -- transformers imports torchvision whenever it is installed (image_utils.py), and this "
                        "torchvision does not match torch; install the matching build or uninstall it (the ViT, "
                        "DeiT and Swin models do not need it)")
            raise MissingExtraError(f"transformers {transformers.__version__} cannot import {name} ({why}); "
                                    f"{INSTALL}") from err
    return transformers


def hf_available() -> tuple[bool, str]:
    """Whether transformers and its ViT, DeiT and Swin classes import here, and why not ("" if so)."""
    try:
        _transformers()
    except MissingExtraError as err:
        return False, str(err)
    return True, ""


def _side(img_size):
    """HF configs take an int for a square image, else [H, W]."""
    h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    return h if h == w else [h, w]


def _vit_config(transformers, cfg, config_class: str):
    if getattr(cfg, "norm_position", "pre") != "pre":
        raise ConfigError(f"HF's ViT is pre-norm only; this model has norm_position={cfg.norm_position!r}")
    act = getattr(cfg, "mlp_act", "gelu")
    if act not in ("gelu", "relu"):
        raise ConfigError(f"mlp_act {act!r} has no HF ViT hidden_act")
    return getattr(transformers, config_class)(
        image_size=_side(cfg.img_size), patch_size=cfg.patch_size, num_channels=cfg.in_chans,
        hidden_size=cfg.embed_dim, num_hidden_layers=cfg.depth, num_attention_heads=cfg.num_heads,
        intermediate_size=int(cfg.embed_dim * cfg.mlp_ratio), qkv_bias=cfg.qkv_bias, layer_norm_eps=cfg.norm_eps,
        hidden_act=act, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=cfg.num_classes)


def _window(cfg) -> int:
    ws = cfg.window_size
    if isinstance(ws, int):
        return ws
    if len(set(ws)) != 1:
        raise ConfigError(f"HF's Swin has square windows only; this model has window_size={tuple(ws)}")
    return ws[0]


def _swin_config(transformers, cfg):
    return transformers.SwinConfig(
        image_size=_side(cfg.img_size), patch_size=cfg.patch_size, num_channels=cfg.in_chans,
        embed_dim=cfg.embed_dim, depths=list(cfg.depths), num_heads=list(cfg.num_heads), window_size=_window(cfg),
        mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias, hidden_act="gelu", layer_norm_eps=cfg.norm_eps,
        drop_path_rate=0.0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=cfg.num_classes)


def _axis_layout(n: int, ws: int, s: int, shift_first: bool) -> list:
    """Token ids along one axis of a padded, shifted map (None: padding), as the windows see them."""
    ids, pad = list(range(n)), [None] * (math.ceil(n / ws) * ws - n)
    if shift_first:  # timm: roll the map, then pad
        return ids[s:] + ids[:s] + pad
    full = ids + pad  # HF: pad, then roll the padded map
    return full[s:] + full[:s]


def _axis_partners(layout: list, ws: int, s: int) -> dict:
    """Per real token, the (partner or None, offset) pairs it attends to along this axis: the same
    window and the same shift-mask region (the relative-position bias depends on the offset)."""
    n = len(layout)
    region = [(q >= n - ws) + (q >= n - s) for q in range(n)]
    return {tok: frozenset((layout[q], q - p) for q in range(n) if q // ws == p // ws and region[q] == region[p])
            for p, tok in enumerate(layout) if tok is not None}


def swin_padding_notes(cfg, library: str = "HF") -> list[str]:
    """The stages where HF's Swin (pad, then shift) and timm's (shift, then pad) compute differently:
    the map is padded to the window, its odd blocks shift, and the order changes which tokens
    attend to which (per axis; with padding equal to the shift and window = 2 shifts it does not).
    torchvision's Swin pads before its shift as HF does: ``library`` names the one in the notes."""
    ws = _window(cfg)
    size = cfg.img_size if not isinstance(cfg.img_size, int) else (cfg.img_size, cfg.img_size)
    h, w = size[0] // cfg.patch_size, size[1] // cfg.patch_size
    notes = []
    for stage, depth in enumerate(cfg.depths):
        if stage:
            h, w = (h + 1) // 2, (w + 1) // 2  # patch merging pads odd maps
        s = ws // 2
        if depth < 2 or min(h, w) <= ws or not any(
                _axis_partners(_axis_layout(n, ws, s, True), ws, s) != _axis_partners(_axis_layout(n, ws, s, False), ws, s)
                for n in (h, w)):
            continue
        notes.append(f"Swin stage {stage}: map {h}x{w} is padded to {math.ceil(h / ws) * ws}x{math.ceil(w / ws) * ws} "
                     f"for {ws}x{ws} shifted windows; {library} pads before its cyclic shift, timm/fastvit after, which "
                     f"here changes which tokens attend to which: {library}'s logits differ from fastvit's (the work "
                     "is the same)")
    return notes


def _resolve(family: str, cfg, state_dict: dict) -> str:
    """HF's DeiT classes always have the distillation token: a non-distilled DeiT is built as a ViT."""
    if family in ("vit", "deit"):
        return "deit" if getattr(cfg, "distilled", False) or "dist_token" in state_dict else "vit"
    if family not in FAMILIES:
        raise ConfigError(f"HF transformers has no {family!r} model here; to_hf builds {', '.join(FAMILIES)}")
    return family


def _hf_state(fam, state_dict: dict, own: dict) -> dict:
    """fastvit's weights under the keys the built model has (its spelling), shapes checked; integer
    buffers the model has and the weights lack (transformers-4 Swin's index) are kept as built."""
    best = None
    for spelling in ("module", "hub"):
        hf = timm_to_hf(fam.name, state_dict, spelling)
        kept = {k: v for k, v in own.items() if k not in hf and not v.is_floating_point()}
        missing, unexpected = sorted(set(own) - set(hf) - set(kept)), sorted(set(hf) - set(own))
        if not missing and not unexpected:
            bad = [f"{k}: fastvit {tuple(v.shape)} vs HF {tuple(own[k].shape)}" for k, v in hf.items()
                   if v.shape != own[k].shape]
            if bad:
                raise CheckpointError(f"weights do not fit HF's {fam.hf_class}: " + "; ".join(bad[:6]))
            return {**hf, **kept}
        if best is None or len(missing) + len(unexpected) < len(best[0]) + len(best[1]):
            best = (missing, unexpected)
    raise CheckpointError(f"weights do not fit HF's {fam.hf_class} built from the config: missing "
                          f"{best[0][:6]}, unexpected {best[1][:6]}")


def to_hf(family: str, cfg, state_dict: dict, attn_implementation: str = "sdpa") -> tuple[nn.Module, str]:
    """The transformers model of ``family`` with the weights of a timm-layout ``state_dict``.

    Args:
        family: "vit" (ViT and non-distilled DeiT -> ViTForImageClassification), "deit" (distilled
            -> DeiTForImageClassificationWithTeacher; a non-distilled one is built as a ViT) or
            "swin" (SwinForImageClassification).
        cfg: the fastvit config (ViTConfig / SwinConfig), or any object with its attribute names.
        state_dict: the model's weights, timm's keys.
        attn_implementation: passed to transformers ("sdpa", "eager", ...).

    Returns:
        ``(model, impl)``: the model in eval mode and the attention implementation it runs.
        ``model.fastvit_notes`` lists what makes its outputs differ from fastvit's.

    Raises:
        MissingExtraError: transformers (or the class) does not import here, with the reason.
        ConfigError: a config HF cannot express; CheckpointError: weights that do not fit.
    """
    family = _resolve(family, cfg, state_dict)
    fam = FAMILIES[family]
    transformers = _transformers(fam.hf_class)
    if family == "swin":
        config, notes = _swin_config(transformers, cfg), swin_padding_notes(cfg)
        if not math.isclose(cfg.norm_eps, SWIN_EPS):
            notes.append(f"HF's Swin patch-embedding and merging norms use eps {SWIN_EPS:g}, this model "
                         f"{cfg.norm_eps:g}")
    else:
        config, notes = _vit_config(transformers, cfg, "DeiTConfig" if family == "deit" else "ViTConfig"), []
    model = getattr(transformers, fam.hf_class)._from_config(config, attn_implementation=attn_implementation)
    model.load_state_dict(_hf_state(fam, state_dict, model.state_dict()), strict=True)
    model.eval()
    model.fastvit_notes = notes
    return model, str(getattr(model.config, "_attn_implementation", None) or attn_implementation)
