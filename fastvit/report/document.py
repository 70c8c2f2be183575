"""The whole report as text and figures, in section order, without writing anything."""
from __future__ import annotations

from dataclasses import dataclass

from fastvit.report.architectures import architectures_section, peers_section
from fastvit.report.compare import compare_section
from fastvit.report.compiled import compile_section
from fastvit.report.load import Results
from fastvit.report.plots import Figure
from fastvit.report.sections import (exponent_section, header, results_section, share_section, targets_section,
                                     title)


@dataclass
class Document:
    title: str
    markdown: str
    figures: list[Figure]


def build_report(res: Results, other: Results | None = None) -> Document:
    """report.md's text and its figures: header (summary, environment), exponents, the kernels' targets,
    attention's share, the architectures against resolution, fastvit against timm and HF, torch.compile
    against eager, every op and
    pass, and, with ``other``, the comparison with a second run."""
    df, env = res.rows, res.env
    sections = [header(df, env), exponent_section(df), targets_section(df, env), share_section(df),
                architectures_section(df), peers_section(df), compile_section(df), results_section(df, env)]
    if other is not None:
        sections.append(compare_section(res, other))
    lines = [line for s in sections for line in s.lines]
    figures = [f for s in sections for f in s.figures]
    return Document(title(df, env), "\n".join(lines).rstrip() + "\n", figures)
