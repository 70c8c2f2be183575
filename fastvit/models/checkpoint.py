"""Loading timm-format state dicts, also across resolutions."""
from __future__ import annotations

import os

import torch

from fastvit.errors import CheckpointError
from fastvit.models.pos_embed import resample_pos_embed


def _read(path_or_state_dict) -> dict:
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        obj = torch.load(path_or_state_dict, map_location="cpu", weights_only=True)
    else:
        obj = path_or_state_dict
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint must hold a state dict, got {type(obj).__name__}")
    for wrapper in ("state_dict", "model", "state_dict_ema"):  # common training-script wrappers
        if wrapper in obj and isinstance(obj[wrapper], dict) and "pos_embed" not in obj:
            return obj[wrapper]
    return obj


def load_checkpoint(model, path_or_state_dict, *, strict: bool = True) -> dict:
    """Load a timm-format ViT state dict into ``model``, resampling pos_embed if the grid differs.

    Files are read with ``torch.load(..., weights_only=True)``. A checkpoint made at another
    resolution has its position embedding resampled to the model's grid (bicubic, antialiased, in
    float32), as timm does.

    Args:
        model: a fastvit VisionTransformer.
        path_or_state_dict: a file path or a state dict (optionally wrapped under "state_dict"/"model").
        strict: raise on missing or unexpected keys (the default).

    Returns:
        ``{"missing": [...], "unexpected": [...], "resampled_pos_embed": (old_tokens, new_tokens) or None}``.

    Raises:
        CheckpointError: missing or unexpected keys (strict), or a tensor whose shape differs.
    """
    state = dict(_read(path_or_state_dict))
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if strict and (missing or unexpected):
        raise CheckpointError(f"checkpoint does not match the model: missing keys {missing}, unexpected keys {unexpected}")
    resampled = None
    if "pos_embed" in state and state["pos_embed"].shape != own["pos_embed"].shape:
        old = state["pos_embed"]
        if old.dim() != 3 or old.shape[-1] != own["pos_embed"].shape[-1]:
            raise CheckpointError(f"pos_embed shape {tuple(old.shape)} cannot be resampled to {tuple(own['pos_embed'].shape)}")
        state["pos_embed"] = resample_pos_embed(old, model.cfg.grid_size)
        resampled = (old.shape[1], state["pos_embed"].shape[1])
    bad = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
           for k, v in state.items() if k in own and v.shape != own[k].shape]
    if bad:
        raise CheckpointError("checkpoint tensor shapes differ from the model: " + "; ".join(bad))
    model.load_state_dict(state, strict=strict)
    return {"missing": missing, "unexpected": unexpected, "resampled_pos_embed": resampled}
