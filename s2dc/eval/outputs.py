"""Where `s2dc probe` writes, and how it tells an earlier result of its own from a user's file before it replaces it:
a light module (no torch), which the workflow's start check reads too (s2dc/workflow_checks.py)."""

from __future__ import annotations

from pathlib import Path

from ..files import is_json_with


def is_probe_result(path: Path) -> bool:
    """Is ``path`` a result `s2dc probe` wrote (a JSON object with its keys)?"""
    return is_json_with(path, {"source", "metric", "stage", "encoders"})


def check_probe_out(out: str | Path, source: str | Path) -> None:
    """Raise ValueError, naming the file, unless ``out`` is a new ``.json`` (or an earlier probe result) whose ``.md``
    sibling is new too (or that result's table): never the dataset's json, a user's file or notes."""
    out = Path(out)
    if out.suffix != ".json":
        raise ValueError(f"--out '{out}': give a .json file (the table goes beside it, as {out.stem}.md)")
    if out.resolve() == Path(source).resolve():
        raise ValueError(f"--out '{out}' is the dataset's own json (--source); give another file")
    table = out.with_suffix(".md")
    earlier = out.exists() and is_probe_result(out)
    if out.exists() and not earlier:
        raise ValueError(f"--out '{out}' exists and is not a probe result; refusing to overwrite it")
    if table.exists() and not earlier:
        raise ValueError(f"'{table}' (where --out's table goes) exists beside no probe result; refusing to "
                         "overwrite it")
