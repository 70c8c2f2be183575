"""The sections of report.md. Each is a pure function of the rows (and the environment) that returns a
:class:`Section`: its markdown lines, the figures those lines show and the tables they hold (each also
written as CSV); none of them writes a file. This module: the environment, the scaling exponents, the
kernels' targets, attention's share, and the tables of every op and pass."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fastvit.report.facts import (ENV_VERSIONS, MODEL, OP_SHORT, OP_TITLES, PASS_TITLES, SDPA, SDPA_KERNEL, SETTING)
from fastvit.report.fit import FIT_MIN_RESOLUTION, FIT_MIN_TOKENS, SHARE_LEVEL, attention_share, crossings, exponents
from fastvit.report.plots import Figure, plot_scaling, plot_share
from fastvit.report.tables import (Notes, Table, fig_name, fmt_exponent, groups, impl_title, mem_unit, num, one_setting,
                                   pivot_table, rate_unit, slug, sort_by_op, status_kind, time_unit)
from fastvit.report.targets import COPY, kernel_targets, targets_prose


@dataclass
class Section:
    lines: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)

    def table(self, table: Table) -> list[str]:
        """Record ``table`` (it is also written as CSV) and return its markdown lines."""
        self.tables.append(table)
        return [table.markdown, ""]

    def extend(self, other: "Section") -> None:
        self.lines += other.lines
        self.figures += other.figures
        self.tables += other.tables


def env_rows(env: dict) -> list[list[str]]:
    """The environment table's rows: device, versions, commit, date, measured yardsticks, methods."""
    git = env.get("git") or {}
    commit = (git.get("id") or "")[:12] + (" (uncommitted changes)" if git.get("dirty") else "")
    peaks = env.get("matmul_flops_per_s") or {}
    return [
        ["device", f"{env.get('device_name', '?')} ({env.get('device', '?')})"],
        ["CPU threads", str(env.get("threads", ""))],
        *[[label, str(env.get(k, missing))] for label, k, missing in ENV_VERSIONS],
        ["git commit", commit or "unknown"], ["date", str(env.get("datetime") or "")],
        ["measured matmul peak", ", ".join(f"{d}: {num(v / 1e9)} GFLOP/s" for d, v in peaks.items()) or "–"],
        ["measured copy bandwidth", f"{num(env['copy_bytes_per_s'] / 1e9)} GB/s" if env.get("copy_bytes_per_s")
         else "–"],
        ["time budget per configuration", _budget(env)],
        ["timing", str(env.get("timing_method", "–"))],
        ["peak memory", str(env.get("peak_memory_method", "–"))],
    ]



def _budget(env: dict) -> str:
    """The seconds of rounds a comparison group could take: "30 s", or "30 s (whole models, mixed: 90 s)"."""
    op, model = env.get("time_budget_s"), env.get("model_time_budget_s")
    if not op:
        return "–"
    return f"{op:g} s" + (f" (whole models, mixed: {model:g} s)" if model and model != op else "")

def group_title(key: dict, g: pd.DataFrame, env: dict) -> str:
    """A figure's title: op, pass, and the setting (model, batch, heads and head size, dtype, device)."""
    extra = ""
    if key["op"] == "attention" and g["heads"].notna().any():
        extra = f", H={int(g['heads'].dropna().iloc[0])}, D={int(g['head_dim'].dropna().iloc[0])}"
    device = g["device_name"].dropna().iloc[0] if "device_name" in g and g["device_name"].notna().any() else \
        env.get("device_name", "")
    return (f"{OP_SHORT.get(key['op'], key['op'])}, {PASS_TITLES.get(key['pass'], key['pass'])}\n"
            f"{key['model']}, B={int(key['batch'])}{extra}, {key['dtype']}, {device}")


def group_heading(key: dict) -> str:
    return (f"{OP_SHORT.get(key['op'], key['op'])}, {PASS_TITLES.get(key['pass'], key['pass'])} "
            f"({key['model']}, B={int(key['batch'])}, {key['dtype']})")


def title(df: pd.DataFrame, env: dict) -> str:
    device = env.get("device_name") or (df["device_name"].dropna().iloc[0] if "device_name" in df else "?")
    return f"fastvit resolution sweep: {device}"


def fit_span(r: dict) -> str:
    """The sizes an exponent was fitted over: "785–3,137 (3)" tokens, or "512–1,024 px (3)"."""
    unit = "" if r["axis"] == "tokens" else " px"
    return f"{int(r['n_min']):,}–{int(r['n_max']):,}{unit} ({int(r['points'])})"


def spans_used(exps: pd.DataFrame) -> str:
    """The fit ranges actually used, in words: one span where every fit used it, else a pointer to the column."""
    spans = list(dict.fromkeys(fit_span(r) for r in exps.to_dict("records")))
    if len(spans) == 1:
        return f"every fit here used N = {spans[0]}" if exps["axis"].iloc[0] == "tokens" else \
            f"every fit here used {spans[0]}"
    return "the last column gives the sizes each fit used"


def exponent_section(df: pd.DataFrame) -> Section:
    exps = exponents(df)
    if exps.empty:
        return Section()
    exps = sort_by_op(exps, ["op", "pass"])
    several = len(exps[SETTING].drop_duplicates()) > 1
    rows = [[OP_SHORT.get(r["op"], r["op"]), r["pass"]]
            + ([f"{r['model']}, B={int(r['batch'])}, {r['dtype']}"] if several else [])
            + [r["impl"], fmt_exponent(r["latency_exponent"], r["points"]),
               fmt_exponent(r["memory_exponent"], r["points"]), fit_span(r)]
            for r in exps.to_dict("records")]
    header = ["op", "pass"] + (["setting"] if several else []) + ["backend", "latency exponent", "memory exponent",
                                                                  "fitted over N (sizes)"]
    pixels = (exps["axis"] == "pixels").any()
    few = (exps["points"] < 3).any()
    section = Section()
    section.lines = ["## Scaling exponents", "",
                     f"Slope k of a least-squares line through log(value) against log(N), value ∝ N^k. The fit uses "
                     f"the sizes with N ≥ {FIT_MIN_TOKENS:,} where at least three reach it, otherwise the largest "
                     f"three sizes; {spans_used(exps)}. k ≈ 2: quadratic in tokens, like attention's N² score "
                     "matrix; k ≈ 1: linear, like everything else; k < 1: fixed costs (launches, workspaces) still "
                     "weigh at these sizes."
                     + (" Models without a global token count (Swin, PiT, CNNs) are fitted against the pixels, res², "
                        f"over the sizes from {FIT_MIN_RESOLUTION} px on (or the largest three; the span is then in "
                        "px): the same scale, 1 linear and 2 quadratic in the number of patches." if pixels else "")
                     + (" An exponent marked \"(2 sizes)\" is a line through two points: nothing there checks that "
                        "the growth is a power law." if few else ""), "",
                     *section.table(Table("exponents", "Scaling exponents", header, rows, text_cols=len(header) - 3))]
    return section


def targets_section(df: pd.DataFrame, env: dict) -> Section:
    targets = kernel_targets(df, env)
    if targets.empty:
        return Section()
    rows = []
    for r in targets.to_dict("records"):
        goal = r["goal"]
        has_goal = goal is not None and np.isfinite(goal)
        fmt = (lambda x: f"{100 * x:.0f}%") if r["against"] == COPY else (lambda x: f"{x:.2f}×")
        timed = r["status"] == "ok"
        verdict = "–" if r["met"] is None else ("met" if r["met"] else "**not met**")
        if not timed:
            verdict = f"**not measured** ({status_kind(r['status'])})" + ("" if r["met"] is None else ": not met")
        rows.append([OP_SHORT.get(r["op"], r["op"]), r["pass"], r["target"], f"{r['model']}, B={int(r['batch'])}, "
                     f"{r['dtype']}", f"{r['resolution']} px (N={r['tokens']:,})",
                     fmt(r["measured"]) if timed else "–",
                     f"≥ {fmt(goal)}" if has_goal else "none", r["against"], verdict])
    judged = targets[targets["met"].notna()]
    met = int(judged["met"].astype(bool).sum())
    section = Section()
    table = Table("kernel_targets", "Triton kernels against their targets",
                  ["op", "pass", "target", "setting", "size", "measured", "goal", "against", "verdict"], rows,
                  text_cols=4)
    section.lines = ["## Triton kernels against their targets", "",
                     f"{met} of {len(judged)} targets met. {targets_prose()}", "", *section.table(table)]
    return section


def _share_cell(hit: pd.DataFrame, notes: Notes) -> str:
    if hit.empty:
        return ""
    if hit.iloc[0]["status"] != "ok":
        return notes.cell(hit.iloc[0]["status"])
    value = hit.iloc[0]["share"]
    return f"{100 * value:.0f}%" if np.isfinite(value) else "–"


def share_section(df: pd.DataFrame) -> Section:
    """Attention's measured share of the model's time: one figure per setting, one table for every model."""
    share = attention_share(df)
    if share.empty:
        return Section()
    models = df[df["op"] == MODEL]
    section = Section()
    lines = ["## Share of the whole-model time spent in attention", "",
             "Measured inside each model, in a run of its own after the timed rounds: every attention call "
             "(softmax(q k^T) v, whichever backend or library computes it; forward and, in a training step, "
             "backward) is timed and their sum divided by the time of the whole run, median of three runs. The "
             "qkv and output projections count as the rest of the model. Attention overtakes the rest where the "
             f"share passes {100 * SHARE_LEVEL:.0f}% (interpolated linearly in log resolution between the two sizes "
             "around it). CNNs, torch.compile'd models and peers whose own attention does not call PyTorch's "
             "scaled_dot_product_attention have no share.", ""]
    found = {(c["model"], c["batch"], c["dtype"], c["pass"], c["impl"]): c["crossover"] for c in crossings(share)}
    settings = share[["model", "batch", "dtype"]].drop_duplicates().to_dict("records")
    several = len(share[["batch", "dtype"]].drop_duplicates()) > 1
    notes, rows = Notes(), []
    res = sorted(int(r) for r in share["resolution"].unique())
    for setting in settings:
        model, batch, dtype = setting["model"], setting["batch"], setting["dtype"]
        fig = "attention_share" + ("" if len(settings) == 1 else f"_{model}_{dtype}_b{int(batch)}") + ".png"
        part = share[(share["model"] == model) & (share["batch"] == batch) & (share["dtype"] == dtype)]
        fig_title = f"Share of the model's time in attention ({model}, B={int(batch)}, {dtype})"
        named = models[models["model"] == model]
        section.figures.append(Figure(fig, lambda path, d=part, t=fig_title, n=named: plot_share(d, path, t, n)))
        lines += [f"![attention share]({fig})", ""]
        for p in sorted(dict.fromkeys(part["pass"]), key=lambda p: p != "fwd"):
            d = part[part["pass"] == p]
            for impl in dict.fromkeys(d["impl"]):
                s = d[d["impl"] == impl]
                rows.append([model + (f", B={int(batch)}, {dtype}" if several else ""), impl_title(named, impl), p]
                            + [_share_cell(s[s["resolution"] == r], notes) for r in res]
                            + [found[(model, batch, dtype, p, impl)].text])
    table = Table("attention_share", "Attention's share of the model's time, every model",
                  ["model", "implementation", "pass"] + [f"{r} px" for r in res] + ["attention > rest from"], rows,
                  text_cols=3)
    lines += [f"Attention's share of the model's time, every model and pass (sizes a model did not run are "
              "empty):", "", *section.table(table)]
    if notes.reasons:
        lines += [notes.render(), ""]
    section.lines = lines
    return section


def _rate_table(section: Section, name: str, g: pd.DataFrame, ok: pd.DataFrame, kind: str,
                yardstick: float | None, what: str, notes: Notes) -> list[str]:
    """Achieved FLOP/s or bytes/s per backend and size, with its percentage of the device's yardstick."""
    col = f"{kind}_per_s"
    unit, scale = rate_unit(ok[col], kind)

    def cell(r):
        frac = f" ({100 * r[col] / yardstick:.0f}%)" if yardstick else ""
        return num(r[col] * scale) + frac

    caption = f" (% of {what}, {num(yardstick * scale)} {unit})" if yardstick else ""
    header, rows = pivot_table(g, cell, notes, require_ok=True)
    return [f"Achieved {unit}{caption}:", "",
            *section.table(Table(f"{name}_{kind}_per_s", f"Achieved {unit}", header, rows))]


def op_section(key: dict, g: pd.DataFrame, env: dict, fig: str) -> Section:
    """One op and pass in one setting: its figure, latency, memory and rates tables."""
    op = key["op"]
    notes = Notes()
    section = Section()
    name = slug(key["op"], key["pass"], key["model"], key["dtype"], f"b{int(key['batch'])}")
    out = [f"### {group_heading(key)}", "", f"*{OP_TITLES.get(op, op)}.*", "", f"![{op} {key['pass']}]({fig})", ""]
    ok = g[g["status"] == "ok"]
    unit, scale = time_unit(ok["median_s"])
    header, rows = pivot_table(g, lambda r: f"{num(r['median_s'] * scale)} [{num(r['iqr_s'] * scale, 2)}]", notes)
    out += [f"Median latency ({unit}) [interquartile range]:", "",
            *section.table(Table(f"{name}_latency", f"{group_heading(key)}: median latency ({unit})", header, rows))]
    munit, mscale = mem_unit(ok["peak_mem_bytes"])
    header, rows = pivot_table(g, lambda r: num(r["peak_mem_bytes"] * mscale), notes)
    out += [f"Peak memory ({munit}), measured in a call of its own beyond the inputs already allocated:", "",
            *section.table(Table(f"{name}_memory", f"{group_heading(key)}: peak memory ({munit})", header, rows))]
    peak = (env.get("matmul_flops_per_s") or {}).get(key["dtype"])
    if ok["flops"].notna().any() and op != "layernorm":
        out += _rate_table(section, name, g, ok, "flops", peak, f"the measured {key['dtype']} matmul peak", notes)
    if ok["bytes"].notna().any():
        out += _rate_table(section, name, g, ok, "bytes", env.get("copy_bytes_per_s"), "the measured copy bandwidth",
                           notes)
    kernels = g[(g["backend"] == SDPA) & g[SDPA_KERNEL].notna()][SDPA_KERNEL].unique()
    if len(kernels):
        out += [f"Kernel PyTorch chose for `{SDPA}`: {', '.join(f'`{k}`' for k in kernels)}.", ""]
    if notes.reasons:
        out += [notes.render(), ""]
    plot_title = group_title(key, g, env)
    section.lines = out
    section.figures.append(Figure(fig, lambda path: plot_scaling(g, path, plot_title)))
    return section


def results_section(df: pd.DataFrame, env: dict) -> Section:
    """Every op and pass, in report order: medians, memory and rates (comparisons have their own section)."""
    section = Section(["## Results by op and pass", ""])
    unique = one_setting(df)
    for key, g in groups(df):
        section.extend(op_section(key, g, env, fig_name(key, unique)))
    return section
