"""report.md as one standalone HTML page.

The markdown is rendered by Python-Markdown (``markdown``), chosen over markdown-it-py because it is
pure Python with no dependencies of its own and ships the two extensions the report needs, ``tables``
(which right-aligns ``---:`` columns with ``style="text-align: right;"``) and ``fenced_code``.
"""
from __future__ import annotations

import html

import markdown
from markdown.extensions import Extension

_STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;line-height:1.4}"
          "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:2px 8px}"
          "img{max-width:100%}pre{background:#f4f4f4;padding:0.5em;white-space:pre-wrap}")


class _TextOnly(Extension):
    """Treats ``<...>`` as text, never as raw HTML: the report quotes messages (skip reasons, errors)
    that may hold angle brackets, and the page shows them as written."""

    def extendMarkdown(self, md):
        md.preprocessors.deregister("html_block")
        md.inlinePatterns.deregister("html")


def markdown_to_html(text: str, title: str = "fastvit report") -> str:
    """A standalone HTML page (title, the report's style sheet) of the markdown ``text``; images keep
    their relative paths, so the page reads in a browser next to its figures."""
    body = markdown.markdown(text, extensions=["tables", "fenced_code", _TextOnly()], output_format="html")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>\n{body}\n</body></html>\n")
