"""Helpers shared by the kernels' launchers: where a kernel may run, input validation, the autotuning
search spaces (as data, one entry per kernel in SPACES), the device guard, the namespace of the
kernels' PyTorch custom ops, and the two hooks the GPU-readiness audit (kernels.audit) and the CUDA
tests use: recorded CPU launches and pinned configs.
"""
from __future__ import annotations

import contextlib
import contextvars
import os

import torch
import triton
from torch.utils import _python_dispatch


def interpreter_enabled() -> bool:
    """True when Triton's CPU interpreter is switched on (TRITON_INTERPRET set before import)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() not in ("", "0", "false", "no")


# Every kernel is a PyTorch custom op (torch.library.custom_op) in this namespace, forward and
# backward: torch.compile and torch.export see one opaque op with a fake (shape-only) implementation
# and an autograd formula, e.g. torch.ops.fastvit_kernels.flash_attn_fwd (see ``tracing``).
NAMESPACE = "fastvit_kernels"

AUTOTUNE_ENV = "FASTVIT_AUTOTUNE"
MODES = ("off", "on", "full")


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


# Every autotuned kernel's three search spaces, keyed by the @triton.jit function's name:
# {"off": [...], "on": [...], "full": [...]}. Filled when a kernel module is imported (with or without
# the interpreter), so that the audit and the tests read every space whatever FASTVIT_AUTOTUNE says.
SPACES: dict[str, dict[str, list]] = {}


def autotune(fn, *, off, on, full, key, prune=None):
    """Register ``fn``'s spaces in SPACES and return its autotuner over the space of the current mode;
    under the interpreter, ``fn`` itself (its launchers pass the interpreter's fixed blocks).

    ``prune(configs, named_args, **kwargs)`` is the autotuner's early prune: it drops the
    configurations that do not suit a launch (dtype, head dim) before anything is compiled."""
    SPACES[fn.__name__] = {"off": [off], "on": list(on), "full": list(full)}
    if interpreter_enabled():
        return fn
    return triton.autotune(SPACES[fn.__name__][autotune_mode()], key=key,
                           prune_configs_by={"early_config_prune": prune} if prune else None)(fn)


def min_dot_k(bits: int = 32) -> int:
    """The smallest reduction size K that this Triton's ``tl.dot`` accepts for ``bits``-bit operands on
    NVIDIA GPUs, read from the NVIDIA backend's own bound (``min_dot_size``): 16 for fp32 on Triton
    3.7, 8 from 3.8 on. 16 where the bound cannot be read (no NVIDIA backend, another signature)."""
    try:
        from triton.backends.compiler import GPUTarget
        from triton.backends.nvidia.compiler import min_dot_size
        import triton.language as tl

        operand = {8: tl.float8e4nv, 16: tl.float16, 32: tl.float32, 64: tl.float64}[bits]
        return int(min_dot_size(GPUTarget("cuda", 80, 32))(operand, operand)[2])
    except Exception:  # noqa: BLE001 -- any failure to read the bound: assume the strictest common one
        return 16


def config_key(config) -> tuple:
    """A configuration as a hashable value: block sizes, warps, stages."""
    return tuple(sorted(config.kwargs.items())), config.num_warps, config.num_stages


def by_precision(mma, fp32, fallback):
    """An early prune for kernels with an ``IEEE`` constexpr (true fp32 dots): a space holds two
    families of configurations, ``mma`` for fp16 / bf16 launches, whose dots run on tensor cores,
    and ``fp32`` for fp32 launches, whose dots run as FMAs with both operands in registers and so
    need smaller tiles. A launch keeps its own family (``fallback`` if none of it is in the space)."""
    keys = {False: {config_key(c) for c in mma}, True: {config_key(c) for c in fp32}}
    if keys[False] & keys[True]:
        raise ValueError(f"configurations in both families: {sorted(keys[False] & keys[True])}")

    def prune(configs, named_args, **kwargs):
        kept = [c for c in configs if config_key(c) in keys[bool(kwargs["IEEE"])]]
        return kept or [fallback]
    return prune


# ------------------------------------------------------------------------------------------------
# Devices and validation
# ------------------------------------------------------------------------------------------------
_LAUNCHES_RECORDED = contextvars.ContextVar("kernels_launches_recorded", default=False)


@contextlib.contextmanager
def cpu_launches_recorded():
    """While active, CPU tensors pass the launchers' device check without the interpreter. Only for
    kernels.audit, which replaces every kernel's ``run`` by a recorder first: nothing executes."""
    token = _LAUNCHES_RECORDED.set(True)
    try:
        yield
    finally:
        _LAUNCHES_RECORDED.reset(token)


def runnable_on(device: torch.device | str) -> tuple[bool, str]:
    """Can Triton kernels run on tensors living on ``device``? Returns (ok, reason)."""
    device = torch.device(device)
    if device.type == "cuda":
        return True, ""
    if device.type == "cpu":
        if interpreter_enabled() or _LAUNCHES_RECORDED.get():
            return True, ""
        return False, ("Triton kernels need CUDA tensors; CPU tensors run only through Triton's "
                       "interpreter (set TRITON_INTERPRET=1 before triton is imported)")
    return False, f"Triton kernels do not run on device type {device.type!r}"


def check_inputs(op: str, tensors: dict[str, torch.Tensor], dtypes=(torch.float16, torch.bfloat16, torch.float32)):
    """Validate that the named tensors share one device and have supported dtypes (the public
    functions call it; it reads no environment, so torch.compile traces it)."""
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


def tracing() -> bool:
    """True while a graph is traced -- torch.compile, torch.export, or any tracer running a dispatch
    mode (make_fx, fake tensors): the public functions then call their custom ops, which the tracer
    records as opaque ops with fake implementations. Eagerly they apply an autograd.Function around
    the same implementations, setup and backward, without the custom-op dispatcher's cost (about
    10 us per call on CPU, forward with gradients)."""
    return torch.compiler.is_compiling() or _python_dispatch._get_current_dispatch_mode() is not None


def require_runnable(op: str, t: torch.Tensor) -> None:
    """ValueError unless Triton kernels can run on ``t``'s device here. Called by the forward
    implementations, so that it runs when a kernel is about to launch (eagerly, or when a compiled
    or exported graph runs), never while a graph is traced."""
    ok, reason = runnable_on(t.device)
    if not ok:
        raise ValueError(f"{op}: {reason}")


def device_guard(t: torch.Tensor):
    """Make ``t``'s CUDA device current for the launches inside (Triton launches on the current
    device and its stream, whatever device the pointers live on); nothing to do for CPU tensors."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()


# ------------------------------------------------------------------------------------------------
# Pinned configurations (tests on CUDA)
# ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def pinned_config(kernel, config):
    """Run the autotuned ``kernel`` with ``config`` only while active, whatever its space holds.

    For tests on CUDA that launch each configuration of a space in turn. The autotuner's own state
    (space and cache of tuned choices) is restored on exit; not thread-safe."""
    saved = kernel.configs, kernel.cache
    kernel.configs, kernel.cache = [config], {}
    try:
        yield
    finally:
        kernel.configs, kernel.cache = saved
