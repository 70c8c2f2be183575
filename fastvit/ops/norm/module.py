"""The LayerNorm module the models use."""
from __future__ import annotations

import torch
import torch.nn as nn

from fastvit.ops.norm.functional import add_layer_norm
from fastvit.ops.norm.registry import NORM


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm (same parameters and state-dict keys) dispatching to a norm backend per call.

    ``backend=None`` follows ``use_backend(norm=...)``, then FASTVIT_NORM_BACKEND, then ``torch``.
    """

    op = "norm"

    def __init__(self, dim: int, eps: float = 1e-6, backend: str | None = None):
        super().__init__(dim, eps=eps)
        self.backend = NORM.validate(backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return add_layer_norm(x, None, self.weight, self.bias, self.eps, backend=self.backend)[0]

    def add_forward(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(LayerNorm(x + residual), x + residual), fused where the backend can."""
        return add_layer_norm(x, residual, self.weight, self.bias, self.eps, backend=self.backend)
