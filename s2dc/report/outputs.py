"""Where the report commands write: a folder the user names (checked to be one), and files there that they
recognise as their own (a rerun replaces its own outputs, never a user's file or an input)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..files import atomic_write_text, check_folder_path, file_sha256
from ..recorded import read_record


def check_out_dir(out_dir: Path, option: str = "--out") -> None:
    """Raise ValueError unless ``out_dir`` is a folder or does not exist yet."""
    check_folder_path(out_dir, option)


def is_own(path: Path, recognise: Callable[[str], bool]) -> bool:
    """Whether ``path`` is a text file whose text ``recognise`` accepts (a report command's own output)."""
    try:
        return path.is_file() and recognise(path.read_text())
    except (OSError, UnicodeDecodeError):
        return False


def record_problem(folder: Path, record: str) -> str | None:
    """What ``folder/record`` is instead of a record (a link or a folder, no JSON, not ``{name: [sha256, ...]}``: a
    merge's conflict markers, a user's file), or None if it is one or is absent."""
    path = Path(folder) / record
    if not (path.exists() or path.is_symlink()):
        return None
    if path.is_symlink() or not path.is_file():
        return "a link or a folder"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:  # (UnicodeDecodeError is a ValueError)
        return f"no JSON ({err})"
    if not (isinstance(doc, dict) and all(isinstance(v, list) and all(isinstance(h, str) for h in v)
                                          for v in doc.values())):
        return "JSON of another shape than {file name: [SHA-256, ...]}"
    return None


def record_present(folder: Path, names: list[str], record: str) -> None:
    """Add to the record the bytes of each of ``names`` under ``folder`` that is a plain file it does not list yet
    (one taken as ours otherwise, e.g. recognised by its text), so that a write stopped on the way
    (:func:`write_recorded`) leaves it recorded as it was, not refused as changed since."""
    folder = Path(folder)
    before = read_record(folder, record)
    found = {name: file_sha256(folder / name) for name in names if name not in before
             and (folder / name).is_file() and not (folder / name).is_symlink()}
    if found:
        atomic_write_text(folder / record, json.dumps({**before, **{n: [h] for n, h in found.items()}}, indent=1,
                                                      sort_keys=True))
