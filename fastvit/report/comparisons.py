"""Comparisons inside the sweep's comparison groups: every member against its baseline, any two members
of one group (the fastest against the runner-up, one architecture against another), and each group's
A/A noise floor, as paired ratios with their 95% intervals and the words the intervals allow.

Members of one group were timed in the same interleaved rounds, so the ratio of two of them is the
median of their per-round ratios with a bootstrap interval (:mod:`fastvit.bench.paired`, seeded: the
same rows give the same intervals); a member against its baseline pairs its times with the baseline's
measured beside it in its own pairs (``baseline_round_times_s``, where the row has them). Rows of
different groups, and every row of an older results file (no ``group``), were measured in separate configurations: their ratio is the ratio of their medians,
reported as unpaired, with no interval and no verdict. Ratios are always time / the other's time:
below 1 is faster.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fastvit.bench.paired import NO_DIFFERENCE, Ratio, paired_ratio, verdict
from fastvit.report.facts import (BASELINE, BASELINE_ROUND_TIMES, CNN, COMPILE_SUFFIX, DEFAULT_BACKENDS,
                                  DEFAULT_MODEL_IMPL, GLOBAL_ATTENTION, GROUP_ID, GROUP_STOP, MEMBER, MODEL,
                                  OWN_LIBRARY, PEER_LIBRARIES, RIVALS, ROUND_TIMES, TWIN_OF)
from fastvit.report.fit import Crossover, architecture_rows, costlier_from
from fastvit.report.tables import is_twin, num

UNPAIRED = "unpaired: measured in separate configurations"
FASTER, SLOWER = "faster", "slower"
SLOT = ["op", "model", "resolution", "batch", "dtype", "pass"]
"""An op-level group of an older file (no ``group``): one op, model and size; whole models: one size."""


@dataclass(frozen=True)
class Comparison:
    """One time ratio: paired (``ratio`` holds its interval) or unpaired (a ratio of medians)."""
    value: float
    ratio: Ratio | None
    verdict: str
    noise: Ratio | None = None

    @property
    def paired(self) -> bool:
        return self.ratio is not None

    @property
    def low(self) -> float:
        return self.ratio.low if self.ratio else math.nan

    @property
    def high(self) -> float:
        return self.ratio.high if self.ratio else math.nan

    def interval(self) -> str:
        return f"[{fmt_ratio(self.ratio.low)}, {fmt_ratio(self.ratio.high)}]" if self.ratio else "unpaired"

    def text(self) -> str:
        """"0.931 [0.912, 0.950]", or "0.931 (unpaired)"."""
        return f"{fmt_ratio(self.value)} {self.interval()}" if self.ratio else f"{fmt_ratio(self.value)} (unpaired)"


def fmt_ratio(x: float) -> str:
    """A time ratio: three decimals below 10 (an A/A twin's 1% must show), three digits above."""
    if x is None or not np.isfinite(x):
        return "–"
    return f"{x:.3f}" if x < 10 else num(x)


def band_text(noise: Ratio | None) -> str:
    return f"±{100 * noise.band:.1f}%" if noise is not None else "–"


# -- pairs ------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _paired(times: tuple, baseline: tuple) -> Ratio:
    return paired_ratio(times, baseline)


def _rounds(a: dict, b: dict) -> tuple[tuple, tuple] | None:
    """The per-round times two rows share: CUDA-event times where both have them, else wall-clock. A
    member against its baseline (either way round) pairs the member's times with the baseline's beside
    it in its own pairs, where the row has them."""
    for own, beside in zip(ROUND_TIMES, BASELINE_ROUND_TIMES):
        if _of_baseline(a, b) and _lists(a.get(own), a.get(beside)):
            return tuple(a[own]), tuple(a[beside])
        if _of_baseline(b, a) and _lists(b.get(own), b.get(beside)):
            return tuple(b[beside]), tuple(b[own])
        if _lists(a.get(own), b.get(own)):
            return tuple(a[own]), tuple(b[own])
    return None


def _of_baseline(a: dict, b: dict) -> bool:
    """Whether ``b`` is ``a``'s baseline (and not ``a`` itself)."""
    return isinstance(a.get(BASELINE), str) and a[BASELINE] == b.get(MEMBER) != a.get(MEMBER)


def _lists(x, y) -> bool:
    return isinstance(x, list) and isinstance(y, list) and len(x) == len(y) > 0


def same_group(a: dict, b: dict) -> bool:
    ga, gb = a.get(GROUP_ID), b.get(GROUP_ID)
    return isinstance(ga, str) and ga == gb


def compare(a: dict, b: dict, noise: Ratio | None = None) -> Comparison | None:
    """``a``'s time over ``b``'s: paired where both were timed in the same rounds of one group, else the
    ratio of their medians (unpaired); None where either was not timed."""
    if a.get("status") != "ok" or b.get("status") != "ok":
        return None
    rounds = _rounds(a, b) if same_group(a, b) else None
    if rounds is not None:
        try:
            r = _paired(*rounds)
        except ValueError:  # no round with both times
            r = None
        if r is not None:
            return Comparison(r.value, r, verdict(r, noise), noise)
    value = a["median_s"] / b["median_s"] if b.get("median_s") else math.nan
    return Comparison(value, None, UNPAIRED) if np.isfinite(value) else None


# -- groups -----------------------------------------------------------------------------------------
def slot(row: dict) -> str:
    """The group a row was timed in, or, for a row without one (older files), the rows it would have been
    compared with: one op-level configuration, or every whole model at one size."""
    if isinstance(row.get(GROUP_ID), str):
        return row[GROUP_ID]
    cols = [c for c in SLOT if not (row["op"] == MODEL and c == "model")]
    return "unpaired:" + "|".join(str(row.get(c)) for c in cols)


def paired_rows(df: pd.DataFrame) -> bool:
    """Whether any row was timed in a comparison group."""
    return bool(df[GROUP_ID].notna().any()) if GROUP_ID in df else False


def _by_slot(df: pd.DataFrame) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in df.to_dict("records"):
        out.setdefault(slot(r), []).append(r)
    return out


def noise(df: pd.DataFrame) -> dict[str, tuple[dict, Ratio]]:
    """Per group with a timed A/A twin: (the twin's row, its paired ratio against the member it duplicates)."""
    out = {}
    for key, rows in _by_slot(df).items():
        members = {r.get(MEMBER): r for r in rows}
        for r in rows:
            if isinstance(r.get(TWIN_OF), str) and r[TWIN_OF] in members:
                c = compare(r, members[r[TWIN_OF]])
                if c is not None and c.paired:
                    out[key] = (r, c.ratio)
    return out


def _unpaired_baseline(row: dict, rows: list[dict]) -> dict | None:
    """The row an older file's row is compared with: a +compile row's eager run; else an op's default
    backend, or for a whole model fastvit's default build of the same model (peers, other backends)."""
    def find(**want):
        return next((r for r in rows if all(r.get(k) == v for k, v in want.items())), None)

    impl = str(row["impl"])
    if impl.endswith(COMPILE_SUFFIX):
        return find(op=row["op"], model=row["model"], library=row["library"], impl=impl[: -len(COMPILE_SUFFIX)])
    if row["op"] != MODEL:
        return find(op=row["op"], model=row["model"], impl=DEFAULT_BACKENDS.get(row["op"]))
    if row.get("family") == CNN:
        return None
    return find(model=row["model"], library=OWN_LIBRARY, impl=DEFAULT_MODEL_IMPL)


def _kind(row: dict, base: dict) -> str:
    """What a whole-model comparison is about: another architecture, torch.compile, a peer library, or
    another fastvit backend of the same model; op-level rows: "backend"."""
    if row["op"] == MODEL and base["model"] != row["model"]:
        return "architecture"
    if str(row["impl"]).endswith(COMPILE_SUFFIX):
        return "compile"
    return "peer" if row["op"] == MODEL and row.get("library") in PEER_LIBRARIES else "backend"


def against_baseline(df: pd.DataFrame) -> pd.DataFrame:
    """One record per row (A/A twins left out) and its comparison with its baseline: the baseline's
    ``impl`` and ``model``, ``kind`` ("baseline" for the baseline itself, "backend", "peer", "compile",
    "architecture"), ``comparison`` (None where either was not timed or nothing is compared), and
    ``noise`` (the group's A/A ratio, or None)."""
    floor = noise(df)
    out = []
    for key, rows in _by_slot(df).items():
        members = {r.get(MEMBER): r for r in rows if isinstance(r.get(MEMBER), str)}
        aa = floor.get(key, (None, None))[1]
        for r in rows:
            if isinstance(r.get(TWIN_OF), str):
                continue
            if isinstance(r.get(BASELINE), str):
                base = None if r[BASELINE] == r.get(MEMBER) else members.get(r[BASELINE])
                is_base = r[BASELINE] == r.get(MEMBER)
            else:
                base = _unpaired_baseline(r, rows)
                is_base = base is r
                base = None if is_base else base
            rec = {**r, "slot": key, "noise": aa, "comparison": None, "baseline_impl": None, "baseline_model": None,
                   "kind": "baseline" if is_base else None}
            if base is not None:
                rec.update(kind=_kind(r, base), baseline_impl=base["impl"], baseline_model=base["model"],
                           comparison=compare(r, base, aa), baseline_median_s=base.get("median_s"),
                           baseline_peak_mem_bytes=base.get("peak_mem_bytes"), baseline_status=base.get("status"))
            out.append(rec)
    frame = pd.DataFrame(out)
    for col in ("comparison", "noise", "baseline_impl", "baseline_model", "kind"):  # None stays None, not NaN
        frame[col] = pd.Series([r[col] for r in out], index=frame.index, dtype=object)
    return frame


def noise_rows(df: pd.DataFrame) -> list[dict]:
    """Every comparison group (rows with a ``group``) in row order: op, pass, model, dtype, batch,
    resolution, the twin's ``impl`` (None without a twin), its ``ratio`` (None without one), rounds and
    why they stopped."""
    floor = noise(df)
    out = []
    for key, rows in _by_slot(df[df[GROUP_ID].notna()]).items():
        first = rows[0]
        timed = [r for r in rows if r.get("status") == "ok"]
        info = next((r for r in timed if pd.notna(r.get("group_rounds"))), first)
        twin, ratio = floor.get(key, (None, None))
        out.append({"group": key, "op": first["op"], "pass": first["pass"], "backend": first["backend"],
                    "model": None if first["op"] == MODEL else first["model"], "dtype": first["dtype"],
                    "batch": first["batch"], "resolution": first["resolution"],
                    "twin": twin["impl"] if twin else None, "twin_model": twin["model"] if twin else None,
                    "ratio": ratio, "rounds": info.get("group_rounds"),
                    "stop": info.get(GROUP_STOP) if isinstance(info.get(GROUP_STOP), str) else None,
                    "members": sum(not isinstance(r.get(TWIN_OF), str) for r in timed)})
    return out


def noise_floor(df: pd.DataFrame) -> dict | None:
    """The group whose A/A interval reaches farthest from 1 (its record of :func:`noise_rows`), or None."""
    rows = [r for r in noise_rows(df) if r["ratio"] is not None]
    return max(rows, key=lambda r: r["ratio"].band) if rows else None


# -- rankings and crossings -------------------------------------------------------------------------
def fastest(df: pd.DataFrame) -> list[dict]:
    """Per op-level group (whole models aside) with two timed backends (+compile ones included): the
    ``fastest`` and the ``runner_up`` (by their paired ratio against the group's baseline, by median
    where unpaired), and ``margin``: the fastest's time over the runner-up's (a :class:`Comparison`)."""
    comp = against_baseline(df)
    out = []
    if comp.empty:
        return out
    comp = comp[(comp["op"] != MODEL) & (comp["status"] == "ok")]
    floor = noise(df)
    for key, g in comp.groupby("slot", sort=False):
        rows = g.to_dict("records")
        if len(rows) < 2:
            continue
        base = next((r for r in rows if r["kind"] == "baseline"), None)
        against = {id(r): compare(r, base) if base is not None else None for r in rows}
        paired = all(c is not None and c.paired for c in against.values())

        def rank(r):
            return (against[id(r)].value if paired else r["median_s"], str(r["impl"]))

        first, second = sorted(rows, key=rank)[:2]
        margin = compare(first, second, floor.get(key, (None, None))[1])
        out.append({**{c: first[c] for c in SLOT + ["tokens"]}, "slot": key, "fastest": first["impl"],
                    "runner_up": second["impl"], "margin": margin, "backends": len(rows)})
    return out


def crossing(points: list[tuple[int, Comparison]]) -> Crossover:
    """Where one model's time over another's (per size, paired) becomes measurably above 1: between the
    last size where it is measurably below 1 and the first where it is measurably above (interpolated
    in log-log between the two sizes around 1 there). The text completes "becomes costlier than ...":
    "between 512 and 768 px (≈ 600 px)", "already at the smallest size (...)", "at no size of the sweep
    (...)". Unpaired ratios fall back to where the medians' ratio rises through 1."""
    pts = sorted((int(r), c) for r, c in points if c is not None)
    if not pts:
        return Crossover(None, "not compared (no size timed for both)", "no data")
    if not all(c.paired for _, c in pts):
        x = costlier_from([r for r, _ in pts], [c.value for _, c in pts])
        text = {"crossed": f"from {x.text}", "already": "already at the smallest size (" + x.text.split("(", 1)[-1],
                "not reached": "at no size of the sweep (" + x.text.split("(", 1)[-1]}[x.kind]
        return Crossover(x.resolution, text, x.kind)
    words = [c.verdict for _, c in pts]
    if words[0] == SLOWER:
        return Crossover(None, f"already at the smallest size ({pts[0][1].text()} at {pts[0][0]} px)", "already")
    if SLOWER not in words:
        if words[-1] == FASTER:
            top = max(pts, key=lambda p: p[1].value)
            return Crossover(None, f"at no size of the sweep (at most {top[1].text()} at {top[0]} px)", "not reached")
        start = max(i for i, w in enumerate(words) if w != NO_DIFFERENCE) + 1 if FASTER in words else 0
        return Crossover(None, f"at no size of the sweep ({NO_DIFFERENCE} from {pts[start][0]} px on)",
                         "no difference")
    j = words.index(SLOWER)
    below = [i for i in range(j) if words[i] == FASTER]
    if not below:
        return Crossover(None, f"from {pts[j][0]} px ({NO_DIFFERENCE} below)", "crossed")
    i = below[-1]
    x = costlier_from([r for r, _ in pts[i:j + 1]], [c.value for _, c in pts[i:j + 1]])
    where = f" (≈ {x.resolution:.0f} px)" if x.resolution else ""
    return Crossover(x.resolution, f"between {pts[i][0]} and {pts[j][0]} px{where}", "crossed")


def architecture_pairs(df: pd.DataFrame) -> list[dict]:
    """Per pass, dtype and batch, every global-attention model (ViT, DeiT) against every Swin model and
    CNN: dicts with those keys, ``model``, ``rival``, ``rival_family``, ``points`` ((resolution,
    :class:`Comparison` of the model's time over the rival's) per size both ran) and ``crossover``."""
    rows = architecture_rows(df[~is_twin(df)])
    floor = noise(df)
    out = []
    for (p, dtype, batch), d in rows.groupby(["pass", "dtype", "batch"], sort=False):
        family = d.groupby("model", sort=False)["family"].first()
        for model in [m for m in family.index if family[m] in GLOBAL_ATTENTION]:
            for rival_family in RIVALS:
                for rival in [m for m in family.index if family[m] == rival_family]:
                    points = []
                    for res in sorted(int(r) for r in d["resolution"].unique()):
                        a = d[(d["model"] == model) & (d["resolution"] == res)].to_dict("records")
                        b = d[(d["model"] == rival) & (d["resolution"] == res)].to_dict("records")
                        if a and b:
                            aa = floor.get(slot(a[-1]), (None, None))[1]
                            points.append((res, compare(a[-1], b[-1], aa if same_group(a[-1], b[-1]) else None)))
                    points = [(r, c) for r, c in points if c is not None]
                    out.append({"pass": p, "dtype": dtype, "batch": batch, "model": model, "rival": rival,
                                "rival_family": rival_family, "points": points, "crossover": crossing(points)})
    order = {"fwd": 0}
    return sorted(out, key=lambda c: (order.get(c["pass"], 1), str(c["dtype"]), c["batch"]))


def architecture_ratios(df: pd.DataFrame) -> list[dict]:
    """Per pass, dtype and batch, every architecture's time over the first global-attention model's
    (fastvit's default builds and the CNNs, as in the architectures section): dicts with those keys,
    ``model``, ``reference`` and ``points`` ((resolution, :class:`Comparison`) per size both ran)."""
    rows = architecture_rows(df[~is_twin(df)])
    floor = noise(df)
    out = []
    for (p, dtype, batch), d in rows.groupby(["pass", "dtype", "batch"], sort=False):
        family = d.groupby("model", sort=False)["family"].first()
        refs = [m for m in family.index if family[m] in GLOBAL_ATTENTION]
        if not refs:
            continue
        for model in [m for m in family.index if m != refs[0]]:
            points = []
            for res in sorted(int(r) for r in d["resolution"].unique()):
                a = d[(d["model"] == model) & (d["resolution"] == res)].to_dict("records")
                b = d[(d["model"] == refs[0]) & (d["resolution"] == res)].to_dict("records")
                if a and b:
                    aa = floor.get(slot(b[-1]), (None, None))[1] if same_group(a[-1], b[-1]) else None
                    c = compare(a[-1], b[-1], aa)
                    if c is not None:
                        points.append((res, c))
            out.append({"pass": p, "dtype": dtype, "batch": batch, "model": model, "reference": refs[0],
                        "points": points})
    return out
