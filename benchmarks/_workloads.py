"""What every bench file shares: the parametrized case fields and the backend lookup with its
availability, so that a bench file only says how to build its op's inputs."""
from __future__ import annotations

from fastvit.bench import split_impl
from fastvit.devices import DTYPES
from fastvit.registry import registry


def lookup(op: str, impl: str, device, dtype_name: str, **shape):
    """(backend, compiled, reason it cannot run here or None) for implementation label ``impl``."""
    name, compiled = split_impl(impl)
    reg = registry(op)
    ok, reason = reg.availability(name, device, DTYPES[dtype_name], **shape)
    return reg.get(name), compiled, (None if ok else reason)


def kernel_info(backend, q, k, v) -> dict:
    """``{"sdpa_kernel": ...}``: the kernel that actually runs, for backends that can tell."""
    return {"sdpa_kernel": backend.kernel_choice(q, k, v)} if backend.kernel_choice else {}
