"""What every bench file shares: the backend lookup with its availability, and the comparison group
of an op's backends at one configuration, so that a bench file only says how to build its op's inputs."""
from __future__ import annotations

from fastvit.bench import Group, split_impl
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


def op_group(op: str, registry_op: str, settings, cases, resolution: int, pass_name: str, dtype_name: str) -> Group:
    """The backends of one op at one configuration as a comparison group: each compared against the
    op's default backend (its first one if the default is not swept), a ``+compile`` label against its
    eager self; the A/A twin of that baseline unless ``--no-aa``."""
    labels = [c.backend for c in cases]
    default = registry(registry_op).default
    baseline = default if default in labels else labels[0]
    for case in cases:
        name, compiled = split_impl(case.backend)
        case.baseline = name if compiled and name in labels else baseline
    key = {"model": settings.model, "resolution": resolution, "batch": settings.batch, "dtype": dtype_name,
           "pass": pass_name}
    return Group(op, key, cases, twin=baseline if settings.twin else None)
