"""File writes that never leave a half-written file, and what tells a file changed (used by every stage, so it sits
below all of them)."""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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


def is_plain_name(name: object) -> bool:
    """Is ``name`` a string that names one file or folder where it is put in a path (a dataset's name in
    ``per_class/<name>.png``): not empty, no ``/``, ``\\`` or NUL, not ``.`` or ``..``?"""
    return isinstance(name, str) and name not in ("", ".", "..") and not any(c in name for c in "/\\\0")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary sibling and a rename (never a half-written file)."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling and a rename (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = work_sibling(path, "tmp")
    try:
        tmp.write_bytes(data)
        rename_durably(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def rename_durably(new: Path, target: Path) -> None:
    """``os.replace(new, target)`` so that a power loss leaves the old or the new whole, never an empty or truncated
    file (ext4 without data=ordered, XFS): ``new`` (a file, or a folder with every file and folder in it) is fsynced
    before the rename, the folder of ``target`` after it, so that the rename itself lasts. The one way every atomic
    write renames its work into place."""
    _flush(new)
    os.replace(new, target)
    fsync_path(Path(target).parent)


def _flush(path: Path) -> None:
    """fsync ``path``: a file, or a folder with every file and folder in it (bottom-up); links are let be."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        for folder, _, files in os.walk(path, topdown=False):
            for name in files:
                if not os.path.islink(os.path.join(folder, name)):
                    fsync_path(os.path.join(folder, name))
            fsync_path(folder)
    elif not path.is_symlink():
        fsync_path(path)


def fsync_path(path: str | Path) -> None:
    """Flush the file or folder ``path`` to the disk (a folder: its entries, e.g. a rename into it); a file system
    that cannot fsync a folder is let be."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP) or not os.path.isdir(path):
            raise
    finally:
        os.close(fd)


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


def work_sibling(target: Path, what: str = "tmp") -> Path:
    """Where work in progress on ``target`` goes, the only naming of it: ``.<name>.<host>.<pid>.<what>`` beside it
    (``what``: ``tmp`` for what is being written, every atomic write's temporary file, ``old`` for what it replaces),
    named after this process so that a later run can tell one that a killed process left behind
    (:func:`is_abandoned`, :func:`remove_abandoned`)."""
    target = Path(target)
    return target.with_name(f".{target.name}.{socket.gethostname()}.{os.getpid()}.{what}")


def is_temporary(name: str) -> bool:
    """Is ``name`` that of a ``tmp`` :func:`work_sibling` (or of another hidden ``.tmp`` file), one an interrupted write
    may leave behind?"""
    return name.startswith(".") and name.endswith(".tmp")


def is_abandoned(path: Path, *targets: str, every_host: bool = False) -> bool:
    """Is ``path`` a :func:`work_sibling` of a file whose name one of ``targets`` (glob patterns, e.g. ``*.png``; none:
    any) matches, left by a process of this host that no longer runs (killed before its own clean-up)? The work
    sibling of a work sibling (an atomic write into one) counts as its target's. ``every_host``: any ``tmp`` work
    sibling of ``targets``, whatever its process and host (the caller holds the folder's lock, so no other process
    writes there: a run resumed on another node)."""
    name = Path(path).name
    if every_host:  # a host's name may hold dots: the pattern is matched whole
        return any(fnmatch.fnmatchcase(name, f".{t}.*.tmp") for t in targets or ("*",))
    pids: list[int] = []
    while (found := _work_sibling_name(name)) is not None:
        name, pid = found
        pids.append(pid)
    return bool(pids) and (not targets or any(fnmatch.fnmatchcase(name, t) for t in targets)) and not any(
        pid_alive(pid) for pid in pids)


def _work_sibling_name(name: str) -> tuple[str, int] | None:
    """``(target's name, pid)`` of this host's :func:`work_sibling` named ``name``, else None."""
    found = re.fullmatch(rf"\.(.+)\.{re.escape(socket.gethostname())}\.(\d+)\.(?:tmp|old)", name, re.DOTALL)
    return (found[1], int(found[2])) if found is not None else None


def replace_folder(new: Path, target: Path) -> None:
    """Rename folder ``new`` to ``target``, replacing a folder there: the old one is renamed aside, ``new`` renamed
    in, then the old one removed; ``new`` is flushed to the disk first (:func:`rename_durably`). Ctrl-C and SIGTERM
    are held over the two renames (a failing second one puts the old folder back) and taken after them; killed
    there, the old folder waits beside ``target`` for :func:`remove_abandoned` to put it back."""
    new, target = Path(new), Path(target)
    old = work_sibling(target, "old")
    _flush(new)  # outside the hold: a multi-GB folder takes a while
    with signals_held("a folder was renamed into place"):
        try:
            if target.exists() or target.is_symlink():
                os.replace(target, old)  # made durable with the next rename, in the same folder
            os.replace(new, target)
        except BaseException:
            if old.exists() and not (target.exists() or target.is_symlink()):
                os.replace(old, target)
            raise
        finally:
            fsync_path(target.parent)
    if old.is_symlink():
        old.unlink()
    else:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def signals_held(what: str) -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while the block runs (``what`` it does, for the note), so that nothing cuts it short;
    then one taken meanwhile is noted on the exception the block ends with, or, where it ends without one, taken as it
    came (its previous handler runs: the command stops all the same, after the block). Python runs signal handlers in
    the main thread only, so another thread's block needs nothing held; a handler not set from Python is left be."""
    wanted = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in wanted}
    if threading.current_thread() is not threading.main_thread() or None in previous.values():
        yield
        return
    held: list[int] = []
    for s in wanted:  # one taken before its own is set is taken as usual, before the block
        signal.signal(s, lambda signum, frame: held.append(signum))
    try:
        yield
    except BaseException as stopped:
        _restore(previous)
        for s in dict.fromkeys(held):
            stopped.add_note(f"{signal.Signals(s).name} came while {what}; it was held until that was done")
        raise
    _restore(previous)
    for s in dict.fromkeys(held):
        signal.raise_signal(s)  # its previous handler: KeyboardInterrupt, or the command line's exit 143


def _restore(handlers: dict) -> None:
    """Set each signal's handler back, all of them even where a signal taken meanwhile raises."""
    if handlers:
        (s, handler), *rest = handlers.items()
        try:
            signal.signal(s, handler)
        finally:
            _restore(dict(rest))


def remove_abandoned(folder: Path, *targets: str, mark: str | None = None, every_host: bool = False) -> None:
    """Clean up the work siblings in ``folder`` that :func:`is_abandoned` tells (killed processes' work in progress):
    a ``tmp`` one is removed; an ``old`` one is put back where its target is missing (killed inside
    :func:`replace_folder`), else removed. ``targets``: glob patterns of the paths under ``folder`` whose work siblings
    to clean up (e.g. ``per_class/*.png``; none: any in ``folder``), nothing else, as ``folder`` may be a user's.
    ``mark``: only work siblings that are folders holding a file of that name are touched. ``every_host``: see
    :func:`is_abandoned`."""
    where: dict[PurePosixPath, list[str]] = {}
    for pattern in targets or ("*",):
        where.setdefault(PurePosixPath(pattern).parent, []).append(PurePosixPath(pattern).name)
    for sub, names in where.items():
        for path in (Path(folder) / sub).glob(".*"):
            if not is_abandoned(path, *names, every_host=every_host) or (
                    mark is not None and not (path / mark).is_file()):
                continue
            target = path.with_name(_work_sibling_name(path.name)[0]) if path.name.endswith(".old") else None
            if target is not None and not (target.exists() or target.is_symlink()):
                rename_durably(path, target)
            elif path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (or is another user's) and is not a zombie: killed but not yet
    reaped, which is for ever where a container's init reaps no orphans."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:  # Linux: the state follows the command's name, which may hold spaces and parentheses
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] not in ("Z", "X")
    except (OSError, IndexError):  # gone meanwhile, or no /proc (another system: taken as running)
        return not Path("/proc/self/stat").is_file()
