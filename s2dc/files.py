"""File writes that never leave a half-written file, and what tells a file changed (used by every stage, so it sits
below all of them)."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import socket
from pathlib import Path, PurePosixPath


def check_folder_path(folder: str | Path, what: str) -> None:
    """Raise ValueError, naming ``what`` and the file in the way, when ``folder`` or the nearest existing path above it
    is not a folder (a file where a command would create or write into a folder: otherwise a bare ``[Errno 17] File
    exists`` or ``[Errno 20] Not a directory`` naming neither the option nor what was expected)."""
    folder = Path(folder)
    for path in (folder, *folder.parents):
        if path.exists() or path.is_symlink():
            if not path.is_dir():
                where = "" if path == folder else f": '{path}' above it"
                kind = (f"a link to '{os.readlink(path)}', which does not exist" if not path.exists() else "a file")
                raise ValueError(f"{what} '{folder}'{where} is {kind}, expected a folder (or nothing)")
            return


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary sibling and a rename (never a half-written file)."""
    atomic_write_bytes(path, text.encode())


def temporary_sibling(path: Path) -> Path:
    """Where an atomic write of ``path`` writes first: ``.<name>.<pid>.tmp`` beside it."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def is_temporary(name: str) -> bool:
    """Is ``name`` that of a :func:`temporary_sibling` (one an interrupted write may leave behind)?"""
    return name.startswith(".") and name.endswith(".tmp")


def is_abandoned_temporary(path: Path, *targets: str) -> bool:
    """Is ``path`` the temporary file of an atomic write of a file whose name one of ``targets`` (glob patterns, e.g.
    ``*.png``) matches (:func:`temporary_sibling`: ``.<name>.<pid>.tmp``; :func:`work_sibling` of this host:
    ``.<name>.<host>.<pid>.tmp``) whose process is gone (killed before it renamed the file in)? A
    :func:`temporary_sibling` names no host: its process is taken for one of this host's."""
    path = Path(path)
    found = re.fullmatch(r"\.(.+)\.(\d+)\.tmp", path.name)
    if found is None or not path.is_file() or path.is_symlink():
        return False
    name, host = found[1], f".{socket.gethostname()}"
    names = [name, name.removesuffix(host)] if name.endswith(host) else [name]
    return any(fnmatch.fnmatchcase(n, t) for n in names for t in targets) and not _running(int(found[2]))


def remove_abandoned_temporaries(folder: Path, *written: str) -> None:
    """Delete the temporary files that killed writes of ``written`` (glob patterns of paths under ``folder``, e.g.
    ``per_class/*.png``) left: those :func:`is_abandoned_temporary` tells, beside a path ``written`` matches; nothing
    else (``folder`` may be a user's: a user's ``.draft.<n>.tmp``, another program's or host's file stays)."""
    for pattern in written:
        where = PurePosixPath(pattern)
        for path in Path(folder).glob(str(where.parent / f".{where.name}.*.tmp")):
            if is_abandoned_temporary(path, where.name):
                path.unlink(missing_ok=True)


def remove_stale_temp_files(folder: Path, *written: str) -> None:
    """Delete the temporary files that an interrupted atomic write of one of ``written`` (file names, or glob
    patterns such as ``step_????????.pt``) left in ``folder``: ``.<name>.<...>.tmp``; nothing else, so a user's
    ``.draft.tmp`` stays."""
    folder = Path(folder)
    if folder.is_dir():
        for path in folder.iterdir():
            if path.is_file() and is_temporary(path.name) and any(
                    fnmatch.fnmatchcase(path.name, f".{name}.*.tmp") for name in written):
                path.unlink(missing_ok=True)


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


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_stamp(path: Path) -> dict[str, int]:
    """What changes with any write of ``path`` (as in Git's index): its size and modification time, which ``cp -p``,
    ``tar x`` or a coarse clock can give a changed file back, and its inode and status-change time, which they cannot.
    The key of a preprocessing cache entry and of a run's data; raises OSError for a missing file."""
    st = Path(path).stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino, "ctime_ns": st.st_ctime_ns}


def work_sibling(target: Path, what: str) -> Path:
    """Where work in progress on ``target`` goes: ``.<name>.<host>.<pid>.<what>`` beside it (``what``: ``tmp`` for
    what is being written, ``old`` for what it replaces), named after this process so that a later run can tell
    one that a killed process left behind (:func:`remove_abandoned`)."""
    target = Path(target)
    return target.with_name(f".{target.name}.{socket.gethostname()}.{os.getpid()}.{what}")


def replace_folder(new: Path, target: Path) -> None:
    """Rename folder ``new`` to ``target``, replacing a folder there: the old one is renamed aside, ``new`` renamed
    in, then the old one removed. Stopped between the two renames by a signal, the old folder is put back; killed
    there, it waits beside ``target`` for :func:`remove_abandoned` to put it back."""
    new, target = Path(new), Path(target)
    old = work_sibling(target, "old")
    try:
        if target.exists() or target.is_symlink():
            os.replace(target, old)
        os.replace(new, target)
    except BaseException:
        if old.exists() and not (target.exists() or target.is_symlink()):
            os.replace(old, target)
        raise
    if old.is_symlink():
        old.unlink()
    else:
        shutil.rmtree(old, ignore_errors=True)


def remove_abandoned(folder: Path, mark: str | None = None) -> None:
    """Clean up the work siblings (:func:`work_sibling`) in ``folder`` of processes of this host that are gone (killed before
    their own clean-up): a ``tmp`` one is removed, and so is the temporary file of an atomic write into one
    (``.<work sibling>.<pid>.tmp``, :func:`temporary_sibling`); an ``old`` one is put back where its target is missing
    (killed inside :func:`replace_folder`), else removed. ``mark``: only folders holding a file of that name are
    touched."""
    host = socket.gethostname()
    name = re.compile(rf"\.(?P<target>.+)\.{re.escape(host)}\.(?P<pid>\d+)\.(?P<what>tmp|old)(?:\.\d+\.tmp)?")
    for path in Path(folder).glob(".*"):
        found = name.fullmatch(path.name)
        if not found or _running(int(found["pid"])) or (mark is not None and not (path / mark).is_file()):
            continue
        target = path.with_name(found["target"])
        if found["what"] == "old" and not (target.exists() or target.is_symlink()):
            os.replace(path, target)
        elif path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    """Is process ``pid`` of this host running (or another user's)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
