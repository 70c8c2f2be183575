"""Sweep rows: one flat record per configuration (long format), and the writer that appends each to a
JSONL file the moment it exists, so an interrupted sweep keeps every row already measured.

A row holds the configuration (``KEY`` identifies it), the device, its ``status`` (``ok``, ``oom``,
``skipped: <why>``, ``error: <what>``), the analytic work, and for ``ok`` rows the timings and the
measured peak memory. reports/README.md describes every column.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

OPS = ("attention", "model", "layernorm", "patch_embed")
# the registry whose backend each op's ``backend`` column names (a whole fastvit model's is its attention;
# a peer's row names its library there, and its attention in ``attention_impl``)
OP_REGISTRY = {"attention": "attention", "model": "attention", "layernorm": "norm", "patch_embed": "patch"}
LEGACY_OPS = {"vit": "model"}  # whole-model rows of older results files
MIXED = "mixed"  # the op of mixed-resolution batches (benchmarks/bench_mixed.py): no one resolution
PASSES = ("fwd", "train")
# the columns that identify a configuration: two rows with equal keys measure the same thing (``way``:
# how a mixed-resolution batch is run, fastvit.bench.mixed; None elsewhere)
KEY = ("op", "library", "backend", "norm_backend", "patch_backend", "model", "resolution", "batch", "dtype", "pass",
       "way")
TIMING = ("median_s", "iqr_s", "q1_s", "q3_s", "mean_s", "stddev_s", "min_s", "max_s", "rounds")
COMPILE_SUFFIX = "+compile"


def split_impl(impl: str) -> tuple[str, bool]:
    """``"sdpa+compile"`` -> ``("sdpa", True)``: a backend and whether torch.compile wraps it."""
    base, plus, rest = impl.partition("+")
    if plus and "+" + rest != COMPILE_SUFFIX:
        raise ValueError(f"unknown implementation suffix in {impl!r} (only {COMPILE_SUFFIX!r})")
    return base, bool(plus)


def status_kind(status: str) -> str:
    """A row's status as one word: ok, oom, error (the configuration failed) or skipped (not run)."""
    if status in ("ok", "oom"):
        return status
    return "error" if status.startswith("error") else "skipped"


def _jsonable(value):
    if isinstance(value, (torch.dtype, torch.device, Path)):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class RowWriter:
    """Appends one JSON object per line and flushes it to disk at once, so an interrupted sweep keeps
    every row already measured. ``truncate=True`` starts a new file."""

    def __init__(self, path: str | os.PathLike, truncate: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if truncate:
            self.path.write_text("")

    def write(self, record: dict) -> None:
        line = json.dumps(record, default=_jsonable, allow_nan=False)
        with self.path.open("a") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def row_summary(row: dict) -> str:
    """A short progress line for a row: status, median and peak memory."""
    if row.get("status") != "ok":
        return row.get("status", "?")
    t = row["median_s"]
    parts = [f"{t:.3g} s" if t >= 1 else f"{t * 1e3:.3g} ms"]
    if row.get("peak_mem_bytes") is not None:
        parts.append(f"{row['peak_mem_bytes'] / 2 ** 20:.3g} MiB")
    if row.get("flops_per_s"):
        parts.append(f"{row['flops_per_s'] / 1e9:.3g} GFLOP/s")
    if row.get("bytes_per_s"):
        parts.append(f"{row['bytes_per_s'] / 1e9:.3g} GB/s")
    return "ok  " + ", ".join(parts)

