"""fastvit: a reference Vision Transformer with swappable attention, LayerNorm and patch-embedding
backends, a numerical-equivalence suite and a resolution-scaling benchmark.

Importing fastvit touches no GPU and does not import triton.
"""
from fastvit.errors import (ArgumentError, BackendError, CheckpointError, ConfigError, DeviceError, DTypeError,
                            FastViTError, MissingExtraError, ResolutionError, ResultsError, ShapeError,
                            UnknownModelError)
from fastvit.registry import list_backends, registries
from fastvit.ops import ATTENTION, NORM, PATCH, Packing, attention, use_backend
from fastvit.models import (ViTConfig, VisionTransformer, attention_maps, create_model, list_models,
                            load_checkpoint, resample_pos_embed)

__version__ = "0.1.0"

__all__ = [
    "create_model", "list_models", "load_checkpoint", "attention", "Packing", "attention_maps", "use_backend",
    "list_backends", "registries", "resample_pos_embed", "ViTConfig", "VisionTransformer",
    "ATTENTION", "NORM", "PATCH",
    "FastViTError", "ShapeError", "ResolutionError", "DTypeError", "DeviceError", "ArgumentError", "BackendError",
    "UnknownModelError", "CheckpointError", "ConfigError", "ResultsError", "MissingExtraError",
]
