"""File writes that never leave a half-written file, and what tells a file changed (used by every stage, so it sits
below all of them)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary sibling and a rename (never a half-written file)."""
    atomic_write_bytes(path, text.encode())


def temporary_sibling(path: Path) -> Path:
    """Where an atomic write of ``path`` writes first: ``.<name>.<pid>.tmp`` beside it."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def is_temporary(name: str) -> bool:
    """Is ``name`` that of a :func:`temporary_sibling` (one an interrupted write may leave behind)?"""
    return name.startswith(".") and name.endswith(".tmp")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling and a rename (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def is_json_with(path: Path, keys: set[str]) -> bool:
    """Is ``path`` a JSON object holding every one of ``keys``? (How a command tells a file it wrote, e.g. an earlier
    run's, from a user's file of the same name, before it replaces it.)"""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and set(keys) <= set(doc)


def file_stamp(path: Path) -> dict[str, int]:
    """What changes with any write of ``path`` (as in Git's index): its size and modification time, which ``cp -p``,
    ``tar x`` or a coarse clock can give a changed file back, and its inode and status-change time, which they cannot.
    The key of a preprocessing cache entry and of a run's data; raises OSError for a missing file."""
    st = Path(path).stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino, "ctime_ns": st.st_ctime_ns}
