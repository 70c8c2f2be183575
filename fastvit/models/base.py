"""What every model family shares: choosing each op's backend on a built model, and telling which
op shapes the model calls, so that checks and sweeps can ask the registries about it."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from fastvit.errors import ArgumentError, ConfigError, DeviceError, DTypeError, ShapeError
from fastvit.models.pos_embed import resample_pos_embed
from fastvit.ops.attention.registry import TRAINED
from fastvit.registry import registry

# the config field that pins each op's backend
BACKEND_FIELDS = {"attention": "attn_backend", "norm": "norm_backend", "patch": "patch_backend"}


def check_positive(cfg, *names: str) -> None:
    """ConfigError naming the field unless each is a positive number (tuples: every element)."""
    for name in names:
        value = getattr(cfg, name)
        values = value if isinstance(value, (tuple, list)) else (value,)
        if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                 and v > 0 for v in values):
            raise ConfigError(f"{type(cfg).__name__}.{name} must be positive, got {value!r}")


def check_integers(cfg, *names: str) -> None:
    """ConfigError naming the field unless each is an int (tuples: every element)."""
    for name in names:
        value = getattr(cfg, name)
        values = value if isinstance(value, (tuple, list)) else (value,)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            what = "integers" if values is value else "an integer"
            raise ConfigError(f"{type(cfg).__name__}.{name} must be {what}, got {value!r}")


def check_rates(cfg, *names: str) -> None:
    """ConfigError naming the field unless each is a probability in [0, 1)."""
    for name in names:
        value = getattr(cfg, name)
        if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
            raise ConfigError(f"{type(cfg).__name__}.{name} must be in [0, 1), got {value!r}")


def check_choice(cfg, name: str, choices) -> None:
    value = getattr(cfg, name)
    if value not in choices:
        raise ConfigError(f"{type(cfg).__name__}.{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def check_divisible(cfg, name: str, by: str) -> None:
    value, divisor = getattr(cfg, name), getattr(cfg, by)
    if value % divisor:
        raise ConfigError(f"{type(cfg).__name__}.{name}={value} is not divisible by {by}={divisor}")


def check_images(images, in_chans: int, like: torch.Tensor) -> None:
    """A floating (B, C, H, W) batch with the model's channels, on the device (and, outside autocast,
    in the dtype) of the model's parameter ``like``."""
    if not isinstance(images, torch.Tensor):
        raise DTypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise ShapeError(f"images must be 4-D (B, C, H, W), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise DTypeError(f"images must be floating point, got dtype {images.dtype}; convert "
                         "(and normalise) them first, e.g. images.float() / 255")
    if images.shape[1] != in_chans:
        raise ShapeError(f"images have {images.shape[1]} channels, the model expects {in_chans}")
    if images.device != like.device:
        raise DeviceError(f"images are on {images.device} but the model's parameters on {like.device}; "
                          f"move one of them (images.to({str(like.device)!r}))")
    if images.dtype != like.dtype and not torch.is_autocast_enabled(images.device.type):
        raise DTypeError(f"images have dtype {images.dtype} but the model's parameters {like.dtype}; "
                         f"convert the images (images.to({like.dtype})) or the model, or run under torch.autocast")


class BackendModel(nn.Module):
    """Base of fastvit's models. Subclasses keep their config in ``self.cfg`` (with the
    BACKEND_FIELDS) and define ``op_shapes() -> {op: [shape keywords of each distinct call]}``, e.g.
    ``{"attention": [{"head_dim": 64}], ...}``: what a registry's availability check needs to say
    whether a backend can run the model."""

    cfg = None
    # rows of a token-sequence pos_embed (1, T + N, E) before the patch grid: ViT's CLS token (T = 1);
    # distilled DeiT sets 2
    num_prefix_tokens = 1
    # names (last key component) of buffers the model computes from its config that checkpoints
    # written by other code may carry, e.g. Swin's relative_position_index: load_checkpoint drops them
    derived_state_keys: tuple[str, ...] = ()

    def set_backend(self, op: str, name: str | None) -> None:
        """Pin every ``op`` module of the model to backend ``name`` (None: follow use_backend, the
        environment variable and the default at every call)."""
        registry(op).validate(name)
        setattr(self.cfg, BACKEND_FIELDS[op], name)
        for m in self.modules():
            if getattr(m, "op", None) == op:
                m.backend = name

    def set_attn_backend(self, name: str | None) -> None:
        self.set_backend("attention", name)

    def set_norm_backend(self, name: str | None) -> None:
        self.set_backend("norm", name)

    def set_patch_backend(self, name: str | None) -> None:
        self.set_backend("patch", name)

    def backend_availability(self, op: str, name: str, device, dtype, train: bool = False) -> tuple[bool, str]:
        """Whether backend ``name`` of ``op`` runs every call of this model on device and dtype; with
        ``train``, as a training step calls it: the inputs need gradients (``grad=True``), and an
        attention bias of the model, e.g. Swin's relative position bias, needs its own (``bias=TRAINED``)."""
        reg = registry(op)
        for shape in self.op_shapes().get(op, []):
            if train:
                shape = {**shape, "grad": True, **({"bias": TRAINED} if shape.get("bias") is True else {})}
            ok, reason = reg.availability(name, device, dtype, **shape)
            if not ok:
                return ok, reason
        return True, ""

    def forward_packed(self, images):
        """Mixed-resolution images packed into one sequence: ViT and DeiT only (fastvit/models/mixed.py)."""
        raise ArgumentError(f"{type(self).__name__} takes no list of mixed-resolution images (packed or padded): "
                            "its stages work on each image's full grid (windows, merging or pooling); use a ViT "
                            "or DeiT, or one forward per image size")

    def forward_padded(self, images):
        """Mixed-resolution images padded to the longest: ViT and DeiT only (fastvit/models/mixed.py)."""
        self.forward_packed(images)

    # -- checkpoints (fastvit.load_checkpoint) -------------------------------------------------------
    def convert_checkpoint(self, state: dict) -> dict:
        """A checkpoint's state dict in this model's layout (renamed entries of another layout the
        family's checkpoints come in). Default: unchanged."""
        return state

    def resample_state(self, key: str, value: torch.Tensor) -> torch.Tensor | None:
        """Checkpoint entry ``key``, whose shape differs from the model's, made for this model's
        resolution; None when the entry does not depend on the resolution (load_checkpoint then
        reports the mismatch).

        Default: a token-sequence ``pos_embed`` (1, T + N, E) -- ViT, DeiT -- resampled to
        ``cfg.grid_size`` (bicubic, antialiased, float32, as timm), its T = ``num_prefix_tokens``
        prefix rows kept; the checkpoint's grid is taken to be square. Families with another layout
        override this (PiT's spatial map)."""
        if key != "pos_embed" or value.dim() != 3:
            return None
        return resample_pos_embed(value, self.cfg.grid_size, num_prefix_tokens=self.num_prefix_tokens)
