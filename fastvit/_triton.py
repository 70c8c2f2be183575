"""Availability of fastvit's Triton kernels, checked without importing triton at import time.

Triton's interpreter is switched on by TRITON_INTERPRET, read when triton is first imported, so
``kernels`` (which imports triton) is imported only when a Triton backend is checked or run.
"""
from __future__ import annotations

import importlib.util
import os

import torch


def triton_check(device: torch.device, dtype: torch.dtype) -> tuple[bool, str]:
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False, "CUDA is not available"
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            return False, "this GPU does not support bfloat16"
    elif device.type == "cpu":
        if os.environ.get("TRITON_INTERPRET", "0").lower() in ("", "0", "false", "no"):
            return False, ("Triton kernels need a CUDA device; on CPU they run only through Triton's "
                           "interpreter (set TRITON_INTERPRET=1 before starting Python)")
        if dtype == torch.bfloat16:
            return False, "Triton's CPU interpreter computes bfloat16 tl.dot wrongly; bfloat16 needs CUDA"
    else:
        return False, f"Triton kernels do not run on {device.type}"
    if dtype not in (torch.float16, torch.bfloat16, torch.float32):
        return False, f"Triton kernels take float16, bfloat16 or float32, not {dtype}"
    return True, ""
