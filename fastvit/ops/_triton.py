"""Availability of fastvit's Triton kernels (the ``triton`` backend of every op).

Triton's interpreter is switched on by TRITON_INTERPRET, read when triton is first imported, so
importing fastvit never imports ``kernels`` (which imports triton): it is imported when a Triton
backend's availability is first checked, or when one runs.
"""
from __future__ import annotations

import importlib.util

import torch

KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def triton_check(device: torch.device, dtype: torch.dtype, **shape) -> tuple[bool, str]:
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False, "CUDA is not available"
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            return False, "this GPU does not support bfloat16"
    elif device.type == "cpu":
        from kernels import interpreter_enabled

        if not interpreter_enabled():
            return False, ("Triton kernels need a CUDA device; on CPU they run only through Triton's "
                           "interpreter (set TRITON_INTERPRET=1 before starting Python)")
        if dtype == torch.bfloat16:
            return False, "Triton's CPU interpreter computes bfloat16 tl.dot wrongly; bfloat16 needs CUDA"
    else:
        return False, f"Triton kernels do not run on {device.type}"
    if dtype not in KERNEL_DTYPES:
        return False, f"Triton kernels take float16, bfloat16 or float32, not {dtype}"
    return True, ""
