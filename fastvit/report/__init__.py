"""Benchmark results -> a report: ``report.md``, the same as ``report.html``, PNG figures and every table
as CSV in ``tables/``.

Input: the sweep's JSONL rows, ``results.jsonl`` (older runs' pytest-benchmark JSON is read too;
:mod:`fastvit.report.load`). First the settings, a headline figure and a Summary of at most eight bullets
that state only what the paired intervals support; then the fastest backend at each size, every
backend against its op's default (paired ratios with 95% intervals and verdicts), the A/A noise floor
of every comparison group; then fitted scaling exponents (with the sizes fitted), the Triton kernels
against their targets, attention's share of the whole-model time (one table for every model), every
architecture against the image size (crossovers where the paired intervals support them, parameters and
FLOPs beside them), fastvit's whole models against timm's, HF transformers' and torchvision's builds,
torch.compile against eager, packing against padding (one list of images of many sizes padded to the
longest, bucketed by size and packed into one sequence: padded-token fractions, paired ratios, peak
memory), and per op and pass the latency and peak memory against tokens N (log-log, N and N²
slopes; against the resolution for models without a global token count) with tables of medians, memory
and achieved FLOP/s (or GB/s) as a fraction of the measured matmul peak (or copy bandwidth). ``oom`` and
``skipped`` configurations are written as such. ``compare`` adds a second run side by side, unpaired.

Modules, each importing only those before it: ``facts`` (row columns, backends' parts), ``tables``,
``load``, ``fit``, ``comparisons`` (paired ratios inside comparison groups), ``targets``, ``plots``,
``sections``, ``verdicts``, ``architectures``, ``compiled``, ``packing``, ``summary``, ``compare``,
``document``, ``html``. This module writes every file. It needs pandas, matplotlib, markdown and scipy
(the ``bench`` extra).
"""
from __future__ import annotations

import importlib.util

from fastvit.errors import MissingExtraError

_NEEDS = ("pandas", "matplotlib", "markdown", "scipy")
_missing = [name for name in _NEEDS if importlib.util.find_spec(name) is None]
if _missing:
    raise MissingExtraError(f"fastvit report needs the 'bench' extra: pip install 'fastvit[bench]' "
                            f"(missing: {', '.join(_missing)})")

import os  # noqa: E402  (the packages above are checked first)
from pathlib import Path  # noqa: E402

from fastvit.report.document import TABLES_DIR, build_report  # noqa: E402
from fastvit.report.fit import (FIT_MIN_TOKENS, Crossover, Fit, attention_share, costlier_from,  # noqa: E402
                                crossover, exponents, fit_exponent, fit_pixels)
from fastvit.report.html import markdown_to_html  # noqa: E402
from fastvit.report.load import Results, load_results  # noqa: E402
from fastvit.report.targets import kernel_targets  # noqa: E402


def write_report(results: str | os.PathLike, out_dir: str | os.PathLike,
                 compare: str | os.PathLike | None = None) -> Path:
    """Write ``out_dir/report.md``, ``out_dir/report.html``, the PNG figures and ``out_dir/tables/<name>.csv``
    for every table (CSV files of earlier reports that this one no longer has are removed); return the
    path of report.md. The same results give the same bytes.

    Args:
        results: path of the sweep's JSONL rows, ``results.jsonl`` (a partial file from an interrupted
            sweep works too), or of an older run's pytest-benchmark JSON.
        out_dir: directory for report.md and the figures (created if needed).
        compare: optional second results file (JSON or JSONL) to put side by side, with ratios.
    """
    res = load_results(results)
    other = load_results(compare) if compare else None
    doc = build_report(res, other)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for figure in doc.figures:
        figure.draw(out_dir / figure.name)
    tables = out_dir / TABLES_DIR
    tables.mkdir(exist_ok=True)
    names = {f"{t.name}.csv" for t in doc.tables}
    for stale in tables.glob("*.csv"):
        if stale.name not in names:
            stale.unlink()
    for table in doc.tables:
        (tables / f"{table.name}.csv").write_text(table.csv())
    path = out_dir / "report.md"
    path.write_text(doc.markdown)
    (out_dir / "report.html").write_text(markdown_to_html(doc.markdown, doc.title))
    return path


__all__ = ["write_report", "load_results", "fit_exponent", "fit_pixels", "exponents", "attention_share", "crossover",
           "costlier_from", "kernel_targets", "markdown_to_html", "Results", "Fit", "Crossover", "FIT_MIN_TOKENS",
           "MissingExtraError"]
