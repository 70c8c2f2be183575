"""torch.nn.functional.scaled_dot_product_attention, chosen by PyTorch or pinned to one kernel.

``sdpa`` lets PyTorch pick; ``sdpa-math``, ``sdpa-flash``, ``sdpa-efficient`` and ``sdpa-cudnn`` pin
one kernel with ``torch.nn.attention.sdpa_kernel``. A pinned kernel that PyTorch refuses for the
inputs (no CPU kernel, head dim, dtype, an attention bias, a length cuDNN rejects) is reported
unavailable, or raises BackendError, carrying PyTorch's own reasons; it is never replaced by another
kernel. The bias goes in as SDPA's float ``attn_mask``, viewed as 4-D (leading dims of size 1, no
copy): PyTorch's CPU kernels refuse a mask of rank 0 or 1 with a raw IndexError (they index its
dims -2 and -1), and its CPU flash kernel refuses a 3-D one. A fully masked row gives 0 and zero
gradients in PyTorch's own kernels (torch >= 2.5), as fastvit.attention defines it.

Packed sequences (a Packing) run one SDPA call per sequence on views of q, k and v cut at the
packing's Python offsets (no read-back, no graph break), and the outputs are concatenated: no score
outside a sequence's own block is computed, and the math kernel materializes only each sequence's
own n x n block.
"""
from __future__ import annotations

import contextlib
import functools
import warnings

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from fastvit.errors import BackendError
from fastvit.ops.attention.registry import TRAINED, register

PINNED = {
    "sdpa-math": SDPBackend.MATH,
    "sdpa-flash": SDPBackend.FLASH_ATTENTION,
    "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
    "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
}
_KERNEL_NAMES = {int(b.value): name for name, b in PINNED.items()}
_LEADING = {0: (None,) * 4, 1: (None,) * 3, 2: (None,) * 2, 3: (None,)}  # bias rank -> the index adding dims


def _mask(bias):
    """``bias`` as SDPA's 4-D ``attn_mask``: a view with leading dims of size 1 (None stays None)."""
    return bias if bias is None or bias.dim() == 4 else bias[_LEADING[bias.dim()]]


def _sdpa(q, k, v, bias, dropout_p, scale):
    """F.scaled_dot_product_attention with positional arguments where it can: its argument parser
    takes ~0.3 us longer for keywords, on every call."""
    if scale is None:
        return F.scaled_dot_product_attention(q, k, v, bias, dropout_p)
    return F.scaled_dot_product_attention(q, k, v, bias, dropout_p, scale=scale)


def _run_pinned(kernel: SDPBackend, q, k, v, scale, dropout_p, bias):
    """Run SDPA restricted to ``kernel``; on refusal raise RuntimeError with PyTorch's reasons.

    The call runs as a user would write it (``with sdpa_kernel(kernel):``, which torch.compile
    traces); only a refusal runs it again with warnings recorded, for the reasons PyTorch gives as
    warnings (the first attempt's warnings reach the caller as PyTorch issued them)."""
    try:
        with sdpa_kernel(kernel):
            return _sdpa(q, k, v, bias, dropout_p, scale)
    except torch.OutOfMemoryError:  # out of memory is not a refusal: callers record it as such
        raise
    except RuntimeError as err:
        first = err
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with sdpa_kernel(kernel):
                return _sdpa(q, k, v, bias, dropout_p, scale)  # (it may pass now: then it is no refusal)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as err:
            first = err
    reasons = [str(w.message).strip() for w in caught] + [str(first).strip()]
    if q.device.type == "cpu" and kernel in (SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION):
        reasons.insert(0, f"PyTorch has no CPU implementation of {kernel.name}")
    raise RuntimeError("; ".join(dict.fromkeys(r for r in reasons if r))) from None


@functools.lru_cache(maxsize=None)
def _probe(kernel: SDPBackend, device: str, dtype: torch.dtype, head_dim: int, bias) -> tuple[bool, str]:
    """Ask PyTorch whether ``kernel`` runs on a small input of this device, dtype and head dim, with
    no bias, a bias (True) or a bias that needs its gradient (TRAINED). The probe's mask is 4-D, as
    every bias reaches PyTorch (:func:`_mask`): a bias of lower rank meets the kernel as the probe's did."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        return False, "CUDA is not available"
    x = torch.randn(1, 2, 16, head_dim, device=device, dtype=dtype)
    mask = torch.zeros(1, 2, 16, 16, device=device, dtype=dtype, requires_grad=bias == TRAINED) if bias else None
    try:
        with torch.enable_grad() if bias == TRAINED else contextlib.nullcontext():
            _run_pinned(kernel, x, x, x, None, 0.0, mask)
    except RuntimeError as err:
        what = " with an attention bias that needs its gradient" if bias == TRAINED else \
            " with an attention bias" if bias else ""
        return False, f"torch refused it{what}: {err}"
    return True, ""


def _make(name: str, kernel: SDPBackend):
    def check(device, dtype, head_dim=64, bias=False, **shape):
        return _probe(kernel, str(device), dtype, int(head_dim), bias if bias == TRAINED else bool(bias))

    def run(q, k, v, *, scale=None, dropout_p=0.0, bias=None, packing=None):
        try:
            if packing is not None:
                return _per_sequence(lambda *qkv: _run_pinned(kernel, *qkv, scale, dropout_p, None), q, k, v, packing)
            return _run_pinned(kernel, q, k, v, scale, dropout_p, _mask(bias))
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as err:
            raise BackendError(f"attention backend {name!r} cannot run on q of shape {tuple(q.shape)}, "
                               f"{q.dtype}, {q.device}: {err}") from None

    register(name, check=check, description=f"SDPA pinned to {kernel.name}", takes_bias=True, takes_packing=True,
             materializes=kernel == SDPBackend.MATH, peer=kernel != SDPBackend.MATH,
             kernel_choice=lambda q, k, v, bias=None: name)(run)


def _sdpa_check(device, dtype, bias=False, **shape):
    if device.type == "cuda" and not torch.cuda.is_available():
        return False, "CUDA is not available"
    return True, ""


def sdpa_kernel_choice(q, k, v, *, bias=None, dropout_p: float = 0.0, scale: float | None = None) -> str:
    """The pinned-backend name of the kernel PyTorch's ``sdpa`` picks for these inputs."""
    choice = int(torch._fused_sdp_choice(q, k, v, _mask(bias), dropout_p, False, scale=scale))
    return _KERNEL_NAMES.get(choice, f"unknown ({choice})")


def _per_sequence(run, q, k, v, packing):
    """``run(q_s, k_s, v_s)`` on each packed sequence's views, concatenated along the tokens."""
    parts = zip(packing.split(q, 2), packing.split(k, 2), packing.split(v, 2))
    return torch.cat([run(*qkv) for qkv in parts], dim=2)


@register("sdpa", check=_sdpa_check, description="SDPA, PyTorch chooses the kernel", takes_bias=True,
          takes_packing=True, kernel_choice=sdpa_kernel_choice)
def sdpa_attention(q, k, v, *, scale=None, dropout_p=0.0, bias=None, packing=None):
    if packing is not None:
        return _per_sequence(lambda *qkv: _sdpa(*qkv, None, dropout_p, scale), q, k, v, packing)
    if bias is not None and bias.dim() != 4:  # _mask, inlined
        bias = bias[_LEADING[bias.dim()]]
    if scale is None:  # _sdpa, inlined: one Python frame less on every call
        return F.scaled_dot_product_attention(q, k, v, bias, dropout_p)
    return F.scaled_dot_product_attention(q, k, v, bias, dropout_p, scale=scale)


for _name, _kernel in PINNED.items():
    _make(_name, _kernel)
