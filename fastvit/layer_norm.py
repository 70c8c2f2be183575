"""LayerNorm backends and the LayerNorm module the model uses.

Backend functions: ``layer_norm(x, weight, bias, eps) -> y`` and
``add_layer_norm(x, residual, weight, bias, eps) -> (y, s)`` with ``s = x + residual`` and
``y = LayerNorm(s)``. ``torch`` runs them as eager ops; ``triton`` as one fused kernel each.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastvit._triton import triton_check
from fastvit.backends import NORM


class _TorchNorm:
    @staticmethod
    def layer_norm(x, weight, bias, eps):
        return F.layer_norm(x, x.shape[-1:], weight, bias, eps)

    @staticmethod
    def add_layer_norm(x, residual, weight, bias, eps):
        s = x + residual
        return F.layer_norm(s, s.shape[-1:], weight, bias, eps), s


class _TritonNorm:
    @staticmethod
    def layer_norm(x, weight, bias, eps):
        from kernels import layer_norm

        return layer_norm(x, weight, bias, eps)

    @staticmethod
    def add_layer_norm(x, residual, weight, bias, eps):
        from kernels import add_layer_norm

        return add_layer_norm(x, residual, weight, bias, eps)


NORM.register("torch", check=lambda device, dtype, **shape: (True, ""),
              description="torch.nn.functional.layer_norm; the residual add as its own op")(_TorchNorm)
NORM.register("triton", check=lambda device, dtype, **shape: triton_check(device, dtype),
              description="fastvit Triton fused residual-add + LayerNorm")(_TritonNorm)


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm (same parameters and state-dict keys) dispatching to a norm backend per call.

    ``backend=None`` follows ``use_backend(norm=...)``, then FASTVIT_NORM_BACKEND, then ``torch``.
    """

    def __init__(self, dim: int, eps: float = 1e-6, backend: str | None = None):
        super().__init__(dim, eps=eps)
        self.backend = NORM.validate(backend)

    def _impl(self, x: torch.Tensor):
        return NORM.require(self.backend, x.device, x.dtype, hidden=x.shape[-1]).fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._impl(x).layer_norm(x, self.weight, self.bias, self.eps)

    def add_forward(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(LayerNorm(x + residual), x + residual), fused where the backend can."""
        return self._impl(x).add_layer_norm(x, residual, self.weight, self.bias, self.eps)
