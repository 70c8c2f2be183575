"""Devices and precisions: the names fastvit's commands use, and the default device.

Nothing here queries a GPU at import time.
"""
from __future__ import annotations

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
LOW_PRECISION = (torch.float16, torch.bfloat16)


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bf16"``."""
    for name, value in DTYPES.items():
        if value == dtype:
            return name
    raise ValueError(f"no short name for dtype {dtype}; known: {', '.join(DTYPES)}")


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


def default_device() -> torch.device:
    """CUDA when a GPU is usable, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
