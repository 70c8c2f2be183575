"""The whole report as text, figures and tables, in section order, without writing anything."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from fastvit.report.architectures import architectures_section, peers_section
from fastvit.report.compare import compare_section
from fastvit.report.compiled import compile_section
from fastvit.report.load import Results
from fastvit.report.packing import packing_section
from fastvit.report.plots import Figure
from fastvit.report.sections import Section, exponent_section, results_section, share_section, targets_section, title
from fastvit.report.summary import header
from fastvit.report.tables import Table, at_one_size
from fastvit.report.verdicts import backends_section, fastest_section, noise_section

TABLES_DIR = "tables"
"""The folder beside report.md that holds every table as ``<name>.csv``."""


@dataclass
class Document:
    title: str
    markdown: str
    figures: list[Figure]
    tables: list[Table]


def _unique(tables: list[Table]) -> list[Table]:
    """The tables with names made unique (a repeated name gets ``_2``, ``_3``, ...), in order."""
    seen: dict[str, int] = {}
    out = []
    for t in tables:
        seen[t.name] = seen.get(t.name, 0) + 1
        out.append(t if seen[t.name] == 1 else dataclasses.replace(t, name=f"{t.name}_{seen[t.name]}"))
    return out


def build_report(res: Results, other: Results | None = None) -> Document:
    """report.md's text, its figures and its tables: header (settings, headline figure, summary,
    environment), the fastest backend at each size, every backend against its op's default, the noise
    floor, exponents, the kernels' targets, attention's share, the architectures against resolution,
    fastvit against timm, HF and torchvision, torch.compile against eager, packing against padding, every op and pass,
    with ``other`` the comparison with a second run, and the list of CSV files. The sections by size read
    the rows of one image size each; the header, the noise floor and packing against padding read them
    all."""
    df, env = res.rows, res.env
    sized = at_one_size(df)
    sections = [header(df, env), fastest_section(sized), backends_section(sized), noise_section(df),
                exponent_section(sized), targets_section(sized, env), share_section(sized),
                architectures_section(sized), peers_section(sized), compile_section(sized), packing_section(df),
                results_section(sized, env)]
    if other is not None:
        sections.append(compare_section(dataclasses.replace(res, rows=sized),
                                        dataclasses.replace(other, rows=at_one_size(other.rows))))
    tables = _unique([t for s in sections for t in s.tables])
    index = Section(["## Tables as CSV", "", f"Every table above, cell for cell, in `{TABLES_DIR}/`:", ""]
                    + [f"- [`{TABLES_DIR}/{t.name}.csv`]({TABLES_DIR}/{t.name}.csv): {t.title}" for t in tables])
    lines = [line for s in sections + [index] for line in s.lines]
    figures = [f for s in sections for f in s.figures]
    return Document(title(df, env), "\n".join(lines).rstrip() + "\n", figures, tables)
