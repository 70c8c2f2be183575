"""The LayerNorm op: residual add + LayerNorm backends behind one function and one module.

Importing this package registers its backends, in the order listed here.
"""
from fastvit.ops.norm.registry import NORM
from fastvit.ops.norm import eager, triton  # noqa: F401  (registration)
from fastvit.ops.norm.functional import add_layer_norm, layer_norm, validate_norm
from fastvit.ops.norm.module import LayerNorm

__all__ = ["NORM", "add_layer_norm", "layer_norm", "validate_norm", "LayerNorm"]
