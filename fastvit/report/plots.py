"""The report's figures (matplotlib, Agg backend): latency and peak memory against tokens N on log-log
axes with N and N² reference slopes (against the resolution, with res² and res⁴ slopes, for models
without a global token count), the same for every architecture against the resolution, and attention's
share of the whole-model time against resolution.

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
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator, PercentFormatter

from fastvit.report.facts import COLORS, COMPILE_SUFFIX, MARKERS, PASS_TITLES, PASSES, SDPA, SDPA_KERNEL
from fastvit.report.fit import SHARE_LEVEL, share_crossover
from fastvit.report.tables import has_tokens, impl_title, impls, mem_unit, status_kind, time_unit

TOKEN_GUIDES = ((1, "∝ N"), (2, "∝ N²"))
PIXEL_GUIDES = ((2, "∝ res²"), (4, "∝ res⁴"))  # the same slopes against the resolution
ARCH_GUIDES = ((2, "∝ res² (∝ N)"), (4, "∝ res⁴ (∝ N²)"))
RATIO_SPAN = 0.03  # a ratio panel shows at least 1 ± this, so that noise-sized differences look noise-sized


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


def _token_axis(ax, tokens: list[int], patch: int | None, prefix: int = 1):
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(FixedLocator(tokens))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{n:,}" for n in tokens])
    ax.set_xlabel("tokens N")
    if patch:
        top = ax.secondary_xaxis("top", functions=(lambda n: patch * np.sqrt(np.maximum(n - prefix, 1e-9)),
                                                   lambda r: (r / patch) ** 2 + prefix))
        res = [patch * round(math.sqrt(max(n - prefix, 0))) for n in tokens]
        top.xaxis.set_major_locator(FixedLocator(res))
        top.xaxis.set_minor_locator(NullLocator())
        top.set_xticklabels([str(r) for r in res])
        top.set_xlabel("resolution (px)")


def _prefix_tokens(g: pd.DataFrame, patch: int | None) -> int:
    """The tokens of ``g``'s rows beyond their patches (the CLS token, DeiT's distillation token)."""
    if not patch:
        return 1
    r = g.dropna(subset=["tokens"]).iloc[0]
    return int(round(r["tokens"] - (r["resolution"] / patch) ** 2))


def _res_axis(ax, res: list[int], log_y: bool = True):
    ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(FixedLocator(res))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(r) for r in res])
    ax.set_xlabel("resolution (px)")


def _reference_slopes(ax, xs: list[int], ys: list[float], guides=TOKEN_GUIDES):
    """Reference lines value ∝ x^power, (power, label) per ``guides``, from the geometric mean of the
    values ``ys`` at the smallest size."""
    ys = [y for y in ys if y > 0 and np.isfinite(y)]
    if len(xs) < 2 or not ys:
        return
    n0, n1 = min(xs), max(xs)
    y0 = float(np.exp(np.mean(np.log(ys))))
    n = np.array([n0, n1], dtype=float)
    for (power, label), style in zip(guides, (":", "--")):
        ax.plot(n, y0 * (n / n0) ** power, style, color="0.45", linewidth=1.2, zorder=1)
        ax.annotate(label, (n1, y0 * (n1 / n0) ** power), textcoords="offset points", xytext=(4, 0),
                    va="center", fontsize=10, color="0.3")


def plot_scaling(g: pd.DataFrame, path: Path, title: str, other: pd.DataFrame | None = None,
                 other_label: str = "") -> None:
    """Latency (with its IQR) and peak memory of every backend in ``g`` against N (against the resolution
    where a row has no token count); with ``other``, the latency alone, ``other``'s dotted beside it."""
    plt, rc = _setup_matplotlib()
    x = "tokens" if has_tokens(g) else "resolution"
    sizes = sorted(int(t) for t in g[x].dropna().unique())
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
                d = g[g["impl"] == impl].sort_values(x)
                good = d[(d["status"] == "ok") & d[col].notna() & (d[col] > 0)]
                bad = d[d["status"] != "ok"]
                label = impl_title(g, impl)
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
                    h = ax.errorbar(good[x], y, yerr=err, capsize=3, label=label, **st)
                else:
                    h = ax.plot(good[x], y, label=label, **st)[0]
                handles.setdefault(label, h)
                firsts.append(y[0] if good[x].iloc[0] == sizes[0] else np.nan)
                if other is not None:
                    o = other[(other["impl"] == impl) & (other["status"] == "ok")].sort_values(x)
                    if len(o):
                        oh = ax.plot(o[x], o[col] * scale, color=st["color"], marker=st["marker"],
                                     linestyle=":", linewidth=1.4, markersize=5, markerfacecolor="none",
                                     label=f"{impl} ({other_label})")[0]
                        handles.setdefault(f"{impl} ({other_label})", oh)
            if x == "tokens":
                _reference_slopes(ax, sizes, firsts, TOKEN_GUIDES)
                _token_axis(ax, sizes, patch, _prefix_tokens(g, patch))
            else:
                _reference_slopes(ax, sizes, firsts, PIXEL_GUIDES)
                _res_axis(ax, sizes)
            ax.set_ylabel(ylabel)
        fig.suptitle(title, fontsize=12)
        if handles:
            fig.legend(list(handles.values()), list(handles), loc="outside right center", frameon=False)
        fig.savefig(path)
        plt.close(fig)


def plot_share(share: pd.DataFrame, path: Path, title: str, labels: pd.DataFrame) -> None:
    """Attention's share of the whole-model time per implementation against resolution, one panel per
    pass, the crossover of the share level circled."""
    plt, rc = _setup_matplotlib()
    passes = [p for p in PASSES if p in set(share["pass"])] or sorted(set(share["pass"]))
    with plt.rc_context(rc):
        fig, axes = plt.subplots(1, len(passes), figsize=(5.4 * len(passes) + 2.0, 4.4), squeeze=False,
                                 layout="constrained", sharey=True)
        handles = {}
        for ax, p in zip(axes[0], passes):
            d = share[share["pass"] == p]
            res = sorted(int(r) for r in d["resolution"].unique())
            for i, b in enumerate(dict.fromkeys(d["impl"])):
                s = d[(d["impl"] == b) & d["share"].notna()].sort_values("resolution")
                if s.empty:
                    continue
                st = _style(b, i)
                label = impl_title(labels, b)
                h = ax.plot(s["resolution"], 100 * s["share"], label=label, **st)[0]
                handles.setdefault(label, h)
                c = share_crossover(s)
                if c.resolution:
                    ax.plot([c.resolution], [100 * SHARE_LEVEL], marker="o", markersize=9, markerfacecolor="none",
                            markeredgecolor=st["color"], markeredgewidth=1.6, linestyle="none")
            ax.axhline(100 * SHARE_LEVEL, color="0.4", linestyle="--", linewidth=1.1)
            _res_axis(ax, res, log_y=False)
            top = 100 * share["share"].max() if share["share"].notna().any() else 100
            ax.set_ylim(0, max(100, 1.08 * top))
            ax.yaxis.set_major_formatter(PercentFormatter())
            ax.set_title(PASS_TITLES.get(p, p), fontsize=11)
        axes[0][0].set_ylabel("share of the model's time in attention")
        fig.suptitle(title, fontsize=12)
        if handles:
            fig.legend(list(handles.values()), list(handles), loc="outside right center", frameon=False,
                       title="implementation")
        fig.savefig(path)
        plt.close(fig)


def plot_architectures(d: pd.DataFrame, path: Path, title: str, labels: dict[str, str]) -> None:
    """Latency and peak memory of every model in ``d`` (one line each, ``labels`` naming them) against
    the resolution, log-log, with res² (∝ N) and res⁴ (∝ N²) reference slopes."""
    plt, rc = _setup_matplotlib()
    ok = d[(d["status"] == "ok")]
    sizes = sorted(int(r) for r in d["resolution"].dropna().unique())
    t_unit, t_scale = time_unit(ok["median_s"])
    m_unit, m_scale = mem_unit(ok["peak_mem_bytes"])
    panels = [("median_s", f"median latency ({t_unit})", t_scale), ("peak_mem_bytes", f"peak memory ({m_unit})",
                                                                     m_scale)]
    with plt.rc_context(rc):
        fig, axes = plt.subplots(1, 2, figsize=(13.4, 4.8), squeeze=False, layout="constrained")
        handles = {}
        for ax, (col, ylabel, scale) in zip(axes[0], panels):
            firsts = []
            for i, model in enumerate(labels):
                good = ok[(ok["model"] == model) & ok[col].notna() & (ok[col] > 0)].sort_values("resolution")
                if good.empty:
                    continue
                st = _style(model, i)
                st["color"] = matplotlib.colormaps["tab10"](i % 10)
                st["markerfacecolor"] = st["color"] if i % 2 == 0 else "white"
                y = good[col].to_numpy() * scale
                handles.setdefault(labels[model], ax.plot(good["resolution"], y, label=labels[model], **st)[0])
                firsts.append(y[0] if good["resolution"].iloc[0] == sizes[0] else np.nan)
            _reference_slopes(ax, sizes, firsts, ARCH_GUIDES)
            _res_axis(ax, sizes)
            ax.set_ylabel(ylabel)
        fig.suptitle(title, fontsize=12)
        if handles:
            fig.legend(list(handles.values()), list(handles), loc="outside right center", frameon=False)
        fig.savefig(path)
        plt.close(fig)


@dataclass(frozen=True)
class Series:
    """One line of a ratio panel: time ratios (and their intervals; NaN where unpaired) against ``xs``."""
    label: str
    xs: list[float]
    values: list[float]
    lows: list[float]
    highs: list[float]


@dataclass(frozen=True)
class Panel:
    """One panel of :func:`plot_ratios`: its lines, what they are divided by, and the A/A band per size."""
    title: str
    baseline: str
    series: list[Series]
    band_xs: list[float]
    bands: list[float]
    quantity: str = "time"  # what the lines are ratios of


def plot_ratios(panels: dict[tuple[int, int], Panel], path: Path, title: str, xlabel: str = "resolution (px)",
                x_percent: bool = False) -> None:
    """Time ratios against the image size, one panel per (row, column) of ``panels``: each line a
    backend or model over the panel's baseline with its 95% interval as error bars, 1 as a dashed line
    and the A/A noise band shaded around it; log axes. ``x_percent``: against a fraction (linear x axis
    in percent, labelled ``xlabel``) instead of the image size."""
    plt, rc = _setup_matplotlib()
    nrows = 1 + max(r for r, _ in panels)
    ncols = 1 + max(c for _, c in panels)
    with plt.rc_context(rc):
        fig, axes = plt.subplots(nrows, ncols, figsize=(4.3 * ncols + 0.6, 3.6 * nrows + 0.6), squeeze=False,
                                 layout="constrained")
        for (row, col), panel in sorted(panels.items()):
            ax = axes[row][col]
            sizes = sorted({float(x) for s in panel.series for x in s.xs} | {float(x) for x in panel.band_xs})
            if panel.band_xs:
                xs = np.asarray(panel.band_xs, dtype=float)
                band = np.asarray(panel.bands, dtype=float)
                if len(xs) == 1:  # one size: a short bar around it
                    xs, band = np.array([xs[0] / 1.08, xs[0] * 1.08]), np.repeat(band, 2)
                ax.fill_between(xs, 1 - band, 1 + band, color="0.8", alpha=0.8, linewidth=0, label="A/A noise band")
            ax.axhline(1.0, color="0.35", linestyle="--", linewidth=1.1)
            for i, s in enumerate(panel.series):
                st = _style(s.label, i)
                y = np.asarray(s.values, dtype=float)
                lo, hi = np.asarray(s.lows, dtype=float), np.asarray(s.highs, dtype=float)
                err = np.nan_to_num(np.vstack([y - lo, hi - y]).clip(min=0))
                ax.errorbar(s.xs, y, yerr=err, capsize=3, label=s.label, **st)
            values = [v for s in panel.series for v in (*s.values, *s.lows, *s.highs) if np.isfinite(v) and v > 0]
            values += [1 + b for b in panel.bands] + [1 - b for b in panel.bands if b < 1]
            top, bottom = max(values + [1 + RATIO_SPAN]), min(values + [1 - RATIO_SPAN])
            if x_percent:
                if top / bottom > 2:
                    ax.set_yscale("log")
                ax.xaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))
                ax.set_xlabel(xlabel)
            elif sizes:
                _res_axis(ax, [int(x) for x in sizes], log_y=top / bottom > 2)
            if top / bottom > 2:
                ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.set_ylim(bottom / 1.02, top * 1.02)
            plain_ticks = FuncFormatter(lambda v, _: f"{v:.3g}")
            ax.yaxis.set_major_formatter(plain_ticks)
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
            ax.set_title(panel.title, fontsize=11)
            ax.set_ylabel(f"{panel.quantity} ÷ {panel.baseline}'s")
            ax.legend(fontsize=8, frameon=False, loc="best")
        for row in range(nrows):
            for col in range(ncols):
                if (row, col) not in panels:
                    axes[row][col].set_visible(False)
        fig.suptitle(title, fontsize=12)
        fig.savefig(path)
        plt.close(fig)
