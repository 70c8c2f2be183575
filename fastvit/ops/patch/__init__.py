"""The patch-embedding op: token-stem backends behind one function and one module.

Importing this package registers its backends, in the order listed here.
"""
from fastvit.ops.patch.registry import PATCH
from fastvit.ops.patch import conv, rearrange, triton  # noqa: F401  (registration)
from fastvit.ops.patch.functional import patch_embed, validate_patch
from fastvit.ops.patch.module import PatchEmbed

__all__ = ["PATCH", "patch_embed", "validate_patch", "PatchEmbed"]
