"""torchvision <-> timm-layout state dicts (ViT and Swin V1): torchvision checkpoints into fastvit
(``tv_to_timm``, and ``from_torchvision`` for the loader), and fastvit's weights under torchvision's
names (``timm_to_tv``) for building torchvision's models as peers. torchvision is never imported here.

One key table per family, used both ways: a row is (timm / fastvit key, torchvision key, older
torchvision spellings read too). Fields: ``{i}`` a ViT block or a Swin stage, ``{j}`` a block within a
Swin stage, ``{p}`` ``weight`` or ``bias``. torchvision's Swin keeps everything before the final norm
in one ``features`` Sequential, [stem, stage 0, merging, stage 1, merging, ...]: in its keys ``{b}`` =
2i + 1 is stage i's index there and ``{m}`` = 2i that of the merging which opens stage i (timm and
fastvit: ``layers.{i}.downsample``).

Family facts (torchvision 0.29.1, checked by tests/test_torchvision.py against torchvision's logits):

* ViT (``VisionTransformer``: vit_b_16, vit_b_32, vit_l_16, vit_l_32, vit_h_14): the class token comes
  first and ``encoder.pos_embedding`` covers it, as timm's ``pos_embed``; ``nn.MultiheadAttention``'s
  ``in_proj_weight`` (3C, C) is [q; k; v], heads major within each, exactly timm's fused ``qkv``: copied
  unchanged. The MLP is ``torchvision.ops.MLP`` (Linear at 0 and 3; torchvision before 0.13 saved
  ``linear_1`` / ``linear_2``, read too). LayerNorm eps 1e-6, as fastvit's ViT. Refused, since fastvit
  would compute something else: ``heads.pre_logits`` (``representation_size``: Linear and tanh before
  the head) and a convolutional stem (``conv_stem_configs``). At another resolution the position
  embedding is resampled as torchvision's ``interpolate_embeddings`` does (bicubic, align_corners=True,
  no antialiasing; timm's resampling is antialiased with align_corners=False), so the logits are
  torchvision's.
* Swin V1 (``SwinTransformer``: swin_t, swin_s, swin_b): stem Conv2d, Permute, LayerNorm
  (``features.0.{0,2}``); patch merging concatenates the 2x2 neighbours as (row 0, col 0), (1, 0),
  (0, 1), (1, 1), timm's order, then LayerNorm(4C) and the bias-free reduction: copied unpermuted. The
  relative-position table and index have timm's layout; the index, a buffer in torchvision's state
  dicts, is dropped (fastvit computes it). All norms eps 1e-5; final norm, mean over the map,
  ``head``. Two behaviours differ from fastvit's: torchvision pads a map to a multiple of the window
  before the cyclic shift (as HF; fastvit and timm after it), which changes the logits at sizes where
  a shifted stage's map is not a multiple of the window (reported under ``warnings``); and it never
  shrinks the window to a smaller map but pads the map up, where fastvit's window, and so its table,
  is smaller (the table's shape then refuses the checkpoint). Swin V2 (swin_v2_*: cosine attention
  with ``logit_scale``, the ``cpb_mlp`` position bias, norms after the branches, merging that
  normalizes after the reduction) is refused.
"""
from __future__ import annotations

import math
import re
from functools import lru_cache

import torch
import torch.nn.functional as F

from fastvit.errors import CheckpointError
from fastvit.models.hf.build import swin_padding_notes
from fastvit.models.swin import SwinTransformer
from fastvit.models.vit import VisionTransformer

VIT_EPS, SWIN_EPS = 1e-6, 1e-5
CLASSES = {"vit": "torchvision.models.VisionTransformer", "swin": "torchvision.models.SwinTransformer (Swin V1)"}

_L = "encoder.layers.encoder_layer_{i}."
_VIT = (
    ("cls_token",                  "class_token",                       ()),  # (1, 1, C)
    ("pos_embed",                  "encoder.pos_embedding",             ()),  # (1, 1 + N, C)
    ("patch_embed.proj.{p}",       "conv_proj.{p}",                     ()),  # (C, 3, P, P)
    ("blocks.{i}.norm1.{p}",       _L + "ln_1.{p}",                     ()),
    ("blocks.{i}.attn.qkv.weight", _L + "self_attention.in_proj_weight", ()),  # (3C, C): [q; k; v]
    ("blocks.{i}.attn.qkv.bias",   _L + "self_attention.in_proj_bias",  ()),
    ("blocks.{i}.attn.proj.{p}",   _L + "self_attention.out_proj.{p}",  ()),
    ("blocks.{i}.norm2.{p}",       _L + "ln_2.{p}",                     ()),
    ("blocks.{i}.mlp.fc1.{p}",     _L + "mlp.0.{p}",                    (_L + "mlp.linear_1.{p}",)),
    ("blocks.{i}.mlp.fc2.{p}",     _L + "mlp.3.{p}",                    (_L + "mlp.linear_2.{p}",)),
    ("norm.{p}",                   "encoder.ln.{p}",                    ()),
    ("head.{p}",                   "heads.head.{p}",                    ()),
)
_S = "features.{b}.{j}."
_SWIN = (
    ("patch_embed.proj.{p}",                    "features.0.0.{p}",           ()),  # Conv2d (C, 3, P, P)
    ("patch_embed.norm.{p}",                    "features.0.2.{p}",           ()),  # after the Permute
    ("layers.{i}.downsample.norm.{p}",          "features.{m}.norm.{p}",      ()),  # (4C,)
    ("layers.{i}.downsample.reduction.weight",  "features.{m}.reduction.weight", ()),  # (2C, 4C)
    ("layers.{i}.blocks.{j}.norm1.{p}",         _S + "norm1.{p}",             ()),
    ("layers.{i}.blocks.{j}.attn.relative_position_bias_table", _S + "attn.relative_position_bias_table", ()),
    ("layers.{i}.blocks.{j}.attn.qkv.{p}",      _S + "attn.qkv.{p}",          ()),  # (3C, C)
    ("layers.{i}.blocks.{j}.attn.proj.{p}",     _S + "attn.proj.{p}",         ()),
    ("layers.{i}.blocks.{j}.norm2.{p}",         _S + "norm2.{p}",             ()),
    ("layers.{i}.blocks.{j}.mlp.fc1.{p}",       _S + "mlp.0.{p}",             (_S + "mlp.linear_1.{p}",)),
    ("layers.{i}.blocks.{j}.mlp.fc2.{p}",       _S + "mlp.3.{p}",             (_S + "mlp.linear_2.{p}",)),
    ("norm.{p}",                                "norm.{p}",                   ()),
    ("head.fc.{p}",                             "head.{p}",                   ()),
)
TABLES = {"vit": _VIT, "swin": _SWIN}
DROPPED = {"vit": (), "swin": (_S + "attn.relative_position_index",)}  # buffers fastvit computes itself

# -- templates ------------------------------------------------------------------------------------
_FIELDS = {name: rf"(?P<{name}>\d+)" for name in "ijbm"} | {"p": r"(?P<p>weight|bias)"}


@lru_cache(maxsize=None)
def _pattern(template: str) -> re.Pattern:
    rx = re.escape(template)
    for name, group in _FIELDS.items():
        rx = rx.replace(re.escape("{" + name + "}"), group)
    return re.compile(rx)


def _parse(template: str, key: str) -> dict | None:
    """The fields of ``key`` if it fits ``template`` ({b} / {m} read back as the stage i), else None."""
    found = _pattern(template).fullmatch(key)
    if found is None:
        return None
    fields = {k: (v if k == "p" else int(v)) for k, v in found.groupdict().items()}
    if "b" in fields:  # a stage's blocks sit at odd indices of features
        b = fields.pop("b")
        if b % 2 == 0:
            return None
        fields["i"] = (b - 1) // 2
    if "m" in fields:  # a merging at an even index from 2 on
        m = fields.pop("m")
        if m % 2 or m == 0:
            return None
        fields["i"] = m // 2
    return fields


def _fill(template: str, fields: dict) -> str:
    i = fields.get("i", 0)
    return template.format(**fields, b=2 * i + 1, m=2 * i)


def _match(rows: tuple, key: str):
    """(row, fields, older spelling?) of the first row whose torchvision key (or an older one) fits."""
    for row in rows:
        for old, template in [(False, row[1])] + [(True, t) for t in row[2]]:
            fields = _parse(template, key)
            if fields is not None:
                return row, fields, old
    return None


# -- recognising, refusing ------------------------------------------------------------------------
def detect_torchvision(state: dict) -> str | None:
    """"vit" or "swin" for a torchvision ViT / Swin state dict (any variant, V2 included), else None."""
    if "class_token" in state and "encoder.pos_embedding" in state:
        return "vit"
    if "features.0.0.weight" in state and any(re.fullmatch(r"features\.\d+\.\d+\.attn\.qkv\.weight", k) for k in state):
        return "swin"  # torchvision's CNNs have features.0.0 too, but no attention
    return None


def _refuse_variants(state: dict, family: str) -> None:
    """CheckpointError for the torchvision variants fastvit's models do not compute."""
    if family == "vit":
        if "heads.pre_logits.weight" in state:
            r, c = state["heads.pre_logits.weight"].shape
            raise CheckpointError(
                f"torchvision ViT checkpoint with a representation layer (heads.pre_logits: Linear {c} -> {r}, then "
                "tanh, before heads.head; built with representation_size): fastvit's ViT has no such layer and "
                "would compute other logits")
        stem = sorted(k for k in state if k.startswith("conv_proj.") and k not in ("conv_proj.weight", "conv_proj.bias"))
        if stem:
            raise CheckpointError(
                f"torchvision ViT checkpoint with a convolutional stem (conv_stem_configs: {', '.join(stem[:3])}, "
                "...): fastvit's ViT embeds patches with one Conv2d (conv_proj.weight) and would compute other logits")
        return
    v2 = sorted({"logit_scale" if k.endswith(".attn.logit_scale") else "cpb_mlp"
                 for k in state if k.endswith(".attn.logit_scale") or ".attn.cpb_mlp." in k})
    if v2:
        raise CheckpointError(
            f"torchvision Swin V2 checkpoint (swin_v2_t / swin_v2_s / swin_v2_b: its blocks have {' and '.join(v2)}): "
            "Swin V2 computes cosine attention scaled by a learned logit_scale, a position bias from an MLP over "
            "log-spaced offsets (cpb_mlp), norms after each branch and patch merging that normalizes after the "
            "reduction; fastvit's Swin is V1 (swin_t, swin_s, swin_b) and would compute other logits")


# -- torchvision -> timm, timm -> torchvision -----------------------------------------------------------
def tv_to_timm(state: dict, family: str) -> tuple[dict, dict]:
    """A torchvision ``family`` ("vit" or "swin") state dict under timm's names, and notes on what was
    done (``converted_from``, ``key_spelling``, ``dropped``; ``no_classifier`` when there is no head).

    Raises CheckpointError for a variant fastvit does not compute (ViT's pre-logits layer or
    convolutional stem, Swin V2), a key that fits no row, or two keys giving one fastvit entry."""
    _refuse_variants(state, family)
    rows = TABLES[family]
    out, source, dropped, old = {}, {}, [], False
    for key, value in state.items():
        if any(_parse(d, key) is not None for d in DROPPED[family]):
            dropped.append(key)
            continue
        hit = _match(rows, key)
        if hit is None:
            raise CheckpointError(f"torchvision key {key!r} fits no key of {CLASSES[family]}")
        row, fields, was_old = hit
        old |= was_old
        target = _fill(row[0], fields)
        if target in source:
            raise CheckpointError(f"torchvision keys {source[target]!r} and {key!r} both give {target!r}")
        source[target] = key
        out[target] = value
    notes = {"converted_from": CLASSES[family],
             "key_spelling": ("torchvision before 0.13 (mlp.linear_1 / mlp.linear_2)" if old
                              else "torchvision 0.13 and later (mlp.0 / mlp.3)"),
             "dropped": dropped}
    if not any(k.startswith("head.") for k in out):
        notes["no_classifier"] = "the checkpoint has no classifier: build the model with num_classes=0"
    return out, notes


def timm_to_tv(state: dict, family: str) -> dict:
    """A timm-layout state dict under torchvision's names (the current spelling).

    Raises CheckpointError naming a key with no torchvision counterpart."""
    out = {}
    for key, value in state.items():
        for row in TABLES[family]:
            fields = _parse(row[0], key)
            if fields is not None:
                out[_fill(row[1], fields)] = value
                break
        else:
            raise CheckpointError(f"state-dict key {key!r} has no counterpart in {CLASSES[family]}")
    return out


def interpolate_pos_embedding(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A (1, 1 + n * n, C) position embedding resampled to ``grid`` as torchvision's
    interpolate_embeddings does: the class row kept, the n x n rows bicubic with align_corners=True
    and no antialiasing (computed in float32, returned in the input's dtype)."""
    n = math.isqrt(pos.shape[1] - 1)
    if pos.dim() != 3 or pos.shape[0] != 1 or n * n != pos.shape[1] - 1:
        raise CheckpointError(f"encoder.pos_embedding shape {tuple(pos.shape)} is not (1, 1 + n * n, C): its patch "
                              "grid is not square, which torchvision's ViT always has")
    cls, img = pos[:, :1], pos[:, 1:].float().transpose(1, 2).reshape(1, -1, n, n)  # (1, C, n, n)
    img = F.interpolate(img, size=tuple(grid), mode="bicubic", align_corners=True)
    return torch.cat([cls, img.flatten(2).transpose(1, 2).to(pos.dtype)], dim=1)  # (1, 1 + gh * gw, C)


def _vit_checks(state: dict, model, notes: dict) -> list[str]:
    cfg = model.cfg
    if cfg.norm_position != "pre" or cfg.mlp_act != "gelu":
        raise CheckpointError(f"torchvision's ViT is pre-norm with exact GELU; this model has norm_position="
                              f"{cfg.norm_position!r}, mlp_act={cfg.mlp_act!r} and would compute other logits")
    if "blocks.0.attn.qkv.bias" in state and not cfg.qkv_bias:
        raise CheckpointError("torchvision's attention has q, k and v biases (in_proj_bias); this model was built "
                              "with qkv_bias=False: build it with qkv_bias=True")
    pos = state.get("pos_embed")
    if pos is not None and model.num_prefix_tokens == 1 and pos.shape[1] != cfg.num_tokens:
        n = math.isqrt(pos.shape[1] - 1)
        state["pos_embed"] = interpolate_pos_embedding(pos, cfg.grid_size)
        notes["pos_embedding"] = (f"resampled from {n}x{n} to {cfg.grid_size[0]}x{cfg.grid_size[1]} patches as "
                                  "torchvision's interpolate_embeddings does (bicubic, align_corners=True, no "
                                  "antialiasing)")
        notes["resampled_pos_embed"] = (pos.shape[1], state["pos_embed"].shape[1])
    return [] if math.isclose(cfg.norm_eps, VIT_EPS) else [
        f"torchvision's ViT uses LayerNorm eps {VIT_EPS:g}; this model uses {cfg.norm_eps:g}: build it with "
        f"norm_eps={VIT_EPS:g} to reproduce torchvision's logits"]


def _swin_checks(model) -> list[str]:
    cfg, notes = model.cfg, []
    if not math.isclose(cfg.norm_eps, SWIN_EPS):
        notes.append(f"torchvision's Swin uses LayerNorm eps {SWIN_EPS:g}; this model uses {cfg.norm_eps:g}: build it "
                     f"with norm_eps={SWIN_EPS:g} to reproduce torchvision's logits")
    return notes + swin_padding_notes(cfg, library="torchvision")


def from_torchvision(state: dict, model) -> tuple[dict, dict, list[str]] | None:
    """(timm-format state, notes, warnings) for a torchvision ViT or Swin state dict, else None.

    The model is checked against what torchvision computes: refused (CheckpointError) where it would
    compute something else (another family, a post-norm or ReLU ViT), warned where the logits move (the
    LayerNorm eps, the stages where Swin's padding order matters at the model's size). A ViT's position
    embedding made for another grid is resampled torchvision's way (``notes["pos_embedding"]``)."""
    family = detect_torchvision(state)
    if family is None:
        return None
    want = VisionTransformer if family == "vit" else SwinTransformer
    if not isinstance(model, want):
        raise CheckpointError(f"a torchvision {family} checkpoint ({CLASSES[family]}) cannot load into fastvit's "
                              f"{type(model).__name__}: build a {want.__name__} ({family} presets)")
    converted, notes = tv_to_timm(state, family)
    warned = _vit_checks(converted, model, notes) if family == "vit" else _swin_checks(model)
    return converted, notes, warned
