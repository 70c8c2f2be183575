"""The top of report.md: the title, the settings in three bullets, the headline figure (each backend's
time over its op's default, and each architecture's over the first ViT's, with their 95% intervals and
the A/A noise band), and the Summary: at most :data:`MAX_BULLETS` bullets that answer first and state
only what the intervals support: the noise floor, the fastest backend of each op at each size with its
margin, how time and memory grow (with the sizes fitted), where attention passes half the model's
time, the architecture crossovers (with parameters and FLOPs), packing against padding, and what could
not run here."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from fastvit.bench.paired import NO_DIFFERENCE
from fastvit.report.architectures import model_work
from fastvit.report.comparisons import (FASTER, UNPAIRED, Comparison, against_baseline, architecture_pairs, band_text,
                                        architecture_ratios, fastest, noise, noise_floor, noise_rows, paired_rows)
from fastvit.report.facts import (ATTENTION_REFERENCES, BASELINE_ROUND_TIMES, DEFAULT_MODEL_IMPL, FAMILY_TITLES,
                                  MIXED, MODEL, OP_ORDER, OP_SHORT, OWN_LIBRARY, PASS_SHORT, PASSES, TORCH_ENV)
from fastvit.report.fit import attention_share, crossings, exponents
from fastvit.report.packing import images_text, packing_bullet
from fastvit.report.plots import Figure, Panel, Series, plot_ratios
from fastvit.report.sections import Section, env_rows, title
from fastvit.report.tables import Table, at_one_size, fmt_exponent, op_rank, plain, status_kind
from fastvit.report.verdicts import setting_text, size_label, twin_text

MAX_BULLETS = 8
HEADLINE = "headline.png"


def _sizes(res: list[int]) -> str:
    res = sorted(int(r) for r in res)
    return f"{res[0]} px" if len(res) == 1 else f"{res[0]}–{res[-1]} px"


def _span(values) -> str:
    vals = sorted({int(v) for v in values if pd.notna(v)})
    return _sizes(vals) if vals else "–"


def settings(df: pd.DataFrame, env: dict) -> list[str]:
    """Three bullets: the device, what was measured, how it was timed."""
    rows = plain(df)
    ops = [op for op in OP_ORDER if op != MODEL and (rows["op"] == op).any()]
    op_rows = rows[rows["op"].isin(ops)]
    models = rows[rows["op"] == MODEL]
    mixed = rows[rows["op"] == MIXED]
    dtypes = ", ".join(sorted({str(d) for d in rows["dtype"].dropna()}))
    batches = ", ".join(str(int(b)) for b in sorted(at_one_size(rows)["batch"].dropna().unique()))
    what = []
    if ops:
        what.append(f"{', '.join(OP_SHORT[o] for o in ops)} with the shapes of "
                    f"{', '.join(dict.fromkeys(op_rows['model'].dropna()))} at {_span(op_rows['resolution'])}")
    if len(models):
        n = models["model"].nunique()
        what.append(f"{n} whole model{'s' if n > 1 else ''} ({', '.join(dict.fromkeys(models['model']))}) at "
                    f"{_span(models['resolution'])}")
    if len(mixed):
        what.append(f"{', '.join(dict.fromkeys(mixed['model']))} on {images_text(mixed.iloc[0].to_dict())} padded, "
                    "bucketed and packed")
    passes = " and ".join(PASS_SHORT.get(p, p) for p in PASSES if (rows["pass"] == p).any())
    events = "; on CUDA the CUDA-event times of those rounds" if rows["kernel_median_s"].notna().any() else ""
    if paired_rows(df):
        floor = noise_floor(df)
        order = ("each member beside its baseline, the pairs shuffled per round"
                 if any(isinstance(v, list) for v in df.get(BASELINE_ROUND_TIMES[-1], ()))
                 else "order shuffled per round")
        how = ("paired: every comparison group (what is compared at one configuration) timed in interleaved "
               f"rounds in one process, {order}; a comparison is the median of the per-round "
               "ratios with a 95% bootstrap interval" + (f"; noise floor (widest A/A band) {band_text(floor['ratio'])}"
                                                         if floor else "; no A/A twin timed") + events)
    else:
        how = (f"each configuration timed on its own (median over its rounds{events}); comparisons are "
               f"{UNPAIRED}, without intervals")
    return [f"- **Device**: {env.get('device_name', '?')} ({env.get('device', '?')}), "
            f"{env.get('threads', '?')} threads, torch {env.get(TORCH_ENV, '?')}; {dtypes}"
            + (f", batch {batches}." if batches else "."),
            f"- **Measured**: {'; '.join(what)}; {passes}.",
            f"- **Timing**: {how}."]


# -- headline figure --------------------------------------------------------------------------------
def _series(label: str, points: list[tuple[int, Comparison]]) -> Series:
    return Series(label, [r for r, _ in points], [c.value for _, c in points], [c.low for _, c in points],
                  [c.high for _, c in points])


def headline_panels(df: pd.DataFrame) -> dict[tuple[int, int], Panel]:
    """Per pass (rows) and op (columns): each backend's time over the op's default (first setting of
    the op), and each architecture's over the first ViT's; the A/A band of each size's group."""
    comp = against_baseline(df)
    floor = noise(df)
    passes = [p for p in PASSES if (df["pass"] == p).any()]
    panels = {}
    if not comp.empty:
        comp = comp[(comp["op"] != MODEL) & (comp["kind"] == "backend")]
    ops = [op for op in OP_ORDER if op != MODEL and not comp.empty
           and (comp[comp["op"] == op]["comparison"].notna()).any()]
    for col, op in enumerate(ops):
        c = comp[comp["op"] == op]
        first = c.iloc[0]
        c = c[(c["model"] == first["model"]) & (c["dtype"] == first["dtype"]) & (c["batch"] == first["batch"])]
        for row, p in enumerate(passes):
            d = c[(c["pass"] == p) & c["comparison"].notna()]
            if d.empty:
                continue
            series = [_series(str(impl), sorted((int(r["resolution"]), r["comparison"]) for r in s.to_dict("records")))
                      for impl, s in d.groupby("impl", sort=False)]
            bands = sorted({(int(r["resolution"]), floor[r["slot"]][1].band) for r in d.to_dict("records")
                            if r["slot"] in floor})
            unpaired = "" if any(s.lows and np.isfinite(s.lows).any() for s in series) else " (unpaired)"
            panels[row, col] = Panel(f"{OP_SHORT[op]}, {PASS_SHORT.get(p, p)}{unpaired}",
                                     str(d["baseline_impl"].iloc[0]), series, [b[0] for b in bands],
                                     [b[1] for b in bands])
    arch = architecture_ratios(df)
    for row, p in enumerate(passes):
        found = [a for a in arch if a["pass"] == p and a["points"]]
        if not found:
            continue
        models = df[(df["op"] == MODEL) & (df["pass"] == p)]
        bands = sorted({(int(r["resolution"]), floor[r["group"]][1].band) for r in models.to_dict("records")
                        if isinstance(r["group"], str) and r["group"] in floor})
        paired = any(c.paired for a in found for _, c in a["points"])
        panels[row, len(ops)] = Panel(f"whole models, {PASS_SHORT.get(p, p)}" + ("" if paired else " (unpaired)"),
                                      found[0]["reference"], [_series(a["model"], a["points"]) for a in found],
                                      [b[0] for b in bands], [b[1] for b in bands])
    return panels


def headline(df: pd.DataFrame, env: dict) -> tuple[list[str], list[Figure]]:
    panels = headline_panels(df)
    if not panels:
        return [], []
    fig_title = (f"Time over the default backend (ops) and over the first ViT (whole models), "
                 f"{env.get('device_name', '')}\n" + ("bars: 95% intervals of the paired ratios, grey: A/A noise band"
                                                     if paired_rows(df) else f"{UNPAIRED}: no intervals"))
    meaning = ("Error bars are the 95% intervals of the paired ratios; the grey band is the A/A twin's noise at "
               "each size: what lies inside it is no measurable difference." if paired_rows(df) else
               f"Ratios of medians, {UNPAIRED}: no intervals, so no difference here is shown to be real.")
    lines = [f"![headline: time of each backend over its op's default, and of each architecture over the first "
             f"ViT's]({HEADLINE})", "", f"*Below 1: faster than the default. {meaning}*", ""]
    return lines, [Figure(HEADLINE, lambda path: plot_ratios(panels, path, fig_title))]


# -- summary bullets --------------------------------------------------------------------------------
def _margin_text(margins: list[Comparison]) -> str:
    ordered = sorted(margins, key=lambda c: c.value)
    lo, hi = ordered[0], ordered[-1]
    return lo.text() if lo is hi or lo.value == hi.value else f"{lo.text()} to {hi.text()}"


def _runs(found: list[dict]) -> str:
    """The fastest backend at consecutive sizes in words, one clause per run of equal outcomes."""
    clauses, run = [], []

    def outcome(f):
        m = f["margin"]
        if m is None or not m.paired:
            return ("lowest", f["fastest"])
        return ("win", f["fastest"]) if m.verdict == FASTER else ("tie", tuple(sorted([f["fastest"], f["runner_up"]])))

    def flush():
        kind, who = outcome(run[0])
        sizes = _sizes([f["resolution"] for f in run])
        margins = [f["margin"] for f in run if f["margin"] is not None]
        if kind == "win":
            clauses.append(f"`{who}` at {sizes} ({_margin_text(margins)} × the runner-up's time)")
        elif kind == "tie":
            clauses.append(f"{NO_DIFFERENCE} between `{who[0]}` and `{who[1]}` at {sizes} ({_margin_text(margins)})")
        else:
            clauses.append(f"`{who}` at {sizes}")

    for f in sorted(found, key=lambda f: f["resolution"]):
        if run and outcome(run[-1]) != outcome(f):
            flush()
            run = []
        run.append(f)
    if run:
        flush()
    return ", ".join(clauses)


def fastest_bullets(df: pd.DataFrame) -> list[str]:
    found = fastest(df)
    out = []
    for op in sorted(dict.fromkeys(f["op"] for f in found), key=op_rank):
        of_op = [f for f in found if f["op"] == op]
        settings_ = list(dict.fromkeys((f["model"], f["dtype"], f["batch"]) for f in of_op))
        parts = []
        for s in settings_:
            for p in PASSES:
                sel = [f for f in of_op if (f["model"], f["dtype"], f["batch"]) == s and f["pass"] == p]
                if sel:
                    where = f" ({setting_text(sel[0])})" if len(settings_) > 1 else ""
                    parts.append(f"{PASS_SHORT.get(p, p)}{where}: {_runs(sel)}")
        unpaired = not any(f["margin"] is not None and f["margin"].paired for f in of_op)
        out.append(f"- Fastest {OP_SHORT.get(op, op)}: " + "; ".join(parts)
                   + (f" (lowest median; {UNPAIRED})" if unpaired else "") + ".")
    return out


def growth_bullet(df: pd.DataFrame) -> list[str]:
    exps = exponents(df)
    if exps.empty:
        return []
    models = plain(df[(df["op"] == MODEL) & (df["library"] == OWN_LIBRARY)])
    first = next(iter(dict.fromkeys(models[models["tokens"].notna()]["model"])), None)
    keep = ((exps["op"] == "attention") & exps["impl"].isin(ATTENTION_REFERENCES)) | \
        ((exps["op"] == MODEL) & (exps["model"] == first) & (exps["impl"] == DEFAULT_MODEL_IMPL))
    sel = exps[keep & (exps["axis"] == "tokens")]
    if sel.empty:
        return []
    spans = {(int(r["n_min"]), int(r["n_max"]), int(r["points"])) for r in sel.to_dict("records")}
    one = len(spans) == 1
    parts = []
    for p in PASSES:
        items = []
        for r in sel[sel["pass"] == p].to_dict("records"):
            what = f"attention `{r['impl']}`" if r["op"] == "attention" else f"whole {r['model']}"
            fit = "" if one else f" [N = {int(r['n_min']):,}–{int(r['n_max']):,}, {int(r['points'])} sizes]"
            items.append(f"{what} time ∝ N^{fmt_exponent(r['latency_exponent'], r['points'])}, memory ∝ "
                         f"N^{fmt_exponent(r['memory_exponent'], r['points'])}{fit}")
        if items:
            parts.append(f"{PASS_SHORT.get(p, p)}: " + "; ".join(items))
    (lo, hi, n), = spans if one else ((None, None, None),)
    where = f" (fitted over N = {lo:,}–{hi:,}, {n} sizes)" if one else ""
    return [f"- Growth{where}: " + ". ".join(parts) + "."]


def share_bullet(df: pd.DataFrame) -> list[str]:
    share = attention_share(df)
    if share.empty:
        return []
    own = [c for c in crossings(share) if c["impl"] == DEFAULT_MODEL_IMPL]
    by_model: dict[str, dict[str, str]] = {}
    for c in own:
        x = c["crossover"]
        text = {"crossed": x.text.split(" (")[0], "already": "from the smallest size",
                "not reached": "never (" + x.text.split("(", 1)[-1]}.get(x.kind, "not measured")
        by_model.setdefault(c["model"], {})[c["pass"]] = text
    if not by_model:
        return []
    passes = [p for p in PASSES if any(p in v for v in by_model.values())]
    items = [f"{m} {' / '.join(v.get(p, '–') for p in passes)}" for m, v in by_model.items()]
    which = " / ".join(PASS_SHORT[p] for p in passes)
    return [f"- Attention passes half of the model's time (fastvit's builds, {which}): {'; '.join(items)}. "
            "Every build: table *attention_share*."]


def crossover_bullet(df: pd.DataFrame) -> list[str]:
    pairs = architecture_pairs(df)
    if not pairs:
        return []
    rows = df[df["op"] == MODEL]
    work = {m: model_work(rows[rows["model"] == m], short=True)
            for m in {p["model"] for p in pairs} | {p["rival"] for p in pairs}}
    parts, said = [], {}
    named: set[str] = set()
    for p in PASSES:
        sel = [c for c in pairs if c["pass"] == p]
        clauses = []

        def name(m: str, family: str | None = None) -> str:
            """A model with its family and size the first time the bullet names it."""
            if m in named:
                return m
            named.add(m)
            return f"{m} ({FAMILY_TITLES.get(family) + ', ' if family else ''}{work[m]})"

        for model in dict.fromkeys(c["model"] for c in sel):
            mine = [c for c in sel if c["model"] == model]
            clauses.append(f"{name(model)} becomes costlier "
                           + "; ".join(f"than {name(c['rival'], c['rival_family'])} {c['crossover'].text}"
                                       for c in mine))
        if not clauses:
            continue
        texts = [c["crossover"].text for c in sel]
        if said and list(said.values())[0] == texts:
            parts.append(f"{PASS_SHORT.get(p, p)}: the same")
        else:
            parts.append(f"{PASS_SHORT.get(p, p)}: " + "; ".join(clauses))
        said.setdefault(p, texts)
    paired = any(c.paired for p in pairs for _, c in p["points"])
    return ["- Architectures" + ("" if paired else f" ({UNPAIRED})") + ", " + ". ".join(parts) + "."] if parts else []


def _short_reason(status: str, limit: int = 80) -> str:
    """A status's reason, its first clause (up to a ";", a "(" or a sentence's end), cut at a word near
    ``limit``."""
    why = status.split(":", 1)[-1].strip()
    why = re.sub(r"^\w+ backend '[^']+': ", "", why)  # the backend is named beside the reason
    why = why.split("; ")[0].split(". ")[0].split(" (")[0].rstrip(".")
    if len(why) > limit:
        why = why[:limit].rsplit(" ", 1)[0] + " …"
    return why


def not_run_bullet(df: pd.DataFrame) -> list[str]:
    rows = plain(df)
    status = rows["status"].astype(str)
    bad = rows[status != "ok"]
    counts = {k: int((status.map(status_kind) == k).sum()) for k in ("oom", "error", "skipped")}
    reasons: dict[str, set] = {}
    for r in bad.to_dict("records"):
        why = _short_reason(str(r["status"])) if r["status"] != "oom" else "out of memory"
        reasons.setdefault(why, set()).add(str(r["impl"]))
    listed = sorted(reasons.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    why = "; ".join(f"{', '.join(f'`{b}`' for b in sorted(names))}: {reason}" for reason, names in listed[:4])
    more = len(listed) - 4
    more = f"; {more} more reason{'s' if more > 1 else ''} in the tables' footnotes" if more > 0 else ""
    text = (f"- Not run here: {len(bad)} of {len(rows)} configurations ({counts['skipped']} skipped, "
            f"{counts['oom']} out of memory, " + (f"**{counts['error']} failed with an error**" if counts["error"]
                                                  else "0 errors") + ")" + (f": {why}{more}" if why else "") + ".")
    if "compile_graph_breaks" in rows:
        compiled = rows[(rows["status"] == "ok") & rows["compile_graph_breaks"].notna()]
        broken = compiled[compiled["compile_graph_breaks"] > 0]
        if len(broken):
            found = sorted({x for rs in broken.get("compile_break_reasons", []) if isinstance(rs, list) for x in rs})
            text += (f" torch.compile: {len(broken)} of {len(compiled)} compiled configurations broke their graph and "
                     "ran partly as eager PyTorch" + (f" ({'; '.join(found)[:400]})" if found else "") + ".")
    return [text]


def noise_bullet(df: pd.DataFrame) -> list[str]:
    if not paired_rows(df):
        return [f"- No comparison groups in these rows: every ratio is {UNPAIRED}, with no interval and no verdict."]
    rows = noise_rows(df)
    timed = [r for r in rows if r["ratio"] is not None]
    if not timed:
        return [f"- Noise floor: no group timed an A/A twin; verdicts compare intervals with 1 alone "
                f"({len(rows)} groups)."]
    widest = max(timed, key=lambda r: r["ratio"].band)
    what = "whole models" if widest["op"] == MODEL else OP_SHORT.get(widest["op"], widest["op"])
    return [f"- Noise floor: A/A twins (a group's baseline timed twice in the same rounds) within "
            f"{band_text(widest['ratio'])} of 1 in {len(timed)} of {len(rows)} groups (widest: {what}, "
            f"{PASS_SHORT.get(widest['pass'], widest['pass'])}, {size_label(widest['resolution'])}: `{widest['twin']}` "
            f"{twin_text(widest['ratio'])}). A difference whose interval contains 1 or lies within that band is "
            f"*{NO_DIFFERENCE}*."]


def summary(df: pd.DataFrame) -> list[str]:
    """At most MAX_BULLETS bullets, answer first (the fastest backends' bullets merge into one where
    there would be more)."""
    sized = at_one_size(df)
    fast = fastest_bullets(sized)
    rest = (growth_bullet(sized) + share_bullet(sized) + crossover_bullet(sized) + packing_bullet(df)
            + not_run_bullet(df))
    noise_line = noise_bullet(df)
    if len(noise_line) + len(fast) + len(rest) > MAX_BULLETS:
        fast = ["- " + " ".join(b[2:] for b in fast)]
    return (noise_line + fast + rest)[:MAX_BULLETS]


def header(df: pd.DataFrame, env: dict) -> Section:
    """Title, settings, the headline figure, the summary, the environment and the command of the run."""
    lines, figures = headline(at_one_size(df), env)
    section = Section(figures=figures)
    env_table = section.table(Table("environment", "Environment", ["", ""], env_rows(env), numeric=False))
    section.lines = [f"# {title(df, env)}", "", *settings(df, env), "", *lines,
                     "## Summary", "", *summary(df), "",
                     "Tokens N = (resolution / patch)² + 1. Every table is also a CSV file in `tables/` (listed at "
                     "the end); see reports/README.md of fastvit for how to read this report.", "",
                     "## Environment", "", *env_table]
    if env.get("command"):
        section.lines += ["Produced by:", "", f"```\n{env['command']}\n```", ""]
    return section
