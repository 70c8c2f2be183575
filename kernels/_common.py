"""Helpers shared by the kernels' launchers: where a kernel may run and input validation."""
from __future__ import annotations

import os

import torch


def interpreter_enabled() -> bool:
    """True when Triton's CPU interpreter is switched on (TRITON_INTERPRET set before import)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() not in ("", "0", "false", "no")


def runnable_on(device: torch.device | str) -> tuple[bool, str]:
    """Can Triton kernels run on tensors living on ``device``? Returns (ok, reason)."""
    device = torch.device(device)
    if device.type == "cuda":
        return True, ""
    if device.type == "cpu":
        if interpreter_enabled():
            return True, ""
        return False, ("Triton kernels need CUDA tensors; CPU tensors run only through Triton's "
                       "interpreter (set TRITON_INTERPRET=1 before triton is imported)")
    return False, f"Triton kernels do not run on device type {device.type!r}"


def check_inputs(op: str, tensors: dict[str, torch.Tensor], dtypes=(torch.float16, torch.bfloat16, torch.float32)):
    """Validate that the named tensors share one device Triton can use and one supported dtype."""
    first_name, first = next(iter(tensors.items()))
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.device != first.device:
            raise ValueError(f"{op}: {name} is on {t.device} but {first_name} is on {first.device}; "
                             "all inputs must be on one device")
        if t.dtype not in dtypes:
            raise TypeError(f"{op}: {name} has dtype {t.dtype}; supported: "
                            + ", ".join(str(d) for d in dtypes))
    ok, reason = runnable_on(first.device)
    if not ok:
        raise ValueError(f"{op}: {reason}")
