"""The sections on whole models across architectures and libraries: every architecture's latency and peak
memory against the image size, with fitted exponents and the resolutions where a global-attention model
becomes costlier than a Swin model or a CNN; and fastvit's builds against timm's and HF transformers'
builds of the same models. Pure functions, as in :mod:`fastvit.report.sections`."""
from __future__ import annotations

import numpy as np
import pandas as pd

from fastvit.report.facts import (ARCH_GROUP, ATTENTION_IMPL, DEFAULT_MODEL_IMPL, DEFAULT_NORM, DEFAULT_PATCH,
                                  FAMILY_TITLES, LIBRARY_TITLES, MODEL, OWN_LIBRARY, PASS_TITLES, PEER_GROUP,
                                  PEER_LIBRARIES, SDPA_KERNEL)
from fastvit.report.fit import FIT_MIN_RESOLUTION, architecture_crossings, architecture_rows, fit_sizes
from fastvit.report.plots import Figure, plot_architectures
from fastvit.report.sections import Section
from fastvit.report.tables import Notes, fmt_exponent, impl_title, md_table, mem_unit, num, time_unit


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
    crossings = architecture_crossings(df)
    lines = ["## Architectures against resolution", "",
             f"fastvit's build of every model with the default backends (attention {DEFAULT_MODEL_IMPL}, LayerNorm "
             f"{DEFAULT_NORM}, patch embedding {DEFAULT_PATCH}) and the CNN baselines, against the image size. "
             "Exponent: the slope of a least-squares line through log(value) against log(pixels) = log(res²), "
             f"over the sizes from {FIT_MIN_RESOLUTION} px on (the largest three where fewer than three reach it): "
             "1 is linear in the number of tokens, 2 quadratic. A global-attention model (ViT, DeiT) becomes "
             "costlier than a Swin model or a CNN where the ratio of their median latencies rises through 1, "
             "interpolated linearly in log(ratio) against log(resolution) between the two measured sizes around "
             "it.", ""]
    figures = []
    for key in keys:
        d = _matching(rows, key)
        models = _models_in_order(d)
        labels = {m: f"{m} ({FAMILY_TITLES.get(d[d['model'] == m]['family'].iloc[0], '?')}, "
                     f"{_params(d[d['model'] == m])})" for m in models}
        name = f"architectures_{key['pass']}" + ("" if one else f"_{key['dtype']}_b{int(key['batch'])}") + ".png"
        fig_title = f"Architectures against resolution, {_setting(key)}"
        figures.append(Figure(name, lambda path, d=d, t=fig_title, lb=labels: plot_architectures(d, path, t, lb)))
        table = []
        for m in models:
            g = d[d["model"] == m]
            lat, mem = fit_sizes(g, "median_s", False), fit_sizes(g, "peak_mem_bytes", False)
            fit = lat or mem
            table.append([m, FAMILY_TITLES.get(g["family"].iloc[0], str(g["family"].iloc[0])), _params(g),
                          fmt_exponent(lat.exponent if lat else np.nan), fmt_exponent(mem.exponent if mem else np.nan),
                          f"{fit.n_min:,}–{fit.n_max:,} px ({fit.points})" if fit else "–"])
        lines += [f"### {_setting(key)}", "", f"![architectures {key['pass']}]({name})", "",
                  md_table(["model", "family", "parameters", "latency exponent", "memory exponent",
                            "fitted over (points)"], table, text_cols=2), ""]
        lines += _costlier_table([c for c in crossings if all(c[k] == key[k] for k in ARCH_GROUP)])
    return Section(lines, figures)


def _costlier_table(crossings: list[dict]) -> list[str]:
    if not crossings:
        return []
    res = sorted({int(r) for c in crossings for r in c["ratios"].index})
    rows = [[c["model"], c["rival"], FAMILY_TITLES.get(c["rival_family"], c["rival_family"])]
            + [f"{c['ratios'][r]:.2f}" if r in c["ratios"].index else "–" for r in res] + [c["crossover"].text]
            for c in crossings]
    return ["Median latency of each global-attention model over each Swin model's and CNN's (> 1: the "
            "global-attention model is the slower), and the resolution from which it is the costlier:", "",
            md_table(["model", "than", "family"] + [f"{r} px" for r in res] + ["costlier from"], rows, text_cols=3), ""]


def _attention(g: pd.DataFrame, impl: str) -> str:
    """The attention an implementation ran: fastvit's backend (and the kernel PyTorch chose), a peer's own."""
    rows = g[g["impl"] == impl]
    if (rows["library"] == OWN_LIBRARY).all():
        kernels = list(dict.fromkeys(rows[SDPA_KERNEL].dropna()))
        return f"`{impl}`" + (f" (PyTorch chose {', '.join(f'`{k}`' for k in kernels)})" if kernels else "")
    ran = list(dict.fromkeys(rows[ATTENTION_IMPL].dropna()))
    return ", ".join(f"`{a}`" for a in ran) if ran else "not recorded (never run)"


def peers_section(df: pd.DataFrame) -> Section:
    """Per model, pass (dtype, batch): timm's and HF's latency and peak memory over fastvit's, size by size."""
    models = df[df["op"] == MODEL]
    peers = models[models["library"].isin(PEER_LIBRARIES)]
    if peers.empty:
        return Section()
    lines = ["## fastvit, timm and HF", "",
             f"The same models with the same weights as timm and HF transformers build them, each running its own "
             f"attention, against fastvit's build with the default backends ({DEFAULT_MODEL_IMPL}). Each cell is the "
             "peer's median latency (or peak memory) divided by fastvit's at the same size: > 1 means fastvit is "
             "faster (smaller).", ""]
    for key in _setting_keys(peers, PEER_GROUP):
        g = _matching(models, key)
        own = g[(g["library"] == OWN_LIBRARY) & (g["impl"] == DEFAULT_MODEL_IMPL)]
        libs = [lib for lib in PEER_LIBRARIES if (g["impl"] == lib).any()]
        res = sorted(int(r) for r in pd.concat([own, g[g["impl"].isin(libs)]])["resolution"].unique())
        notes = Notes()
        ok = own[own["status"] == "ok"]
        tables = []
        for col, (unit, scale), what in (("median_s", time_unit(ok["median_s"]), "Median latency"),
                                         ("peak_mem_bytes", mem_unit(ok["peak_mem_bytes"]), "Peak memory")):
            base = [_cell(own, r, col, notes, lambda v: num(v * scale)) for r in res]
            table = [[f"fastvit ({unit})"] + base]
            for lib in libs:
                ref = ok.groupby("resolution")[col].last()
                table.append([f"{impl_title(g, lib)} / fastvit"]
                             + [_cell(g[g["impl"] == lib], r, col, notes, lambda v, r=r: _ratio(v, ref.get(r)))
                                for r in res])
            tables += [f"{what}: fastvit's, and each peer's over fastvit's:", "",
                       md_table([""] + [f"{r} px" for r in res], table), ""]
        ran = "; ".join([f"fastvit {_attention(g, DEFAULT_MODEL_IMPL)}"]
                        + [f"{LIBRARY_TITLES.get(lib, lib)} {_attention(g, lib)}" for lib in libs])
        lines += [f"### {key['model']}, {_setting(key)}", "", *tables, f"Attention: {ran}.", ""]
        if notes.reasons:
            lines += [notes.render(), ""]
    return Section(lines)


def _cell(rows: pd.DataFrame, res: int, col: str, notes: Notes, fmt) -> str:
    """``fmt`` of ``col`` where ``rows`` timed size ``res``, the status (with its footnote) where not."""
    hit = rows[rows["resolution"] == res]
    if hit.empty:
        return ""
    row = hit.iloc[-1]
    return fmt(row[col]) if row["status"] == "ok" else notes.cell(row["status"])


def _ratio(value: float, base: float | None) -> str:
    return f"{value / base:.2f}×" if base is not None and np.isfinite(base) and base > 0 else "–"
