"""torch.nn.functional.scaled_dot_product_attention, chosen by PyTorch or pinned to one kernel.

``sdpa`` lets PyTorch pick; ``sdpa-math``, ``sdpa-flash``, ``sdpa-efficient`` and ``sdpa-cudnn`` pin
one kernel with ``torch.nn.attention.sdpa_kernel``. A pinned kernel that PyTorch refuses for the
inputs (no CPU kernel, head dim, dtype, a length cuDNN rejects) raises BackendError carrying
PyTorch's own reasons; it is never replaced by another kernel.
"""
from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from fastvit.backends import ATTENTION
from fastvit.errors import BackendError

PINNED = {
    "sdpa-math": SDPBackend.MATH,
    "sdpa-flash": SDPBackend.FLASH_ATTENTION,
    "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
    "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
}
_KERNEL_NAMES = {int(b.value): name for name, b in PINNED.items()}


def _run_pinned(kernel: SDPBackend, q, k, v, scale, dropout_p):
    """Run SDPA restricted to ``kernel``; on refusal raise RuntimeError with PyTorch's reasons."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with sdpa_kernel(kernel):
                return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)
        except torch.OutOfMemoryError:  # out of memory is not a refusal: callers record it as such
            raise
        except RuntimeError as err:
            reasons = [str(w.message).strip() for w in caught]
            reasons.append(str(err).strip())
            if q.device.type == "cpu" and kernel in (SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION):
                reasons.insert(0, f"PyTorch has no CPU implementation of {kernel.name}")
            raise RuntimeError("; ".join(dict.fromkeys(r for r in reasons if r))) from None


@functools.lru_cache(maxsize=None)
def _probe(kernel: SDPBackend, device: str, dtype: torch.dtype, head_dim: int) -> tuple[bool, str]:
    """Ask PyTorch whether ``kernel`` runs on a small input of this device, dtype and head dim."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        return False, "CUDA is not available"
    x = torch.randn(1, 2, 16, head_dim, device=device, dtype=dtype)
    try:
        _run_pinned(kernel, x, x, x, None, 0.0)
    except RuntimeError as err:
        return False, f"torch refused it: {err}"
    return True, ""


def _make(name: str, kernel: SDPBackend):
    def check(device, dtype, head_dim=64, **shape):
        return _probe(kernel, str(device), dtype, int(head_dim))

    def run(q, k, v, *, scale=None, dropout_p=0.0):
        try:
            return _run_pinned(kernel, q, k, v, scale, dropout_p)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as err:
            raise BackendError(f"attention backend {name!r} cannot run on q of shape {tuple(q.shape)}, "
                               f"{q.dtype}, {q.device}: {err}") from None

    ATTENTION.register(name, check=check, description=f"SDPA pinned to {kernel.name}")(run)


def _sdpa_check(device, dtype, **shape):
    if device.type == "cuda" and not torch.cuda.is_available():
        return False, "CUDA is not available"
    return True, ""


@ATTENTION.register("sdpa", check=_sdpa_check, description="SDPA, PyTorch chooses the kernel")
def sdpa_attention(q, k, v, *, scale=None, dropout_p=0.0):
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)


for _name, _kernel in PINNED.items():
    _make(_name, _kernel)


def sdpa_kernel_choice(q, k, v, *, dropout_p: float = 0.0, scale: float | None = None) -> str:
    """The pinned-backend name of the kernel PyTorch's ``sdpa`` picks for these inputs."""
    choice = int(torch._fused_sdp_choice(q, k, v, None, dropout_p, False, scale=scale))
    return _KERNEL_NAMES.get(choice, f"unknown ({choice})")
