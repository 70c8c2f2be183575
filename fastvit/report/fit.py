"""Scaling exponents (value ∝ N^k, fitted in log-log), the share of the whole-model time spent in
attention, and the resolution at which that share passes one half."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fastvit.models.presets import PRESETS  # the model presets' depths
from fastvit.report.facts import GROUP, SHARE_GROUP, SHARE_KEY

FIT_MIN_TOKENS = 1000  # exponents are fitted on the sizes with N >= this (N = 1025, 2305, 4097 by default)
SHARE_LEVEL = 0.5      # attention "overtakes the rest" when it takes this share of the model's time


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
    vit = df[(df["op"] == "vit") & (df["impl"] == df["backend"])]
    att = df[(df["op"] == "attention") & (df["status"] == "ok")]
    if vit.empty or att.empty:
        return pd.DataFrame(columns=SHARE_KEY + ["tokens", "share", "status"])
    merged = vit.merge(att[SHARE_KEY + ["median_s"]], on=SHARE_KEY, how="inner", suffixes=("", "_attn"))
    depth = merged["depth"].fillna(merged["model"].map(preset_depth))
    merged["share"] = depth * merged["median_s_attn"] / merged["median_s"]
    merged.loc[merged["status"] != "ok", "share"] = np.nan
    return merged[SHARE_KEY + ["tokens", "share", "status", "patch_size"]].reset_index(drop=True)


def preset_depth(model) -> float:
    """The number of blocks of a model preset (NaN for a name that is not one)."""
    preset = PRESETS.get(model)
    return float(preset.values.get("depth", np.nan)) if preset is not None else np.nan


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


def crossings(share: pd.DataFrame) -> list[dict]:
    """The crossover of every backend's share, per model, batch, dtype and pass, in table order: dicts
    with those keys, ``backend`` and ``crossover``."""
    out = []
    for (model, batch, dtype, p), d in share.groupby(SHARE_GROUP, sort=False):
        for b in dict.fromkeys(d["backend"]):
            s = d[d["backend"] == b]
            patch = int(s["patch_size"].dropna().iloc[0]) if s["patch_size"].notna().any() else None
            out.append({"model": model, "batch": batch, "dtype": dtype, "pass": p, "backend": b,
                        "crossover": crossover(s["resolution"], s["share"], patch=patch)})
    return out
