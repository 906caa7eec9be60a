"""Which s2dc command wrote a dataset.json, from the mark each leaves in it: ``s2dc synth`` its
``synthetic.generator``, ``s2dc prepare`` (a converter) its ``source.converter``. The commands replace only a
dataset.json that they wrote."""

from __future__ import annotations

import json
from pathlib import Path


def writer_of(path: str | Path) -> str | None:
    """``"synth"`` or ``"prepare"`` for a dataset.json that s2dc wrote; None for any other (or unreadable) file."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    synthetic, source = doc.get("synthetic"), doc.get("source")
    if isinstance(synthetic, dict) and str(synthetic.get("generator", "")).startswith("s2dc.data.synthetic."):
        return "synth"
    if isinstance(source, dict) and str(source.get("converter", "")).startswith("s2dc.data.sources."):
        return "prepare"
    return None
