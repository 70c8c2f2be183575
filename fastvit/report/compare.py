"""The comparison section of ``fastvit report --compare``: a second run's medians and peak memory beside
this run's, with their ratios, and this run's latency figures with the other run's lines dotted. Two runs
are never paired (different processes, different times): their ratios are ratios of medians, unpaired."""
from __future__ import annotations

import numpy as np
import pandas as pd

from fastvit.report.facts import COMPARE_KEY, OP_SHORT
from fastvit.report.load import Results
from fastvit.report.plots import Figure, plot_scaling
from fastvit.report.sections import Section, env_rows, group_heading, group_title
from fastvit.report.tables import Notes, Table, fig_name, groups, mem_unit, num, one_setting, select, slug, time_unit


def _cell(status, value, scale, notes: Notes) -> str:
    if status is None or (isinstance(status, float) and np.isnan(status)):
        return "–"
    if status != "ok":
        return notes.cell(status)
    return num(value * scale)


def _ratio(a, b, this: float, other: float, positive: bool = False) -> str:
    """`` (×other/this)`` where both runs timed the configuration (and, with ``positive``, ``this`` > 0)."""
    return f" (×{other / this:.2f})" if a == "ok" and b == "ok" and (this > 0 or not positive) else ""


def compare_section(res: Results, other: Results) -> Section:
    df, odf = res.rows, other.rows
    section = Section()
    lines = ["## Comparison", "",
             f"This run: `{res.source}`; other run: `{other.source}`. Ratios are other / this: a time ratio "
             "above 1 means this run is faster. The runs were measured apart, so every ratio here is unpaired: "
             "no interval, no verdict.", "",
             *section.table(Table("compare_environment", "Environment of both runs", ["", "this run", "other run"],
                                  [[a[0], a[1], b[1]] for a, b in zip(env_rows(res.env), env_rows(other.env))],
                                  numeric=False))]
    figures = []
    merged = df.merge(odf, on=COMPARE_KEY, how="outer", suffixes=("", "_other"), indicator=True)
    unique = one_setting(df)
    one_sided = []
    for key, g in groups(merged):
        if g["status"].isna().all() or g["status_other"].isna().all():
            side = "the other run" if g["status"].isna().all() else "this run"
            one_sided.append(f"{OP_SHORT.get(key['op'], key['op'])} {key['pass']} ({key['model']}, "
                             f"B={int(key['batch'])}, {key['dtype']}): only in {side}")
            continue
        notes = Notes()
        res_list = sorted(int(r) for r in g["resolution"].dropna().unique())
        unit, scale = time_unit(pd.concat([g["median_s"], g["median_s_other"]]))
        mu, ms = mem_unit(pd.concat([g["peak_mem_bytes"], g["peak_mem_bytes_other"]]))
        trows, mrows = [], []
        for impl in dict.fromkeys(g["impl"]):
            s = g[g["impl"] == impl]
            tcells, mcells = [], []
            for r in res_list:
                hit = s[s["resolution"] == r]
                if hit.empty:
                    tcells.append("")
                    mcells.append("")
                    continue
                h = hit.iloc[0]
                a, b = h.get("status"), h.get("status_other")
                tcells.append(f"{_cell(a, h['median_s'], scale, notes)} / {_cell(b, h['median_s_other'], scale, notes)}"
                              + _ratio(a, b, h["median_s"], h["median_s_other"]))
                mcells.append(f"{_cell(a, h['peak_mem_bytes'], ms, notes)} / "
                              f"{_cell(b, h['peak_mem_bytes_other'], ms, notes)}"
                              + _ratio(a, b, h["peak_mem_bytes"], h["peak_mem_bytes_other"], positive=True))
            trows.append([impl] + tcells)
            mrows.append([impl] + mcells)
        header = ["backend"] + [f"{r} px" for r in res_list]
        fig = "compare_" + fig_name(key, unique)
        this_g, other_g = select(df, key), select(odf, key)
        if len(this_g):
            fig_title = group_title(key, this_g, res.env) + "  (dotted: other run)"
            figures.append(Figure(fig, lambda path, g=this_g, o=other_g, t=fig_title:
                                  plot_scaling(g, path, t, other=o, other_label="other")))
        lines += [f"### {group_heading(key)}", "",
                  f"![compare {key['op']} {key['pass']}]({fig})", "",
                  f"Median latency ({unit}), this / other (other ÷ this):", "",
                  *section.table(Table(slug("compare", fig[8:-4], "latency"), f"{group_heading(key)}: latency, "
                                       "this run and the other", header, trows)),
                  f"Peak memory ({mu}), this / other (other ÷ this):", "",
                  *section.table(Table(slug("compare", fig[8:-4], "memory"), f"{group_heading(key)}: peak memory, "
                                       "this run and the other", header, mrows))]
        if notes.reasons:
            lines += [notes.render(), ""]
    if one_sided:
        lines += ["Not compared (the configuration was measured in one run only):", ""]
        lines += [f"- {t}" for t in one_sided] + [""]
    section.lines, section.figures = lines, figures
    return section
