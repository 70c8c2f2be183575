"""The section on torch.compile: every implementation that the sweep ran both eagerly and as
``<impl>+compile``, the two latencies side by side per size with the compiled time over the eager one
(paired where both were timed in one comparison group), and the graphs and graph breaks the compiled
rows recorded. A pure function, as in :mod:`fastvit.report.sections`."""
from __future__ import annotations

import numpy as np
import pandas as pd

from fastvit.report.comparisons import compare, noise, same_group, slot
from fastvit.report.facts import COMPILE_SUFFIX, GROUP, OP_SHORT, PASS_SHORT
from fastvit.report.sections import Section
from fastvit.report.tables import Notes, Table, num, plain, slug, sort_by_op, time_unit
from fastvit.report.verdicts import RULE, ratio_cells, ratio_header, unpaired_note


def _cell(row: dict | None, notes: Notes, unit: str, scale: float) -> str:
    if row is None:
        return ""
    return f"{num(row['median_s'] * scale)} {unit}" if row["status"] == "ok" else notes.cell(row["status"])


def _graphs(row: dict) -> str:
    graphs, breaks = pd.to_numeric(pd.Series([row.get("compile_graphs"), row.get("compile_graph_breaks")]),
                                   errors="coerce")
    if not (np.isfinite(graphs) and np.isfinite(breaks)):
        return "–"
    return f"{int(graphs)} / {int(breaks)}"


def _at(rows: pd.DataFrame, res: int) -> dict | None:
    hit = rows[rows["resolution"] == res].to_dict("records")
    return hit[-1] if hit else None


def compile_section(df: pd.DataFrame) -> Section:
    """Per op, pass and setting: each compiled implementation against its eager run, size by size."""
    df = plain(df)
    impl = df["impl"].astype(str)
    compiled = df[impl.str.endswith(COMPILE_SUFFIX)]
    if compiled.empty:
        return Section()
    floor = noise(df)
    section = Section(["## torch.compile against eager", "",
                       "Each implementation that ran both eagerly and under `torch.compile` (default mode, "
                       "inductor), same configuration, same run. *compiled ÷ eager* is the compiled time over the "
                       f"eager one: below 1 the compiled model is faster. {RULE} *graphs / breaks*: the graphs "
                       "dynamo captured and the graph breaks it met while compiling that row (0 breaks: one graph "
                       "for the whole call). The compile time itself is not in the latency (warm-up rounds run "
                       "first).", ""])
    keys = sort_by_op(compiled[GROUP].drop_duplicates(), GROUP).to_dict("records")
    for key in keys:
        g = df[np.logical_and.reduce([(df[c] == v).to_numpy() for c, v in key.items()])]
        gi = g["impl"].astype(str)
        notes, entries = Notes(), []
        for name in sorted(set(gi[gi.str.endswith(COMPILE_SUFFIX)])):
            eager_name = name[: -len(COMPILE_SUFFIX)]
            comp, eager = g[gi == name], g[gi == eager_name]
            for res in sorted(int(r) for r in comp["resolution"].unique()):
                e, c = _at(eager, res), _at(comp, res)
                both = [r["median_s"] for r in (e, c) if r is not None and r["status"] == "ok"]
                unit, scale = time_unit(both or [np.nan])
                aa = floor.get(slot(c))
                ratio = compare(c, e, aa[1] if aa and same_group(c, e) else None) if e is not None else None
                entries.append(([f"`{eager_name}`", f"{res} px", _cell(e, notes, unit, scale),
                                 _cell(c, notes, unit, scale)], ratio, _graphs(c)))
        paired = any(r is not None and r.paired for _, r, _ in entries)
        rows = [cells + ratio_cells(r, paired) + [graphs] for cells, r, graphs in entries]
        title = f"{OP_SHORT.get(key['op'], key['op'])}, {key['model']}, {PASS_SHORT.get(key['pass'], key['pass'])}"
        heading = f"{title}, B={int(key['batch'])}, {key['dtype']}"
        section.lines += [f"### {heading}", "", *unpaired_note(paired),
                          *section.table(Table(slug("compile", key["op"], key["model"], key["pass"], key["dtype"],
                                                    f"b{int(key['batch'])}"), f"torch.compile: {heading}",
                                               ["backend", "size", "eager", "compiled"]
                                               + ratio_header("compiled ÷ eager", paired) + ["graphs / breaks"], rows,
                                               text_cols=2))]
        if notes.reasons:
            section.lines += [notes.render(), ""]
    return section
