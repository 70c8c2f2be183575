"""Helpers shared by the kernels' launchers: where a kernel may run and input validation."""
from __future__ import annotations

import os

import torch


def interpreter_enabled() -> bool:
    """True when Triton's CPU interpreter is switched on (TRITON_INTERPRET set before import)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() not in ("", "0", "false", "no")


AUTOTUNE_ENV = "FASTVIT_AUTOTUNE"


def autotune_mode() -> str:
    """How widely the GPU kernels search block sizes, from the environment variable FASTVIT_AUTOTUNE
    (read when a kernel module is imported):

    * ``on`` (default; also unset, ``1``): a compact set of configurations per kernel, benchmarked on
      the first call for each autotuning key;
    * ``full``: a wide set, for tuning work (many more compilations on the first call);
    * ``off`` (``0``): one fixed configuration, nothing benchmarked: fast, reproducible compiles for
      correctness runs on a GPU, where autotuning every new test shape would dominate the run time.

    Under the interpreter the kernels use their own small fixed blocks whatever this says.
    """
    value = os.environ.get(AUTOTUNE_ENV, "on").strip().lower()
    if value in ("", "1", "on", "true", "yes"):
        return "on"
    if value in ("0", "off", "false", "no"):
        return "off"
    if value == "full":
        return "full"
    raise ValueError(f"{AUTOTUNE_ENV}={value!r} is not a valid setting; expected one of on, full, off")


def tuning_space(fixed, compact, full) -> list:
    """The configurations to autotune over in the current mode: ``[fixed]``, ``compact`` or ``full``."""
    return {"off": [fixed], "on": compact, "full": full}[autotune_mode()]


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
