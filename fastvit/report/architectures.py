"""The sections on whole models across architectures and libraries: every architecture's latency and peak
memory against the image size, with fitted exponents and the resolutions where a global-attention model
becomes costlier than a Swin model or a CNN (stated where the paired intervals support it, with each
model's parameters and FLOPs beside it); and fastvit's builds against timm's, HF transformers' and
torchvision's builds of the same models, paired. Pure functions, as in :mod:`fastvit.report.sections`."""
from __future__ import annotations

import numpy as np
import pandas as pd

from fastvit.report.comparisons import architecture_pairs, compare, noise, same_group, slot
from fastvit.report.facts import (ARCH_GROUP, ATTENTION_IMPL, CNN, COMPILE_SUFFIX, DEFAULT_MODEL_IMPL, DEFAULT_NORM,
                                  DEFAULT_PATCH, FAMILY_TITLES, LIBRARY_TITLES, MODEL, OWN_LIBRARY, PASS_TITLES,
                                  PEER_GROUP, PEER_LIBRARIES, SDPA_KERNEL)
from fastvit.report.fit import FIT_MIN_RESOLUTION, architecture_rows, fit_sizes
from fastvit.report.plots import Figure, plot_architectures
from fastvit.report.sections import Section
from fastvit.report.tables import Notes, Table, fmt_exponent, impl_title, num, plain, slug, time_unit
from fastvit.report.verdicts import RULE, ratio_cells, ratio_header, twin_text, unpaired_note


def _matching(df: pd.DataFrame, key: dict) -> pd.DataFrame:
    return df[np.logical_and.reduce([(df[c] == v).to_numpy() for c, v in key.items()])]


def _setting_keys(df: pd.DataFrame, columns: list[str]) -> list[dict]:
    """The distinct values of ``columns`` in ``df``: models by family and size (as in the figures), then
    forward passes first, then dtype and batch."""
    keys = df[columns].drop_duplicates().to_dict("records")
    rank = {m: i for i, m in enumerate(_models_in_order(df))} if "model" in columns else {}
    return sorted(keys, key=lambda k: tuple(rank.get(v, -1) if c == "model" else (v != "fwd") if c == "pass"
                                            else str(v) for c, v in k.items()))


def _setting(key: dict) -> str:
    return f"{PASS_TITLES.get(key['pass'], key['pass'])}, B={int(key['batch'])}, {key['dtype']}"


def _params(d: pd.DataFrame) -> str:
    p = d.sort_values("resolution")["params"].dropna()
    return f"{num(p.iloc[0] / 1e6)}M" if len(p) else "–"


def model_work(d: pd.DataFrame, short: bool = False) -> str:
    """A model's size in words: "5.72M params, 1.26–20.1 GFLOP (224–896 px)" (forward FLOPs), or with
    ``short`` "5.72M params, 1.26 GFLOP at 224 px"."""
    ok = d[d["flops"].notna()].sort_values("resolution")
    if "pass" in ok and (ok["pass"] == "fwd").any():
        ok = ok[ok["pass"] == "fwd"]
    text = f"{_params(d)} params"
    if short and len(ok):
        return text + f", {num(ok.iloc[0]['flops'] / 1e9)} GFLOP at {int(ok.iloc[0]['resolution'])} px"
    if len(ok):
        lo, hi = ok.iloc[0], ok.iloc[-1]
        text += (f", {num(lo['flops'] / 1e9)} GFLOP at {int(lo['resolution'])} px" if len(ok) == 1 else
                 f", {num(lo['flops'] / 1e9)}–{num(hi['flops'] / 1e9)} GFLOP ({int(lo['resolution'])}–"
                 f"{int(hi['resolution'])} px)")
    return text


def _models_in_order(d: pd.DataFrame) -> list[str]:
    """Models by family (in FAMILY_TITLES' order), then by parameter count."""
    order = {f: i for i, f in enumerate(FAMILY_TITLES)}
    info = d.groupby("model").agg(family=("family", "first"), params=("params", "min")).fillna({"params": 0})
    return sorted(info.index, key=lambda m: (order.get(info.loc[m, "family"], 99), info.loc[m, "params"], m))


def architectures_section(df: pd.DataFrame) -> Section:
    """Per pass (dtype, batch): a figure of every architecture against the image size, the fitted
    exponents per architecture, and where each ViT or DeiT becomes costlier than each Swin and CNN."""
    rows = architecture_rows(df)
    if rows["model"].nunique() < 2:
        return Section()
    keys = _setting_keys(rows, ARCH_GROUP)
    one = len({(k["dtype"], k["batch"]) for k in keys}) == 1
    pairs = architecture_pairs(df)
    paired = any(c.paired for p in pairs for _, c in p["points"])
    section = Section()
    lines = ["## Architectures against resolution", "",
             f"fastvit's build of every model with the default backends (attention {DEFAULT_MODEL_IMPL}, LayerNorm "
             f"{DEFAULT_NORM}, patch embedding {DEFAULT_PATCH}) and the CNN baselines, against the image size. "
             "Exponent: the slope of a least-squares line through log(value) against log(pixels) = log(res²), "
             f"over the sizes from {FIT_MIN_RESOLUTION} px on (the largest three where fewer than three reach it; "
             "the last column gives the sizes used): 1 is linear in the number of tokens, 2 quadratic. A "
             "global-attention model (ViT, DeiT) becomes costlier than a Swin model or a CNN where its time over "
             "theirs rises through 1: "
             + ("between the last size where the paired ratio is measurably below 1 and the first where it is "
                f"measurably above (interpolated in log-log between the sizes around 1). {RULE}" if paired else
                "interpolated linearly in log(ratio) against log(resolution) between the two measured sizes around "
                "it (unpaired: the medians were measured in separate configurations)."), ""]
    for key in keys:
        d = _matching(rows, key)
        models = _models_in_order(d)
        labels = {m: f"{m} ({FAMILY_TITLES.get(d[d['model'] == m]['family'].iloc[0], '?')}, "
                     f"{_params(d[d['model'] == m])})" for m in models}
        name = f"architectures_{key['pass']}" + ("" if one else f"_{key['dtype']}_b{int(key['batch'])}") + ".png"
        fig_title = f"Architectures against resolution, {_setting(key)}"
        section.figures.append(Figure(name, lambda path, d=d, t=fig_title, lb=labels:
                                      plot_architectures(d, path, t, lb)))
        table = []
        for m in models:
            g = d[d["model"] == m]
            lat, mem = fit_sizes(g, "median_s", False), fit_sizes(g, "peak_mem_bytes", False)
            fit = lat or mem
            table.append([m, FAMILY_TITLES.get(g["family"].iloc[0], str(g["family"].iloc[0])), model_work(g),
                          fmt_exponent(lat.exponent if lat else np.nan, fit.points if fit else None),
                          fmt_exponent(mem.exponent if mem else np.nan, fit.points if fit else None),
                          f"{fit.n_min:,}–{fit.n_max:,} px ({fit.points})" if fit else "–"])
        stem = slug("architectures", key["pass"], key["dtype"], f"b{int(key['batch'])}")
        lines += [f"### {_setting(key)}", "", f"![architectures {key['pass']}]({name})", "",
                  *section.table(Table(f"{stem}_exponents", f"Architectures, {_setting(key)}: exponents",
                                       ["model", "family", "size", "latency exponent", "memory exponent",
                                        "fitted over (sizes)"], table, text_cols=3))]
        lines += _costlier_tables(section, stem, d, [c for c in pairs if all(c[k] == key[k] for k in ARCH_GROUP)],
                                  paired)
    section.lines = lines
    return section


def _costlier_tables(section: Section, stem: str, d: pd.DataFrame, pairs: list[dict], paired: bool) -> list[str]:
    if not pairs:
        return []
    work = {m: model_work(d[d["model"] == m]) for m in d["model"].unique()}
    crossings = [[c["model"], work[c["model"]], c["rival"], FAMILY_TITLES.get(c["rival_family"], c["rival_family"]),
                  work[c["rival"]], c["crossover"].text] for c in pairs]
    ratios = [[c["model"], c["rival"], f"{r} px"] + ratio_cells(comp, paired) for c in pairs for r, comp in c["points"]]
    return ["Where each global-attention model becomes the costlier (its time over the other's rises through 1), "
            "with each model's parameters and forward FLOPs:", "", *unpaired_note(paired),
            *section.table(Table(f"{stem}_crossovers", "Architecture crossovers",
                                 ["model", "its size", "than", "family", "their size", "becomes costlier"], crossings,
                                 text_cols=6)),
            "Time of each global-attention model over each Swin model's and CNN's, per size (> 1: the "
            "global-attention model is the slower):", "",
            *section.table(Table(f"{stem}_ratios", "Global-attention models over Swin and CNNs",
                                 ["model", "than", "size"] + ratio_header("time ÷ theirs", paired), ratios,
                                 text_cols=3))]


def _attention(g: pd.DataFrame, impl: str) -> str:
    """The attention an implementation ran: fastvit's backend (and the kernel PyTorch chose), a peer's own."""
    rows = g[g["impl"] == impl]
    if (rows["library"] == OWN_LIBRARY).all():
        kernels = list(dict.fromkeys(rows[SDPA_KERNEL].dropna()))
        return f"`{impl}`" + (f" (PyTorch chose {', '.join(f'`{k}`' for k in kernels)})" if kernels else "")
    ran = list(dict.fromkeys(rows[ATTENTION_IMPL].dropna()))
    return ", ".join(f"`{a}`" for a in ran) if ran else "not recorded (never run)"


def _mem_ratio(row: dict, base: dict) -> str:
    if row.get("status") != "ok" or base.get("status") != "ok" or not base.get("peak_mem_bytes"):
        return "–"
    return f"{row['peak_mem_bytes'] / base['peak_mem_bytes']:.2f}×"


def peers_section(df: pd.DataFrame) -> Section:
    """Per model, pass (dtype, batch): timm's, HF's and torchvision's time over fastvit's at each size,
    paired where they were timed in one group, and their peak memory over fastvit's (torchvision's CNN
    baselines are architectures, not peers: left out)."""
    models = plain(df[df["op"] == MODEL])
    own_builds = (models["library"] == OWN_LIBRARY) & ~models["impl"].astype(str).str.endswith(COMPILE_SUFFIX)
    cnn = models["family"] == CNN if "family" in models else False
    peer_builds = models["library"].isin(PEER_LIBRARIES) & ~cnn
    others = models[peer_builds | (own_builds & (models["impl"] != DEFAULT_MODEL_IMPL))]
    if others.empty:
        return Section()
    floor = noise(df)
    section = Section(["## fastvit, timm, HF and torchvision", "",
                       "The same models with the same weights as timm, HF transformers and torchvision build them, "
                       "each running its own attention, and fastvit's builds with other backends, against fastvit's "
                       "build with "
                       f"the default backends ({DEFAULT_MODEL_IMPL}) at the same size: time ÷ fastvit's (> 1: "
                       "fastvit's default is the faster) and peak memory ÷ fastvit's (> 1: fastvit's default needs "
                       f"less). {RULE}", ""])
    for key in _setting_keys(others, PEER_GROUP):
        g = _matching(models, key)
        own = g[(g["library"] == OWN_LIBRARY) & (g["impl"] == DEFAULT_MODEL_IMPL)]
        libs = list(dict.fromkeys(_matching(others, key)["impl"]))
        libs = sorted(libs, key=lambda b: (b in PEER_LIBRARIES, PEER_LIBRARIES.index(b) if b in PEER_LIBRARIES else 0))
        unit, scale = time_unit(own[own["status"] == "ok"]["median_s"])
        notes, entries = Notes(), []
        for res in sorted(int(r) for r in g[g["impl"].isin(libs + [DEFAULT_MODEL_IMPL])]["resolution"].unique()):
            base = own[own["resolution"] == res].to_dict("records")
            if not base:
                continue
            base = base[-1]
            aa = floor.get(slot(base))
            median = num(base["median_s"] * scale) if base["status"] == "ok" else notes.cell(base["status"])
            entries.append((f"{res} px", f"fastvit ({DEFAULT_MODEL_IMPL})", median, "baseline", "1 (baseline)", "1×"))
            for lib in libs:
                hit = g[(g["impl"] == lib) & (g["resolution"] == res)].to_dict("records")
                if not hit:
                    continue
                r = hit[-1]
                c = compare(r, base, aa[1] if aa and same_group(r, base) else None)
                median = num(r["median_s"] * scale) if r["status"] == "ok" else notes.cell(r["status"])
                name = impl_title(g, lib) if lib in PEER_LIBRARIES else f"fastvit {lib}"
                entries.append((f"{res} px", name, median, c, None, _mem_ratio(r, base)))
            if aa and aa[0]["model"] == key["model"]:
                entries.append((f"{res} px", f"fastvit {aa[0]['impl']}", num(aa[0]["median_s"] * scale), "twin",
                                twin_text(aa[1]), "–"))
        paired = any(not isinstance(e[3], str) and e[3] is not None and e[3].paired for e in entries)
        rows = []
        for size, name, median, c, text, mem in entries:
            if isinstance(c, str):  # the baseline and the A/A twin
                cells = [text, c if c == "baseline" else "A/A"] if paired else [text]
            else:
                cells = ratio_cells(c, paired)
            rows.append([size, name, median] + cells + [mem])
        ran = "; ".join([f"fastvit {_attention(g, DEFAULT_MODEL_IMPL)}"]
                        + [f"{LIBRARY_TITLES.get(lib, lib)} {_attention(g, lib)}" for lib in libs
                           if lib in PEER_LIBRARIES])
        header = ["size", "build", f"median ({unit})"] + ratio_header("time ÷ fastvit's", paired) + \
            ["peak memory ÷ fastvit's"]
        section.lines += [f"### {key['model']}, {_setting(key)}", "", *unpaired_note(paired),
                          *section.table(Table(slug("peers", key["model"], key["pass"], key["dtype"],
                                                    f"b{int(key['batch'])}"),
                                               f"{key['model']}, {_setting(key)}: fastvit and its peers", header, rows,
                                               text_cols=2)),
                          f"Attention: {ran}.", ""]
        if notes.reasons:
            section.lines += [notes.render(), ""]
    return section
