"""Open downloads: fetched by URL, verified by MD5, resumable, and extracted safely.

:func:`fetch` downloads into a part of the process's own beside ``dest`` (a stopped download's part is
resumed with an HTTP Range request), checks the MD5 of the whole file and renames it to ``dest``.
:func:`extract` unpacks a tar (any compression) or zip into a hidden staging folder of its own and renames
it into place, after refusing every member that could land outside the target (absolute paths, ``..``),
links and special files. :func:`download_msd` builds a Medical Segmentation Decathlon task from the two, with
the URL and MD5 that the registry records, and records what it extracted (``.<task>.extracted.json``: each
file's size and modification time), so that :func:`release_fingerprint` tells a release changed in place from
one as extracted.
"""

from __future__ import annotations

import glob
import hashlib
import http.client
import json
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

from tqdm import tqdm

from ..files import (
    atomic_write_text,
    check_folder_path,
    is_abandoned,
    remove_abandoned,
    rename_durably,
    replace_folder,
    work_sibling,
)
from .registry import REGISTRY, get
from .errors import DataError

CHUNK = 1 << 20
TIMEOUT_S = 60


def md5sum(path: Path) -> str:
    """MD5 hex digest of a file, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def _open(url: str, offset: int):
    """The response to GET ``url`` from byte ``offset``, or None when the server says the range is past the end."""
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            return None
        raise


def _resumed(response, offset: int) -> bool:
    """Whether ``response`` continues a part of ``offset`` bytes (206 starting there), else it is the whole file."""
    if offset == 0 or response.status != 206:
        return False
    content_range = response.headers.get("Content-Range", "")
    return content_range.startswith(f"bytes {offset}-")


def _download(url: str, part: Path, progress: bool) -> str:
    """Complete ``part`` from ``url`` (resuming it when the server allows); returns the MD5 of the whole file."""
    offset = part.stat().st_size if part.exists() else 0
    response = _open(url, offset)
    if response is None:  # 416: the part is already as long as the file (or longer: the MD5 check decides)
        return md5sum(part)
    if response.status == 206 and not _resumed(response, offset):  # a range other than the one asked: start over
        response.close()
        response = _open(url, 0)
    with response:
        resumed = _resumed(response, offset)
        digest = hashlib.md5()
        if resumed:  # the digest goes on from the bytes already there
            with open(part, "rb") as f:
                digest = hashlib.file_digest(f, "md5")
        start = offset if resumed else 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        with open(part, "ab" if resumed else "wb") as out, \
                tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=part.name, disable=not progress) as bar:
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
                digest.update(block)
                bar.update(len(block))
    if total is not None and part.stat().st_size != total:  # http.client ends a short body silently
        raise ConnectionError(f"connection closed after {part.stat().st_size} of {total} bytes")
    return digest.hexdigest()


def fetch(url: str, dest: str | Path, md5: str, progress: bool = False) -> Path:
    """Download ``url`` to ``dest`` and check its MD5; returns ``dest``.

    An existing ``dest`` with the right MD5 is kept; one with another MD5 was not put there by this function (it
    moves only a verified download to ``dest``), so it is refused, never replaced. The download goes to a part of
    this process's own beside ``dest`` (:func:`s2dc.files.work_sibling`: another process fetching ``dest`` at once
    is let be), which a later call resumes after an interruption (in another process: the longest part a stopped
    download left); a wrong MD5 deletes it and raises :class:`DataError`.
    """
    dest = Path(dest)
    if dest.is_symlink() and not dest.exists():  # a user's link to a disk not mounted: never replaced
        raise DataError(f"'{dest}' is a symbolic link to '{os.readlink(dest)}', which does not exist (a disk not "
                        f"mounted?): s2dc never replaces a link; make its target reachable, or remove the link to "
                        f"download {url} there")
    if dest.is_file():
        found = md5sum(dest)
        if found == md5.lower():
            return dest
        raise DataError(f"'{dest}' exists with MD5 {found}, expected {md5} (the archive at {url}): s2dc did not put "
                        "it there and never replaces it; move it away (or delete it) to download the archive")
    if dest.is_dir():
        raise DataError(f"'{dest}' is a folder, where the download of {url} goes: move it away to download it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = work_sibling(dest, "tmp")
    _take_over_abandoned(dest, part)
    try:
        actual = _download(url, part, progress)
    except (OSError, http.client.HTTPException) as err:  # URLError is an OSError
        raise DataError(f"could not download {url} into '{part}' ({err}); run again to resume it") from err
    if actual != md5.lower():
        part.unlink(missing_ok=True)
        raise DataError(f"{url} downloaded into '{part}' has MD5 {actual}, expected {md5}; the file was deleted")
    rename_durably(part, dest)
    return dest


def _take_over_abandoned(dest: Path, part: Path) -> None:
    """Make the longest part of ``dest`` that a stopped download left (:func:`s2dc.files.is_abandoned`) this process's
    ``part``, unless it has one, so that it is resumed (``<dest>.part`` too, where s2dc before 2026-12-05 left its
    part); remove the other stopped downloads' parts. A running download's part is let be."""
    def length(path: Path) -> int:
        try:
            return path.lstat().st_size
        except OSError:  # gone meanwhile
            return -1

    pattern = glob.escape(dest.name)
    earlier = dest.with_name(dest.name + ".part")  # the part of s2dc before 2026-12-05, stopped with it
    if not part.exists():
        for path in sorted([*dest.parent.glob(".*"), earlier], key=length, reverse=True):
            if path.is_file() and (path == earlier or is_abandoned(path, pattern)):
                try:
                    os.replace(path, part)  # a rename: of downloads starting at once, one takes it over
                    break
                except FileNotFoundError:  # another did
                    continue
    remove_abandoned(dest.parent, pattern)
    earlier.unlink(missing_ok=True)  # shorter than the one taken over


def _unsafe(name: str) -> str | None:
    """Why member ``name`` could land outside the target folder, or None when it cannot."""
    path = name.replace("\\", "/")
    if path.startswith("/") or (path[:1].isalpha() and path[1:2] == ":"):
        return "absolute path"
    if ".." in path.split("/"):
        return "'..' in the path (it could leave the target folder)"
    return None


def _tar_problem(member: tarfile.TarInfo) -> str | None:
    if member.issym() or member.islnk():
        return f"link to '{member.linkname}'"
    if not (member.isreg() or member.isdir()):
        return "device, fifo or other special file"
    return _unsafe(member.name)


def _zip_problem(info: zipfile.ZipInfo) -> str | None:
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip records no unix mode
    if kind == stat.S_IFLNK:
        return "symbolic link"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "device, fifo or other special file"
    return _unsafe(info.filename)


def _clash(members: list[tuple[str, bool]]) -> str | None:
    """Why members ``(name, is a folder)`` would not extract as they are listed: a name given twice (``./`` and ``//``
    aside; folders given twice are harmless), or a member inside one that is a file; None when they would."""
    kinds: dict[str, tuple[str, bool]] = {}
    for name, is_dir in members:
        path = posixpath.normpath(name.replace("\\", "/"))
        if path in kinds and not (is_dir and kinds[path][1]):
            again = "is listed twice" if name == kinds[path][0] else f"names '{kinds[path][0]}' twice"
            return f"'{name}' {again} (which one is extracted would depend on their order)"
        kinds.setdefault(path, (name, is_dir))
    for path, (name, _) in kinds.items():
        parent = posixpath.dirname(path)
        while parent not in ("", "."):
            if parent in kinds and not kinds[parent][1]:
                return f"'{name}' lies inside '{kinds[parent][0]}', which is a file"
            parent = posixpath.dirname(parent)
    return None


def _unpack(archive: Path, into: Path) -> None:
    """Check every member of ``archive``, then extract it into ``into``; :class:`DataError` naming a refused member."""
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for m in members:
                if problem := _tar_problem(m):
                    raise DataError(f"archive '{archive}' has an unsafe member '{m.name}': {problem}; nothing was extracted")
            if clash := _clash([(m.name, m.isdir()) for m in members]):
                raise DataError(f"archive '{archive}' lists its members ambiguously: {clash}; nothing was extracted")
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(into, members=members, **kwargs)
            # The stream's own check (gzip CRC, xz / bz2 checks) comes at its end, after the last member: read to it.
            while tar.fileobj.read(1 << 20):
                pass
    elif zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if problem := _zip_problem(info):
                    raise DataError(f"archive '{archive}' has an unsafe member '{info.filename}': {problem}; "
                                    "nothing was extracted")
            if clash := _clash([(info.filename, info.is_dir()) for info in zf.infolist()]):
                raise DataError(f"archive '{archive}' lists its members ambiguously: {clash}; nothing was extracted")
            zf.extractall(into)
    else:
        raise DataError(f"'{archive}' is not a tar or zip archive")


def remove_legacy_work(folder: Path, *names: str) -> None:
    """Remove the work folders ``names`` in ``folder`` that s2dc before 2026-12-05 gave fixed names (a download or an
    extraction stopped under it left them; that version removed them at its next start, as this does now)."""
    for name in names:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)


def extract(archive: str | Path, target: str | Path, *, named: str | Path | None = None) -> Path:
    """Extract ``archive`` (tar of any compression, or zip) so that its members lie under ``target``; returns it.
    ``named``: the folder the messages name (default ``target``; a caller's own staging folder is not the user's).

    Every member is checked before anything is written. Extraction goes to a hidden staging folder next
    to ``target``, this process's own (:func:`s2dc.files.work_sibling`, so that another extracting the same
    target at once is let be), renamed into place when complete (replacing an existing ``target``), so an
    interrupted or refused extraction leaves no partial ``target``. What an extraction killed midway left
    beside ``target`` is removed first (:func:`s2dc.files.remove_abandoned`, and an earlier version's
    ``.<target>.extracting``: :func:`remove_legacy_work`).
    """
    archive, target = Path(archive), Path(target)
    remove_abandoned(target.parent, glob.escape(target.name))
    remove_legacy_work(target.parent, f".{target.name}.extracting")
    staging = work_sibling(target, "tmp")
    shutil.rmtree(staging, ignore_errors=True)  # this process's own: left by a killed one of the same id
    staging.mkdir(parents=True)
    try:
        _unpack(archive, staging)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error, lzma.LZMAError) as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(f"could not extract '{archive}' into '{named or target}': {err}") from err
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        replace_folder(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already unless the rename was stopped
    return target


def msd_resource(task: str) -> tuple[str, str]:
    """(url, md5) of an MSD task, e.g. ``"Task09_Spleen"``: the registry's archive, else MONAI's record."""
    for spec in REGISTRY.values():
        for archive in spec.archives:
            if archive.url.endswith(f"/{task}.tar"):
                return archive.url, archive.md5
    from monai.apps import (
        DecathlonDataset,  # tasks outside the benchmark (heavy import, only when needed)
    )

    if task not in DecathlonDataset.resource:
        raise ValueError(f"unknown MSD task {task!r}; expected one of {sorted(DecathlonDataset.resource)}")
    return DecathlonDataset.resource[task], DecathlonDataset.md5[task]


def download_msd(task: str, root: str | Path, progress: bool = False) -> Path:
    """Download ``root/<task>.tar``, check its MD5 and extract ``root/<task>/``; returns its dataset.json.

    An existing, complete ``root/<task>/dataset.json`` is kept, every file as it is, and recorded as one s2dc
    extracted is (``root/.<task>.extracted.json``, the workflow's download job's output: a forced rerun deletes that
    record, never a file of the release) where nothing recorded it; an interrupted download is resumed. A non-empty
    ``root/<task>/`` without its dataset.json holds files that were not extracted here, and a ``root/<task>`` that is
    a symbolic link is not s2dc's either: both are refused, never replaced. The archive is unpacked into a folder of
    this process's own beside ``root/<task>/`` (:func:`s2dc.files.work_sibling`), so that downloads of the task at
    once never clash: the release the first to finish moved into place is kept.
    """
    root = Path(root)
    target = root / task
    remove_abandoned(root, glob.escape(task))  # what a download killed while unpacking left
    remove_legacy_work(root, f".{task}.unpacked", f"..{task}.unpacked.extracting")  # and one under s2dc before 12-05
    if (target / "dataset.json").is_file():
        if not (root / f".{task}{EXTRACTED}").is_file():  # extracted by hand: its files as they are now
            _record_extracted(root, task, f"{task}.tar")
        return target / "dataset.json"
    if target.exists() and not target.is_dir():
        raise DataError(f"'{target}' is a file, where s2dc extracts {task}'s folder: it is never replaced; move it "
                        f"away to download {task}")
    if target.is_symlink():
        raise DataError(f"'{target}' is a symbolic link (to '{os.readlink(target)}') without a dataset.json: s2dc "
                        f"extracts {task} as a folder of its own and never replaces a link; remove the link (or link "
                        f"'{root}' itself) to download {task}")
    if target.is_dir() and any(target.iterdir()):
        raise DataError(f"'{target}' exists without its dataset.json, so s2dc did not extract it (an extracted task "
                        f"always has one): it is never replaced; complete it by hand or move it away to download {task}")
    url, md5 = msd_resource(task)
    archive = fetch(url, root / f"{task}.tar", md5, progress=progress)
    unpacked = extract(archive, work_sibling(target, "tmp"), named=target)
    try:
        if not (unpacked / task / "dataset.json").is_file():
            raise DataError(f"archive '{archive}' ({url}) did not contain {task}/dataset.json")
        try:
            rename_durably(unpacked / task, target)  # onto nothing or the empty folder checked above, not a filled one
        except OSError as err:
            if not (target / "dataset.json").is_file():
                raise DataError(f"could not move {task} extracted from '{archive}' into '{target}' ({err}); move "
                                f"away what is there to download {task}") from err
            # another download of the task completed meanwhile: its release, which may be read already, is kept
    finally:
        shutil.rmtree(unpacked, ignore_errors=True)
    _record_extracted(root, task, archive.name)
    return target / "dataset.json"


def _record_extracted(root: Path, task: str, archive: str) -> None:
    """Write ``root/.<task>.extracted.json``: the stamps of the task's files and its archive, against which
    :func:`release_fingerprint` tells what changed since."""
    files = {rel: stamp for rel, stamp in _file_stamps(root) if rel == archive or rel.startswith(f"{task}/")}
    atomic_write_text(root / f".{task}{EXTRACTED}", json.dumps({"files": files}))


#: Suffix of the record :func:`download_msd` leaves beside what it extracted (``.<task>.extracted.json``).
EXTRACTED = ".extracted.json"


def _file_stamps(root: Path):
    """``(path relative to root, [size, mtime_ns])`` of every file under ``root`` (links followed, sorted), but the
    extraction records; stat only, no file is read. A folder reached again through a link (``current -> .``) is
    walked once, where it is first met."""
    walked = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in walked:
            dirs.clear()
            continue
        walked.add((st.st_dev, st.st_ino))
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            if name.startswith(".") and name.endswith(EXTRACTED) and Path(folder) == root:
                continue
            try:
                st = path.stat()
            except OSError:  # a broken link: the converter names it
                continue
            yield path.relative_to(root).as_posix(), [st.st_size, st.st_mtime_ns]


def release_fingerprint(root: str | Path, pending: bool = False) -> str:
    """A release folder's fingerprint, from its files' sizes and modification times: '' while its download is
    ``pending``; 'absent' without the folder; else a SHA-1 over the files that differ from what :func:`download_msd`
    recorded extracting (files edited, added or removed since; '' when none) — or, for a release no download
    recorded, over every file. The conversion job's param, so that a release changed in place is converted again
    and an unchanged one never is (not even after the first run, whose DAG was built before the download)."""
    root = Path(root)
    if pending:
        return ""
    if not root.is_dir():
        return "absent"
    recorded: dict = {}
    for record in sorted(root.glob(f".*{EXTRACTED}")):
        try:
            recorded.update(json.loads(record.read_text())["files"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # an unreadable record records nothing: its files count as changed
    # the archive a download extracted (recorded at the folder's top, beside its task folder): no conversion reads it,
    # so deleting it to save space, or a newer one fetched there by hand, changes nothing that is converted
    archives = {rel for rel in recorded if "/" not in rel and rel.endswith((".tar", ".tar.gz", ".tgz", ".zip"))}
    digest, changed, seen = hashlib.sha1(), False, set()
    for rel, stamp in _file_stamps(root):
        seen.add(rel)
        if rel in archives:
            continue
        if recorded.get(rel) != stamp:
            digest.update(f"{rel}\0{stamp[0]}\0{stamp[1]}\n".encode("utf-8", "surrogatepass"))
            changed = True
    for rel in sorted(set(recorded) - seen - archives):
        digest.update(f"-{rel}\n".encode("utf-8", "surrogatepass"))
        changed = True
    for path, stamp in _listed_outside(root):
        digest.update(f"+{path}\0{stamp[0]}\0{stamp[1]}\n".encode("utf-8", "surrogatepass"))
        changed = True
    return digest.hexdigest() if changed else ""


def _listed_outside(root: Path):
    """(path, [size, mtime_ns]) of each file that ``root/dataset.json`` (a pool's list) names outside ``root``
    (``../vols/case.nii.gz``): part of the release, though no walk of the folder finds it. A list that cannot be
    read yields nothing here (its converter names the problem)."""
    try:
        doc = json.loads((root / "dataset.json").read_text())
    except (OSError, ValueError):
        return
    entries = doc.get("training") if isinstance(doc, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        images = entry.get("image") if isinstance(entry, dict) else entry
        for name in images if isinstance(images, list) else [images]:
            if not isinstance(name, str):
                continue
            path = Path(os.path.normpath(root / name))
            if root in path.parents:
                continue  # the walk of the folder has it
            try:
                st = path.stat()
            except (OSError, ValueError):  # ValueError: a NUL in the name (the converter names it)
                continue
            yield path.as_posix(), [st.st_size, st.st_mtime_ns]


def download(name: str, raw: str | Path, progress: bool = False) -> Path:
    """Download and extract the open archive of registry dataset ``name`` into ``raw`` (its release folder, the
    ``--raw`` of ``s2dc prepare``); returns the extracted folder's dataset.json. A registration-only dataset
    raises :class:`DataError` with where to get it and where to put it."""
    spec = get(name)
    if not spec.archives:
        raise DataError(f"{spec.title} ({name}) has no open archive to download. " + spec.instructions(str(raw)))
    check_folder_path(raw, "--raw")  # a file there or above it: named, not a bare [Errno 17] or [Errno 20]
    task = Path(spec.archives[0].url).name.split(".")[0]
    return download_msd(task, raw, progress=progress)
