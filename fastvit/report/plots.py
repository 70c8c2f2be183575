"""The report's figures (matplotlib, Agg backend): latency and peak memory against tokens N on log-log
axes with N and N² reference slopes, and attention's share of the whole-model time against resolution.

Sections describe a figure as a :class:`Figure` (its file name and a function that draws it to a path);
only the writer of the report calls ``draw``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.ticker import FixedLocator, NullLocator, PercentFormatter

from fastvit.report.facts import COLORS, COMPILE_SUFFIX, MARKERS, PASS_TITLES, PASSES, SDPA, SDPA_KERNEL
from fastvit.report.fit import SHARE_LEVEL, crossover
from fastvit.report.tables import impls, mem_unit, status_kind, time_unit


@dataclass(frozen=True)
class Figure:
    """A figure of the report: ``name`` is its file name next to report.md, ``draw(path)`` renders it there."""
    name: str
    draw: Callable[[Path], None]


def _style(impl: str, index: int) -> dict:
    base = impl.split(",")[0].split("+")[0]
    color = COLORS.get(base)
    if color is None:
        color = matplotlib.colormaps["tab10"](index % 10)
    # alternate filled and hollow markers so that backends with equal results stay distinguishable
    return dict(color=color, marker=MARKERS[index % len(MARKERS)], markerfacecolor=color if index % 2 == 0 else "white",
                linestyle="--" if COMPILE_SUFFIX in impl else "-", linewidth=1.8, markersize=6)


def _setup_matplotlib():
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # after choosing the backend

    return plt, {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
                 "xtick.labelsize": 10, "ytick.labelsize": 10, "figure.dpi": 100, "savefig.dpi": 150,
                 "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": True}


def _token_axis(ax, tokens: list[int], patch: int | None):
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(FixedLocator(tokens))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{n:,}" for n in tokens])
    ax.set_xlabel("tokens N")
    if patch:
        top = ax.secondary_xaxis("top", functions=(lambda n: patch * np.sqrt(np.maximum(n - 1, 1e-9)),
                                                   lambda r: (r / patch) ** 2 + 1))
        res = [patch * round(math.sqrt(n - 1)) for n in tokens]
        top.xaxis.set_major_locator(FixedLocator(res))
        top.xaxis.set_minor_locator(NullLocator())
        top.set_xticklabels([str(r) for r in res])
        top.set_xlabel("resolution (px)")


def _reference_slopes(ax, tokens: list[int], ys: list[float]):
    """Dashed N and N^2 lines from the geometric mean of the values at the smallest size."""
    ys = [y for y in ys if y > 0 and np.isfinite(y)]
    if len(tokens) < 2 or not ys:
        return
    n0, n1 = min(tokens), max(tokens)
    y0 = float(np.exp(np.mean(np.log(ys))))
    n = np.array([n0, n1], dtype=float)
    for power, label, style in ((1, "∝ N", ":"), (2, "∝ N²", "--")):
        ax.plot(n, y0 * (n / n0) ** power, style, color="0.45", linewidth=1.2, zorder=1)
        ax.annotate(label, (n1, y0 * (n1 / n0) ** power), textcoords="offset points", xytext=(4, 0),
                    va="center", fontsize=10, color="0.3")


def plot_scaling(g: pd.DataFrame, path: Path, title: str, other: pd.DataFrame | None = None,
                 other_label: str = "") -> None:
    """Latency (with its IQR) and peak memory of every backend in ``g`` against N; with ``other``, the
    latency alone, ``other``'s dotted beside it."""
    plt, rc = _setup_matplotlib()
    tokens = sorted(int(t) for t in g["tokens"].dropna().unique())
    patch = int(g["patch_size"].dropna().iloc[0]) if g["patch_size"].notna().any() else None
    ok = g[g["status"] == "ok"]
    t_unit, t_scale = time_unit(ok["median_s"])
    m_unit, m_scale = mem_unit(ok["peak_mem_bytes"])
    panels = [("median_s", f"median latency ({t_unit})", t_scale, "latency")]
    if other is None:
        panels.append(("peak_mem_bytes", f"peak memory ({m_unit})", m_scale, "peak memory"))
    with plt.rc_context(rc):
        fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels) + 2.2, 4.6), squeeze=False,
                                 layout="constrained")
        handles = {}
        for ax, (col, ylabel, scale, name) in zip(axes[0], panels):
            firsts = []
            for i, impl in enumerate(impls(g)):
                d = g[g["impl"] == impl].sort_values("tokens")
                good = d[(d["status"] == "ok") & d[col].notna() & (d[col] > 0)]
                bad = d[d["status"] != "ok"]
                label = impl
                kernels = d[SDPA_KERNEL].dropna().unique() if d["backend"].iloc[0] == SDPA else []
                if len(kernels) == 1:  # plain sdpa overlaps the pinned kernel it chose: say which
                    label += f" (ran {kernels[0]})"
                if len(bad) and len(good):
                    kinds = sorted({status_kind(s) for s in bad["status"]})
                    label += f" ({'/'.join(kinds)} at {', '.join(str(int(r)) for r in bad['resolution'])} px)"
                if good.empty:
                    continue
                st = _style(impl, i)
                y = good[col].to_numpy() * scale
                if col == "median_s":
                    lo = (good["median_s"] - good["q1_s"]).clip(lower=0).to_numpy()
                    hi = (good["q3_s"] - good["median_s"]).clip(lower=0).to_numpy()
                    err = np.nan_to_num(np.vstack([lo, hi])) * scale
                    h = ax.errorbar(good["tokens"], y, yerr=err, capsize=3, label=label, **st)
                else:
                    h = ax.plot(good["tokens"], y, label=label, **st)[0]
                handles.setdefault(label, h)
                firsts.append(y[0] if good["tokens"].iloc[0] == tokens[0] else np.nan)
                if other is not None:
                    o = other[(other["impl"] == impl) & (other["status"] == "ok")].sort_values("tokens")
                    if len(o):
                        oh = ax.plot(o["tokens"], o[col] * scale, color=st["color"], marker=st["marker"],
                                     linestyle=":", linewidth=1.4, markersize=5, markerfacecolor="none",
                                     label=f"{impl} ({other_label})")[0]
                        handles.setdefault(f"{impl} ({other_label})", oh)
            _reference_slopes(ax, tokens, firsts)
            _token_axis(ax, tokens, patch)
            ax.set_ylabel(ylabel)
        fig.suptitle(title, fontsize=12)
        if handles:
            fig.legend(list(handles.values()), list(handles), loc="outside right center", frameon=False)
        fig.savefig(path)
        plt.close(fig)


def plot_share(share: pd.DataFrame, path: Path, title: str) -> None:
    """Attention's share of the whole-model time per backend against resolution, one panel per pass,
    the crossover of the share level circled."""
    plt, rc = _setup_matplotlib()
    passes = [p for p in PASSES if p in set(share["pass"])] or sorted(set(share["pass"]))
    with plt.rc_context(rc):
        fig, axes = plt.subplots(1, len(passes), figsize=(5.4 * len(passes) + 2.0, 4.4), squeeze=False,
                                 layout="constrained", sharey=True)
        handles = {}
        for ax, p in zip(axes[0], passes):
            d = share[share["pass"] == p]
            res = sorted(int(r) for r in d["resolution"].unique())
            for i, b in enumerate(dict.fromkeys(d["backend"])):
                s = d[(d["backend"] == b) & d["share"].notna()].sort_values("resolution")
                if s.empty:
                    continue
                st = _style(b, i)
                h = ax.plot(s["resolution"], 100 * s["share"], label=b, **st)[0]
                handles.setdefault(b, h)
                patch = int(s["patch_size"].iloc[0]) if s["patch_size"].notna().any() else None
                c = crossover(s["resolution"], s["share"], patch=patch)
                if c.resolution:
                    ax.plot([c.resolution], [100 * SHARE_LEVEL], marker="o", markersize=9, markerfacecolor="none",
                            markeredgecolor=st["color"], markeredgewidth=1.6, linestyle="none")
            ax.axhline(100 * SHARE_LEVEL, color="0.4", linestyle="--", linewidth=1.1)
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(FixedLocator(res))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xticklabels([str(r) for r in res])
            top = 100 * share["share"].max() if share["share"].notna().any() else 100
            ax.set_ylim(0, max(100, 1.08 * top))
            ax.yaxis.set_major_formatter(PercentFormatter())
            ax.set_xlabel("resolution (px)")
            ax.set_title(PASS_TITLES.get(p, p), fontsize=11)
        axes[0][0].set_ylabel("share of ViT time in attention")
        fig.suptitle(title, fontsize=12)
        if handles:
            fig.legend(list(handles.values()), list(handles), loc="outside right center", frameon=False,
                       title="attention backend")
        fig.savefig(path)
        plt.close(fig)
