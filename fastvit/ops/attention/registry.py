"""The attention op's registry. Every backend takes ``(q, k, v, *, scale, dropout_p, bias)`` in the
canonical (B, H, N, D) layout and returns (B, H, N, D); one that wants another layout converts inside.
``bias`` is None or an additive bias broadcastable to (B, H, N, N), added to the scaled scores before
the softmax; a backend registered without ``takes_bias`` reports itself unavailable for it. Packed
sequences (fastvit/ops/attention/packing.py) come as the extra keyword ``packing`` to backends
registered with ``takes_packing``; the others report themselves unavailable for them.

The availability checks' ``bias`` keyword: False (no bias), True (a bias), or TRAINED (a bias whose
gradient is needed: it requires grad and grad mode is on), which some kernels refuse (PyTorch's CPU
flash kernel) although they take a constant bias. Their ``grad`` keyword (True: q, k or v need
gradients, a training call) is in no route key: a backend that cannot train (flex on CPU) refuses
such a call with BackendError when it is made, and callers that know they will train (the tests, the
sweep, a model's ``backend_availability(train=True)``) pass ``grad=True`` to learn it beforehand.
"""
from __future__ import annotations

from fastvit.registry import Registry, always

TRAINED = "trained"

ATTENTION = Registry("attention", "FASTVIT_ATTN_BACKEND", "sdpa", keys=("head_dim", "bias", "packed"),
                     probe_shape={"head_dim": 64, "bias": False, "packed": False})


def register(name: str, *, check=always, **traits):
    """``ATTENTION.register`` whose availability check also answers for an attention bias
    (shape keyword ``bias=True``) and for packed sequences (``packed=True``): refused, with the
    reason, unless the backend ``takes_bias`` or ``takes_packing``. A backend that takes packing is
    called with the keyword ``packing`` (a Packing) on packed inputs, and without it otherwise."""
    def checked(device, dtype, bias: bool = False, packed: bool = False, **shape):
        if packed and not traits.get("takes_packing", False):
            return False, f"attention backend {name!r} takes no packed sequences"
        if packed:
            shape["packed"] = True
        if bias and not traits.get("takes_bias", False):
            return False, f"attention backend {name!r} takes no additive attention bias"
        return check(device, dtype, bias=bias, **shape) if traits.get("takes_bias") else check(device, dtype, **shape)
    return ATTENTION.register(name, check=checked, **traits)
