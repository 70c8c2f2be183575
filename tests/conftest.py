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

# CPU tests run with a fixed thread count so timings and results do not depend on the host.
torch.set_num_threads(min(2, os.cpu_count() or 1))

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
