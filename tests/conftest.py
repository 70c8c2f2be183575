"""Test-session setup.

Without an NVIDIA GPU the Triton kernels run through Triton's interpreter, which must be switched
on before triton is first imported: that happens here, ahead of any test module's imports.
"""
import os
import shutil
import subprocess


def _has_nvidia_gpu() -> bool:
    if not shutil.which("nvidia-smi"):
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


if "TRITON_INTERPRET" not in os.environ and not _has_nvidia_gpu():
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from kernels._common import interpreter_enabled  # noqa: E402  (imports triton: after the switch above)

# CPU tests run with a fixed thread count so timings and results do not depend on the host; under
# pytest-xdist the cores are shared among the workers (more threads than cores only slows them down).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# fastvit's Triton kernels run on CPU tensors only under the interpreter; on a GPU machine (no
# interpreter) their CPU cases are skipped and device-independent kernel tests run on CUDA.
TRITON_INTERPRETER = interpreter_enabled()
KERNEL_DEVICE = "cpu" if TRITON_INTERPRETER or not torch.cuda.is_available() else "cuda"


def skip_unless_kernels_run_on(device: str) -> None:
    """Skip, with the reason, unless the Triton kernels can run on ``device`` in this session."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if device == "cpu" and not TRITON_INTERPRETER:
        pytest.skip("Triton kernels run on CPU tensors only under Triton's interpreter (TRITON_INTERPRET=1), "
                    "which is off because this machine has an NVIDIA GPU")


@pytest.fixture
def kernel_device_runs(request):
    """For kernel tests parametrized by ``device``: skip the devices the kernels cannot run on here
    (use with ``pytestmark = pytest.mark.usefixtures("kernel_device_runs")``)."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and "device" in callspec.params:
        skip_unless_kernels_run_on(callspec.params["device"])


@pytest.fixture
def interpreter_without_overflow_checks():
    """Triton's interpreter without its int overflow sanitizer, for tests of whole models whose Triton
    kernels run as parts (``pytestmark = pytest.mark.usefixtures("interpreter_without_overflow_checks")``).

    The interpreter checks every 8-32-bit integer add, sub and mul of a kernel for overflow (widening
    both sides to int64 and asserting the result fits), which is about half of its time in these
    tests; a GPU build checks nothing of the kind (Triton does only in debug mode). The kernels' own
    tests (test_flash_attention*.py, test_layer_norm.py, test_patch_embed.py, test_attention.py) keep
    it, at larger shapes than any model here passes; the models' tests hold the outputs and gradients
    to the float64 model as before."""
    builder = None
    if TRITON_INTERPRETER:
        from triton.runtime import interpreter

        builder = getattr(interpreter, "interpreter_builder", None)
    options = getattr(builder, "options", None)
    if options is None or not hasattr(options, "sanitize_overflow"):
        yield
        return
    import dataclasses

    builder.options = dataclasses.replace(options, sanitize_overflow=False)
    try:
        yield
    finally:
        builder.options = options


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def subprocess_env() -> dict:
    """This process's environment for a child pytest (a sweep): without the variables pytest-xdist
    sets in its workers, which would make the child's pytest-benchmark think it runs distributed."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_CURRENT_TEST"))}
