"""Benchmark results -> a report: ``report.md`` (and the same as ``report.html``) with tables and PNG
plots (matplotlib, Agg backend).

Input: the pytest-benchmark JSON written by the sweep in ``benchmarks/`` (timed rows in
``benchmarks[].extra_info`` and ``stats``, untimed rows in ``fastvit_unmeasured``, the environment in
``machine_info.fastvit``), or the sweep's JSONL rows (one row per line, the environment on the first
line), e.g. from an interrupted sweep; a line cut short is ignored.

Contents, per op (attention, whole ViT, add + LayerNorm, patch embedding) and pass (fwd, train):
latency and peak memory against tokens N on log-log axes with N and N^2 reference slopes; tables of
medians, memory, achieved FLOP/s (or GB/s) as a fraction of the device's measured matmul peak (or copy
bandwidth), speedups over the reference backends; fitted scaling exponents; the share of the
whole-model time spent in attention and the resolution where it passes one half; ``oom`` and
``skipped`` configurations written as such. ``compare`` adds a second run side by side with ratios.
"""
from __future__ import annotations

import html
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fastvit.errors import FastViTError

FIT_MIN_TOKENS = 1000  # exponents are fitted on the sizes with N >= this (N = 1025, 2305, 4097 by default)
SHARE_LEVEL = 0.5      # attention "overtakes the rest" when it takes this share of the model's time

KEY = ["op", "backend", "norm_backend", "patch_backend", "model", "resolution", "batch", "dtype", "pass"]
GROUP = ["op", "pass", "model", "dtype", "batch"]
OP_ORDER = ["attention", "vit", "layernorm", "patch_embed"]
OP_TITLES = {"attention": "Attention, op level: softmax(q k^T) v on (B, H, N, D)",
             "vit": "Whole ViT: images (B, 3, res, res) to logits", "layernorm": "Residual add + LayerNorm on (B, N, E)",
             "patch_embed": "Patch embedding (patchify, GEMM, CLS, position embedding)"}
OP_SHORT = {"attention": "attention", "vit": "ViT", "layernorm": "add + LayerNorm", "patch_embed": "patch embedding"}
PASS_TITLES = {"fwd": "forward (inference, no_grad)", "train": "training step (forward + backward)"}
REFERENCES = {"attention": ("naive", "sdpa"), "vit": ("naive", "sdpa"), "layernorm": ("torch",),
              "patch_embed": ("conv",)}
DEFAULT_NORM, DEFAULT_PATCH = "torch", "conv"
NUMERIC = ["resolution", "tokens", "batch", "flops", "bytes", "peak_mem_bytes", "median_s", "iqr_s", "q1_s",
           "q3_s", "rounds", "depth", "heads", "head_dim", "patch_size"]
COLORS = {"naive": "#d62728", "sdpa": "#1f77b4", "sdpa-math": "#ff7f0e", "sdpa-flash": "#2ca02c",
          "sdpa-efficient": "#9467bd", "sdpa-cudnn": "#8c564b", "xformers": "#e377c2", "triton": "#17becf",
          "torch": "#1f77b4", "conv": "#1f77b4", "einops": "#ff7f0e"}
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]


# -- loading ----------------------------------------------------------------------------------------
@dataclass
class Results:
    rows: pd.DataFrame
    env: dict = field(default_factory=dict)
    source: str = ""


def load_results(path: str | os.PathLike) -> Results:
    """Rows and environment of a pytest-benchmark JSON or a JSONL rows file."""
    path = Path(path)
    if not path.is_file():
        raise FastViTError(f"results file {str(path)!r} does not exist")
    text = path.read_text()
    env, rows, data = {}, [], None
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # JSONL
    if isinstance(data, dict) and "benchmarks" in data:
        env = dict((data.get("machine_info") or {}).get("fastvit") or {})
        env.setdefault("datetime", data.get("datetime"))
        if data.get("commit_info") and not env.get("git"):
            env["git"] = {"id": data["commit_info"].get("id"), "dirty": data["commit_info"].get("dirty")}
        for bench in data["benchmarks"]:
            row = dict(bench.get("extra_info") or {})
            if "op" not in row:
                continue
            stats = bench.get("stats") or {}
            for k in ("median", "iqr", "q1", "q3", "mean", "stddev", "min", "max"):
                if k in stats:
                    row[f"{k}_s"] = stats[k]
            row["rounds"] = stats.get("rounds", row.get("rounds"))
            row.setdefault("status", "ok")
            rows.append(row)
        rows += [dict(r) for r in data.get("fastvit_unmeasured") or []]
    else:
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # empty, or cut short by an interrupted sweep
            if not isinstance(record, dict):
                continue
            if "environment" in record:
                env = dict(record["environment"])
            elif "op" in record:
                rows.append(record)
    if not rows:
        raise FastViTError(f"no benchmark rows in {str(path)!r} (expected the sweep's pytest-benchmark JSON "
                           "or its JSONL rows)")
    return Results(_frame(rows), env, str(path))


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for col in KEY + ["status", "sdpa_kernel"]:
        if col not in df:
            df[col] = None
    for col in NUMERIC + ["mean_s", "stddev_s", "flops_per_s", "bytes_per_s", "kernel_median_s"]:
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df else np.nan
    df["status"] = df["status"].fillna("ok").astype(object)
    ok = df["status"] == "ok"
    df.loc[~ok, ["median_s", "iqr_s", "q1_s", "q3_s"]] = np.nan
    # CUDA rows: the CUDA-event times of the timed rounds are the kernels' own time; pytest-benchmark's
    # wall-clock figures add the synchronisation and Python around every round (kept as wall_*_s).
    events = ok & df["kernel_median_s"].notna()
    if events.any():
        for q in ("median", "q1", "q3"):
            df[f"wall_{q}_s"] = df[f"{q}_s"]
            kernel = pd.to_numeric(df.get(f"kernel_{q}_s", df["kernel_median_s"]), errors="coerce")
            df.loc[events, f"{q}_s"] = kernel.fillna(df["kernel_median_s"])[events]
        df.loc[events, "iqr_s"] = df["q3_s"] - df["q1_s"]
    df["flops_per_s"] = df["flops"] / df["median_s"]
    df["bytes_per_s"] = df["bytes"] / df["median_s"]
    df["impl"] = [_impl_label(r) for r in df.to_dict("records")]
    keys = [k for k in KEY if df[k].notna().any()]
    df = df.drop_duplicates(subset=keys, keep="last").reset_index(drop=True)
    return df


def _impl_label(row: dict) -> str:
    label = str(row["backend"])
    if row.get("op") == "vit":
        for name, default, value in (("norm", DEFAULT_NORM, row.get("norm_backend")),
                                     ("patch", DEFAULT_PATCH, row.get("patch_backend"))):
            if isinstance(value, str) and value != default:
                label += f", {name}={value}"
    return label


# -- analysis ---------------------------------------------------------------------------------------
@dataclass
class Fit:
    exponent: float
    points: int
    n_min: int
    n_max: int


def fit_exponent(tokens, values, min_tokens: int = FIT_MIN_TOKENS) -> Fit | None:
    """Least-squares slope of log(value) against log(N) over the sizes with N >= ``min_tokens`` (the
    largest three sizes when fewer than two reach it); None with fewer than two usable points."""
    pts = sorted((int(n), float(v)) for n, v in zip(tokens, values)
                 if n is not None and v is not None and np.isfinite(v) and v > 0 and n > 0)
    if len(pts) < 2:
        return None
    sel = [p for p in pts if p[0] >= min_tokens]
    if len(sel) < 2:
        sel = pts[-3:]
    n, v = np.log([p[0] for p in sel]), np.log([p[1] for p in sel])
    slope = float(np.polyfit(n, v, 1)[0])
    return Fit(slope, len(sel), sel[0][0], sel[-1][0])


def exponents(df: pd.DataFrame, min_tokens: int = FIT_MIN_TOKENS) -> pd.DataFrame:
    """One row per (op, pass, model, dtype, batch, impl): fitted latency and memory exponents."""
    out = []
    ok = df[df["status"] == "ok"]
    for key, g in ok.groupby(GROUP + ["impl"], sort=False, dropna=False):
        lat = fit_exponent(g["tokens"], g["median_s"], min_tokens)
        mem = fit_exponent(g["tokens"], g["peak_mem_bytes"], min_tokens)
        if lat is None and mem is None:
            continue
        rec = dict(zip(GROUP + ["impl"], key))
        rec.update(latency_exponent=lat.exponent if lat else np.nan, memory_exponent=mem.exponent if mem else np.nan,
                   n_min=(lat or mem).n_min, n_max=(lat or mem).n_max, points=(lat or mem).points)
        out.append(rec)
    return pd.DataFrame(out, columns=GROUP + ["impl", "latency_exponent", "memory_exponent", "n_min", "n_max",
                                              "points"])


def attention_share(df: pd.DataFrame) -> pd.DataFrame:
    """depth x op-level attention median / whole-model median, per backend, batch, dtype, pass, size."""
    on = ["model", "batch", "dtype", "pass", "backend", "resolution"]
    vit = df[(df["op"] == "vit") & (df["impl"] == df["backend"])]
    att = df[(df["op"] == "attention") & (df["status"] == "ok")]
    if vit.empty or att.empty:
        return pd.DataFrame(columns=on + ["tokens", "share", "status"])
    merged = vit.merge(att[on + ["median_s"]], on=on, how="inner", suffixes=("", "_attn"))
    depth = merged["depth"].fillna(merged["model"].map(_preset_depth))
    merged["share"] = depth * merged["median_s_attn"] / merged["median_s"]
    merged.loc[merged["status"] != "ok", "share"] = np.nan
    return merged[on + ["tokens", "share", "status", "patch_size"]].reset_index(drop=True)


def _preset_depth(model) -> float:
    from fastvit.presets import PRESETS

    return float(PRESETS.get(model, {}).get("depth", np.nan))


@dataclass
class Crossover:
    resolution: float | None  # where the share passes the level; None when it does not within the sweep
    text: str                 # for a table cell: "≈ 545 px (N ≈ 1,160)", "not reached in the sweep (...)"
    kind: str = "crossed"     # "crossed", "not reached", "already", "no data"

    def sentence(self) -> str:
        level = f"{100 * SHARE_LEVEL:.0f}%"
        if self.kind == "crossed":
            return f"passes {level} at {self.text}"
        if self.kind == "already":
            return f"is over {level} from the smallest size on ({self.text})"
        if self.kind == "not reached":
            return f"stays under {level} in the sweep ({self.text.split('(', 1)[-1].rstrip(')')})"
        return "was not measured"


def crossover(resolutions, shares, level: float = SHARE_LEVEL, patch: int | None = None) -> Crossover:
    """The resolution where ``shares`` first rises through ``level``, interpolated linearly in
    log(resolution) between the two measured sizes around it."""
    pts = sorted((float(r), float(s)) for r, s in zip(resolutions, shares) if s is not None and np.isfinite(s))
    if not pts:
        return Crossover(None, "no measurement", "no data")
    if pts[0][1] >= level:
        return Crossover(None, f"already {100 * pts[0][1]:.0f}% at {pts[0][0]:.0f} px, the smallest size",
                         "already")
    for (r0, s0), (r1, s1) in zip(pts, pts[1:]):
        if s0 < level <= s1:
            x = math.log(r0) + (level - s0) / (s1 - s0) * (math.log(r1) - math.log(r0))
            res = math.exp(x)
            tokens = f" (N ≈ {(res / patch) ** 2 + 1:,.0f})" if patch else ""
            return Crossover(res, f"≈ {res:.0f} px{tokens}")
    top = max(pts, key=lambda p: p[1])
    return Crossover(None, f"not reached in the sweep (at most {100 * top[1]:.0f}% at {top[0]:.0f} px)",
                     "not reached")


# -- formatting -------------------------------------------------------------------------------------
def _num(x: float, digits: int = 3) -> str:
    if x is None or not np.isfinite(x):
        return "–"
    if abs(x) >= 10 ** digits:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def _exp(x: float) -> str:
    return f"{x:.2f}" if x is not None and np.isfinite(x) else "–"


def _time_unit(seconds) -> tuple[str, float]:
    vals = [v for v in seconds if v is not None and np.isfinite(v)]
    top = max(vals) if vals else 1.0
    if top >= 10:
        return "s", 1.0
    if top >= 1e-3:
        return "ms", 1e3
    return "µs", 1e6


def _mem_unit(nbytes) -> tuple[str, float]:
    vals = [v for v in nbytes if v is not None and np.isfinite(v)]
    top = max(vals) if vals else 0.0
    if top >= 10 * 2 ** 30:
        return "GiB", 2.0 ** -30
    if top >= 2 ** 20:
        return "MiB", 2.0 ** -20
    return "KiB", 2.0 ** -10


def _rate_unit(rates, kind: str) -> tuple[str, float]:
    vals = [v for v in rates if v is not None and np.isfinite(v)]
    top = max(vals) if vals else 0.0
    if kind == "flops":
        return ("TFLOP/s", 1e-12) if top >= 1e12 else ("GFLOP/s", 1e-9)
    return ("TB/s", 1e-12) if top >= 1e12 else ("GB/s", 1e-9)


def md_table(header: list[str], rows: list[list[str]], numeric: bool = True, text_cols: int = 1) -> str:
    """A markdown table; the first ``text_cols`` columns left-aligned, the rest right-aligned if ``numeric``."""
    align = ["---" if i < text_cols or not numeric else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _status_kind(status: str) -> str:
    """A row's status as one word: ok, oom, error (the configuration failed) or skipped (not run)."""
    if status in ("ok", "oom"):
        return status
    return "error" if status.startswith("error") else "skipped"


class _Notes:
    """Numbered footnotes for the reasons of skipped (or failed) configurations."""

    def __init__(self):
        self.reasons: list[tuple[str, str]] = []  # (kind, reason)

    def cell(self, status: str) -> str:
        if status == "oom":
            return "**oom**"
        kind, reason = _status_kind(status), status.split(":", 1)[1].strip() if ":" in status else status
        if (kind, reason) not in self.reasons:
            self.reasons.append((kind, reason))
        number = self.reasons.index((kind, reason)) + 1
        return f"skipped [{number}]" if kind == "skipped" else f"**{kind}** [{number}]"

    def render(self) -> str:
        return "\n".join(f"[{i + 1}] {kind}: {r}  " for i, (kind, r) in enumerate(self.reasons))


def _res_header(g: pd.DataFrame) -> tuple[list[int], list[str]]:
    sizes = g[["resolution", "tokens"]].drop_duplicates().sort_values("resolution")
    res = [int(r) for r in sizes["resolution"]]
    return res, [f"{int(r)} px (N={int(n):,})" for r, n in zip(sizes["resolution"], sizes["tokens"])]


def _impls(g: pd.DataFrame, require_ok: bool = False) -> list[str]:
    names = list(dict.fromkeys(g["impl"]))
    if require_ok:
        names = [n for n in names if (g[(g["impl"] == n)]["status"] == "ok").any()]
    return names


def _pivot_table(g: pd.DataFrame, cell, notes: _Notes, require_ok: bool = False) -> str:
    res, header = _res_header(g)
    rows = []
    for impl in _impls(g, require_ok):
        cells = []
        for r in res:
            hit = g[(g["impl"] == impl) & (g["resolution"] == r)]
            if hit.empty:
                cells.append("")
                continue
            row = hit.iloc[-1]
            cells.append(cell(row) if row["status"] == "ok" else notes.cell(row["status"]))
        rows.append([impl] + cells)
    return md_table(["backend"] + header, rows)


# -- plots ------------------------------------------------------------------------------------------
def _style(impl: str, index: int) -> dict:
    base = impl.split(",")[0].split("+")[0]
    color = COLORS.get(base)
    if color is None:
        import matplotlib

        color = matplotlib.colormaps["tab10"](index % 10)
    # alternate filled and hollow markers so that backends with equal results stay distinguishable
    return dict(color=color, marker=MARKERS[index % len(MARKERS)], markerfacecolor=color if index % 2 == 0 else "white",
                linestyle="--" if "+compile" in impl else "-", linewidth=1.8, markersize=6)


def _setup_matplotlib():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt, {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
                 "xtick.labelsize": 10, "ytick.labelsize": 10, "figure.dpi": 100, "savefig.dpi": 150,
                 "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": True}


def _token_axis(ax, tokens: list[int], patch: int | None):
    from matplotlib.ticker import FixedLocator, NullLocator

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


def _plot_scaling(g: pd.DataFrame, path: Path, title: str, other: pd.DataFrame | None = None,
                  other_label: str = "") -> None:
    plt, rc = _setup_matplotlib()
    tokens = sorted(int(t) for t in g["tokens"].dropna().unique())
    patch = int(g["patch_size"].dropna().iloc[0]) if g["patch_size"].notna().any() else None
    ok = g[g["status"] == "ok"]
    t_unit, t_scale = _time_unit(ok["median_s"])
    m_unit, m_scale = _mem_unit(ok["peak_mem_bytes"])
    panels = [("median_s", f"median latency ({t_unit})", t_scale, "latency")]
    if other is None:
        panels.append(("peak_mem_bytes", f"peak memory ({m_unit})", m_scale, "peak memory"))
    with plt.rc_context(rc):
        fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels) + 2.2, 4.6), squeeze=False,
                                 layout="constrained")
        handles = {}
        for ax, (col, ylabel, scale, name) in zip(axes[0], panels):
            firsts = []
            for i, impl in enumerate(_impls(g)):
                d = g[g["impl"] == impl].sort_values("tokens")
                good = d[(d["status"] == "ok") & d[col].notna() & (d[col] > 0)]
                bad = d[d["status"] != "ok"]
                label = impl
                kernels = d["sdpa_kernel"].dropna().unique() if d["backend"].iloc[0] == "sdpa" else []
                if len(kernels) == 1:  # plain sdpa overlaps the pinned kernel it chose: say which
                    label += f" (ran {kernels[0]})"
                if len(bad) and len(good):
                    kinds = sorted({_status_kind(s) for s in bad["status"]})
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


def _plot_share(share: pd.DataFrame, path: Path, title: str) -> None:
    from matplotlib.ticker import FixedLocator, NullLocator, PercentFormatter

    plt, rc = _setup_matplotlib()
    passes = [p for p in ("fwd", "train") if p in set(share["pass"])] or sorted(set(share["pass"]))
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


# -- report -----------------------------------------------------------------------------------------
def _env_rows(env: dict) -> list[list[str]]:
    git = env.get("git") or {}
    commit = (git.get("id") or "")[:12] + (" (uncommitted changes)" if git.get("dirty") else "")
    peaks = env.get("matmul_flops_per_s") or {}
    rows = [
        ["device", f"{env.get('device_name', '?')} ({env.get('device', '?')})"],
        ["CPU threads", str(env.get("threads", ""))],
        ["torch", str(env.get("torch"))], ["CUDA", str(env.get("cuda"))], ["cuDNN", str(env.get("cudnn"))],
        ["triton", str(env.get("triton"))],
        ["Triton kernels' autotuning (FASTVIT_AUTOTUNE)", str(env.get("triton_autotune", "–"))],
        ["xformers", str(env.get("xformers"))],
        ["python", str(env.get("python"))], ["platform", str(env.get("platform"))],
        ["git commit", commit or "unknown"], ["date", str(env.get("datetime") or "")],
        ["measured matmul peak", ", ".join(f"{d}: {_num(v / 1e9)} GFLOP/s" for d, v in peaks.items()) or "–"],
        ["measured copy bandwidth", f"{_num(env['copy_bytes_per_s'] / 1e9)} GB/s" if env.get("copy_bytes_per_s")
         else "–"],
        ["time budget per configuration", f"{env.get('time_budget_s')} s" if env.get("time_budget_s") else "–"],
        ["timing", str(env.get("timing_method", "–"))],
        ["peak memory", str(env.get("peak_memory_method", "–"))],
    ]
    return rows


def _one_setting(df: pd.DataFrame) -> bool:
    """Whether one model, dtype and batch size cover every row (figures then need no suffix)."""
    return len(df[["model", "dtype", "batch"]].drop_duplicates()) == 1


def _fig_name(key: dict, unique: bool) -> str:
    name = f"{key['op']}_{key['pass']}"
    if not unique:
        name += f"_{key['model']}_{key['dtype']}_b{key['batch']}"
    return name + ".png"


def _group_title(key: dict, g: pd.DataFrame, env: dict) -> str:
    extra = ""
    if key["op"] == "attention" and g["heads"].notna().any():
        extra = f", H={int(g['heads'].dropna().iloc[0])}, D={int(g['head_dim'].dropna().iloc[0])}"
    device = g["device_name"].dropna().iloc[0] if "device_name" in g and g["device_name"].notna().any() else \
        env.get("device_name", "")
    return (f"{OP_SHORT.get(key['op'], key['op'])}, {PASS_TITLES.get(key['pass'], key['pass'])}\n"
            f"{key['model']}, B={int(key['batch'])}{extra}, {key['dtype']}, {device}")


def _groups(df: pd.DataFrame):
    order = {op: i for i, op in enumerate(OP_ORDER)}
    keys = df[GROUP].drop_duplicates().to_dict("records")
    keys.sort(key=lambda k: (order.get(k["op"], 99), k["pass"] != "fwd", str(k["model"]), str(k["dtype"]),
                             k["batch"]))
    for key in keys:
        yield key, _select(df, key)


def _select(df: pd.DataFrame, key: dict) -> pd.DataFrame:
    mask = np.logical_and.reduce([(df[c] == key[c]).to_numpy() for c in GROUP])
    return df[mask]


def _rate_table(g: pd.DataFrame, ok: pd.DataFrame, kind: str, yardstick: float | None, what: str,
                notes: _Notes) -> list[str]:
    """Achieved FLOP/s or bytes/s per backend and size, with its percentage of the device's yardstick."""
    col = f"{kind}_per_s"
    unit, scale = _rate_unit(ok[col], kind)

    def cell(r):
        frac = f" ({100 * r[col] / yardstick:.0f}%)" if yardstick else ""
        return _num(r[col] * scale) + frac

    caption = f" (% of {what}, {_num(yardstick * scale)} {unit})" if yardstick else ""
    return [f"Achieved {unit}{caption}:", "", _pivot_table(g, cell, notes, require_ok=True), ""]


def _section(key: dict, g: pd.DataFrame, env: dict, fig: str) -> list[str]:
    op = key["op"]
    notes = _Notes()
    out = [f"### {OP_SHORT.get(op, op)}, {PASS_TITLES.get(key['pass'], key['pass'])} "
           f"({key['model']}, B={int(key['batch'])}, {key['dtype']})", "", f"*{OP_TITLES.get(op, op)}.*", "",
           f"![{op} {key['pass']}]({fig})", ""]
    ok = g[g["status"] == "ok"]
    unit, scale = _time_unit(ok["median_s"])
    out += [f"Median latency ({unit}) [interquartile range]:", "",
            _pivot_table(g, lambda r: f"{_num(r['median_s'] * scale)} [{_num(r['iqr_s'] * scale, 2)}]", notes), ""]
    munit, mscale = _mem_unit(ok["peak_mem_bytes"])
    out += [f"Peak memory ({munit}), measured in a call of its own beyond the inputs already allocated:", "",
            _pivot_table(g, lambda r: _num(r["peak_mem_bytes"] * mscale), notes), ""]
    peak = (env.get("matmul_flops_per_s") or {}).get(key["dtype"])
    if ok["flops"].notna().any() and op != "layernorm":
        out += _rate_table(g, ok, "flops", peak, f"the measured {key['dtype']} matmul peak", notes)
    if ok["bytes"].notna().any():
        out += _rate_table(g, ok, "bytes", env.get("copy_bytes_per_s"), "the measured copy bandwidth", notes)
    for ref in REFERENCES.get(op, ()):
        base = ok[ok["impl"] == ref].set_index("resolution")["median_s"]
        if base.empty or len(_impls(g, True)) < 2:
            continue

        def speedup(r, base=base):
            t = base.get(r["resolution"])
            return f"{t / r['median_s']:.2f}×" if t is not None and np.isfinite(t) else "–"

        out += [f"Speedup over {ref} (its median / this backend's median; > 1 is faster):", "",
                _pivot_table(g, speedup, notes, require_ok=True), ""]
    kernels = g[(g["backend"] == "sdpa") & g["sdpa_kernel"].notna()]["sdpa_kernel"].unique()
    if len(kernels):
        out += [f"Kernel PyTorch chose for `sdpa`: {', '.join(f'`{k}`' for k in kernels)}.", ""]
    if notes.reasons:
        out += [notes.render(), ""]
    return out


def _exponent_section(df: pd.DataFrame) -> list[str]:
    exps = exponents(df)
    if exps.empty:
        return []
    order = {op: i for i, op in enumerate(OP_ORDER)}
    exps = exps.sort_values(by=["op", "pass"], key=lambda s: s.map(order) if s.name == "op" else s, kind="stable")
    rows = [[OP_SHORT.get(r["op"], r["op"]), r["pass"], r["impl"], _exp(r["latency_exponent"]),
             _exp(r["memory_exponent"]), f"{int(r['n_min']):,}–{int(r['n_max']):,} ({int(r['points'])})"]
            for r in exps.to_dict("records")]
    return ["## Scaling exponents", "",
            f"Slope k of a least-squares line through log(value) against log(N), value ∝ N^k, over the sizes "
            f"with N ≥ {FIT_MIN_TOKENS:,} (the largest three sizes where fewer than two reach it). k ≈ 2: "
            "quadratic in tokens, like attention's N² score matrix; k ≈ 1: linear, like everything else; "
            "k < 1: fixed costs (launches, workspaces) still weigh at these sizes.", "",
            md_table(["op", "pass", "backend", "latency exponent", "memory exponent", "fitted over N (points)"],
                     rows, text_cols=3), ""]


def _share_section(df: pd.DataFrame, out_dir: Path) -> tuple[list[str], list[dict]]:
    share = attention_share(df)
    if share.empty:
        return [], []
    lines = ["## Share of the whole-model time spent in attention", "",
             "depth × (op-level attention median) / (whole-ViT median), same backend, batch, dtype and pass. "
             "It counts softmax(q k^T) v only; the qkv and output projections are part of \"the rest\". "
             f"Attention overtakes the rest where the share passes {100 * SHARE_LEVEL:.0f}% "
             "(interpolated linearly in log resolution between the two sizes around it). A share above 100% "
             "means the op-level call ran slower than the same attention inside the model (its own caches "
             "and allocations).", "",
             "![attention share](attention_share.png)", ""]
    crossings = []
    for (model, batch, dtype, p), d in share.groupby(["model", "batch", "dtype", "pass"], sort=False):
        notes = _Notes()
        res = sorted(int(r) for r in d["resolution"].unique())
        rows = []
        for b in dict.fromkeys(d["backend"]):
            s = d[d["backend"] == b]
            cells = []
            for r in res:
                hit = s[s["resolution"] == r]
                if hit.empty:
                    cells.append("")
                elif hit.iloc[0]["status"] != "ok":
                    cells.append(notes.cell(hit.iloc[0]["status"]))
                else:
                    cells.append(f"{100 * hit.iloc[0]['share']:.0f}%")
            patch = int(s["patch_size"].dropna().iloc[0]) if s["patch_size"].notna().any() else None
            c = crossover(s["resolution"], s["share"], patch=patch)
            crossings.append({"model": model, "batch": batch, "dtype": dtype, "pass": p, "backend": b,
                              "crossover": c})
            rows.append([b] + cells + [c.text])
        lines += [f"{model}, B={int(batch)}, {dtype}, {PASS_TITLES.get(p, p)}:", "",
                  md_table(["backend"] + [f"{r} px" for r in res] + ["attention > rest from"], rows), ""]
        if notes.reasons:
            lines += [notes.render(), ""]
    title = f"Share of ViT time in attention ({share['model'].iloc[0]}, B={int(share['batch'].iloc[0])})"
    _plot_share(share, out_dir / "attention_share.png", title)
    return lines, crossings


# -- the Triton kernels' performance targets ---------------------------------------------------------
ATTENTION_PEERS = ("sdpa-flash", "sdpa-efficient", "sdpa-cudnn", "xformers")
LONG_SEQUENCE = 1025   # attention targets differ below and above this many tokens
BIG_BATCH = 64         # the short-sequence attention target is set for batches of at least this


def _attention_target(pass_: str, tokens: int, batch: int) -> float | None:
    """fwd: >= 0.9x the best peer from N = 1025 on, >= 1.0x below it at batch >= 64; train: >= 0.8x
    (the same batch condition below N = 1025). None where no target is set."""
    if tokens < LONG_SEQUENCE and batch < BIG_BATCH:
        return None
    if pass_ == "train":
        return 0.8
    return 0.9 if tokens >= LONG_SEQUENCE else 1.0


def kernel_targets(df: pd.DataFrame, env: dict) -> pd.DataFrame:
    """The measured ratio behind each performance target of fastvit's Triton kernels, per configuration.

    - attention: the best median of the SDPA kernels and xformers / triton's median (see
      :func:`_attention_target` for the targets);
    - add + LayerNorm: achieved bytes/s as a fraction of the measured copy bandwidth (>= 0.85), and the
      speedup over the torch backend (>= 1.5);
    - patch embedding: the speedup over the conv backend (>= 1.3).

    A triton row that was not timed (oom, skipped, error) gives a row with no measurement and its
    status, which counts as not met where a goal is set; a target without any timed peer gives no row.
    """
    cols = GROUP + ["resolution", "tokens", "target", "measured", "goal", "met", "against", "status"]
    out = []
    rows = df[df["impl"] == df["backend"]]
    bandwidth = env.get("copy_bytes_per_s")
    for key, g in _groups(rows):
        triton = g[g["impl"] == "triton"].set_index("resolution")
        if not {_status_kind(st) for st in triton["status"]} & {"ok", "oom", "error"}:
            continue  # triton not run in this setting at all (e.g. a CPU sweep): no targets to judge
        for res, t in triton.iterrows():
            at = g[(g["resolution"] == res) & (g["status"] == "ok")]
            rec = {**key, "resolution": int(res), "tokens": int(t["tokens"]), "status": t["status"]}
            if key["op"] == "attention":
                peers = at[at["impl"].isin(ATTENTION_PEERS)]
                goal = _attention_target(key["pass"], int(t["tokens"]), int(key["batch"]))
                if peers.empty:
                    continue
                best = peers.loc[peers["median_s"].idxmin()]
                timed = sorted(peers["impl"])
                out.append({**rec, "target": "speed vs best of SDPA kernels and xformers",
                            "measured": best["median_s"] / t["median_s"], "goal": goal,
                            "against": best["impl"] + (f" (of {', '.join(timed)})" if len(timed) > 1 else "")})
            elif key["op"] in ("layernorm", "patch_embed"):
                ref, goal = ("torch", 1.5) if key["op"] == "layernorm" else ("conv", 1.3)
                base = at[at["impl"] == ref]
                if len(base):
                    out.append({**rec, "target": f"speedup over {ref}", "against": ref, "goal": goal,
                                "measured": base["median_s"].iloc[0] / t["median_s"]})
                if key["op"] == "layernorm" and bandwidth and (t["status"] != "ok" or np.isfinite(t["bytes_per_s"])):
                    out.append({**rec, "target": "fraction of measured copy bandwidth", "against": "copy",
                                "goal": 0.85, "measured": t["bytes_per_s"] / bandwidth})
    frame = pd.DataFrame(out, columns=cols)
    order = {op: i for i, op in enumerate(OP_ORDER)}
    frame = frame.sort_values(["op", "pass", "model", "dtype", "resolution", "batch"], kind="stable",
                              key=lambda c: c.map(order) if c.name == "op" else c).reset_index(drop=True)
    # True / False where a goal is set, None where not (object dtype keeps the three apart)
    frame["met"] = pd.Series([None if not np.isfinite(g) else bool(np.isfinite(m) and m >= g)
                              for m, g in zip(frame["measured"].astype(float), frame["goal"].astype(float))],
                             index=frame.index, dtype=object)
    return frame


def _targets_section(df: pd.DataFrame, env: dict) -> list[str]:
    targets = kernel_targets(df, env)
    if targets.empty:
        return []
    rows = []
    for r in targets.to_dict("records"):
        goal = r["goal"]
        has_goal = goal is not None and np.isfinite(goal)
        fmt = (lambda x: f"{100 * x:.0f}%") if r["against"] == "copy" else (lambda x: f"{x:.2f}×")
        timed = r["status"] == "ok"
        verdict = "–" if r["met"] is None else ("met" if r["met"] else "**not met**")
        if not timed:
            verdict = f"**not measured** ({_status_kind(r['status'])})" + ("" if r["met"] is None else ": not met")
        rows.append([OP_SHORT.get(r["op"], r["op"]), r["pass"], r["target"], f"{r['model']}, B={int(r['batch'])}, "
                     f"{r['dtype']}", f"{r['resolution']} px (N={r['tokens']:,})",
                     fmt(r["measured"]) if timed else "–",
                     f"≥ {fmt(goal)}" if has_goal else "none", r["against"], verdict])
    judged = targets[targets["met"].notna()]
    met = int(judged["met"].astype(bool).sum())
    return ["## Triton kernels against their targets", "",
            f"{met} of {len(judged)} targets met. Attention: the best median among "
            f"{', '.join(ATTENTION_PEERS)} divided by triton's (> 1: triton is faster); the forward target is "
            f"0.9× from N = {LONG_SEQUENCE:,} on and 1.0× below it at batch ≥ {BIG_BATCH}, a training step "
            f"0.8×; below N = {LONG_SEQUENCE:,} with smaller batches no target is set. add + LayerNorm: "
            "≥ 85% of the measured copy bandwidth (bytes as in the GB/s tables) and ≥ 1.5× the torch backend; "
            "patch embedding: ≥ 1.3× the conv backend.", "",
            md_table(["op", "pass", "target", "setting", "size", "measured", "goal", "against", "verdict"], rows,
                     text_cols=4), ""]


def _summary(df: pd.DataFrame, crossings: list[dict]) -> list[str]:
    lines = []
    exps = exponents(df)
    att = exps[exps["op"] == "attention"]
    for p in ("fwd", "train"):
        sel = att[att["pass"] == p]
        parts = [f"{r['impl']} {_exp(r['memory_exponent'])}" for r in sel.to_dict("records")
                 if r["impl"] in ("naive", "sdpa") and np.isfinite(r["memory_exponent"])]
        lparts = [f"{r['impl']} {_exp(r['latency_exponent'])}" for r in sel.to_dict("records")
                  if r["impl"] in ("naive", "sdpa") and np.isfinite(r["latency_exponent"])]
        if parts or lparts:
            lines.append(f"- Attention {PASS_TITLES[p]}: peak-memory exponent {', '.join(parts) or '–'}; "
                         f"latency exponent {', '.join(lparts) or '–'} (fitted over N ≥ {FIT_MIN_TOKENS:,}).")
    for c in crossings:
        if c["backend"] in ("naive", "sdpa"):
            lines.append(f"- ViT {PASS_TITLES.get(c['pass'], c['pass'])} with {c['backend']}: attention's share of "
                         f"the model's time {c['crossover'].sentence()}.")
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


def _compare_section(res: Results, other: Results, out_dir: Path) -> list[str]:
    df, odf = res.rows, other.rows
    lines = ["## Comparison", "",
             f"This run: `{res.source}`; other run: `{other.source}`. Ratios are other / this: a time ratio "
             "above 1 means this run is faster.", "",
             md_table(["", "this run", "other run"],
                      [[a[0], a[1], b[1]] for a, b in zip(_env_rows(res.env), _env_rows(other.env))],
                      numeric=False), ""]
    on = [k for k in KEY if k not in ("norm_backend", "patch_backend")] + ["impl"]
    merged = df.merge(odf, on=on, how="outer", suffixes=("", "_other"), indicator=True)
    unique = _one_setting(df)
    one_sided = []
    for key, g in _groups(merged):
        if g["status"].isna().all() or g["status_other"].isna().all():
            side = "the other run" if g["status"].isna().all() else "this run"
            one_sided.append(f"{OP_SHORT.get(key['op'], key['op'])} {key['pass']} ({key['model']}, "
                             f"B={int(key['batch'])}, {key['dtype']}): only in {side}")
            continue
        notes = _Notes()
        res_list = sorted(int(r) for r in g["resolution"].dropna().unique())
        allvals = pd.concat([g["median_s"], g["median_s_other"]])
        unit, scale = _time_unit(allvals)
        mu, ms = _mem_unit(pd.concat([g["peak_mem_bytes"], g["peak_mem_bytes_other"]]))
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
                fa = _cmp_cell(a, h["median_s"], scale, notes)
                fb_ = _cmp_cell(b, h["median_s_other"], scale, notes)
                ratio = (f" (×{h['median_s_other'] / h['median_s']:.2f})"
                         if a == "ok" and b == "ok" else "")
                tcells.append(f"{fa} / {fb_}{ratio}")
                ma = _cmp_cell(a, h["peak_mem_bytes"], ms, notes)
                mb = _cmp_cell(b, h["peak_mem_bytes_other"], ms, notes)
                mratio = (f" (×{h['peak_mem_bytes_other'] / h['peak_mem_bytes']:.2f})"
                          if a == "ok" and b == "ok" and h["peak_mem_bytes"] > 0 else "")
                mcells.append(f"{ma} / {mb}{mratio}")
            trows.append([impl] + tcells)
            mrows.append([impl] + mcells)
        header = ["backend"] + [f"{r} px" for r in res_list]
        fig = "compare_" + _fig_name(key, unique)
        this_g, other_g = _select(df, key), _select(odf, key)
        if len(this_g):
            _plot_scaling(this_g, out_dir / fig, _group_title(key, this_g, res.env) + "  (dotted: other run)",
                          other=other_g, other_label="other")
        lines += [f"### {OP_SHORT.get(key['op'], key['op'])}, {PASS_TITLES.get(key['pass'], key['pass'])} "
                  f"({key['model']}, B={int(key['batch'])}, {key['dtype']})", "",
                  f"![compare {key['op']} {key['pass']}]({fig})", "",
                  f"Median latency ({unit}), this / other (other ÷ this):", "", md_table(header, trows), "",
                  f"Peak memory ({mu}), this / other (other ÷ this):", "", md_table(header, mrows), ""]
        if notes.reasons:
            lines += [notes.render(), ""]
    if one_sided:
        lines += ["Not compared (the configuration was measured in one run only):", ""]
        lines += [f"- {t}" for t in one_sided] + [""]
    return lines


def _cmp_cell(status, value, scale, notes: _Notes) -> str:
    if status is None or (isinstance(status, float) and np.isnan(status)):
        return "–"
    if status != "ok":
        return notes.cell(status)
    return _num(value * scale)


def write_report(results, out_dir, compare=None) -> Path:
    """Write ``out_dir/report.md`` and its PNG figures; return the path of report.md.

    Args:
        results: path of the sweep's pytest-benchmark JSON, or of its JSONL rows (a partial file from an
            interrupted sweep works too).
        out_dir: directory for report.md and the figures (created if needed).
        compare: optional second results file (JSON or JSONL) to put side by side, with ratios.
    """
    res = load_results(results)
    other = load_results(compare) if compare else None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df, env = res.rows, res.env
    device = env.get("device_name") or (df["device_name"].dropna().iloc[0] if "device_name" in df else "?")
    unique = _one_setting(df)

    sections = []
    for key, g in _groups(df):
        fig = _fig_name(key, unique)
        _plot_scaling(g, out_dir / fig, _group_title(key, g, env))
        sections.append(_section(key, g, env, fig))
    share_lines, crossings = _share_section(df, out_dir)

    lines = [f"# fastvit resolution sweep: {device}", "",
             "Tokens N = (resolution / patch)² + 1. Attention's work grows as N² (and its memory too, where the "
             "N × N scores are materialized); everything else in a ViT grows as N. Each configuration is timed "
             "with pytest-benchmark (median and interquartile range over the rounds"
             + ("; on CUDA the CUDA-event times of those rounds" if df["kernel_median_s"].notna().any() else "")
             + "); peak memory is measured in a separate call. See reports/README.md of fastvit for how to read this report.", "",
             "## Summary", "", *_summary(df, crossings), "",
             "## Environment", "", md_table(["", ""], _env_rows(env), numeric=False), ""]
    if env.get("command"):
        lines += ["Produced by:", "", f"```\n{env['command']}\n```", ""]
    lines += _exponent_section(df)
    lines += _targets_section(df, env)
    lines += share_lines
    lines += ["## Results by op and pass", ""]
    for s in sections:
        lines += s
    if other is not None:
        lines += _compare_section(res, other, out_dir)
    path = out_dir / "report.md"
    text = "\n".join(lines).rstrip() + "\n"
    path.write_text(text)
    title = lines[0].lstrip("# ")
    (out_dir / "report.html").write_text(markdown_to_html(text, title))
    return path


# -- HTML -------------------------------------------------------------------------------------------
_HTML_STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;line-height:1.4}"
               "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:2px 8px}"
               "td.r,th.r{text-align:right}img{max-width:100%}pre{background:#f4f4f4;padding:0.5em;"
               "white-space:pre-wrap}")


def _inline_html(text: str) -> str:
    """Escape, then render the inline markup the report uses: images, `code`, **bold**, *italic*."""
    out = html.escape(text, quote=False)
    out = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", r'<img alt="\1" src="\2">', out)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)
    return re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", r"<i>\1</i>", out)


def _html_row(cells: list[str], tag: str, right: list[bool]) -> str:
    """One table row; columns whose markdown alignment is right (``---:``) get class ``r``."""
    return "<tr>" + "".join(f'<{tag}{" class=r" if k < len(right) and right[k] else ""}>{_inline_html(c)}</{tag}>'
                            for k, c in enumerate(cells)) + "</tr>"


def markdown_to_html(text: str, title: str = "fastvit report") -> str:
    """A standalone HTML page for the markdown subset report.md is written in (headings, tables,
    bullet lists, code blocks, images, paragraphs), so the report reads in a browser without extra
    packages."""
    body, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            body.append("<pre>" + html.escape("\n".join(lines[i + 1:j])) + "</pre>")
            i = j + 1
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline_html(line[level:].strip())}</h{level}>")
            i += 1
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            right = [c.endswith(":") for c in rows[1]] if len(rows) > 1 else []
            body.append("<table>" + _html_row(rows[0], "th", right)
                        + "".join(_html_row(r, "td", right) for r in rows[2:]) + "</table>")
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline_html(lines[i][2:])}</li>")
                i += 1
            body.append("<ul>" + "".join(items) + "</ul>")
        elif line.strip():
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("#", "|", "- ", "```")):
                para.append(_inline_html(lines[i].rstrip()))
                i += 1
            body.append("<p>" + "<br>".join(para) + "</p>")
        else:
            i += 1
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_HTML_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


__all__ = ["write_report", "load_results", "fit_exponent", "exponents", "attention_share", "crossover",
           "kernel_targets", "markdown_to_html", "Results", "Fit", "Crossover", "FIT_MIN_TOKENS"]
