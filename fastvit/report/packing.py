"""The section "Packing against padding": one list of images of many sizes through one model, padded to
the longest, bucketed by size and packed (benchmarks/bench_mixed.py), each way's padded-token fraction,
tokens processed, attention FLOPs, latency, its time over the padded batch's (paired, with the 95%
interval and the verdict) and peak memory; a figure of the time and memory ratios against the
padded-token fraction; and the Summary's line. Pure functions, as in :mod:`fastvit.report.sections`."""
from __future__ import annotations

import numpy as np
import pandas as pd

from fastvit.bench.mixed import MixedImages
from fastvit.bench.paired import NO_DIFFERENCE
from fastvit.report.comparisons import against_baseline, band_text, noise
from fastvit.report.facts import DEFAULT_MODEL_IMPL, MIXED, MIXED_GROUP, MIXED_WAYS, PASS_SHORT, PASS_TITLES, PASSES
from fastvit.report.plots import Figure, Panel, Series, plot_ratios
from fastvit.report.sections import Section
from fastvit.report.tables import Notes, Table, mem_unit, num, slug, time_unit
from fastvit.report.verdicts import RULE, ratio_cells, ratio_header, twin_text, unpaired_note

FIGURE = "packing.png"


def images_text(r: dict) -> str:
    """The images of a mixed-resolution row in words: "8 images of 224–512 px (aspect 1:2 to 2:1, seed 0)"."""
    return MixedImages(int(r["images"]), int(r["min_side"]), int(r["max_side"]), float(r["max_aspect"]),
                       int(r["seed"])).describe()


def _way(r: dict) -> str:
    return f"bucketed ({int(r['buckets'])} buckets)" if r["way"] == "bucketed" and pd.notna(r["buckets"]) \
        else str(r["way"])


def _pct(x) -> str:
    return f"{100 * x:.1f}%" if x is not None and np.isfinite(x) else "–"


def _memory_ratio(r: dict) -> float:
    a, b = r.get("peak_mem_bytes"), r.get("baseline_peak_mem_bytes")
    if r.get("status") != "ok" or r.get("baseline_status") != "ok" or not (pd.notna(a) and pd.notna(b) and b > 0):
        return np.nan
    return float(a / b)


def _order(records: list[dict]) -> list[dict]:
    """Backends in row order, each's ways in :data:`MIXED_WAYS` order."""
    backends = list(dict.fromkeys(str(r["impl"]) for r in records))
    rank = {w: i for i, w in enumerate(MIXED_WAYS)}
    return sorted(records, key=lambda r: (backends.index(str(r["impl"])), rank.get(r["way"], len(rank))))


def mixed_comparisons(df: pd.DataFrame) -> list[dict]:
    """Every mixed-resolution row (A/A twins aside) with its comparison against its group's padded
    batch (``comparison``), the group's A/A ratio (``noise``) and its peak memory over the padded
    batch's (``memory_ratio``), in report order."""
    mixed = df[df["op"] == MIXED]
    if mixed.empty:
        return []
    comp = against_baseline(mixed)
    records = comp.to_dict("records")
    for r in records:
        r["memory_ratio"] = 1.0 if r["kind"] == "baseline" and r["status"] == "ok" else _memory_ratio(r)
    return _order(records)


def _settings(records: list[dict]) -> list[tuple]:
    keys = list(dict.fromkeys(tuple(r[c] for c in MIXED_GROUP) for r in records))
    return sorted(keys, key=lambda k: (PASSES.index(k[1]) if k[1] in PASSES else 9, str(k[0]), str(k[2]), k[3]))


def _figure(records: list[dict], floor: dict) -> Figure | None:
    """Per pass, the time (top) and peak memory (bottom) of each way over the padded batch's against the
    padded-token fraction: one line per model and backend, the A/A band shaded."""
    several = len({(r["model"], r["dtype"], r["images"]) for r in records}) > 1
    panels = {}
    passes = [p for p in PASSES if any(r["pass"] == p for r in records)]
    for col, p in enumerate(passes):
        time_series, mem_series, bands = [], [], []
        mine = [r for r in records if r["pass"] == p]
        for slot in dict.fromkeys(r["slot"] for r in mine):
            rows = sorted([r for r in mine if r["slot"] == slot and r["status"] == "ok"],
                          key=lambda r: r["padded_fraction"])
            if len(rows) < 2:
                continue
            first = rows[0]
            label = f"{first['impl']}" + (f" ({first['model']}, {first['dtype']})" if several else "")
            ratios = [(1.0, 1.0, 1.0) if r["kind"] == "baseline" else
                      (r["comparison"].value, r["comparison"].low, r["comparison"].high) if r["comparison"]
                      else (np.nan,) * 3 for r in rows]
            xs = [float(r["padded_fraction"]) for r in rows]
            time_series.append(Series(label, xs, *[list(v) for v in zip(*ratios)]))
            mem_series.append(Series(label, xs, [r["memory_ratio"] for r in rows], [np.nan] * len(rows),
                                     [np.nan] * len(rows)))
            if slot in floor:
                bands.append(floor[slot][1].band)
        if not time_series:
            continue
        top = max(x for s in time_series for x in s.xs)
        band_xs, band = ([0.0, top], [max(bands)] * 2) if bands else ([], [])
        title = PASS_TITLES.get(p, p)
        panels[0, col] = Panel(title, "padded", time_series, band_xs, band)
        panels[1, col] = Panel(title, "padded", mem_series, [], [], quantity="peak memory")
    if not panels:
        return None
    device = next((r["device_name"] for r in records if isinstance(r.get("device_name"), str)), "")
    fig_title = f"Packing against padding, {device}\nbars: 95% intervals, grey: A/A noise band"
    return Figure(FIGURE, lambda path: plot_ratios(panels, path, fig_title, x_percent=True,
                                                   xlabel="padded tokens (packed 0, bucketed, padded)"))


def packing_section(df: pd.DataFrame) -> Section:
    """Per model, pass, dtype and set of images: every backend's three ways against its padded batch."""
    records = mixed_comparisons(df)
    if not records:
        return Section()
    floor = noise(df[df["op"] == MIXED])
    first = records[0]
    section = Section(["## Packing against padding", "",
                       f"One list of {images_text(first)} run through the same model with the same weights three "
                       "ways, timed in one comparison group: *padded*, one batch padded to the longest sequence "
                       "with a -inf key mask (the baseline); *bucketed*, the images sorted by token count and cut "
                       "into buckets of near-equal size, each padded to its own longest, one forward per bucket, "
                       "all buckets in one timed call; *packed*, every image's tokens in one sequence, attention "
                       "within each image. *Padded tokens* is the fraction of the tokens processed that are "
                       "padding; attention's FLOPs are 4·H·D per query-key pair and block forward (3.5× for a "
                       "training step), so the padded ways pay for every pair of their padded sequences; the rest "
                       "of the model works per token processed. Peak memory is measured in a call of its own. "
                       f"{RULE}", ""])
    figure = _figure(records, floor)
    if figure is not None:
        section.figures.append(figure)
        section.lines += [f"![packing against padding]({FIGURE})", ""]
    for key in _settings(records):
        rows_of = [r for r in records if tuple(r[c] for c in MIXED_GROUP) == key]
        model, p, dtype, images = key
        paired = any(r["comparison"] is not None and r["comparison"].paired for r in rows_of)
        ok = [r for r in rows_of if r["status"] == "ok"]
        unit, scale = time_unit([r["median_s"] for r in ok])
        munit, mscale = mem_unit([r["peak_mem_bytes"] for r in ok])
        notes, rows = Notes(), []
        for backend in dict.fromkeys(str(r["impl"]) for r in rows_of):
            mine = [r for r in rows_of if str(r["impl"]) == backend]
            for r in mine:
                timed = r["status"] == "ok"
                median = f"{num(r['median_s'] * scale)} [{num(r['iqr_s'] * scale, 2)}]" if timed \
                    else notes.cell(str(r["status"]))
                if r["kind"] == "baseline":
                    ratio = (["1 (baseline)", "baseline"] if paired else ["1 (baseline)"]) if timed \
                        else (["–", "–"] if paired else ["–"])
                else:
                    ratio = ratio_cells(r["comparison"], paired)
                memory = num(r["peak_mem_bytes"] * mscale) if timed and pd.notna(r["peak_mem_bytes"]) else "–"
                rows.append([f"`{backend}`", _way(r), _pct(r["padded_fraction"]), f"{int(r['processed_tokens']):,}",
                             num(r["attention_flops"] / 1e9), median] + ratio
                            + [memory, num(r["memory_ratio"]) if np.isfinite(r["memory_ratio"]) else "–"])
            twin = floor.get(mine[0]["slot"])
            if twin is not None:
                t = twin[0]
                rows.append([f"`{backend}`", "padded (A/A)", _pct(t["padded_fraction"]),
                             f"{int(t['processed_tokens']):,}", num(t["attention_flops"] / 1e9),
                             num(t["median_s"] * scale), twin_text(twin[1])]
                            + ([f"noise {band_text(twin[1])}"] if paired else []) + ["–", "–"])
        real = int(rows_of[0]["real_tokens"])
        heading = f"{model}, {PASS_SHORT.get(p, p)}, {dtype}, {int(images)} images"
        header = ["backend", "way", "padded tokens", "tokens processed", "attention GFLOP", f"median ({unit}) [IQR]"] \
            + ratio_header("time ÷ padded's", paired) + [f"peak memory ({munit})", "memory ÷ padded's"]
        section.lines += [f"### {heading}", "",
                          f"{images_text(rows_of[0])}: {real:,} tokens of their own.", "", *unpaired_note(paired),
                          *section.table(Table(slug("packing", model, p, dtype, f"{int(images)}images"),
                                               f"Packing against padding: {heading}", header, rows, text_cols=2))]
        if notes.reasons:
            section.lines += [notes.render(), ""]
    return section


def packing_bullet(df: pd.DataFrame) -> list[str]:
    """The Summary's line: per model (and set of images), on the default backend (else the first one
    timed), the padded-token fractions, then per pass the time of packed and bucketed over padded's
    with their intervals, and their peak memory over padded's."""
    records = [r for r in mixed_comparisons(df) if r["status"] == "ok"]
    if not records:
        return []
    parts = []
    for model, dtype, images in dict.fromkeys((r["model"], r["dtype"], r["images"]) for r in records):
        mine = [r for r in records if (r["model"], r["dtype"], r["images"]) == (model, dtype, images)]
        backends = list(dict.fromkeys(str(r["impl"]) for r in mine))
        backend = DEFAULT_MODEL_IMPL if DEFAULT_MODEL_IMPL in backends else backends[0]
        mine = [r for r in mine if str(r["impl"]) == backend]
        clauses = []
        for p in PASSES:
            ways = sorted([r for r in mine if r["pass"] == p and r["kind"] != "baseline" and r["comparison"]],
                          key=lambda r: r["padded_fraction"])
            if not ways:
                continue
            times = " and ".join(f"{r['way']} {r['comparison'].text()}"
                                 + (f" ({NO_DIFFERENCE})" if r["comparison"].verdict == NO_DIFFERENCE else "")
                                 for r in ways)
            memory = " and ".join(f"{num(r['memory_ratio'])}×" for r in ways if np.isfinite(r["memory_ratio"]))
            clauses.append(f"{PASS_SHORT.get(p, p)}: {times} × padded's time"
                           + (f", peak memory {memory}" if memory else ""))
        if not clauses:
            continue
        fractions = {}
        for r in mine:
            fractions.setdefault(r["way"], r)
        padding = ", ".join(f"{_pct(fractions[w]['padded_fraction'])}{' of the tokens' if i == 0 else ''} "
                            f"{_way(fractions[w])}"
                            for i, w in enumerate(w for w in MIXED_WAYS if w in fractions and w != "packed"))
        parts.append(f"{model} on `{backend}`, {images_text(mine[0])}; padding is {padding}, none packed; "
                     + "; ".join(clauses))
    return ["- Packing against padding: " + ". ".join(parts) + "."] if parts else []
