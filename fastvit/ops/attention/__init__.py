"""The attention op: backends on (B, H, N, D) tensors behind one function and one module.

Importing this package registers its backends, in the order listed here.
"""
from fastvit.ops.attention.registry import ATTENTION
from fastvit.ops.attention import naive, sdpa, xformers, triton, flex  # noqa: F401  (registration)
from fastvit.ops.attention.functional import attention, validate_qkv
from fastvit.ops.attention.module import Attention
from fastvit.ops.attention.naive import attention_probs
from fastvit.ops.attention.packing import Packing

__all__ = ["ATTENTION", "attention", "validate_qkv", "Attention", "attention_probs", "Packing"]
