"""Where the report commands write: a folder the user names (checked to be one), and files there that they
recognise as their own (a rerun replaces its own outputs, never a user's file or an input)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..files import check_folder_path


def check_out_dir(out_dir: Path, option: str = "--out") -> None:
    """Raise ValueError unless ``out_dir`` is a folder or does not exist yet."""
    check_folder_path(out_dir, option)


def is_own(path: Path, recognise: Callable[[str], bool]) -> bool:
    """Whether ``path`` is a text file whose text ``recognise`` accepts (a report command's own output)."""
    try:
        return path.is_file() and recognise(path.read_text())
    except (OSError, UnicodeDecodeError):
        return False
