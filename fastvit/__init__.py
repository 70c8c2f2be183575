"""fastvit: a reference Vision Transformer with swappable attention, LayerNorm and patch-embedding
backends, a numerical-equivalence suite and a resolution-scaling benchmark.

Importing fastvit touches no GPU and does not import triton.
"""
from fastvit.errors import (BackendError, CheckpointError, DeviceError, DTypeError, FastViTError,
                            ResolutionError, ShapeError, UnknownModelError)
from fastvit.backends import ATTENTION, NORM, PATCH, list_backends, use_backend
from fastvit.attention import attention
from fastvit.model import ViTConfig, VisionTransformer
from fastvit.presets import create_model, list_models
from fastvit.checkpoint import load_checkpoint
from fastvit.pos_embed import resample_pos_embed
from fastvit.maps import attention_maps

__version__ = "0.1.0"

__all__ = [
    "create_model", "list_models", "load_checkpoint", "attention", "attention_maps", "use_backend",
    "list_backends", "resample_pos_embed", "ViTConfig", "VisionTransformer",
    "ATTENTION", "NORM", "PATCH",
    "FastViTError", "ShapeError", "ResolutionError", "DTypeError", "DeviceError", "BackendError",
    "UnknownModelError", "CheckpointError",
]
