"""Benchmark results -> one DataFrame row per configuration, plus the run's environment.

Input: the pytest-benchmark JSON written by the sweep in ``benchmarks/`` (timed rows in
``benchmarks[].extra_info`` and ``stats``, untimed rows in ``fastvit_unmeasured``, the environment in
``machine_info.fastvit``), or the sweep's JSONL rows (one row per line, the environment on the first
line), e.g. from an interrupted sweep; a line cut short is ignored.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fastvit.errors import FastViTError
from fastvit.report.facts import COMPONENTS, EVENT_QUANTILES, KEY, NUMERIC, STATS, TEXT_COLUMNS, TIMES


@dataclass
class Results:
    rows: pd.DataFrame
    env: dict = field(default_factory=dict)
    source: str = ""


def load_results(path: str | os.PathLike) -> Results:
    """Rows and environment of a pytest-benchmark JSON or a JSONL rows file."""
    path = Path(path)
    if not path.is_file():
        raise FastViTError(f"results file {str(path)!r} does not exist")
    text = path.read_text()
    data = None
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # JSONL
    if isinstance(data, dict) and "benchmarks" in data:
        env, rows = _from_pytest_benchmark(data)
    else:
        env, rows = _from_jsonl(text)
    if not rows:
        raise FastViTError(f"no benchmark rows in {str(path)!r} (expected the sweep's pytest-benchmark JSON "
                           "or its JSONL rows)")
    return Results(frame(rows), env, str(path))


def _from_pytest_benchmark(data: dict) -> tuple[dict, list[dict]]:
    env = dict((data.get("machine_info") or {}).get("fastvit") or {})
    env.setdefault("datetime", data.get("datetime"))
    if data.get("commit_info") and not env.get("git"):
        env["git"] = {"id": data["commit_info"].get("id"), "dirty": data["commit_info"].get("dirty")}
    rows = []
    for bench in data["benchmarks"]:
        row = dict(bench.get("extra_info") or {})
        if "op" not in row:
            continue
        stats = bench.get("stats") or {}
        for k in STATS:
            if k in stats:
                row[f"{k}_s"] = stats[k]
        row["rounds"] = stats.get("rounds", row.get("rounds"))
        row.setdefault("status", "ok")
        rows.append(row)
    rows += [dict(r) for r in data.get("fastvit_unmeasured") or []]
    return env, rows


def _from_jsonl(text: str) -> tuple[dict, list[dict]]:
    env, rows = {}, []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # empty, or cut short by an interrupted sweep
        if not isinstance(record, dict):
            continue
        if "environment" in record:
            env = dict(record["environment"])
        elif "op" in record:
            rows.append(record)
    return env, rows


def frame(rows: list[dict]) -> pd.DataFrame:
    """The rows as a DataFrame: every key and numeric column present, times blanked where not timed,
    CUDA-event times in place of wall-clock ones, rates, the ``impl`` label, duplicates dropped."""
    df = pd.DataFrame(rows)
    for col in KEY + TEXT_COLUMNS:
        if col not in df:
            df[col] = None
    for col in NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df else np.nan
    df["status"] = df["status"].fillna("ok").astype(object)
    ok = df["status"] == "ok"
    df.loc[~ok, TIMES] = np.nan
    # CUDA rows: the CUDA-event times of the timed rounds are the kernels' own time; pytest-benchmark's
    # wall-clock figures add the synchronisation and Python around every round (kept as wall_*_s).
    events = ok & df["kernel_median_s"].notna()
    if events.any():
        for q in EVENT_QUANTILES:
            df[f"wall_{q}_s"] = df[f"{q}_s"]
            kernel = pd.to_numeric(df.get(f"kernel_{q}_s", df["kernel_median_s"]), errors="coerce")
            df.loc[events, f"{q}_s"] = kernel.fillna(df["kernel_median_s"])[events]
        df.loc[events, "iqr_s"] = df["q3_s"] - df["q1_s"]
    df["flops_per_s"] = df["flops"] / df["median_s"]
    df["bytes_per_s"] = df["bytes"] / df["median_s"]
    df["impl"] = [impl_label(r) for r in df.to_dict("records")]
    keys = [k for k in KEY if df[k].notna().any()]
    df = df.drop_duplicates(subset=keys, keep="last").reset_index(drop=True)
    return df


def impl_label(row: dict) -> str:
    """The backend's name; for the whole model, followed by its non-default components."""
    label = str(row["backend"])
    if row.get("op") == "vit":
        for name, column, default in COMPONENTS:
            value = row.get(column)
            if isinstance(value, str) and value != default:
                label += f", {name}={value}"
    return label
