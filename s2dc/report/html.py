"""The tables as HTML pages for ``snakemake --report`` (which shows an HTML item in place, but offers a CSV only as a
download): Markdown text and tables -> one self-contained page."""

from __future__ import annotations

import html

STYLE = ("body{font-family:sans-serif;font-size:13px;margin:1em}table{border-collapse:collapse;margin:.8em 0}"
         "th,td{border:1px solid #ccc;padding:2px 6px;text-align:left}th{background:#f0f0f0}")


def markdown_page(title: str, text: str) -> str:
    """``text`` (Markdown with pipe tables, as the .md tables are written) as a standalone HTML page."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(text)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h3>{html.escape(title)}</h3>{body}</body></html>\n")
