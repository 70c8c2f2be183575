"""The LayerNorm op's registry. Every backend is one function
``(x, residual, weight, bias, eps) -> (y, s)`` with ``s = x + residual`` (``s = x`` when residual is
None) and ``y = LayerNorm(s)`` over the last dim."""
from fastvit.registry import Registry

NORM = Registry("norm", "FASTVIT_NORM_BACKEND", "torch", keys=("hidden",), probe_shape={"hidden": 768})
