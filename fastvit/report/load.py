"""Benchmark results -> one DataFrame row per configuration, plus the run's environment.

Input: the sweep's JSONL rows (``results.jsonl``: one row per line, the environment on the first line,
again after each resume), also from an interrupted sweep (a last line cut short is ignored); or, from
older runs, the pytest-benchmark JSON the sweep wrote then (timed rows in ``benchmarks[].extra_info`` and
``stats``, untimed rows in ``fastvit_unmeasured``, the environment in ``machine_info.fastvit``, rows
reused by ``--resume`` in ``fastvit_resumed``).

Rows of a comparison group carry their per-round times (``round_times_s``, on CUDA also
``kernel_round_times_s``) and their baseline's beside them (``baseline_round_times_s``, on CUDA also
``kernel_baseline_round_times_s``): lists, kept as they are in object columns (None where a row has none).

Rows of older files are read as the sweep writes them now: whole-model rows under the op's old name
(LEGACY_OPS) become ``model`` rows, a missing ``library`` is fastvit's own, a whole model without a
``family`` takes its preset's.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fastvit.bench.results import read_rows
from fastvit.errors import FastViTError
from fastvit.models.presets import PRESETS
from fastvit.report.facts import (COMPONENTS, EVENT_QUANTILES, KEY, LEGACY_OPS, MODEL, NUMERIC, OWN_LIBRARY,
                                  PER_STAGE, ROUND_LISTS, STATS, TEXT_COLUMNS, TIMES)


@dataclass
class Results:
    rows: pd.DataFrame
    env: dict = field(default_factory=dict)
    source: str = ""


REQUIRED = ("op", "backend", "resolution", "pass", "status")
"""Fields every row must have."""


def load_results(path: str | os.PathLike) -> Results:
    """Rows and environment of a pytest-benchmark JSON or a JSONL rows file.

    Raises FastViTError naming the file and the line (JSONL) or field (JSON) of malformed input; only a
    JSONL line cut short at the end of the file, as an interrupted sweep leaves it, is ignored."""
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
    if isinstance(data, dict) and "environment" not in data:
        env, rows = _from_pytest_benchmark(data, str(path))
    else:
        env, found, _ = read_rows(path)
        rows = [(f"line {n}", r) for n, r in found]
    for where, row in rows:
        _check_row(row, str(path), where)
    if not rows:
        raise FastViTError(f"no benchmark rows in {str(path)!r} (expected the sweep's pytest-benchmark JSON "
                           "or its JSONL rows)")
    return Results(frame([r for _, r in rows]), env, str(path))


def _check_row(row, path: str, where: str) -> None:
    if not isinstance(row, dict):
        raise FastViTError(f"results file {path!r}, {where}: a row must be a JSON object, got {type(row).__name__}")
    missing = [k for k in REQUIRED if k not in row]
    if missing:
        raise FastViTError(f"results file {path!r}, {where}: row lacks the field(s) {', '.join(missing)}")
    for col in NUMERIC:
        value = row.get(col)
        if col in PER_STAGE and isinstance(value, list) and all(_is_number(v) for v in value):
            continue
        if value is not None and not _is_number(value):
            raise FastViTError(f"results file {path!r}, {where}: field {col!r} must be a number, got {value!r}")
    for col in ROUND_LISTS:
        value = row.get(col)
        if value is not None and not (isinstance(value, list) and all(v is None or _is_number(v) for v in value)):
            raise FastViTError(f"results file {path!r}, {where}: field {col!r} must be a list of seconds, "
                               f"got {str(value)[:60]}")
    if not isinstance(row["status"], str):
        raise FastViTError(f"results file {path!r}, {where}: field 'status' must be text, got {row['status']!r}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _from_pytest_benchmark(data: dict, path: str) -> tuple[dict, list[tuple[str, dict]]]:
    if not isinstance(data.get("benchmarks"), list):
        raise FastViTError(f"results file {path!r}: field 'benchmarks' must be a list (the pytest-benchmark JSON of "
                           "a sweep); found "
                           + ("none" if "benchmarks" not in data else type(data["benchmarks"]).__name__))
    env = dict((data.get("machine_info") or {}).get("fastvit") or {})
    env.setdefault("datetime", data.get("datetime"))
    if data.get("commit_info") and not env.get("git"):
        env["git"] = {"id": data["commit_info"].get("id"), "dirty": data["commit_info"].get("dirty")}
    rows = []
    for i, bench in enumerate(data["benchmarks"]):
        if not isinstance(bench, dict):
            raise FastViTError(f"results file {path!r}: field 'benchmarks[{i}]' must be an object")
        row = dict(bench.get("extra_info") or {})
        if "op" not in row:
            continue  # a benchmark of another suite
        stats = bench.get("stats") or {}
        for k in STATS:
            if k in stats:
                row[f"{k}_s"] = stats[k]
        row["rounds"] = stats.get("rounds", row.get("rounds"))
        row.setdefault("status", "ok")
        rows.append((f"field 'benchmarks[{i}]'", row))
    for name in ("fastvit_unmeasured", "fastvit_resumed"):
        listed = data.get(name) or []
        if not isinstance(listed, list):
            raise FastViTError(f"results file {path!r}: field {name!r} must be a list")
        rows += [(f"field '{name}[{i}]'", r if not isinstance(r, dict) else dict(r)) for i, r in enumerate(listed)]
    return env, rows


def frame(rows: list[dict]) -> pd.DataFrame:
    """The rows as a DataFrame: every key, text, numeric and round-times column present, times blanked
    where not timed, CUDA-event times in place of wall-clock ones, rates, the ``impl`` label, duplicates
    dropped. A/A twins stay (their backend names them); :func:`fastvit.report.tables.plain` leaves them out."""
    df = pd.DataFrame(rows)
    for col in KEY + TEXT_COLUMNS + list(ROUND_LISTS):
        if col not in df:
            df[col] = None
    for col in ROUND_LISTS:
        df[col] = pd.Series([v if isinstance(v, list) else None for v in df[col]], index=df.index, dtype=object)
    for col in NUMERIC:
        if col in df and col in PER_STAGE:  # one value per stage: not one number
            df[col] = df[col].map(lambda v: v if _is_number(v) else np.nan)
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df else np.nan
    df["op"] = df["op"].map(lambda op: LEGACY_OPS.get(op, op))
    df["library"] = df["library"].fillna(OWN_LIBRARY)
    unnamed = (df["op"] == MODEL) & df["family"].isna()
    df.loc[unnamed, "family"] = df.loc[unnamed, "model"].map(lambda m: PRESETS[m].family.name if m in PRESETS else None)
    df["status"] = df["status"].fillna("ok").astype(object)
    ok = df["status"] == "ok"
    df.loc[~ok, TIMES] = np.nan
    for col in ROUND_LISTS:
        df[col] = pd.Series([v if good else None for v, good in zip(df[col], ok)], index=df.index, dtype=object)
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
    """The backend's name; for a fastvit whole model, followed by its non-default components; for a peer's
    (or a CNN's) whole model, its library."""
    if row.get("op") == MODEL and row.get("library") not in (None, OWN_LIBRARY):
        return str(row["library"])
    label = str(row["backend"])
    if row.get("op") == MODEL:
        for name, column, default in COMPONENTS:
            value = row.get(column)
            if isinstance(value, str) and value != default:
                label += f", {name}={value}"
    return label
