"""Deterministic "canonical" weights and inputs for model fixtures (pure torch, no other dependency).

Full pretrained checkpoints are too large to commit, so a fixture records a model's state-dict layout
(an ordered list of key, shape, dtype) and a seed; `canonical_state_dict(layout, seed)` rebuilds the same
weights on any machine, bit for bit, and the fixture holds the reference implementation's logits for them.

The fill rule, applied to the entries in order, every tensor drawn from one
`torch.Generator().manual_seed(seed)` as float32 `torch.randn(shape)` and then cast to the entry's dtype:

| entry (by key, then shape)                                   | value                              |
|---|---|
| non-floating dtype (integer / bool buffers)                  | skipped: no draw, not in the result|
| ``*relative_position_bias_table``                            | RPB_STD * randn                    |
| ``*pos_embed``, ``*position_embeddings``, ``*pos_embedding`` | POS_STD * randn                    |
| ``*cls_token``, ``*class_token``, ``*dist_token``, ``*reg_token``, ``*mask_token`` | TOKEN_STD * randn |
| 1-D ``*weight`` (LayerNorm weights)                          | 1 + NORM_STD * randn               |
| other 1-D (biases)                                           | BIAS_STD * randn                   |
| ≥2-D (Linear / Conv weights)                                 | randn * gain / sqrt(fan_in)        |

where fan_in = prod(shape[1:]) (in_features for a Linear, in_channels/groups * kh * kw for a Conv2d) and
gain = QK_GAIN for the attention projections that form the logits (a fused ``*qkv.weight`` or
``*in_proj_weight``, or separate ``*q_proj.weight`` / ``*k_proj.weight`` / ``*query.weight`` /
``*key.weight``), 1 otherwise. (torchvision's names -- ``class_token``, ``pos_embedding``,
``in_proj_weight`` -- fall in the same classes as timm's.) With
LayerNorm'd inputs the attention logits then have a standard deviation of about QK_GAIN**2 (plus the
relative position bias in Swin), so attention is clearly non-uniform, while every other layer keeps
activations O(1), so logits stay finite and of order 1-10 through deep models.

Integer buffers (Swin's ``relative_position_index``, its ``attn_mask``) are deterministic functions of the
configuration, and timm registers them as non-persistent: they are not in a state dict at all. An integer
entry passed here anyway is left out of the result without consuming any random numbers; a caller that
needs it copies it from the model as built.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch

NORM_STD = 0.1
BIAS_STD = 0.02
POS_STD = 0.5
TOKEN_STD = 0.5
RPB_STD = 1.0
QK_GAIN = 1.5

_QK_SUFFIXES = ("qkv.weight", "in_proj_weight", "q_proj.weight", "k_proj.weight", "query.weight", "key.weight")
_TOKEN_SUFFIXES = ("cls_token", "class_token", "dist_token", "reg_token", "mask_token")
_POS_SUFFIXES = ("pos_embed", "position_embeddings", "pos_embedding")


def _as_dtype(dtype) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype)
    name = name[len("torch."):] if name.startswith("torch.") else name
    out = getattr(torch, name, None)
    if not isinstance(out, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}")
    return out


def fill_rule(key: str, shape: Sequence[int]) -> tuple[float, float]:
    """(offset, scale) of the entry: its value is offset + scale * randn(shape)."""
    shape = tuple(int(s) for s in shape)
    if key.endswith("relative_position_bias_table"):
        return 0.0, RPB_STD
    if key.endswith(_POS_SUFFIXES):
        return 0.0, POS_STD
    if key.endswith(_TOKEN_SUFFIXES):
        return 0.0, TOKEN_STD
    if len(shape) <= 1:
        return (1.0, NORM_STD) if key.endswith("weight") else (0.0, BIAS_STD)
    fan_in = math.prod(shape[1:])
    gain = QK_GAIN if key.endswith(_QK_SUFFIXES) else 1.0
    return 0.0, gain / math.sqrt(fan_in)


def canonical_state_dict(keys_shapes: Iterable[Sequence], seed: int) -> dict[str, torch.Tensor]:
    """Canonical weights for a state-dict layout.

    keys_shapes: entries (key, shape) or (key, shape, dtype), in state-dict order; dtype is a torch.dtype
    or its name ("float32", "torch.float32"), float32 when absent. Returns a dict in the same order, without
    the non-floating entries.
    """
    generator = torch.Generator().manual_seed(int(seed))
    out: dict[str, torch.Tensor] = {}
    for entry in keys_shapes:
        key, shape = entry[0], tuple(int(s) for s in entry[1])
        dtype = _as_dtype(entry[2] if len(entry) > 2 else None)
        if not dtype.is_floating_point:
            continue
        offset, scale = fill_rule(key, shape)
        value = torch.randn(shape, generator=generator, dtype=torch.float32)
        value = value * scale + offset if offset else value * scale
        out[key] = value.to(dtype)
    return out


def layout(state_dict: dict) -> list[list]:
    """The (key, shape, dtype-name) layout of a state dict, as stored in fixtures."""
    return [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in state_dict.items()]


def image_batch(resolution: int | Sequence[int], seed: int, batch: int = 1, channels: int = 3) -> torch.Tensor:
    """The seeded input batch: torch.randn(batch, channels, H, W) from torch.Generator().manual_seed(seed)."""
    h, w = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn(batch, channels, h, w, generator=generator, dtype=torch.float32)


def checksum(tensors: Iterable[torch.Tensor]) -> list[float]:
    """[sum, sum of squares, count] in float64 over all elements: a cheap fingerprint of generated values."""
    total, squares, count = 0.0, 0.0, 0
    for t in tensors:
        t = t.detach().to(torch.float64)
        total += float(t.sum())
        squares += float((t * t).sum())
        count += t.numel()
    return [total, squares, float(count)]


def sha256(tensors: Iterable[torch.Tensor]) -> str:
    """Hex SHA-256 of the tensors' float32 bytes, concatenated in order: a bit-exact fingerprint."""
    import ctypes
    import hashlib

    digest = hashlib.sha256()
    for t in tensors:
        exact = t.detach().to("cpu", torch.float32).contiguous()
        digest.update(ctypes.string_at(exact.data_ptr(), exact.numel() * exact.element_size()))
    return digest.hexdigest()
