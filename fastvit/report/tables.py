"""Markdown tables and the formatting of their cells: numbers, units, statuses and their footnotes,
tables of one value per backend (rows) and size (columns), each table's CSV twin, and the groups of
rows each table covers (A/A twins left out: they are the noise floor, not a backend)."""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fastvit.report.facts import (ATTENTION_IMPL, FAMILY_TITLES, GROUP, MIXED, NO_ATTENTION, OP_ORDER, OWN_LIBRARY,
                                  SETTING, TWIN_OF)


# -- numbers and units ------------------------------------------------------------------------------
def num(x: float, digits: int = 3) -> str:
    """Three significant digits (``digits``), or a whole number with thousands separators when larger."""
    if x is None or not np.isfinite(x):
        return "–"
    if abs(x) >= 10 ** digits:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def fmt_exponent(x: float, points: int | None = None) -> str:
    """A fitted exponent, two decimals; marked "(2 sizes)" where fitted over fewer than three sizes
    (a line through two points: nothing checks that the growth is a power law)."""
    if x is None or not np.isfinite(x):
        return "–"
    return f"{x:.2f}" + (f" ({int(points)} sizes)" if points is not None and points < 3 else "")


def time_unit(seconds) -> tuple[str, float]:
    """The unit (s, ms, µs) for the largest of ``seconds``, and the factor from seconds to it."""
    vals = [v for v in seconds if v is not None and np.isfinite(v)]
    top = max(vals) if vals else 1.0
    if top >= 10:
        return "s", 1.0
    if top >= 1e-3:
        return "ms", 1e3
    return "µs", 1e6


def mem_unit(nbytes) -> tuple[str, float]:
    """The unit (GiB, MiB, KiB) for the largest of ``nbytes``, and the factor from bytes to it."""
    vals = [v for v in nbytes if v is not None and np.isfinite(v)]
    top = max(vals) if vals else 0.0
    if top >= 10 * 2 ** 30:
        return "GiB", 2.0 ** -30
    if top >= 2 ** 20:
        return "MiB", 2.0 ** -20
    return "KiB", 2.0 ** -10


def rate_unit(rates, kind: str) -> tuple[str, float]:
    """The unit of the largest of ``rates``: TFLOP/s or GFLOP/s (``kind`` "flops"), else TB/s or GB/s."""
    vals = [v for v in rates if v is not None and np.isfinite(v)]
    top = max(vals) if vals else 0.0
    if kind == "flops":
        return ("TFLOP/s", 1e-12) if top >= 1e12 else ("GFLOP/s", 1e-9)
    return ("TB/s", 1e-12) if top >= 1e12 else ("GB/s", 1e-9)


# -- tables -----------------------------------------------------------------------------------------
def md_table(header: list[str], rows: list[list[str]], numeric: bool = True, text_cols: int = 1) -> str:
    """A markdown table; the first ``text_cols`` columns left-aligned, the rest right-aligned if ``numeric``."""
    align = ["---" if i < text_cols or not numeric else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


@dataclass(frozen=True)
class Table:
    """A table of the report: ``name`` names its CSV file (``tables/<name>.csv``), ``title`` says what it
    holds; the markdown and the CSV hold the same cells (the CSV without markdown emphasis)."""
    name: str
    title: str
    header: list[str]
    rows: list[list[str]]
    numeric: bool = True
    text_cols: int = 1

    @property
    def markdown(self) -> str:
        return md_table(self.header, self.rows, self.numeric, self.text_cols)

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([plain_text(c) for c in self.header])
        writer.writerows([[plain_text(c) for c in r] for r in self.rows])
        return out.getvalue()


def plain_text(cell) -> str:
    """A markdown cell without its emphasis and code marks: ``**oom**`` -> ``oom``."""
    return re.sub(r"\*\*(.*?)\*\*|`(.*?)`", lambda m: m.group(1) if m.group(1) is not None else m.group(2), str(cell))


def slug(*parts) -> str:
    """A file-name part of ``parts``: lowercase, runs of other characters as one ``_``."""
    return re.sub(r"[^a-z0-9.+-]+", "_", "_".join(str(p) for p in parts if p not in (None, "")).lower()).strip("_")


def status_kind(status: str) -> str:
    """A row's status as one word: ok, oom, error (the configuration failed) or skipped (not run)."""
    if status in ("ok", "oom"):
        return status
    return "error" if status.startswith("error") else "skipped"


class Notes:
    """Numbered footnotes for the reasons of skipped (or failed) configurations."""

    def __init__(self):
        self.reasons: list[tuple[str, str]] = []  # (kind, reason)

    def cell(self, status: str) -> str:
        if status == "oom":
            return "**oom**"
        kind, reason = status_kind(status), status.split(":", 1)[1].strip() if ":" in status else status
        if (kind, reason) not in self.reasons:
            self.reasons.append((kind, reason))
        number = self.reasons.index((kind, reason)) + 1
        return f"skipped [{number}]" if kind == "skipped" else f"**{kind}** [{number}]"

    def render(self) -> str:
        return "\n".join(f"[{i + 1}] {kind}: {r}  " for i, (kind, r) in enumerate(self.reasons))


def has_tokens(g: pd.DataFrame) -> bool:
    """Whether every row of ``g`` has a token count N (a global-attention model or an op); otherwise
    (Swin, PiT, CNNs) its sizes are plotted and fitted against the resolution. Where some rows were
    timed, only those count (a configuration refused before its model was built may lack N)."""
    timed = g[g["status"] == "ok"]
    rows = timed if len(timed) else g
    return bool(len(rows)) and bool(rows["tokens"].notna().all())


def res_header(g: pd.DataFrame) -> tuple[list[int], list[str]]:
    """The resolutions of ``g`` in order, and a column heading for each (with its tokens N where known)."""
    res = sorted(int(r) for r in g["resolution"].dropna().unique())
    tokens = g.dropna(subset=["tokens"]).groupby("resolution")["tokens"].first()
    return res, [f"{r} px (N={int(tokens[r]):,})" if r in tokens.index else f"{r} px" for r in res]


def is_twin(df: pd.DataFrame) -> pd.Series:
    """Whether each row is an A/A twin (the baseline of its comparison group measured a second time)."""
    return df[TWIN_OF].notna() if TWIN_OF in df else pd.Series(False, index=df.index)


def plain(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` without its A/A twins: the rows that stand for a backend, in tables, fits and figures."""
    return df[~is_twin(df)]


def at_one_size(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` without its mixed-resolution rows: the rows of one image size each, which the sections by
    size, fits and figures read (mixed-resolution batches have a section of their own)."""
    return df[df["op"] != MIXED]


def impls(g: pd.DataFrame, require_ok: bool = False) -> list[str]:
    """The backends (``impl`` labels) of ``g`` in row order, A/A twins left out; with ``require_ok`` only
    those timed at least once."""
    g = plain(g)
    names = list(dict.fromkeys(g["impl"]))
    if require_ok:
        names = [n for n in names if (g[(g["impl"] == n)]["status"] == "ok").any()]
    return names


def impl_title(g: pd.DataFrame, impl: str) -> str:
    """``impl`` as tables and legends name it: a peer library followed by the attention it ran,
    "timm (sdpa)"; fastvit's backends (and models without attention) as they are."""
    rows = g[g["impl"] == impl]
    if rows.empty or (rows["library"] == OWN_LIBRARY).all():
        return impl
    ran = [a for a in dict.fromkeys(rows[ATTENTION_IMPL].dropna()) if a != NO_ATTENTION]
    return f"{impl} ({'/'.join(ran)})" if ran else impl


def pivot_table(g: pd.DataFrame, cell, notes: Notes, require_ok: bool = False) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a table of one row per backend, one column per size: ``cell(row)`` for timed
    rows, the status otherwise."""
    res, header = res_header(g)
    rows = []
    for impl in impls(g, require_ok):
        cells = []
        for r in res:
            hit = g[(g["impl"] == impl) & (g["resolution"] == r)]
            if hit.empty:
                cells.append("")
                continue
            row = hit.iloc[-1]
            cells.append(cell(row) if row["status"] == "ok" else notes.cell(row["status"]))
        rows.append([impl_title(g, impl)] + cells)
    return ["backend"] + header, rows


# -- groups of rows ---------------------------------------------------------------------------------
def op_rank(op) -> int:
    """An op's place in the report (unknown ops last)."""
    return OP_ORDER.index(op) if op in OP_ORDER else 99


def groups(df: pd.DataFrame):
    """(key, rows) per distinct value of the GROUP columns, in report order: op, fwd before train,
    then model (by family, then name), dtype and batch; A/A twins left out."""
    df = plain(df)
    keys = df[GROUP].drop_duplicates().to_dict("records")
    order = list(FAMILY_TITLES)
    named = df.dropna(subset=["family"])
    family = {m: order.index(f) if f in order else len(order) for m, f in zip(named["model"], named["family"])}
    keys.sort(key=lambda k: (op_rank(k["op"]), k["pass"] != "fwd", family.get(k["model"], -1), str(k["model"]),
                             str(k["dtype"]), k["batch"]))
    for key in keys:
        yield key, select(df, key)


def select(df: pd.DataFrame, key: dict) -> pd.DataFrame:
    """The rows of ``df`` whose GROUP columns equal ``key``'s."""
    mask = np.logical_and.reduce([(df[c] == key[c]).to_numpy() for c in GROUP])
    return df[mask]


def one_setting(df: pd.DataFrame) -> bool:
    """Whether one model, dtype and batch size cover every row (figures then need no suffix)."""
    return len(df[SETTING].drop_duplicates()) == 1


def fig_name(key: dict, unique: bool, stem: str | None = None) -> str:
    """The figure file of a group: ``<op>_<pass>.png`` (or ``<stem>_<pass>.png``), suffixed with the
    key's model, dtype and batch unless ``unique``."""
    name = f"{stem or key['op']}_{key['pass']}"
    if not unique:
        name += "".join(f"_{key[c]}" for c in ("model", "dtype") if c in key) + f"_b{int(key['batch'])}"
    return name + ".png"


def sort_by_op(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """``frame`` sorted (stable) by the columns ``by``, the op column in report order."""
    order = {op: i for i, op in enumerate(OP_ORDER)}
    return frame.sort_values(by, kind="stable", key=lambda c: c.map(order) if c.name == "op" else c)
