"""The section on torch.compile: every implementation that the sweep ran both eagerly and as
``<impl>+compile``, the two latencies side by side per size with their ratio, and the graphs and
graph breaks the compiled rows recorded. A pure function, as in :mod:`fastvit.report.sections`."""
from __future__ import annotations

import numpy as np
import pandas as pd

from fastvit.report.facts import COMPILE_SUFFIX, GROUP, OP_SHORT, PASS_SHORT
from fastvit.report.sections import Section
from fastvit.report.tables import Notes, md_table, num, sort_by_op, time_unit


def _cell(rows: pd.DataFrame, res: int, notes: Notes):
    """(the median, or None, and its text: the value, or the status with its footnote)."""
    hit = rows[rows["resolution"] == res]
    if hit.empty:
        return None, ""
    row = hit.iloc[-1]
    return (row["median_s"], None) if row["status"] == "ok" else (None, notes.cell(row["status"]))


def _graphs(row: pd.Series) -> str:
    graphs, breaks = pd.to_numeric(pd.Series([row.get("compile_graphs"), row.get("compile_graph_breaks")]),
                                   errors="coerce")
    if not (np.isfinite(graphs) and np.isfinite(breaks)):
        return "–"
    return f"{int(graphs)} / {int(breaks)}"


def compile_section(df: pd.DataFrame) -> Section:
    """Per op, pass and setting: each compiled implementation against its eager run, size by size."""
    impl = df["impl"].astype(str)
    compiled = df[impl.str.endswith(COMPILE_SUFFIX)]
    if compiled.empty:
        return Section()
    lines = ["## torch.compile against eager", "",
             "Each implementation that ran both eagerly and under `torch.compile` (default mode, inductor), "
             "same configuration, same run. *compiled / eager* is the compiled median latency over the eager "
             "one: below 1 the compiled model is faster. *graphs / breaks*: the graphs dynamo captured and the "
             "graph breaks it met while compiling that row (0 breaks: one graph for the whole call). The "
             "compile time itself is not in the latency (warm-up rounds run first).", ""]
    keys = sort_by_op(compiled[GROUP].drop_duplicates(), GROUP).to_dict("records")
    for key in keys:
        g = df[np.logical_and.reduce([(df[c] == v).to_numpy() for c, v in key.items()])]
        gi = g["impl"].astype(str)
        notes, rows = Notes(), []
        for name in sorted(set(gi[gi.str.endswith(COMPILE_SUFFIX)])):
            eager_name = name[: -len(COMPILE_SUFFIX)]
            comp, eager = g[gi == name], g[gi == eager_name]
            for res in sorted(int(r) for r in comp["resolution"].unique()):
                e, e_text = _cell(eager, res, notes)
                c, c_text = _cell(comp, res, notes)
                unit, scale = time_unit([v for v in (e, c) if v is not None] or [np.nan])
                fmt = lambda v, t: t if v is None else f"{num(v * scale)} {unit}"  # noqa: E731
                ratio = f"{c / e:.2f}×" if e and c else "–"
                rows.append([f"`{eager_name}`", f"{res} px", fmt(e, e_text), fmt(c, c_text), ratio,
                             _graphs(comp[comp["resolution"] == res].iloc[-1])])
        title = f"{OP_SHORT.get(key['op'], key['op'])}, {key['model']}, {PASS_SHORT.get(key['pass'], key['pass'])}"
        lines += [f"### {title}, B={int(key['batch'])}, {key['dtype']}", "",
                  md_table(["backend", "size", "eager", "compiled", "compiled / eager", "graphs / breaks"], rows,
                           text_cols=2), ""]
        if notes.reasons:
            lines += [notes.render(), ""]
    return Section(lines)
