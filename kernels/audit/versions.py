"""The Triton releases the kernels are audited with, and the check a GPU job runs on the one it has.

Supported: Triton 3.7.1 to 3.9.x (pyproject.toml: ``triton>=3.7.1,<3.10``). The floor is what the
CUDA build of torch 2.13 pins (``triton==3.7.1``); torch 2.14's CUDA builds pin ``triton~=3.8.0``;
3.9.0 is the newest release, the one a CPU venv gets (the CPU build of torch pins none). Each release
in ``AUDITED`` has its committed audit in reports/audit/triton-<version>/, and ``make test`` runs
the audit with every one of them and the kernels' interpreter tests with the oldest and the newest.

    python -m kernels.audit --check-version

prints one line naming the installed triton (and its ptxas) and whether it was audited; outside the
audited releases it warns on stderr. It exits 0 either way (2 when triton cannot be imported).
"""
from __future__ import annotations

import os
import re
import sys

AUDITED = ("3.7.1", "3.8.0", "3.9.0")  # oldest first
SUPPORTED = ">=3.7.1,<3.10"  # the triton requirement in pyproject.toml


def _release(version: str) -> tuple[int, int, int]:
    """``3.8.0`` -> (3, 8, 0); a local or pre-release tail (``3.8.0+git1234``, ``3.9.0rc1``) is dropped."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
    return (int(m[1]), int(m[2]), int(m[3] or 0)) if m else (0, 0, 0)


def classify(version: str) -> str:
    """``audited`` (one of AUDITED), ``between`` (inside their range, e.g. a patch release, but not
    audited itself) or ``outside``."""
    if version in AUDITED:
        return "audited"
    release = _release(version)
    newest = _release(AUDITED[-1])
    if _release(AUDITED[0]) <= release and release[:2] <= newest[:2]:
        return "between"
    return "outside"


def check(version: str, ptxas: str = "") -> tuple[str, str | None]:
    """(the line to record, a warning or None) for triton ``version``."""
    tools = f" ({ptxas})" if ptxas else ""
    line = f"triton {version}{tools}"
    kind = classify(version)
    if kind == "audited":
        return f"{line}: audited for sm_90 and sm_80 (reports/audit/triton-{version}/)", None
    audited = ", ".join(AUDITED)
    if kind == "between":
        return (f"{line}: not audited itself, inside the audited releases ({audited})",
                f"WARNING: triton {version} was not audited; the nearest audited releases are {audited}: "
                "run python -m kernels.audit with it to check for compile failures, spills and overflows")
    return (f"{line}: OUTSIDE the audited releases ({audited})",
            f"WARNING: triton {version} is outside the audited releases ({audited}; supported: triton{SUPPORTED}): "
            "the kernels may fail to compile, spill or overflow shared memory on it; "
            "install a supported triton or run python -m kernels.audit with this one first")


def main() -> int:
    """``python -m kernels.audit --check-version``."""
    try:
        import triton
    except ImportError as e:
        print(f"kernels.audit: triton cannot be imported ({e})", file=sys.stderr)
        return 2
    try:
        from kernels.audit.compile import ptxas_tool
        tools = [ptxas_tool(arch) for arch in (90, 80)]
        ptxas = ", ".join(sorted({f"{os.path.basename(t.path)} {t.version}" for t in tools}))
    except Exception:  # noqa: BLE001 -- the version line is still worth recording without ptxas
        ptxas = "ptxas not found"
    line, warning = check(triton.__version__, ptxas)
    print(line, flush=True)
    if warning:
        print(warning, file=sys.stderr)
    return 0
