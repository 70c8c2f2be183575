"""Scaling exponents (value ∝ N^k, fitted in log-log), attention's share of the whole-model time and the
resolution at which it passes one half, and the resolution at which one architecture becomes costlier
than another."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fastvit.report.facts import (ARCH_GROUP, CNN, COMPILE_SUFFIX, DEFAULT_MODEL_IMPL, GLOBAL_ATTENTION, GROUP, MODEL,
                                  OWN_LIBRARY, RIVALS, SHARE, SHARE_GROUP, SHARE_KEY)
from fastvit.report.tables import groups, has_tokens, impls, plain

FIT_MIN_TOKENS = 1000     # exponents are fitted on the sizes with N >= this (N = 1025, 2305, 4097 by default)
FIT_MIN_RESOLUTION = 512  # ... or, against pixels, on the sizes from this one (where a /16 ViT has N = 1025)
SHARE_LEVEL = 0.5         # attention "overtakes the rest" when it takes this share of the model's time


@dataclass
class Fit:
    exponent: float
    points: int
    n_min: int  # the smallest and largest size fitted: tokens, or resolution for fits against pixels
    n_max: int


def fit_exponent(tokens, values, min_tokens: int = FIT_MIN_TOKENS) -> Fit | None:
    """Least-squares slope of log(value) against log(N) over the sizes with N >= ``min_tokens`` (the
    largest three sizes when fewer than three reach it); None with fewer than two usable points."""
    pts = sorted((int(n), float(v)) for n, v in zip(tokens, values)
                 if n is not None and np.isfinite(n) and v is not None and np.isfinite(v) and v > 0 and n > 0)
    if len(pts) < 2:
        return None
    sel = [p for p in pts if p[0] >= min_tokens]
    if len(sel) < 3:
        sel = pts[-3:]
    n, v = np.log([p[0] for p in sel]), np.log([p[1] for p in sel])
    slope = float(np.polyfit(n, v, 1)[0])
    return Fit(slope, len(sel), sel[0][0], sel[-1][0])


def fit_pixels(resolutions, values, min_resolution: int = FIT_MIN_RESOLUTION) -> Fit | None:
    """The slope of log(value) against log(pixels) = log(res²), fitted as :func:`fit_exponent` does over
    the sizes from ``min_resolution`` on: 1 is linear in the number of tokens, 2 quadratic."""
    fit = fit_exponent(resolutions, values, min_resolution)
    return Fit(fit.exponent / 2, fit.points, fit.n_min, fit.n_max) if fit else None


def fit_sizes(g: pd.DataFrame, column: str, by_tokens: bool) -> Fit | None:
    """``column`` of the timed rows of ``g`` fitted against N (``by_tokens``) or against pixels."""
    ok = g[g["status"] == "ok"]
    return fit_exponent(ok["tokens"], ok[column]) if by_tokens else fit_pixels(ok["resolution"], ok[column])


def exponents(df: pd.DataFrame, min_tokens: int = FIT_MIN_TOKENS) -> pd.DataFrame:
    """One row per (op, pass, model, dtype, batch, impl): fitted latency and memory exponents, against N
    where every row of the group has a token count (``axis`` "tokens"), else against pixels ("pixels")."""
    out = []
    for key, g in groups(df):
        by_tokens = has_tokens(g)
        for impl in impls(g, require_ok=True):
            ok = g[(g["impl"] == impl) & (g["status"] == "ok")]
            if by_tokens:
                lat, mem = (fit_exponent(ok["tokens"], ok[c], min_tokens) for c in ("median_s", "peak_mem_bytes"))
            else:
                lat, mem = (fit_pixels(ok["resolution"], ok[c]) for c in ("median_s", "peak_mem_bytes"))
            if lat is None and mem is None:
                continue
            out.append({**key, "impl": impl, "latency_exponent": lat.exponent if lat else np.nan,
                        "memory_exponent": mem.exponent if mem else np.nan, "n_min": (lat or mem).n_min,
                        "n_max": (lat or mem).n_max, "points": (lat or mem).points,
                        "axis": "tokens" if by_tokens else "pixels"})
    return pd.DataFrame(out, columns=GROUP + ["impl", "latency_exponent", "memory_exponent", "n_min", "n_max",
                                              "points", "axis"])


def attention_share(df: pd.DataFrame) -> pd.DataFrame:
    """Attention's share of the whole-model time as measured inside the model (the rows' attention_share
    column), per model, batch, dtype, pass, implementation and size. Implementations without any measured
    share (CNNs, compiled models, rows of older files) are left out; their other rows keep their status."""
    rows = plain(df[df["op"] == MODEL])
    timed = rows[rows[SHARE].notna()]
    measured = set(zip(timed["model"], timed["impl"]))
    keep = np.array([k in measured for k in zip(rows["model"], rows["impl"])], dtype=bool)
    rows = rows.loc[keep].rename(columns={SHARE: "share"})
    out = rows[SHARE_KEY + ["tokens", "share", "status", "patch_size"]].reset_index(drop=True)
    out.loc[out["status"] != "ok", "share"] = np.nan
    return out


@dataclass
class Crossover:
    resolution: float | None  # where the curve passes the level; None when it does not within the sweep
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


def crossover(resolutions, shares, level: float = SHARE_LEVEL, patch: int | None = None,
              prefix_tokens: int = 1) -> Crossover:
    """The resolution where ``shares`` first rises through ``level``, interpolated linearly in
    log(resolution) between the two measured sizes around it; with ``patch``, also its token count
    N = (res / patch)² + ``prefix_tokens``."""
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
            tokens = f" (N ≈ {(res / patch) ** 2 + prefix_tokens:,.0f})" if patch else ""
            return Crossover(res, f"≈ {res:.0f} px{tokens}")
    top = max(pts, key=lambda p: p[1])
    return Crossover(None, f"not reached in the sweep (at most {100 * top[1]:.0f}% at {top[0]:.0f} px)",
                     "not reached")


def share_crossover(s: pd.DataFrame) -> Crossover:
    """The crossover of one implementation's measured shares ``s``, with N where its rows have tokens."""
    patch, prefix = None, 1
    ok = s.dropna(subset=["tokens", "patch_size"])
    if has_tokens(s) and len(ok):
        patch = int(ok["patch_size"].iloc[0])
        prefix = int(round(ok["tokens"].iloc[0] - (ok["resolution"].iloc[0] / patch) ** 2))
    return crossover(s["resolution"], s["share"], patch=patch, prefix_tokens=prefix)


def crossings(share: pd.DataFrame) -> list[dict]:
    """The crossover of every implementation's share, per model, batch, dtype and pass, in table order:
    dicts with those keys, ``impl`` and ``crossover``."""
    out = []
    for (model, batch, dtype, p), d in share.groupby(SHARE_GROUP, sort=False):
        for impl in dict.fromkeys(d["impl"]):
            out.append({"model": model, "batch": batch, "dtype": dtype, "pass": p, "impl": impl,
                        "crossover": share_crossover(d[d["impl"] == impl])})
    return out


# -- architectures ----------------------------------------------------------------------------------
def architecture_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The whole-model rows that stand for each architecture: fastvit's with every default backend,
    and the CNN baselines."""
    rows = plain(df[df["op"] == MODEL])
    own = (rows["library"] == OWN_LIBRARY) & (rows["impl"] == DEFAULT_MODEL_IMPL)
    eager = ~rows["impl"].astype(str).str.contains(COMPILE_SUFFIX, regex=False)
    return rows[(own | (rows["family"] == CNN)) & eager]


def costlier_from(resolutions, ratios) -> Crossover:
    """Where ``ratios`` (one model's latency over another's, per size) rise through 1, interpolated
    linearly in log(ratio) against log(resolution) between the two measured sizes around it."""
    pts = sorted((float(r), float(q)) for r, q in zip(resolutions, ratios) if np.isfinite(q) and q > 0)
    if not pts:
        return Crossover(None, "no size timed for both", "no data")
    if pts[0][1] >= 1:
        return Crossover(None, f"already costlier at the smallest size (ratio {pts[0][1]:.2f} at "
                               f"{pts[0][0]:.0f} px)", "already")
    for (r0, q0), (r1, q1) in zip(pts, pts[1:]):
        if q0 < 1 <= q1:
            t = -math.log(q0) / (math.log(q1) - math.log(q0))
            res = math.exp(math.log(r0) + t * (math.log(r1) - math.log(r0)))
            return Crossover(res, f"≈ {res:.0f} px")
    top = max(pts, key=lambda p: p[1])
    return Crossover(None, f"not reached in the sweep (ratio at most {top[1]:.2f} at {top[0]:.0f} px)",
                     "not reached")


def latency_ratios(a: pd.DataFrame, b: pd.DataFrame) -> pd.Series:
    """Median latency of ``a`` over ``b``'s at each resolution both timed, indexed by resolution."""
    ta = a[a["status"] == "ok"].groupby("resolution")["median_s"].last()
    tb = b[b["status"] == "ok"].groupby("resolution")["median_s"].last()
    both = ta.index.intersection(tb.index)
    return (ta[both] / tb[both]).sort_index()


def architecture_crossings(df: pd.DataFrame) -> list[dict]:
    """Per pass, dtype and batch, every global-attention model (ViT, DeiT) against every Swin model and
    CNN: dicts with those keys, ``model``, ``rival``, ``rival_family``, ``ratios`` (the model's latency
    over the rival's per resolution) and ``crossover`` (where the model becomes the costlier)."""
    rows = architecture_rows(df)
    out = []
    keys = rows[ARCH_GROUP].drop_duplicates().to_dict("records")
    for key in sorted(keys, key=lambda k: (k["pass"] != "fwd", str(k["dtype"]), k["batch"])):
        d = rows[np.logical_and.reduce([(rows[c] == key[c]).to_numpy() for c in ARCH_GROUP])]
        models = list(dict.fromkeys(d["model"]))
        family = d.groupby("model")["family"].first()
        for model in [m for m in models if family[m] in GLOBAL_ATTENTION]:
            for rival_family in RIVALS:
                for rival in [m for m in models if family[m] == rival_family]:
                    q = latency_ratios(d[d["model"] == model], d[d["model"] == rival])
                    out.append({**key, "model": model, "rival": rival, "rival_family": rival_family, "ratios": q,
                                "crossover": costlier_from(q.index, q.to_numpy())})
    return out
