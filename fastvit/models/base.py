"""What every model family shares: choosing each op's backend on a built model, and telling which
op shapes the model calls, so that checks and sweeps can ask the registries about it."""
from __future__ import annotations

import torch.nn as nn

from fastvit.registry import registry

# the config field that pins each op's backend
BACKEND_FIELDS = {"attention": "attn_backend", "norm": "norm_backend", "patch": "patch_backend"}


class BackendModel(nn.Module):
    """Base of fastvit's models. Subclasses keep their config in ``self.cfg`` (with the
    BACKEND_FIELDS) and define ``op_shapes() -> {op: [shape keywords of each distinct call]}``, e.g.
    ``{"attention": [{"head_dim": 64}], ...}``: what a registry's availability check needs to say
    whether a backend can run the model."""

    cfg = None

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

    def backend_availability(self, op: str, name: str, device, dtype) -> tuple[bool, str]:
        """Whether backend ``name`` of ``op`` runs every call of this model on device and dtype."""
        reg = registry(op)
        for shape in self.op_shapes().get(op, []):
            ok, reason = reg.availability(name, device, dtype, **shape)
            if not ok:
                return ok, reason
        return True, ""
