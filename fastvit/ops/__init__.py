"""fastvit's ops, each laid out alike: a registry, a validated function, the nn.Module the models use,
and one file per backend. Importing this package registers every backend."""
from __future__ import annotations

import contextlib

from fastvit.registry import use_backend as _use_backend
from fastvit.ops.attention import ATTENTION, Attention, Packing, attention
from fastvit.ops.norm import NORM, LayerNorm, add_layer_norm, layer_norm
from fastvit.ops.patch import PATCH, PatchEmbed, patch_embed


@contextlib.contextmanager
def use_backend(attn: str | None = None, **ops: str | None):
    """Select backends for everything inside the ``with`` block that names none explicitly.

    ``with fastvit.use_backend("naive"):`` selects an attention backend;
    ``use_backend(norm="triton", patch="triton")`` the LayerNorm and patch-embedding backends
    (any op by its name, ``attention=`` too). It holds in the calling thread only (other threads keep
    their own), and the previous selection is restored on exit.
    """
    if attn is not None:
        ops["attention"] = attn
    with _use_backend(**ops):
        yield


__all__ = ["ATTENTION", "NORM", "PATCH", "attention", "Packing", "add_layer_norm", "layer_norm", "patch_embed",
           "Attention", "LayerNorm", "PatchEmbed", "use_backend"]
