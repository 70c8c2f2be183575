"""Benchmark results -> a report: ``report.md``, the same as ``report.html``, and PNG figures.

Input: the sweep's pytest-benchmark JSON or its JSONL rows (:mod:`fastvit.report.load`). Contents, per
op (attention, whole model, add + LayerNorm, patch embedding) and pass (fwd, train): latency and peak
memory against tokens N on log-log axes with N and N^2 reference slopes (against the resolution, with
res^2 and res^4 slopes, for models without a global token count); tables of medians, memory, achieved
FLOP/s (or GB/s) as a fraction of the device's measured matmul peak (or copy bandwidth), speedups over
the reference backends; fitted scaling exponents; attention's share of the whole-model time, measured
inside the model, and the resolution where it passes one half; every architecture against the image
size, with the resolutions where a global-attention model becomes costlier than a Swin model or a CNN;
fastvit's whole models against timm's and HF transformers' builds; torch.compile against eager
(latency side by side, graphs and breaks); the Triton kernels against their
targets; ``oom`` and ``skipped`` configurations written as such. ``compare`` adds a second run side by
side with ratios.

Modules, each importing only those before it: ``facts`` (row columns, backends' parts), ``tables``,
``load``, ``fit``, ``targets``, ``plots``, ``sections``, ``architectures``, ``compiled``, ``compare``,
``document``, ``html``. This module writes every file. It needs pandas, matplotlib and markdown (the ``bench`` extra).
"""
from __future__ import annotations

import importlib.util

from fastvit.errors import MissingExtraError

_NEEDS = ("pandas", "matplotlib", "markdown")
_missing = [name for name in _NEEDS if importlib.util.find_spec(name) is None]
if _missing:
    raise MissingExtraError(f"fastvit report needs the 'bench' extra: pip install 'fastvit[bench]' "
                            f"(missing: {', '.join(_missing)})")

import os  # noqa: E402  (the packages above are checked first)
from pathlib import Path  # noqa: E402

from fastvit.report.document import build_report  # noqa: E402
from fastvit.report.fit import (FIT_MIN_TOKENS, Crossover, Fit, attention_share, costlier_from,  # noqa: E402
                                crossover, exponents, fit_exponent, fit_pixels)
from fastvit.report.html import markdown_to_html  # noqa: E402
from fastvit.report.load import Results, load_results  # noqa: E402
from fastvit.report.targets import kernel_targets  # noqa: E402


def write_report(results: str | os.PathLike, out_dir: str | os.PathLike,
                 compare: str | os.PathLike | None = None) -> Path:
    """Write ``out_dir/report.md``, ``out_dir/report.html`` and the PNG figures; return the path of report.md.

    Args:
        results: path of the sweep's pytest-benchmark JSON, or of its JSONL rows (a partial file from an
            interrupted sweep works too).
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
    path = out_dir / "report.md"
    path.write_text(doc.markdown)
    (out_dir / "report.html").write_text(markdown_to_html(doc.markdown, doc.title))
    return path


__all__ = ["write_report", "load_results", "fit_exponent", "fit_pixels", "exponents", "attention_share", "crossover",
           "costlier_from", "kernel_targets", "markdown_to_html", "Results", "Fit", "Crossover", "FIT_MIN_TOKENS",
           "MissingExtraError"]
