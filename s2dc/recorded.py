"""Files a command writes into a folder the user chooses, recorded there by their SHA-256 (a record file such as
``.s2dc-curves.json``: ``{"<path under the folder>": [sha256, ...]}``), so that a rerun replaces exactly its own
files as it left them: a user's file of the same name, or one of ours the user edited, never is; and the files of
one command replaced as one (:func:`replace_all`), so that a folder never holds a mix of two runs' files."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .files import (
    atomic_write_bytes,
    atomic_write_text,
    remove_abandoned,
    rename_durably,
    signals_held,
    work_sibling,
)


@contextmanager
def folder_locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (created if missing; flock on the folder itself, so no file is added to a
    folder that may be a user's) while the block runs: a second command writing recorded files there waits, then
    checks and reads the record the first one left (its check, its record's read-modify-write and its renames are one
    step). Where the file system refuses a folder's flock (NFSv4 wants a descriptor open for writing: EBADF; Lustre
    without ``-o flock``: ENOSYS), a file of ours, ``.s2dc.lock``, is locked instead; where it has no flock at all,
    the block runs unlocked, said on stderr."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as err:
            if err.errno not in _NO_FLOCK:
                raise
            os.close(fd)
            fd = -1
            fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as again:
                if again.errno not in _NO_FLOCK:
                    raise
                print(f"note: '{folder}' cannot be locked ({again.strerror}): two commands writing into it at once "
                      "could lose each other's record entries", file=sys.stderr)
        yield
    finally:
        if fd >= 0:
            os.close(fd)  # releases the lock


#: What the recorded-files commands lock where a folder cannot be (:func:`folder_locked`).
LOCK_FILE = ".s2dc.lock"
#: The errors of a file system that refuses (or has no) flock on a folder's descriptor.
_NO_FLOCK = (errno.EBADF, errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_record(folder: Path, record: str) -> dict[str, list[str]]:
    """The record ``folder/record`` (empty when it is missing or unreadable)."""
    try:
        found = json.loads((Path(folder) / record).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def is_recorded(folder: Path, name: str, record: str) -> bool:
    """Whether ``folder/name`` is a plain file whose bytes the record lists for that name."""
    path = Path(folder) / name
    return path.is_file() and not path.is_symlink() and _sha256(path.read_bytes()) in read_record(folder, record).get(name, [])


def check_recorded(folder: Path, names: list[str], record: str, what: str, hint: str = "") -> None:
    """Raise ValueError, naming the file, if one of ``names`` under ``folder`` exists (or is a link) and is not
    recorded there (``what`` says what it should have been, e.g. 'a curve table s2dc wrote')."""
    for name in names:
        path = Path(folder) / name
        if (path.exists() or path.is_symlink()) and not is_recorded(folder, name, record):
            raise ValueError(f"'{path}' exists and is not {what} (or it was changed since); refusing to overwrite "
                             f"it{hint}")


def write_recorded(folder: Path, texts: dict[str, str], record: str, also: dict[str, bytes] | None = None) -> list[Path]:
    """Write each text to ``folder/<name>``, and each of ``also`` (files checked otherwise, e.g. marked figures),
    as one (:func:`replace_all`), and record the texts. While they are replaced the record lists the old and the
    new bytes of each text (an interrupted rerun leaves only files of ours), then only the new ones. Call
    :func:`check_recorded` first."""
    folder = Path(folder)
    new = {name: _sha256(text.encode()) for name, text in texts.items()}
    before = read_record(folder, record)
    during = {**before, **{name: sorted({new[name], *before.get(name, [])}) for name in texts}}
    atomic_write_text(folder / record, json.dumps(during, indent=1, sort_keys=True))
    written = replace_all(folder, {**{name: text.encode() for name, text in texts.items()}, **(also or {})})
    atomic_write_text(folder / record, json.dumps({**before, **{n: [h] for n, h in new.items()}}, indent=1,
                                                  sort_keys=True))
    return written


def replace_all(folder: Path, contents: dict[str, bytes | None]) -> list[Path]:
    """Write ``contents`` (``{path under folder: bytes}``; None: remove that file) as one: each is written beside its
    target first, then all are renamed in (and the None ones removed); a rename failing on the way (a full disk) has
    the files replaced so far given their previous bytes back (or removed where there were none), so that the folder
    never holds a mix of the previous files and the new. Returns the paths written.
    Ctrl-C and SIGTERM are held while the renames and that rollback run, and taken after them. (Killed outright
    between two renames, it can: no file system renames several files as one; the next call removes what the killed
    one had staged.) Check the names first: whatever is there is replaced."""
    paths = {name: Path(folder) / name for name in contents}
    for parent in {path.parent for path in paths.values()}:
        remove_abandoned(parent)
    before = {name: path.read_bytes() for name, path in paths.items() if path.is_file()}
    staged: dict[str, Path] = {}
    done: list[str] = []
    try:
        for name, data in contents.items():
            if data is not None:
                paths[name].parent.mkdir(parents=True, exist_ok=True)
                staged[name] = work_sibling(paths[name], "tmp")
                staged[name].write_bytes(data)
        # the renames and their rollback are one step: a signal waits until it is done
        with signals_held("the files were renamed in or given their previous bytes back"):
            try:
                for name in contents:
                    done.append(name)  # before the rename: one that fails as it returns must not be left out
                    if name in staged:
                        rename_durably(staged[name], paths[name])
                    else:
                        paths[name].unlink(missing_ok=True)
            except BaseException as stopped:
                for name in reversed(done):
                    if name not in staged or not staged[name].exists():  # replaced (one still staged was not)
                        _give_back(paths[name], before.get(name), stopped)
                raise
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
    return [paths[name] for name in staged]


def _give_back(path: Path, data: bytes | None, stopped: BaseException) -> None:
    """Give ``path`` its previous bytes ``data`` back (remove it where None), a step of :func:`replace_all`'s rollback:
    an error (a full disk) is noted on ``stopped``, the exception the rollback ends with, and the rollback goes on."""
    try:
        if data is None:
            path.unlink(missing_ok=True)
        else:
            atomic_write_bytes(path, data)
    except Exception as err:
        stopped.add_note(f"'{path}' could not be given its previous bytes back: {err}")
