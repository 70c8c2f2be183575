"""The sections of report.md. Each is a pure function of the rows (and the environment) that returns a
:class:`Section`: its markdown lines and the figures those lines show; none of them writes a file."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fastvit.report.facts import (ATTENTION_REFERENCES, ENV_VERSIONS, FAMILY_TITLES, MODEL, OP_SHORT, OP_TITLES,
                                  PASS_SHORT, PASS_TITLES, PASSES, PEER_LIBRARIES, REFERENCES, SDPA, SDPA_KERNEL,
                                  SETTING)
from fastvit.report.fit import (FIT_MIN_RESOLUTION, FIT_MIN_TOKENS, SHARE_LEVEL, architecture_crossings,
                                attention_share, crossings, exponents)
from fastvit.report.plots import Figure, plot_scaling, plot_share
from fastvit.report.tables import (Notes, fig_name, fmt_exponent, groups, impl_title, impls, md_table, mem_unit, num,
                                   one_setting, pivot_table, rate_unit, sort_by_op, status_kind, time_unit)
from fastvit.report.targets import COPY, kernel_targets, targets_prose


@dataclass
class Section:
    lines: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


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
        ["time budget per configuration", f"{env.get('time_budget_s')} s" if env.get("time_budget_s") else "–"],
        ["timing", str(env.get("timing_method", "–"))],
        ["peak memory", str(env.get("peak_memory_method", "–"))],
    ]


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


def header(df: pd.DataFrame, env: dict) -> Section:
    """Title, what is measured, the summary, the environment and the command of the run."""
    lines = [f"# {title(df, env)}", "",
             "Tokens N = (resolution / patch)² + 1. Attention's work grows as N² (and its memory too, where the "
             "N × N scores are materialized); everything else in a ViT grows as N. Each configuration is timed "
             "with pytest-benchmark (median and interquartile range over the rounds"
             + ("; on CUDA the CUDA-event times of those rounds" if df["kernel_median_s"].notna().any() else "")
             + "); peak memory is measured in a separate call. See reports/README.md of fastvit for how to read this report.", "",
             "## Summary", "", *summary(df), "",
             "## Environment", "", md_table(["", ""], env_rows(env), numeric=False), ""]
    if env.get("command"):
        lines += ["Produced by:", "", f"```\n{env['command']}\n```", ""]
    return Section(lines)


def summary(df: pd.DataFrame) -> list[str]:
    """Bullets: attention's exponents, where its share passes the level, graph breaks, row counts."""
    lines = []
    exps = exponents(df)
    att = exps[exps["op"] == "attention"]
    for p in PASSES:
        sel = att[att["pass"] == p]
        parts = [f"{r['impl']} {fmt_exponent(r['memory_exponent'])}" for r in sel.to_dict("records")
                 if r["impl"] in ATTENTION_REFERENCES and np.isfinite(r["memory_exponent"])]
        lparts = [f"{r['impl']} {fmt_exponent(r['latency_exponent'])}" for r in sel.to_dict("records")
                  if r["impl"] in ATTENTION_REFERENCES and np.isfinite(r["latency_exponent"])]
        if parts or lparts:
            lines.append(f"- Attention {PASS_TITLES[p]}: peak-memory exponent {', '.join(parts) or '–'}; "
                         f"latency exponent {', '.join(lparts) or '–'} (fitted over N ≥ {FIT_MIN_TOKENS:,}).")
    models = df[df["op"] == MODEL]
    for c in crossings(attention_share(df)):
        if c["impl"] in ATTENTION_REFERENCES + PEER_LIBRARIES:
            name = impl_title(models[models["model"] == c["model"]], c["impl"])
            lines.append(f"- {c['model']}, {PASS_TITLES.get(c['pass'], c['pass'])}, {name}: attention's share of "
                         f"the model's time (measured inside the model) {c['crossover'].sentence()}.")
    lines += architecture_summary(df)
    if "compile_graph_breaks" in df:
        compiled = df[(df["status"] == "ok") & df["compile_graph_breaks"].notna()]
        broken = compiled[compiled["compile_graph_breaks"] > 0]
        if len(broken):
            reasons = sorted({r for rs in broken.get("compile_break_reasons", []) if isinstance(rs, list) for r in rs})
            lines.append(f"- torch.compile: {len(broken)} of {len(compiled)} compiled configurations broke their graph "
                         "and ran partly as eager PyTorch" + (f" ({'; '.join(reasons)[:400]})" if reasons else "") + ".")
    status = df["status"].astype(str)
    budget = status.str.contains("time budget|memory available", regex=True).sum()
    oom = (status == "oom").sum()
    ok = (status == "ok").sum()
    errors = status.str.startswith("error").sum()
    lines.append(f"- {len(df)} configurations: {ok} measured, {oom} out of memory, "
                 + (f"**{errors} failed with an error**, " if errors else "")
                 + f"{budget} skipped as over the time or memory budget, {len(df) - ok - oom - errors - budget} "
                 "skipped because the backend cannot run here.")
    return lines


def architecture_summary(df: pd.DataFrame) -> list[str]:
    """One bullet per global-attention model and setting: from which resolution its latency passes that
    of each Swin model and CNN."""
    found: dict[tuple, list[str]] = {}
    for c in architecture_crossings(df):
        x = c["crossover"]
        phrase = {"crossed": f"from {x.text}", "already": "already at the smallest size",
                  "not reached": "at no size of the sweep (" + x.text.split("(", 1)[-1]}
        phrase = phrase.get(x.kind, f"not compared ({x.text})")
        key = (c["model"], c["pass"], c["dtype"], c["batch"])
        found.setdefault(key, []).append(f"{c['rival']} ({FAMILY_TITLES.get(c['rival_family'])}) {phrase}")
    return [f"- {model}, {PASS_SHORT.get(p, p)} (B={int(b)}, {dtype}): costlier in latency than "
            + "; than ".join(parts) + "." for (model, p, dtype, b), parts in found.items()]


def exponent_section(df: pd.DataFrame) -> Section:
    exps = exponents(df)
    if exps.empty:
        return Section()
    exps = sort_by_op(exps, ["op", "pass"])
    several = len(exps[SETTING].drop_duplicates()) > 1

    def span(r):
        unit = "" if r["axis"] == "tokens" else " px"
        return f"{int(r['n_min']):,}–{int(r['n_max']):,}{unit} ({int(r['points'])})"

    rows = [[OP_SHORT.get(r["op"], r["op"]), r["pass"]]
            + ([f"{r['model']}, B={int(r['batch'])}, {r['dtype']}"] if several else [])
            + [r["impl"], fmt_exponent(r["latency_exponent"]), fmt_exponent(r["memory_exponent"]), span(r)]
            for r in exps.to_dict("records")]
    header = ["op", "pass"] + (["setting"] if several else []) + ["backend", "latency exponent", "memory exponent",
                                                                  "fitted over N (points)"]
    pixels = (exps["axis"] == "pixels").any()
    return Section(["## Scaling exponents", "",
                    f"Slope k of a least-squares line through log(value) against log(N), value ∝ N^k, over the sizes "
                    f"with N ≥ {FIT_MIN_TOKENS:,} (the largest three sizes where fewer than three reach it). k ≈ 2: "
                    "quadratic in tokens, like attention's N² score matrix; k ≈ 1: linear, like everything else; "
                    "k < 1: fixed costs (launches, workspaces) still weigh at these sizes."
                    + (" Models without a global token count (Swin, PiT, CNNs) are fitted against the pixels, "
                       f"res², over the sizes from {FIT_MIN_RESOLUTION} px on (the span is then in px): the same "
                       "scale, 1 linear and 2 quadratic in the number of patches." if pixels else ""), "",
                    md_table(header, rows, text_cols=len(header) - 3), ""])


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
    return Section(["## Triton kernels against their targets", "",
                    f"{met} of {len(judged)} targets met. {targets_prose()}", "",
                    md_table(["op", "pass", "target", "setting", "size", "measured", "goal", "against", "verdict"],
                             rows, text_cols=4), ""])


def share_section(df: pd.DataFrame) -> Section:
    share = attention_share(df)
    if share.empty:
        return Section()
    models = df[df["op"] == MODEL]
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
    figures = []
    for setting in settings:
        fig = "attention_share" + ("" if len(settings) == 1 else
                                   f"_{setting['model']}_{setting['dtype']}_b{int(setting['batch'])}") + ".png"
        part = share[(share["model"] == setting["model"]) & (share["batch"] == setting["batch"])
                     & (share["dtype"] == setting["dtype"])]
        fig_title = f"Share of the model's time in attention ({setting['model']}, B={int(setting['batch'])}, " \
                    f"{setting['dtype']})"
        named = models[models["model"] == setting["model"]]
        figures.append(Figure(fig, lambda path, d=part, t=fig_title, n=named: plot_share(d, path, t, n)))
        lines += [f"![attention share]({fig})", ""]
        for p in sorted(dict.fromkeys(part["pass"]), key=lambda p: p != "fwd"):
            model, batch, dtype = setting["model"], setting["batch"], setting["dtype"]
            d = part[part["pass"] == p]
            notes = Notes()
            res = sorted(int(r) for r in d["resolution"].unique())
            rows = []
            for impl in dict.fromkeys(d["impl"]):
                s = d[d["impl"] == impl]
                cells = []
                for r in res:
                    hit = s[s["resolution"] == r]
                    if hit.empty:
                        cells.append("")
                    elif hit.iloc[0]["status"] != "ok":
                        cells.append(notes.cell(hit.iloc[0]["status"]))
                    else:
                        share_at = hit.iloc[0]["share"]
                        cells.append(f"{100 * share_at:.0f}%" if np.isfinite(share_at) else "–")
                rows.append([impl_title(named, impl)] + cells + [found[(model, batch, dtype, p, impl)].text])
            lines += [f"{model}, B={int(batch)}, {dtype}, {PASS_TITLES.get(p, p)}:", "",
                      md_table(["implementation"] + [f"{r} px" for r in res] + ["attention > rest from"], rows), ""]
            if notes.reasons:
                lines += [notes.render(), ""]
    return Section(lines, figures)


def _rate_table(g: pd.DataFrame, ok: pd.DataFrame, kind: str, yardstick: float | None, what: str,
                notes: Notes) -> list[str]:
    """Achieved FLOP/s or bytes/s per backend and size, with its percentage of the device's yardstick."""
    col = f"{kind}_per_s"
    unit, scale = rate_unit(ok[col], kind)

    def cell(r):
        frac = f" ({100 * r[col] / yardstick:.0f}%)" if yardstick else ""
        return num(r[col] * scale) + frac

    caption = f" (% of {what}, {num(yardstick * scale)} {unit})" if yardstick else ""
    return [f"Achieved {unit}{caption}:", "", pivot_table(g, cell, notes, require_ok=True), ""]


def op_section(key: dict, g: pd.DataFrame, env: dict, fig: str) -> Section:
    """One op and pass in one setting: its figure, latency, memory, rates and speedup tables."""
    op = key["op"]
    notes = Notes()
    out = [f"### {group_heading(key)}", "", f"*{OP_TITLES.get(op, op)}.*", "", f"![{op} {key['pass']}]({fig})", ""]
    ok = g[g["status"] == "ok"]
    unit, scale = time_unit(ok["median_s"])
    out += [f"Median latency ({unit}) [interquartile range]:", "",
            pivot_table(g, lambda r: f"{num(r['median_s'] * scale)} [{num(r['iqr_s'] * scale, 2)}]", notes), ""]
    munit, mscale = mem_unit(ok["peak_mem_bytes"])
    out += [f"Peak memory ({munit}), measured in a call of its own beyond the inputs already allocated:", "",
            pivot_table(g, lambda r: num(r["peak_mem_bytes"] * mscale), notes), ""]
    peak = (env.get("matmul_flops_per_s") or {}).get(key["dtype"])
    if ok["flops"].notna().any() and op != "layernorm":
        out += _rate_table(g, ok, "flops", peak, f"the measured {key['dtype']} matmul peak", notes)
    if ok["bytes"].notna().any():
        out += _rate_table(g, ok, "bytes", env.get("copy_bytes_per_s"), "the measured copy bandwidth", notes)
    for ref in REFERENCES.get(op, ()):
        base = ok[ok["impl"] == ref].set_index("resolution")["median_s"]
        if base.empty or len(impls(g, True)) < 2:
            continue

        def speedup(r, base=base):
            t = base.get(r["resolution"])
            return f"{t / r['median_s']:.2f}×" if t is not None and np.isfinite(t) else "–"

        out += [f"Speedup over {ref} (its median / this backend's median; > 1 is faster):", "",
                pivot_table(g, speedup, notes, require_ok=True), ""]
    kernels = g[(g["backend"] == SDPA) & g[SDPA_KERNEL].notna()][SDPA_KERNEL].unique()
    if len(kernels):
        out += [f"Kernel PyTorch chose for `{SDPA}`: {', '.join(f'`{k}`' for k in kernels)}.", ""]
    if notes.reasons:
        out += [notes.render(), ""]
    plot_title = group_title(key, g, env)
    return Section(out, [Figure(fig, lambda path: plot_scaling(g, path, plot_title))])


def results_section(df: pd.DataFrame, env: dict) -> Section:
    """Every op and pass, in report order."""
    section = Section(["## Results by op and pass", ""])
    unique = one_setting(df)
    for key, g in groups(df):
        part = op_section(key, g, env, fig_name(key, unique))
        section.lines += part.lines
        section.figures += part.figures
    return section
