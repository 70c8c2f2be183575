"""Loading timm-format state dicts, also across resolutions; HF transformers and torchvision checkpoints
are converted first."""
from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path

import torch

from fastvit.errors import CheckpointError
from fastvit.models.hf.keys import detect_hf, eps_note, hf_to_timm, hf_vit_to_timm
from fastvit.models.tv.keys import from_torchvision


WRAPPERS = ("state_dict", "model", "state_dict_ema", "model_ema", "module")  # training scripts' envelopes
PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile


def read_checkpoint(path: str | os.PathLike) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU, its failures turned into CheckpointError.

    A file whose pickle asks for code or for objects other than tensors and plain containers is
    refused unread (weights_only never runs it); how to convert a trusted one is in the message."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint file {str(path)!r} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} is not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        if "Weights only load failed" not in text or re.search(r"Unsupported operand|invalid load key|truncated", text):
            detail = re.search(r"Unsupported operand \d+|invalid load key[^.]*|[^.]*truncated[^.]*", text)
            raise CheckpointError(f"checkpoint {str(path)!r} cannot be read: its pickle is corrupt or it is not a "
                                  f"torch.save file ({detail.group(0).strip() if detail else type(err).__name__})") from None
        wanted = re.search(r"(?:GLOBAL|global) ([\w.]+)", text)
        what = f" (it asks for {wanted.group(1)})" if wanted else ""
        raise CheckpointError(
            f"checkpoint {str(path)!r} was refused for safety: loading it with weights_only=True found Python "
            f"objects or code that only a full unpickling would create{what}; it was not executed. If you "
            "trust its source, convert it once: obj = torch.load(path, weights_only=False); "
            "torch.save(obj['state_dict'] (or the tensors you need), new_path); then load new_path. A damaged "
            "file can fail the same way.") from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as err:
        why = str(err).strip().splitlines()[0][:200] if str(err).strip() else "the file ends early (empty or truncated)"
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read: {type(err).__name__}: {why}; the file is "
                              "truncated, corrupt or not a torch.save file") from None


def unwrap(obj) -> dict:
    """The state dict inside what training scripts save: the dict under 'state_dict', 'model', ...,
    with the key prefixes of DistributedDataParallel ('module.') and torch.compile ('_orig_mod.')
    removed."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint must hold a state dict, got {type(obj).__name__}")
    for _ in range(3):  # envelopes nest (e.g. {'model': {'state_dict': ...}})
        tensors = [v for v in obj.values() if isinstance(v, torch.Tensor)]
        inner = [obj[w] for w in WRAPPERS if isinstance(obj.get(w), dict)]
        if tensors or not inner:
            break
        obj = inner[0]
    state = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise CheckpointError(f"checkpoint key {key!r} is not a string: not a state dict")
        for prefix in PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix):]
        state[key] = value
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint entries {bad[:5]} are not tensors: not a state dict")
    return state


def _read(path_or_state_dict) -> dict:
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        return unwrap(read_checkpoint(path_or_state_dict))
    return unwrap(path_or_state_dict)


def from_hf(state: dict, model, hf_config: dict | None = None) -> tuple[dict, dict | None, list[str]]:
    """(timm-format state, the conversion's notes or None, warnings): an HF transformers state dict
    (ViT, DeiT or Swin, recognised by its keys) converted to timm's names (q, k, v fused into qkv,
    the classifier as the head); any other state returned as it is. For HF ViT the LayerNorm eps
    is compared with the model's: HF's default is 1e-12 (a state dict does not record it; pass the
    checkpoint's config.json as ``hf_config`` when it is known), and a difference is a warning."""
    family = detect_hf(state)
    if family is None:
        return state, None, []
    if family != "vit":
        converted, notes = hf_to_timm(state, family)
        return converted, notes, []
    converted, notes = hf_vit_to_timm(state, hf_config)
    model_eps = getattr(getattr(model, "cfg", None), "norm_eps", None)
    note = None if model_eps is None else eps_note(model_eps, notes["layer_norm_eps"])
    return converted, notes, [note] if note else []


def load_checkpoint(model, path_or_state_dict, *, strict: bool = True, hf_config: dict | None = None) -> dict:
    """Load a timm-format state dict into a fastvit model, adapting it to the model's resolution.

    Files are read with ``torch.load(..., weights_only=True)``. HF transformers state dicts (ViT,
    ``ViTModel`` / ``ViTForImageClassification``; DeiT; Swin) are recognised by their keys and
    converted first (:func:`from_hf`); an HF ViT's LayerNorm eps (1e-12 unless ``hf_config``, its
    config.json as a dict, says otherwise) that differs from the model's is reported under
    ``warnings`` and issued as a UserWarning. torchvision ViT and Swin V1 state dicts are recognised
    and converted too (:func:`fastvit.models.tv.from_torchvision`: a variant fastvit does not compute
    is refused, what moves the logits is a warning, a ViT position embedding for another grid is
    resampled as torchvision's ``interpolate_embeddings`` does). The model says how its checkpoints
    are adapted (``BackendModel``): ``convert_checkpoint`` renames another layout of the family's
    checkpoints (original Microsoft Swin files), entries named in ``derived_state_keys`` (buffers the
    model computes itself, e.g. Swin's ``relative_position_index`` / ``attn_mask``) are dropped, and
    a tensor whose shape differs goes through ``resample_state``: a position embedding made at
    another resolution is resampled to the model's grid (bicubic, antialiased, in float32, as timm
    does; ViT / DeiT token sequences with their 1 or 2 prefix rows kept, PiT's spatial map).

    Args:
        model: a fastvit model (any family).
        path_or_state_dict: a file path or a state dict (optionally wrapped under "state_dict"/"model").
        strict: raise on missing or unexpected keys (the default).

    Returns:
        ``{"missing": [...], "unexpected": [...], "resampled_pos_embed": (old, new) or None,
        "dropped": [...], "converted": notes or None, "warnings": [...]}``: ``resampled_pos_embed``
        counts the positions before and after (rows of a token sequence, prefix included; H * W cells
        of a map); ``dropped`` the derived entries removed; ``converted`` what an HF or torchvision
        conversion did (its source class, key spelling, dropped entries, the eps assumed, a
        torchvision position embedding's resampling).

    Raises:
        CheckpointError: missing or unexpected keys (strict), a tensor whose shape differs and
            cannot be resampled (named with both shapes), or a torchvision variant the model would
            not compute (named).
    """
    state = dict(_read(path_or_state_dict))
    tv = from_torchvision(state, model)
    state, converted, notes = tv if tv is not None else from_hf(state, model, hf_config)
    resampled = converted.pop("resampled_pos_embed", None) if converted else None
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    state = model.convert_checkpoint(state)
    own = model.state_dict()
    derived = set(model.derived_state_keys)
    dropped = sorted(k for k in state if k not in own and k.rsplit(".", 1)[-1] in derived)
    for key in dropped:
        del state[key]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if strict and (missing or unexpected):
        raise CheckpointError(f"checkpoint does not match the model: missing keys {missing}, unexpected keys {unexpected}")
    for key in [k for k, v in state.items() if k in own and v.shape != own[k].shape]:
        old = state[key]
        try:
            new = model.resample_state(key, old)
        except ValueError as err:  # e.g. a pos_embed whose grid is not square
            raise CheckpointError(f"{key} shape {tuple(old.shape)} cannot be resampled to "
                                  f"{tuple(own[key].shape)}: {err}") from None
        if new is None:
            continue  # reported with the other shape mismatches below
        if new.shape != own[key].shape:
            raise CheckpointError(f"{key} shape {tuple(old.shape)} cannot be resampled to {tuple(own[key].shape)}")
        state[key] = new
        if key == "pos_embed":
            resampled = (_positions(old), _positions(new))
    bad = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
           for k, v in state.items() if k in own and v.shape != own[k].shape]
    if bad:
        raise CheckpointError("checkpoint tensor shapes differ from the model: " + "; ".join(bad))
    model.load_state_dict(state, strict=strict)
    return {"missing": missing, "unexpected": unexpected, "resampled_pos_embed": resampled, "dropped": dropped,
            "converted": converted, "warnings": notes}


def _positions(pos_embed: torch.Tensor) -> int:
    """Positions of a (1, T + N, E) sequence (its rows) or a (1, E, H, W) map (H * W)."""
    return pos_embed.shape[1] if pos_embed.dim() == 3 else pos_embed.shape[-2] * pos_embed.shape[-1]
