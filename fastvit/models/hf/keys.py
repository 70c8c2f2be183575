"""HF transformers <-> timm-layout state dicts (ViT, distilled DeiT, Swin), and HF models built with
fastvit's weights, for loading HF checkpoints and for benchmarking HF's implementation.

fastvit's state dicts are timm's, so each family has ONE key table, below as data, used in both
directions: ``hf_to_timm`` (HF checkpoint -> fastvit) and ``timm_to_hf`` / ``to_hf`` (fastvit -> HF).
A row is (timm key, HF key as saved, HF key in a transformers-5 module); ``{i}`` / ``{j}`` are stage
(layer) and block numbers, ``{p}`` is ``weight`` or ``bias``. HF spells its keys two ways:

* "hub": what ``save_pretrained`` writes (every hub checkpoint; also ``state_dict()`` under
  transformers 4), e.g. ``vit.encoder.layer.{i}.attention.attention.query.weight``;
* "module": ``state_dict()`` under transformers 5 (its ``conversion_mapping.py`` renames on
  load/save), e.g. ``vit.layers.{i}.attention.q_proj.weight``.

Both are read; ``to_hf`` writes whichever the installed transformers' model uses. Body rows sit under
the base model's prefix (``vit.`` / ``deit.`` / ``swin.``; absent in a bare ViTModel etc.), head rows
at the top level. timm's fused ``qkv`` (3C rows: [q | k | v], each head-major) is HF's separate
query, key and value concatenated along dim 0: HF's per-head view is head-major too, so no
permutation. HF keys without a fastvit counterpart are dropped and listed in the notes: the pooler
of a bare ViTModel / DeiTModel (Linear + tanh, never used for classification), the stale
``relative_position_index`` buffers of transformers-4 Swin checkpoints.

Family facts (transformers 5.24, timm 1.0.31; checked by the tests against timm's logits):

* ViT: HF's ``layer_norm_eps`` default is 1e-12, fastvit's / timm's 1e-6; nothing in a state dict
  records it, so the converter reports it (``eps_note``), never silently.
* DeiT distilled: tokens [cls, distillation, patches]; ``head`` is HF's ``cls_classifier``,
  ``head_dist`` its ``distillation_classifier``; HF's logits are always the mean of the two (timm's
  in eval). HF's DeiT classes always have the distillation token, so a non-distilled DeiT is a ViT.
* Swin: timm merges patches at the START of stage i+1 (``layers.{i+1}.downsample``), HF at the END
  of stage i (``encoder.layers.{i}.downsample``). Both concatenate the 2x2 neighbours as
  (row 0, col 0), (1, 0), (0, 1), (1, 1) (row offset fastest), so the reduction weight is copied
  unpermuted. The relative-position table has the same layout ((2ws-1)^2 rows, heads) and the same
  index. All norms eps 1e-5 (HF's patch-embed and merging norms are fixed at 1e-5).
  Two behaviours differ: (1) at a size where a stage's map is not a multiple of the window and
  its windows shift, HF pads before the cyclic shift, timm after, so the logits differ there
  (same cost); ``to_hf`` lists such stages in ``model.fastvit_notes``. (2) HF decides the window
  clamp (map <= window -> window = map, no shift) on every forward and keeps it, so after one
  forward at a small size a model computes differently at larger ones: build one per resolution.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

import torch

from fastvit.errors import CheckpointError, ConfigError

HF_LAYER_NORM_EPS = 1e-12  # transformers' ViTConfig / DeiTConfig default
SWIN_EPS = 1e-5
INSTALL = "pip install 'fastvit[peers]'"
SAME = None  # the transformers-5 module spelling equals the hub spelling


def _qkv(template: str, names: str) -> tuple[str, ...]:
    """HF's three keys (q, k, v) that timm's fused qkv is split into; ``*`` is the part's name."""
    return tuple(template.replace("*", name) for name in names.split())


# -- key tables: (timm / fastvit, HF as saved (hub), HF transformers-5 module) -------------------------
_VIT_BODY = (
    ("cls_token",                "embeddings.cls_token",                         SAME),
    ("pos_embed",                "embeddings.position_embeddings",               SAME),  # (1, 1 + N, C)
    ("patch_embed.proj.{p}",     "embeddings.patch_embeddings.projection.{p}",   SAME),  # (C, 3, P, P)
    ("blocks.{i}.norm1.{p}",     "encoder.layer.{i}.layernorm_before.{p}",       "layers.{i}.layernorm_before.{p}"),
    ("blocks.{i}.attn.qkv.{p}",  _qkv("encoder.layer.{i}.attention.attention.*.{p}", "query key value"),
                                 _qkv("layers.{i}.attention.*.{p}", "q_proj k_proj v_proj")),  # (3C, C) = 3 x (C, C)
    ("blocks.{i}.attn.proj.{p}", "encoder.layer.{i}.attention.output.dense.{p}", "layers.{i}.attention.o_proj.{p}"),
    ("blocks.{i}.norm2.{p}",     "encoder.layer.{i}.layernorm_after.{p}",        "layers.{i}.layernorm_after.{p}"),
    ("blocks.{i}.mlp.fc1.{p}",   "encoder.layer.{i}.intermediate.dense.{p}",     "layers.{i}.mlp.fc1.{p}"),  # (I, C)
    ("blocks.{i}.mlp.fc2.{p}",   "encoder.layer.{i}.output.dense.{p}",           "layers.{i}.mlp.fc2.{p}"),  # (C, I)
    ("norm.{p}",                 "layernorm.{p}",                                SAME),
)
_VIT_HEAD = (("head.{p}", "classifier.{p}", SAME),)  # (num_classes, C)

_DEIT_BODY = _VIT_BODY[:2] + (("dist_token", "embeddings.distillation_token", SAME),) + _VIT_BODY[2:]
_DEIT_HEAD = (("head.{p}",      "cls_classifier.{p}",          SAME),   # on the cls token
              ("head_dist.{p}", "distillation_classifier.{p}", SAME))   # on the distillation token

_B = "encoder.layers.{i}.blocks.{j}."
_SWIN_BODY = (
    ("patch_embed.proj.{p}", "embeddings.patch_embeddings.projection.{p}", SAME),
    ("patch_embed.norm.{p}", "embeddings.norm.{p}",                        SAME),
    # patch merging: timm's stage n = i + 1 is HF's stage i ({n} below); (2C, 4C) and (4C,)
    ("layers.{n}.downsample.norm.{p}",          "encoder.layers.{i}.downsample.norm.{p}",          SAME),
    ("layers.{n}.downsample.reduction.weight",  "encoder.layers.{i}.downsample.reduction.weight",  SAME),
    ("layers.{i}.blocks.{j}.norm1.{p}",         _B + "layernorm_before.{p}",                       SAME),
    ("layers.{i}.blocks.{j}.attn.relative_position_bias_table",  # ((2ws-1)^2, heads)
     _B + "attention.self.relative_position_bias_table",
     _B + "attention.relative_position_bias.relative_position_bias_table"),
    ("layers.{i}.blocks.{j}.attn.qkv.{p}",      _qkv(_B + "attention.self.*.{p}", "query key value"),
                                                _qkv(_B + "attention.*.{p}", "q_proj k_proj v_proj")),
    ("layers.{i}.blocks.{j}.attn.proj.{p}",     _B + "attention.output.dense.{p}",  _B + "attention.o_proj.{p}"),
    ("layers.{i}.blocks.{j}.norm2.{p}",         _B + "layernorm_after.{p}",         SAME),
    ("layers.{i}.blocks.{j}.mlp.fc1.{p}",       _B + "intermediate.dense.{p}",      _B + "mlp.fc1.{p}"),
    ("layers.{i}.blocks.{j}.mlp.fc2.{p}",       _B + "output.dense.{p}",            _B + "mlp.fc2.{p}"),
    ("norm.{p}",                                "layernorm.{p}",                    SAME),
)
_SWIN_HEAD = (("head.fc.{p}", "classifier.{p}", SAME),)  # after the mean over tokens


@dataclass(frozen=True)
class HFFamily:
    name: str
    hf_class: str        # the classification model to_hf builds
    hf_base: str         # the bare model (no head)
    prefix: str          # the base model's key prefix inside hf_class
    body: tuple
    head: tuple
    dropped: tuple       # HF keys (under the prefix) with no fastvit counterpart
    marks: tuple         # keys (under the prefix) that identify the family's state dicts


FAMILIES = {
    "vit": HFFamily("vit", "ViTForImageClassification", "ViTModel", "vit.", _VIT_BODY, _VIT_HEAD,
                    ("pooler.dense.{p}",), ("embeddings.cls_token", "embeddings.patch_embeddings.projection.weight")),
    "deit": HFFamily("deit", "DeiTForImageClassificationWithTeacher", "DeiTModel", "deit.", _DEIT_BODY,
                     _DEIT_HEAD, ("pooler.dense.{p}",),
                     ("embeddings.distillation_token", "embeddings.patch_embeddings.projection.weight")),
    "swin": HFFamily("swin", "SwinForImageClassification", "SwinModel", "swin.", _SWIN_BODY, _SWIN_HEAD,
                     (_B + "attention.self.relative_position_index",),
                     ("embeddings.norm.weight", "embeddings.patch_embeddings.projection.weight")),
}
_DETECT_ORDER = ("deit", "swin", "vit")  # ViT's marks are a subset of DeiT's


# -- templates ------------------------------------------------------------------------------------
_FIELDS = {"i": r"(?P<i>\d+)", "j": r"(?P<j>\d+)", "n": r"(?P<n>\d+)", "p": r"(?P<p>weight|bias)"}


@lru_cache(maxsize=None)
def _pattern(template: str) -> re.Pattern:
    rx = re.escape(template)
    for name, group in _FIELDS.items():
        rx = rx.replace(re.escape("{" + name + "}"), group)
    return re.compile(rx)


def _parse(template: str, key: str) -> dict | None:
    """The fields of ``key`` if it fits ``template`` ({n} is read as i = n - 1), else None."""
    m = _pattern(template).fullmatch(key)
    if m is None:
        return None
    fields = {k: (v if k == "p" else int(v)) for k, v in m.groupdict().items()}
    if "n" in fields:
        fields["i"] = fields.pop("n") - 1
    return fields


def _fill(template: str, fields: dict) -> str:
    return template.format(**fields, n=fields.get("i", -1) + 1)


def _names(row: tuple, spelling: str):
    """A row's HF key(s) in ``spelling`` ("hub" or "module"): a template, or three for a fused qkv."""
    return row[2] if spelling == "module" and row[2] is not SAME else row[1]


def _family(name: str) -> HFFamily:
    if name not in FAMILIES:
        raise ConfigError(f"no HF conversion for family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def _timm_rank(fam: HFFamily, key: str) -> tuple:
    """Sort key giving timm's state-dict order (prefix params, stages/blocks in order, norm, head)."""
    rows = fam.body + fam.head
    first_indexed = min(r for r, row in enumerate(rows) if "{i}" in row[0] or "{n}" in row[0])
    for r, row in enumerate(rows):
        fields = _parse(row[0], key)
        if fields is not None:
            indexed = "{i}" in row[0] or "{n}" in row[0]
            phase = 1 if indexed else (0 if r < first_indexed else 2)
            stage = fields["i"] + ("{n}" in row[0]) if indexed else -1
            return phase, stage, fields.get("j", -1), r, fields.get("p") == "bias"
    return 3, 0, 0, 0, 0


# -- timm -> HF -----------------------------------------------------------------------------------
def timm_to_hf(family: str, state: dict, spelling: str = "hub") -> dict:
    """A timm-layout state dict as the HF ``family`` classification model's, in ``spelling``.

    Raises CheckpointError naming a key that fits no row, or a qkv whose rows do not split in 3."""
    fam = _family(family)
    out = {}
    for key, value in state.items():
        for row, base in [(row, True) for row in fam.body] + [(row, False) for row in fam.head]:
            fields = _parse(row[0], key)
            if fields is not None:
                break
        else:
            raise CheckpointError(f"state-dict key {key!r} has no counterpart in HF's {fam.hf_class}")
        prefix, names = (fam.prefix if base else ""), _names(row, spelling)
        if isinstance(names, tuple):  # (3C, ...) -> q, k, v, each (C, ...)
            if value.dim() == 0 or value.shape[0] % 3:
                raise CheckpointError(f"{key}: shape {tuple(value.shape)} does not split into q, k and v")
            for name, part in zip(names, value.chunk(3, dim=0)):
                out[prefix + _fill(name, fields)] = part.clone()
        else:
            out[prefix + _fill(names, fields)] = value
    return out


# -- HF -> timm -----------------------------------------------------------------------------------
def _match_hf(rows: tuple, key: str):
    """(row, fields, spelling, qkv part or None) of the first row whose HF key fits ``key``."""
    for row in rows:
        for spelling in ("hub", "module"):
            names = _names(row, spelling)
            for part, name in (enumerate(names) if isinstance(names, tuple) else [(None, names)]):
                fields = _parse(name, key)
                if fields is not None:
                    return row, fields, (spelling if row[2] is not SAME else None), part
    return None


def detect_hf(state: dict) -> str | None:
    """The family ("vit", "deit", "swin") of an HF state dict (bare model or classifier), or None."""
    for name in _DETECT_ORDER:
        fam = FAMILIES[name]
        if any(all(prefix + mark in state for mark in fam.marks) for prefix in (fam.prefix, "")):
            return name
    return None


def is_hf_vit(state: dict) -> bool:
    """Whether ``state`` is an HF ViTModel / ViTForImageClassification state dict (either spelling)."""
    return detect_hf(state) == "vit"


_SPELLINGS = {frozenset({"hub"}): "save_pretrained / hub names", frozenset({"module"}): "transformers-5 state_dict() names",
              frozenset(): "names common to both spellings"}


def hf_to_timm(state: dict, family: str) -> tuple[dict, dict]:
    """An HF ``family`` state dict (hub or transformers-5 names, with or without the base prefix) as
    timm's, in timm's key order, and notes on what was done.

    Raises CheckpointError naming a key that fits no pattern, a duplicate, a missing q/k/v part or
    q/k/v parts of different shapes."""
    fam = _family(family)
    prefixed = any(k.startswith(fam.prefix) for k in state)
    out, source, parts, dropped, spellings = {}, {}, {}, [], set()
    for key, value in state.items():
        hit = None
        if not prefixed or key.startswith(fam.prefix):
            body = key[len(fam.prefix):] if prefixed else key
            if any(_pattern(d).fullmatch(body) for d in fam.dropped):
                dropped.append(key)
                continue
            hit = _match_hf(fam.body, body)
        hit = hit or _match_hf(fam.head, key)
        if hit is None:
            raise CheckpointError(f"HF key {key!r} fits no key of transformers' {fam.hf_class} / {fam.hf_base}")
        row, fields, spelling, part = hit
        if spelling:
            spellings.add(spelling)
        target = _fill(row[0], fields)
        slot = (target, part)
        if slot in source:
            raise CheckpointError(f"HF keys {source[slot]!r} and {key!r} both give {target!r}")
        source[slot] = key
        if part is None:
            out[target] = value
        else:
            parts.setdefault(target, {})[part] = (key, value)
    for target, got in parts.items():
        names = ("query", "key", "value")
        if len(got) < 3:
            have = ", ".join(k for k, _ in got.values())
            raise CheckpointError(f"{target}: HF's {', '.join(names[i] for i in range(3) if i not in got)} "
                                  f"part is missing (found {have})")
        if len({tuple(v.shape) for _, v in got.values()}) > 1:
            shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in got.values())
            raise CheckpointError(f"{target}: q, k and v shapes differ: {shapes}")
        out[target] = torch.cat([got[i][1] for i in range(3)], dim=0)
    has_head = any(_parse(row[0], k) for row in fam.head for k in out)
    notes = {"converted_from": f"transformers {fam.hf_class if has_head else fam.hf_base}",
             "key_spelling": _SPELLINGS.get(frozenset(spellings), "mixed hub and transformers-5 names"),
             "dropped": dropped}
    if not has_head:
        notes["no_classifier"] = "the checkpoint has no classifier: build the model with num_classes=0"
    return dict(sorted(out.items(), key=lambda kv: _timm_rank(fam, kv[0]))), notes


def eps_note(model_eps: float, checkpoint_eps: float = HF_LAYER_NORM_EPS) -> str | None:
    """The sentence to report when a model's LayerNorm eps differs from the HF checkpoint's, else None."""
    if math.isclose(model_eps, checkpoint_eps, rel_tol=1e-6, abs_tol=0.0):
        return None
    return (f"HF ViT checkpoints use layer_norm_eps={checkpoint_eps:g}; this model uses {model_eps:g}: build it "
            f"with norm_eps={checkpoint_eps:g} to reproduce HF's outputs (with {model_eps:g} the logits move, by "
            "about 1e-5 on a tiny test model and more on trained checkpoints)")


def hf_vit_to_timm(state: dict, config: dict | None = None) -> tuple[dict, dict]:
    """:func:`hf_to_timm` for ViT, with the notes a loader reports: the LayerNorm eps (``config`` is
    the checkpoint's config.json as a dict, if known; a state dict does not record it) and the sizes
    the weights imply."""
    timm_state, notes = hf_to_timm(state, "vit")
    config = config or {}
    eps = config.get("layer_norm_eps")
    notes["layer_norm_eps"] = HF_LAYER_NORM_EPS if eps is None else float(eps)
    notes["layer_norm_eps_source"] = ("config" if eps is not None else
                                      "not recorded in a state dict: HF's default 1e-12 assumed")
    if config.get("hidden_act", "gelu") != "gelu":
        notes["hidden_act"] = f"{config['hidden_act']!r}: fastvit's ViT uses exact GELU ('gelu')"
    notes["sizes"] = _vit_sizes(timm_state, config)
    return timm_state, notes


def _vit_sizes(s: dict, config: dict) -> dict:
    """The ViTConfig values the weights imply (num_heads only from ``config``)."""
    proj = s.get("patch_embed.proj.weight")
    if proj is None or "pos_embed" not in s:
        raise CheckpointError("HF ViT state dict lacks the patch projection or the position embedding")
    depth = 1 + max((int(k.split(".")[1]) for k in s if k.startswith("blocks.")), default=-1)
    grid = math.isqrt(s["pos_embed"].shape[1] - 1)
    fc1 = s.get("blocks.0.mlp.fc1.weight")
    return {"embed_dim": proj.shape[0], "patch_size": proj.shape[-1], "in_chans": proj.shape[1], "depth": depth,
            "img_size": grid * proj.shape[-1] if grid * grid == s["pos_embed"].shape[1] - 1 else None,
            "mlp_ratio": fc1.shape[0] / proj.shape[0] if fc1 is not None else None,
            "num_classes": s["head.weight"].shape[0] if "head.weight" in s else 0,
            "qkv_bias": "blocks.0.attn.qkv.bias" in s, "num_heads": config.get("num_attention_heads")}
