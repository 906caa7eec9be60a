"""Where `s2dc probe` writes, and how it tells an earlier result of its own from a user's file before it replaces it:
a light module (no torch), which the workflow's start check reads too (s2dc/workflow_checks.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..files import check_folder_path, is_json_with
from ..train.outputs import edit_found


def is_probe_result(path: Path) -> bool:
    """Is ``path`` a result `s2dc probe` wrote (a JSON object with its keys)?"""
    return is_json_with(path, {"source", "metric", "stage", "encoders"})


def check_probe_out(out: str | Path, source: str | Path) -> None:
    """Raise ValueError, naming the file, unless ``out`` is a new ``.json`` (or an earlier probe result) whose ``.md``
    sibling is new too (or that result's own table, :func:`is_table_of`): never the dataset's json, a user's file or
    notes (beside an earlier result too)."""
    out = Path(out)
    if out.suffix != ".json":
        raise ValueError(f"--out '{out}': give a .json file (the table goes beside it, as {out.stem}.md)")
    if out.resolve() == Path(source).resolve():
        raise ValueError(f"--out '{out}' is the dataset's own json (--source); give another file")
    check_folder_path(out.parent, f"the folder of --out '{out}'")
    table = out.with_suffix(".md")
    earlier = out.exists() and is_probe_result(out)
    if out.exists() and not earlier:
        raise ValueError(f"--out '{out}' exists and is not a probe result; refusing to overwrite it")
    if earlier and (edited := edit_found(json.loads(out.read_text()))):
        raise ValueError(f"--out '{out}' is a probe result edited after the probe wrote it ({edited}); refusing to "
                         "overwrite it (move it, or give --out another name)")
    if table.exists() and not earlier:
        raise ValueError(f"'{table}' (where --out's table goes) exists beside no probe result; refusing to "
                         "overwrite it")
    if table.exists() and not is_table_of(table, out):
        raise ValueError(f"'{table}' (where --out's table goes) is not the table of the probe result '{out}' (edited, "
                         "or notes of one's own); refusing to overwrite it (move it, or give --out another name)")


def table_sha256(text: str) -> str:
    """The checksum of a probe result's table that `s2dc probe` records in the result (``table_sha256``)."""
    return hashlib.sha256(text.encode()).hexdigest()


def is_table_of(table: Path, result: Path) -> bool:
    """Is ``table`` the table `s2dc probe` wrote beside the probe result ``result``: the checksum the result records,
    or (a result that records none) the table the probe renders from it (:func:`s2dc.eval.probe_table.markdown`)?"""
    from .probe_table import markdown

    try:
        text, doc = table.read_text(), json.loads(result.read_text())
    except (OSError, ValueError):
        return False
    if "table_sha256" in doc:
        return doc["table_sha256"] == table_sha256(text)
    try:
        return text == markdown(doc) + "\n"
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return False
