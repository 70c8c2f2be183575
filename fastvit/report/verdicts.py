"""The sections that compare backends inside their comparison groups: the fastest backend of each op at
each size with its margin over the runner-up, every backend against the op's default size by size,
and the noise floor (every group's A/A ratio). Also the table layout the whole-model sections share:
one row per size and implementation with its time ratio, its 95% interval and the verdict. Pure
functions, as in :mod:`fastvit.report.sections`."""
from __future__ import annotations

import pandas as pd

from fastvit.bench.paired import NO_DIFFERENCE, TARGET_HALF_WIDTH
from fastvit.report.comparisons import (UNPAIRED, Comparison, against_baseline, band_text, fastest, fmt_ratio, noise,
                                        noise_rows, paired_rows)
from fastvit.report.facts import MIXED, MODEL, OP_SHORT, PASS_SHORT
from fastvit.report.sections import Section, group_heading
from fastvit.report.tables import Notes, Table, num, op_rank, slug, time_unit

RULE = ("A ratio is this time over the other's, the median of the per-round ratios (both timed in the same "
        "interleaved rounds; against its baseline, the baseline's call beside it), with its 95% bootstrap interval. It is *faster* or *slower* only where the whole "
        "interval lies beyond 1 and beyond the group's A/A noise band; otherwise *no measurable difference*.")


def size_label(res, tokens=None) -> str:
    if res is None or pd.isna(res):  # a mixed-resolution batch
        return "mixed sizes"
    return f"{int(res)} px (N={int(tokens):,})" if tokens is not None and pd.notna(tokens) else f"{int(res)} px"


def setting_text(r: dict) -> str:
    return f"{r['model']}, B={int(r['batch'])}, {r['dtype']}"


def ratio_cells(c: Comparison | None, paired: bool) -> list[str]:
    """The ratio cell (and, in a paired table, the verdict cell) of one comparison."""
    if c is None:
        return ["–", "–"] if paired else ["–"]
    return [c.text(), c.verdict] if paired else [fmt_ratio(c.value)]


def ratio_header(what: str, paired: bool) -> list[str]:
    return [f"{what} [95% interval]", "verdict"] if paired else [f"{what} (unpaired)"]


def unpaired_note(paired: bool) -> list[str]:
    return [] if paired else [f"These rows were not timed in comparison groups ({UNPAIRED}): each ratio is one "
                              "median over another, with no interval and no verdict.", ""]


def _status(row: dict, notes: Notes) -> str | None:
    return None if row.get("status") == "ok" else notes.cell(str(row.get("status")))


def _settings(records: list[dict]) -> list[tuple]:
    keys = list(dict.fromkeys((r["op"], r["pass"], r["model"], r["dtype"], r["batch"]) for r in records))
    return sorted(keys, key=lambda k: (op_rank(k[0]), k[1] != "fwd", str(k[2]), str(k[3]), k[4]))


def fastest_section(df: pd.DataFrame) -> Section:
    """One table for every op: per pass, setting and size, the fastest backend and its margin."""
    found = fastest(df)
    if not found:
        return Section()
    paired = any(f["margin"] is not None and f["margin"].paired for f in found)
    several = len({(f["model"], f["dtype"], f["batch"]) for f in found}) > 1
    found = sorted(found, key=lambda f: (op_rank(f["op"]), f["pass"] != "fwd", str(f["model"]), str(f["dtype"]),
                                         f["batch"], f["resolution"]))
    rows = [[OP_SHORT.get(f["op"], f["op"]), f["pass"]] + ([setting_text(f)] if several else [])
            + [size_label(f["resolution"], f["tokens"]), f"`{f['fastest']}`", f"`{f['runner_up']}`"]
            + ratio_cells(f["margin"], paired) for f in found]
    header = ["op", "pass"] + (["setting"] if several else []) + ["size", "fastest", "runner-up"] \
        + ratio_header("fastest ÷ runner-up", paired)
    section = Section()
    section.lines = ["## Fastest backend at each size", "",
                     "Per op, pass and size, the backend with the lowest time and its time over the runner-up's "
                     f"(below 1: faster). {RULE if paired else ''} Where the verdict is *{NO_DIFFERENCE}*, the two "
                     "are tied in this run.", "", *unpaired_note(paired),
                     *section.table(Table("fastest", "Fastest backend at each size", header, rows,
                                          text_cols=len(header) - (2 if paired else 1)))]
    return section


def backends_section(df: pd.DataFrame) -> Section:
    """Per op, pass and setting (whole models aside): every backend's median and its time over the op's
    default at each size, the group's A/A twin last."""
    comp = against_baseline(df)
    if comp.empty:
        return Section()
    comp = comp[(comp["op"] != MODEL) & (comp["kind"] != "compile")]  # +compile rows: against eager, below
    records = comp.to_dict("records")
    if not any(r["kind"] != "baseline" and r["comparison"] is not None for r in records):
        return Section()
    twins = noise(df)
    section = Section(["## Backends against the default, size by size", "",
                       "Every backend of an op against the op's default backend at the same configuration, fastest "
                       "first at each size. "
                       + (f"{RULE} The A/A row is the default timed a second time: its ratio is the run's noise at "
                          "that size." if paired_rows(df) else "")
                       + (" On CUDA, short forward calls also show the median of CUDA-graph replays: launch "
                          "overhead removed and no L2 flush between replays, so a warm-cache figure, not one to "
                          "compare with the medians." if "graph_median_s" in df and df["graph_median_s"].notna().any()
                          else ""), ""])
    for key in _settings(records):
        rows_of = [r for r in records if (r["op"], r["pass"], r["model"], r["dtype"], r["batch"]) == key]
        paired = any(isinstance(r.get("group"), str) for r in rows_of)
        bases = list(dict.fromkeys(r["baseline_impl"] for r in rows_of if isinstance(r["baseline_impl"], str)))
        base = bases[0] if len(bases) == 1 else "the default"
        ok = [r["median_s"] for r in rows_of if r["status"] == "ok"]
        unit, scale = time_unit(ok)
        graphs = any(pd.notna(r.get("graph_median_s")) or isinstance(r.get("graph_status"), str) for r in rows_of)
        notes, rows = Notes(), []
        for res in sorted({int(r["resolution"]) for r in rows_of}):
            at = [r for r in rows_of if int(r["resolution"]) == res]

            def order(r):
                c = r["comparison"]
                value = 1.0 if r["kind"] == "baseline" else (c.value if c is not None else float("inf"))
                return (r["status"] != "ok", value, str(r["impl"]))

            for r in sorted(at, key=order):
                median = _status(r, notes) or num(r["median_s"] * scale)
                if r["kind"] == "baseline":
                    cells = ["1 (baseline)", "baseline"] if paired else ["1 (baseline)"]
                else:
                    cells = ratio_cells(r["comparison"], paired)
                rows.append([size_label(res, r["tokens"]), f"`{r['impl']}`", median] + cells
                            + ([_graph_cell(r, scale)] if graphs else []))
            twin = twins.get(at[0]["slot"])
            if twin is not None:
                rows.append([size_label(res, at[0]["tokens"]), f"`{twin[0]['impl']}`",
                             num(twin[0]["median_s"] * scale), twin_text(twin[1]), f"noise {band_text(twin[1])}"]
                            + (["–"] if graphs else []))
        op, p, model, dtype, batch = key
        heading = group_heading({"op": op, "pass": p, "model": model, "dtype": dtype, "batch": batch})
        header = ["size", "backend", f"median ({unit})"] + ratio_header(f"time ÷ {base}'s", paired) \
            + ([f"CUDA-graph replay ({unit}), no L2 flush"] if graphs else [])
        section.lines += [f"### {heading}", "", *unpaired_note(paired),
                          *section.table(Table(slug("vs", base, op, p, model, dtype, f"b{int(batch)}"),
                                               f"{heading}: every backend against {base}", header, rows,
                                               text_cols=2))]
        if notes.reasons:
            section.lines += [notes.render(), ""]
    return section


def _graph_cell(r: dict, scale: float) -> str:
    """The CUDA-graph replay median (launch overhead removed, the L2 cache warm: not comparable with the
    medians), or why the call could not be captured."""
    if pd.notna(r.get("graph_median_s")):
        return num(r["graph_median_s"] * scale)
    return str(r["graph_status"]) if isinstance(r.get("graph_status"), str) else "–"


def twin_text(ratio) -> str:
    return Comparison(ratio.value, ratio, NO_DIFFERENCE).text()


def _group_name(r: dict) -> str:
    if r["op"] == MIXED:  # its batch is the number of images, of many sizes
        return (f"{OP_SHORT[MIXED]} ({r['model']}, `{r['backend']}`), {PASS_SHORT.get(r['pass'], r['pass'])}, "
                f"{int(r['batch'])} images, {r['dtype']}")
    what = "whole models" if r["op"] == MODEL else f"{OP_SHORT.get(r['op'], r['op'])} ({r['model']})"
    return f"{what}, {PASS_SHORT.get(r['pass'], r['pass'])}, B={int(r['batch'])}, {r['dtype']}"


def noise_section(df: pd.DataFrame) -> Section:
    """Every comparison group's A/A ratio with its interval, and the noise floor of the run."""
    if not paired_rows(df):
        return Section()
    found = sorted(noise_rows(df), key=lambda r: (op_rank(r["op"]), r["pass"] != "fwd", str(r["model"]),
                                                  str(r["dtype"]), r["batch"], r["resolution"]))
    rows = []
    for r in found:
        ratio = r["ratio"]
        twin = "–" if r["twin"] is None else f"`{r['twin']}`" + (f" ({r['twin_model']})" if r["op"] == MODEL else "")
        within = "–" if ratio is None else ("yes" if ratio.band <= TARGET_HALF_WIDTH else "**no**")
        rows.append([_group_name(r), size_label(r["resolution"]), twin,
                     "no A/A twin" if ratio is None else twin_text(ratio), band_text(ratio), within,
                     "–" if pd.isna(r["rounds"]) else f"{int(r['rounds'])}", str(r["stop"] or "–"),
                     str(r["members"])])
    measured = [r for r in found if r["ratio"] is not None]
    widest = max(measured, key=lambda r: r["ratio"].band) if measured else None
    floor = (f"The noise floor of this run (the widest A/A band) is {band_text(widest['ratio'])}, in the group of "
             f"{_group_name(widest)} at {size_label(widest['resolution'])}." if widest else
             "No group has a timed A/A twin: verdicts compare the intervals with 1 alone.")
    section = Section()
    table = Table("noise_floor", "A/A ratio of every comparison group",
                  ["group", "size", "A/A twin", "A/A ratio [95% interval]", "band",
                   f"within ±{100 * TARGET_HALF_WIDTH:.0f}%", "rounds", "rounds stopped by", "members timed"], rows,
                  text_cols=3)
    section.lines = ["## Noise floor: A/A twins", "",
                     "Each comparison group can time its baseline twice, as two members with the same module and "
                     "inputs (the A/A twin). Their paired ratio should be 1; its interval is what *no difference* "
                     "looks like in this run, and a comparison in that group is called faster or slower only "
                     f"where its interval also clears that band. {floor}", "", *section.table(table)]
    return section
