"""Tables as self-contained HTML pages (``snakemake --report`` shows an HTML item in place, but a CSV only as a
download): one page skeleton, filled from Markdown (the .md tables) or from ready HTML (a pandas table)."""

from __future__ import annotations

import html

STYLE = ("body{font-family:sans-serif;font-size:13px;margin:1em}table{border-collapse:collapse;margin:.8em 0}"
         "th,td{border:1px solid #ccc;padding:2px 6px;text-align:left}th{background:#f0f0f0}")


def page(title: str, body: str) -> str:
    """A standalone HTML page: ``title`` as its heading, then ``body`` (HTML)."""
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h3>{html.escape(title)}</h3>{body}</body></html>\n")


def markdown_page(title: str, text: str) -> str:
    """``text`` (Markdown with pipe tables, as the .md tables are written) as a standalone HTML page."""
    from markdown_it import MarkdownIt

    return page(title, MarkdownIt("commonmark", {"html": False}).enable("table").render(text))  # raw HTML: text
