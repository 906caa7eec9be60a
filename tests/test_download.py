"""Open downloads against a loopback HTTP server (this machine cannot reach the real URLs): fetch, resume,
checksum, safe extraction and the MSD task built from them. Expected values come from hashlib and the
bytes the tests write, never from the module under test."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import json
import os
import random
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import time
import types
import zipfile
from pathlib import Path

import pytest

from s2dc.data import download
from s2dc.data.registry import get
from s2dc.data.errors import DataError

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4 bytes: more than one read chunk


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` (path -> bytes); honours ``Range: bytes=N-`` unless ``server.ranges`` is False;
    ``server.cut`` > 0 makes the next full answer stop after that many bytes (a dropped connection)."""

    def do_GET(self):
        srv = self.server
        srv.requests.append({"path": self.path, "range": self.headers.get("Range")})
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        if rng and srv.ranges:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            body = data[start:]
        else:
            self.send_response(200)
            body = data
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        srv.sent.append(len(body))
        if srv.cut and self.command == "GET" and not rng:
            self.wfile.write(body[:srv.cut])
            srv.cut = 0
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    srv.files, srv.requests, srv.sent, srv.ranges, srv.cut = {}, [], [], True, 0
    srv.url = f"http://127.0.0.1:{srv.server_port}"
    # Polled every 10 ms, not the default 0.5 s: `shutdown` waits for the next poll, half a second a test.
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def part_of(dest, pid):
    """The part of a download of ``dest`` by process ``pid`` of this host, as files.work_sibling names it."""
    return dest.with_name(f".{dest.name}.{socket.gethostname()}.{pid}.tmp")


def ended_pid() -> int:
    """The id of a process of this host that has ended."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                              check=True).stdout)


PAUSED = """
import json, sys, time
from pathlib import Path
from s2dc.data import download

spec = json.loads(sys.argv[1])
if spec["resource"]:
    download.msd_resource = lambda task: tuple(spec["resource"])
real = getattr(download, spec["after"])

def paused(*args, **kwargs):
    done = real(*args, **kwargs)
    Path(spec["sync"], "ready").touch()
    while not Path(spec["sync"], "go").exists():
        time.sleep(0.01)
    return done

setattr(download, spec["after"], paused)
getattr(download, spec["call"])(*spec["args"])
"""


@contextlib.contextmanager
def paused_in_another_process(tmp_path, after, call, *args, resource=None):
    """Another process runs ``download.<call>(*args)`` (``resource``: what its ``msd_resource`` answers) and pauses
    as ``download.<after>`` returns, until the ``with`` block ends; then it goes on. Yields a namespace: ``proc``, and
    ``returncode`` and ``stderr`` once it ended."""
    sync = tmp_path / f"sync-{after}-{time.monotonic_ns()}"
    sync.mkdir()
    spec = {"after": after, "call": call, "args": [str(a) for a in args], "resource": resource, "sync": str(sync)}
    proc = subprocess.Popen([sys.executable, "-c", PAUSED, json.dumps(spec)], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    other = types.SimpleNamespace(proc=proc, returncode=None, stderr=None)
    try:
        deadline = time.monotonic() + 60
        while not (sync / "ready").exists():
            assert proc.poll() is None, f"it ended before pausing: {proc.communicate()[1]}"
            assert time.monotonic() < deadline, "it did not pause within 60 s"
            time.sleep(0.01)
        yield other
    finally:
        (sync / "go").touch()
        try:
            other.stderr = proc.communicate(timeout=60)[1]
        finally:
            proc.kill()
            proc.wait()
        other.returncode = proc.returncode
        shutil.rmtree(sync)


# ------------------------------------------------------------------------------------------------ fetch


def test_fetch_downloads_and_verifies(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    dest = download.fetch(f"{server.url}/f.bin", tmp_path / "d" / "f.bin", md5(PAYLOAD))
    assert dest == tmp_path / "d" / "f.bin" and dest.read_bytes() == PAYLOAD
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["f.bin"]  # no part left
    assert [r["range"] for r in server.requests] == [None]


def test_fetch_resumes_a_part_with_a_range_request(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    dest = tmp_path / "f.bin"
    part_of(dest, ended_pid()).write_bytes(PAYLOAD[:1000])  # a stopped download's
    download.fetch(f"{server.url}/f.bin", dest, md5(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD and [p.name for p in tmp_path.iterdir()] == ["f.bin"]
    assert [r["range"] for r in server.requests] == ["bytes=1000-"]
    assert server.sent == [len(PAYLOAD) - 1000]  # only the rest travelled


def test_fetch_resumes_after_a_dropped_connection(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    server.cut = 300_000
    dest = tmp_path / "f.bin"
    with pytest.raises(DataError, match="run again to resume"):
        download.fetch(f"{server.url}/f.bin", dest, md5(PAYLOAD))
    part = part_of(dest, os.getpid())
    assert not dest.exists() and part.read_bytes() == PAYLOAD[:part.stat().st_size]
    kept = part.stat().st_size
    assert 0 < kept <= 300_000
    download.fetch(f"{server.url}/f.bin", dest, md5(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD and not part.exists()
    assert server.requests[-1]["range"] == f"bytes={kept}-"


def test_fetch_restarts_when_the_server_ignores_the_range(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    server.ranges = False
    part_of(tmp_path / "f.bin", ended_pid()).write_bytes(b"x" * 5000)  # not even a prefix of the file
    dest = download.fetch(f"{server.url}/f.bin", tmp_path / "f.bin", md5(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[0]["range"] == "bytes=5000-" and server.sent == [len(PAYLOAD)]


def test_fetch_with_a_complete_part_finishes_it(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    part_of(tmp_path / "f.bin", ended_pid()).write_bytes(PAYLOAD)  # the server answers 416
    dest = download.fetch(f"{server.url}/f.bin", tmp_path / "f.bin", md5(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD


def test_fetch_wrong_checksum_is_refused_and_leaves_nothing(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    url, dest, wrong = f"{server.url}/f.bin", tmp_path / "f.bin", "0" * 32
    with pytest.raises(DataError) as err:
        download.fetch(url, dest, wrong)
    message = str(err.value)
    assert url in message and str(part_of(dest, os.getpid())) in message and wrong in message and md5(PAYLOAD) in message
    assert sorted(tmp_path.iterdir()) == []


def test_fetch_keeps_a_verified_file_and_never_replaces_one_it_did_not_verify(server, tmp_path):
    server.files["/f.bin"] = PAYLOAD
    dest = tmp_path / "f.bin"
    dest.write_bytes(PAYLOAD)
    download.fetch(f"{server.url}/f.bin", dest, md5(PAYLOAD))
    assert server.requests == []  # nothing downloaded
    theirs = b"a user's own copy"
    dest.write_bytes(theirs)  # fetch only ever moves a verified download to dest: this one is not s2dc's
    with pytest.raises(DataError, match=rf"'{dest}' exists with MD5 {md5(theirs)}, expected {md5(PAYLOAD)}"):
        download.fetch(f"{server.url}/f.bin", dest, md5(PAYLOAD))
    assert dest.read_bytes() == theirs and server.requests == []


def test_fetch_never_replaces_a_users_link_whose_target_is_missing(server, tmp_path):
    """A user's link where the archive goes, pointing at a disk not mounted: it is neither a file nor a folder there,
    so the download replaced the link with many GB on the wrong disk; refused naming it and its target."""
    server.files["/f.bin"] = PAYLOAD
    dest = tmp_path / "f.bin"
    dest.symlink_to(tmp_path / "unmounted" / "f.bin")
    with pytest.raises(DataError, match=rf"'{dest}' is a symbolic link to '{tmp_path / 'unmounted' / 'f.bin'}', "
                                        r"which does not exist.*never replaces"):
        download.fetch(f"{server.url}/f.bin", dest, md5(PAYLOAD))
    assert dest.is_symlink() and server.requests == []
    (tmp_path / "unmounted").mkdir()
    (tmp_path / "unmounted" / "f.bin").write_bytes(PAYLOAD)  # mounted: the verified archive it points at is kept
    assert download.fetch(f"{server.url}/f.bin", dest, md5(PAYLOAD)) == dest and dest.is_symlink()


def test_two_fetches_of_one_file_at_once_both_complete(server, tmp_path):
    """Two processes fetching one file at once (two workflow runs, or `s2dc download` beside one) download into parts
    of their own: both complete, neither writes into the other's. (They shared `<dest>.part`: the second truncated and
    rewrote the first's part, or appended to it, and renamed it to dest while the first still wrote into it; the first
    then failed on its part gone.)"""
    server.files["/f.bin"] = PAYLOAD
    url, dest = f"{server.url}/f.bin", tmp_path / "d" / "f.bin"
    with paused_in_another_process(tmp_path, "tqdm", "fetch", url, dest, md5(PAYLOAD)) as other:  # its part opened
        assert download.fetch(url, dest, md5(PAYLOAD)).read_bytes() == PAYLOAD
    assert other.returncode == 0, other.stderr
    assert dest.read_bytes() == PAYLOAD and [p.name for p in dest.parent.iterdir()] == ["f.bin"]
    assert [r["range"] for r in server.requests] == [None, None]  # each downloaded the whole file


def test_fetch_resumes_the_longest_part_stopped_downloads_left_and_lets_a_running_ones_be(server, tmp_path):
    """Of the parts that downloads of this host which ended left, the longest is resumed and the others removed; a
    running download's part, and one of another host (whose process cannot be told), are let be."""
    server.files["/f.bin"] = PAYLOAD
    dest = tmp_path / "f.bin"
    short, long = part_of(dest, ended_pid()), part_of(dest, ended_pid())
    short.write_bytes(PAYLOAD[:1000])
    long.write_bytes(PAYLOAD[:5000])
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        running, elsewhere = part_of(dest, alive.pid), tmp_path / f".f.bin.elsewhere.{alive.pid}.tmp"
        running.write_bytes(b"x" * 7000)
        elsewhere.write_bytes(b"y" * 9000)
        download.fetch(f"{server.url}/f.bin", dest, md5(PAYLOAD))
        assert [r["range"] for r in server.requests] == ["bytes=5000-"]
        assert dest.read_bytes() == PAYLOAD
        assert sorted(tmp_path.iterdir()) == sorted([dest, running, elsewhere])
        assert running.read_bytes() == b"x" * 7000 and elsewhere.read_bytes() == b"y" * 9000
    finally:
        alive.kill()
        alive.wait()


def test_fetch_http_error_names_the_url(server, tmp_path):
    with pytest.raises(DataError, match=f"{server.url}/missing.bin"):
        download.fetch(f"{server.url}/missing.bin", tmp_path / "m.bin", "0" * 32)
    assert not (tmp_path / "m.bin").exists()


# ------------------------------------------------------------------------------------------------ extract

GOOD = {"top/a.txt": b"alpha", "top/sub/b.bin": bytes(range(100)), "c.txt": b""}


def write_tar(path, members, mode="w"):
    """A tar of ``members``: name -> bytes (a file) or a prepared TarInfo (anything else)."""
    target = {"fileobj": path} if isinstance(path, io.BytesIO) else {"name": path}
    with tarfile.open(mode=mode, **target) as tar:
        for name, data in members.items():
            if isinstance(data, tarfile.TarInfo):
                tar.addfile(data)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def tarinfo(name, kind, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def write_zip(path, members):
    """A zip of ``members``: name -> bytes, or (bytes, unix mode) for a member with an explicit file type."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            if isinstance(data, tuple):
                data, mode = data
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


def extracted(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_extract_good_tar(tmp_path, mode):
    archive = write_tar(tmp_path / "a.tar", GOOD, mode)
    target = download.extract(archive, tmp_path / "out")
    assert target == tmp_path / "out" and extracted(target) == GOOD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar", "out"]  # no staging left


def test_extract_good_zip_replaces_an_old_target(tmp_path):
    archive = write_zip(tmp_path / "a.zip", GOOD)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    download.extract(archive, tmp_path / "out")
    assert extracted(tmp_path / "out") == GOOD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "out"]


def refused(tmp_path, archive, member):
    """Extraction of ``archive`` fails naming it and ``member``, and leaves neither target nor staging."""
    with pytest.raises(DataError) as err:
        download.extract(archive, tmp_path / "out")
    assert str(archive) in str(err.value) and f"'{member}'" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == [archive.name]
    return str(err.value)


@pytest.mark.parametrize("name", ["../evil", "top/../../evil", "top/sub/../a.txt"])
def test_extract_refuses_a_tar_member_with_dotdot(tmp_path, name):
    """Any '..' component is refused, even one that would stay inside the target."""
    archive = write_tar(tmp_path / "a.tar", {"top/a.txt": b"alpha", name: b"pwned"})
    assert "'..'" in refused(tmp_path, archive, name)
    assert not (tmp_path.parent / "evil").exists()


def test_extract_refuses_an_absolute_tar_member(tmp_path):
    name = str(tmp_path / "abs" / "evil")
    archive = write_tar(tmp_path / "a.tar", {"top/a.txt": b"alpha", name: b"pwned"})
    with tarfile.open(archive) as tar:
        assert tar.getnames()[1] == name  # the fixture really stores an absolute name
    assert "absolute" in refused(tmp_path, archive, name)


@pytest.mark.parametrize("info", [tarinfo("top/link", tarfile.SYMTYPE, "/etc/passwd"),
                                  tarinfo("top/inside", tarfile.SYMTYPE, "a.txt"),
                                  tarinfo("top/hard", tarfile.LNKTYPE, "top/a.txt"),
                                  tarinfo("top/fifo", tarfile.FIFOTYPE),
                                  tarinfo("top/dev", tarfile.CHRTYPE)],
                         ids=["symlink", "symlink-inside", "hardlink", "fifo", "device"])
def test_extract_refuses_tar_links_and_special_files(tmp_path, info):
    archive = write_tar(tmp_path / "a.tar", {"top/a.txt": b"alpha", info.name: info})
    refused(tmp_path, archive, info.name)


@pytest.mark.parametrize("members, name", [
    ({"top/a.txt": b"first", "top/./a.txt": b"second"}, "top/./a.txt"),  # the same file twice: the last one won
    ({"top/a.txt": b"alpha", "top/a.txt/": tarinfo("top/a.txt/", tarfile.DIRTYPE)}, "top/a.txt"),  # file, then folder
    # (tarfile reads a folder's name without its trailing /)
    ({"top/b": tarinfo("top/b", tarfile.DIRTYPE), "top//b": b"beta"}, "top//b"),  # folder, then file: a bare errno
], ids=["file-twice", "file-then-folder", "folder-then-file"])
def test_extract_refuses_a_tar_naming_one_member_twice(tmp_path, members, name):
    """What an archive that names a member twice extracts depends on their order; refused naming it."""
    archive = write_tar(tmp_path / "a.tar", members)
    assert "twice" in refused(tmp_path, archive, name)


def test_extract_refuses_a_member_inside_one_that_is_a_file(tmp_path):
    archive = write_zip(tmp_path / "a.zip", {"top/a": b"a file", "top/a/b": b"inside it"})
    assert "inside 'top/a', which is a file" in refused(tmp_path, archive, "top/a/b")


@pytest.mark.parametrize("name,why", [("../evil", "'..'"), ("top/../../evil", "'..'"), ("/abs/evil", "absolute"),
                                      ("..\\evil", "'..'")])
def test_extract_refuses_unsafe_zip_members(tmp_path, name, why):
    archive = write_zip(tmp_path / "a.zip", {"top/a.txt": b"alpha", name: b"pwned"})
    assert why in refused(tmp_path, archive, name)


def test_extract_refuses_a_zip_symlink(tmp_path):
    archive = write_zip(tmp_path / "a.zip", {"top/a.txt": b"alpha", "top/link": (b"/etc/passwd", stat.S_IFLNK | 0o777)})
    assert "link" in refused(tmp_path, archive, "top/link")


@pytest.mark.parametrize("kind", [stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFSOCK], ids=["fifo", "chr", "blk", "sock"])
def test_extract_refuses_zip_special_files(tmp_path, kind):
    """A zip member whose unix mode says fifo, device or socket is refused like the tar one, not written as a file;
    members with no unix mode (most zips) or a regular-file mode are extracted."""
    archive = write_zip(tmp_path / "a.zip", {"top/a.txt": b"alpha", "top/dev": (b"", kind | 0o644)})
    assert "special" in refused(tmp_path, archive, "top/dev")
    good = write_zip(tmp_path / "good.zip", {"top/a.txt": (b"alpha", stat.S_IFREG | 0o644), "top/b.txt": b"beta"})
    assert extracted(download.extract(good, tmp_path / "ok")) == {"top/a.txt": b"alpha", "top/b.txt": b"beta"}


def test_extract_leaves_another_running_extractions_work_alone(tmp_path):
    """Two processes extracting into one target at once (two workflow runs, or `s2dc download` beside one) stage in
    folders of their own: neither removes or renames the other's work, and both complete, the last one's extraction
    in place. (One fixed staging name was shared: the second start removed the first's half-extracted folder, and the
    first then failed renaming it into place.)"""
    work = tmp_path / "work"
    work.mkdir()
    first = write_tar(tmp_path / "first.tar", {"top/a.txt": b"first"})
    second = write_tar(tmp_path / "second.tar", {"top/a.txt": b"second", "top/b.txt": b"more"})
    with paused_in_another_process(tmp_path, "_unpack", "extract", first, work / "out") as other:
        staged = {p.name: extracted(p) for p in work.iterdir()}  # the other's staging folder, filled
        assert list(staged.values()) == [{"top/a.txt": b"first"}]
        assert extracted(download.extract(second, work / "out")) == {"top/a.txt": b"second", "top/b.txt": b"more"}
        assert {name: extracted(work / name) for name in staged} == staged
    assert other.returncode == 0, other.stderr
    assert extracted(work / "out") == {"top/a.txt": b"first"}
    assert sorted(p.name for p in work.iterdir()) == ["out"]


def test_extract_removes_what_a_killed_extraction_left(tmp_path):
    """SIGKILL runs no clean-up: an extraction killed midway leaves its staging folder, which the next extraction of
    the target removes."""
    work = tmp_path / "work"
    work.mkdir()
    archive = write_tar(tmp_path / "a.tar", {"top/a.txt": b"alpha"})
    with paused_in_another_process(tmp_path, "_unpack", "extract", archive, work / "out") as killed:
        killed.proc.kill()
        killed.proc.wait()
    left = [p for p in work.iterdir()]
    assert len(left) == 1 and extracted(left[0]) == {"top/a.txt": b"alpha"}  # its staging folder
    download.extract(archive, work / "out")
    assert sorted(p.name for p in work.iterdir()) == ["out"]


def test_extract_refuses_what_is_no_archive(tmp_path):
    archive = tmp_path / "a.tar"
    archive.write_bytes(b"this is not an archive" * 100)
    with pytest.raises(DataError, match="not a tar or zip"):
        download.extract(archive, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar"]


def damaged(path, start, length=64):
    """``path`` with ``length`` bytes from ``start`` (negative: from the end) flipped."""
    raw = bytearray(path.read_bytes())
    start = start % len(raw)
    for i in range(start, start + length):
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))
    return path


def test_extract_refuses_a_zip_whose_compressed_data_is_damaged(tmp_path):
    """Damaged deflate data raised zlib.error (no DataError, nothing named) out of zipfile."""
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("Task/dataset.json", bytes(range(256)) * 400)
    damaged(archive, 30 + len("Task/dataset.json"), 40)  # the member's compressed bytes, after its local header
    with pytest.raises(DataError, match="could not extract") as err:
        download.extract(archive, tmp_path / "out")
    assert str(archive) in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip"]


def test_extract_refuses_a_tar_gz_whose_gzip_check_fails(tmp_path):
    """Deflate data damaged in the middle can still inflate (to wrong bytes): only the gzip trailer's CRC, at the
    end of the stream, tells; extraction stopped reading at the last member and wrote the wrong bytes."""
    rng = random.Random(0)
    members = {f"Task/f{n}.bin": bytes(rng.getrandbits(8) for _ in range(20000)) for n in range(3)}
    archive = write_tar(tmp_path / "a.tar.gz", members, "w:gz")
    damaged(archive, len(archive.read_bytes()) // 2)
    with pytest.raises(DataError, match="could not extract") as err:
        download.extract(archive, tmp_path / "out")
    assert str(archive) in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.gz"]


# ------------------------------------------------------------------------------------------------ MSD


def test_msd_resource_is_the_registry_archive_and_agrees_with_monai():
    """The URL and MD5 come from the registry; MONAI's own records (an independent source) agree."""
    from monai.apps import DecathlonDataset

    for name, task in (("msd_liver", "Task03_Liver"), ("msd_lung", "Task06_Lung"), ("msd_spleen", "Task09_Spleen")):
        archive = get(name).archives[0]
        assert download.msd_resource(task) == (archive.url, archive.md5)
        assert (DecathlonDataset.resource[task], DecathlonDataset.md5[task]) == (archive.url, archive.md5)


def test_unknown_task_is_named():
    with pytest.raises(ValueError, match="Task99_Nothing"):
        download.msd_resource("Task99_Nothing")


@pytest.fixture
def spleen_tar(server, tmp_path, monkeypatch):
    """A Task09_Spleen.tar served on the loopback address; msd_resource points at it with its real MD5."""
    data = io.BytesIO()
    write_tar(data, {"Task09_Spleen/dataset.json": json.dumps({"name": "Spleen"}).encode(),
                     "Task09_Spleen/imagesTr/spleen_1.nii.gz": b"not really a volume"})
    server.files["/Task09_Spleen.tar"] = data.getvalue()
    url = f"{server.url}/Task09_Spleen.tar"
    monkeypatch.setattr(download, "msd_resource", lambda task: (url, md5(data.getvalue())))
    return data.getvalue()


def test_download_msd_extracts_task(spleen_tar, server, tmp_path):
    root = tmp_path / "msd"
    path = download.download_msd("Task09_Spleen", root)
    assert path == root / "Task09_Spleen" / "dataset.json"
    assert json.loads(path.read_text())["name"] == "Spleen"
    assert (root / "Task09_Spleen" / "imagesTr" / "spleen_1.nii.gz").read_bytes() == b"not really a volume"
    assert (root / "Task09_Spleen.tar").read_bytes() == spleen_tar
    assert sorted(p.name for p in root.iterdir()) == [".Task09_Spleen.extracted.json", "Task09_Spleen", "Task09_Spleen.tar"]
    assert download.download_msd("Task09_Spleen", root) == path and len(server.requests) == 1  # kept


def test_two_downloads_of_a_task_at_once_both_complete_and_keep_one_release(spleen_tar, server, tmp_path):
    """Two `s2dc download`s of one task at once (two workflow runs, or one by hand beside the workflow) unpack into
    folders of their own: both complete, and the release the first to finish moved into place is kept, never
    removed under its readers by the other. (Both unpacked into one fixed `.<task>.unpacked`: the second replaced
    the first's, which then found no dataset.json in its archive.)"""
    root = tmp_path / "msd"
    resource = [f"{server.url}/Task09_Spleen.tar", md5(spleen_tar)]
    with paused_in_another_process(tmp_path, "extract", "download_msd", "Task09_Spleen", root,
                                   resource=resource) as other:
        path = download.download_msd("Task09_Spleen", root)
        first = path.stat().st_ino
    assert other.returncode == 0, other.stderr
    assert path.stat().st_ino == first
    assert extracted(root / "Task09_Spleen") == {"dataset.json": json.dumps({"name": "Spleen"}).encode(),
                                                 "imagesTr/spleen_1.nii.gz": b"not really a volume"}
    assert sorted(p.name for p in root.iterdir()) == [".Task09_Spleen.extracted.json", "Task09_Spleen",
                                                      "Task09_Spleen.tar"]
    assert len(server.requests) == 1  # the archive downloaded once
    assert download.release_fingerprint(root) == ""


def test_download_msd_removes_what_a_download_killed_while_unpacking_left(spleen_tar, server, tmp_path):
    """SIGKILL runs no clean-up: a download killed once it unpacked the archive leaves the unpacked folder beside the
    task's, which the next download removes."""
    root = tmp_path / "msd"
    resource = [f"{server.url}/Task09_Spleen.tar", md5(spleen_tar)]
    with paused_in_another_process(tmp_path, "extract", "download_msd", "Task09_Spleen", root,
                                   resource=resource) as killed:
        killed.proc.kill()
        killed.proc.wait()
    left = sorted(p.name for p in root.iterdir() if p.name != "Task09_Spleen.tar")
    assert len(left) == 1 and (root / left[0] / "Task09_Spleen" / "dataset.json").is_file()  # what it unpacked
    download.download_msd("Task09_Spleen", root)
    assert sorted(p.name for p in root.iterdir()) == [".Task09_Spleen.extracted.json", "Task09_Spleen",
                                                      "Task09_Spleen.tar"]


def test_download_msd_never_replaces_files_put_in_the_task_folder_meanwhile(spleen_tar, server, tmp_path, monkeypatch):
    """Files put in the (empty or absent) task folder while the archive downloaded and unpacked are not s2dc's: they
    are left as they are and named, and what was unpacked is removed (they were deleted)."""
    root = tmp_path / "msd"
    mine = root / "Task09_Spleen" / "notes.txt"
    real = download.extract

    def extract_while_a_user_writes(archive, target, **named):
        done = real(archive, target, **named)
        mine.parent.mkdir(parents=True, exist_ok=True)
        mine.write_text("my own notes")
        return done

    monkeypatch.setattr(download, "extract", extract_while_a_user_writes)
    with pytest.raises(DataError, match=rf"into '{root / 'Task09_Spleen'}'"):
        download.download_msd("Task09_Spleen", root)
    assert mine.read_text() == "my own notes"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == [
        "Task09_Spleen", "Task09_Spleen.tar", "Task09_Spleen/notes.txt"]


def test_download_msd_never_replaces_a_task_folder_it_did_not_extract(spleen_tar, server, tmp_path):
    """A task folder without its dataset.json holds files s2dc did not extract (e.g. a copy being made by hand): the
    download refuses it before fetching anything, naming it, and leaves it as it was; an empty one is filled."""
    root = tmp_path / "msd"
    mine = root / "Task09_Spleen" / "imagesTr" / "spleen_1.nii.gz"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"my own copy")
    with pytest.raises(DataError, match="Task09_Spleen.*without its dataset.json"):
        download.download_msd("Task09_Spleen", root)
    assert mine.read_bytes() == b"my own copy" and server.requests == []
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == [
        "Task09_Spleen", "Task09_Spleen/imagesTr", "Task09_Spleen/imagesTr/spleen_1.nii.gz"]
    mine.unlink()
    mine.parent.rmdir()
    assert download.download_msd("Task09_Spleen", root) == root / "Task09_Spleen" / "dataset.json"


@pytest.mark.parametrize("points_at", ["an empty folder", "nothing"])
def test_download_msd_refuses_a_task_folder_that_is_a_symlink(spleen_tar, server, tmp_path, points_at):
    """A task folder that is a symbolic link (to an empty folder on another disk, or dangling) is not replaced by the
    extracted folder (nor followed): the download stops with a message naming it, before fetching, leaving it as it was."""
    root, elsewhere = tmp_path / "msd", tmp_path / "disk" / "Task09_Spleen"
    root.mkdir()
    if points_at == "an empty folder":
        elsewhere.mkdir(parents=True)
    (root / "Task09_Spleen").symlink_to(elsewhere)
    with pytest.raises(DataError, match="Task09_Spleen' is a symbolic link"):
        download.download_msd("Task09_Spleen", root)
    assert server.requests == [] and [p.name for p in root.iterdir()] == ["Task09_Spleen"]
    assert (root / "Task09_Spleen").readlink() == elsewhere
    assert (list(elsewhere.iterdir()) == []) if points_at == "an empty folder" else not elsewhere.exists()


def test_download_msd_md5_mismatch_leaves_nothing(spleen_tar, server, tmp_path, monkeypatch):
    url = f"{server.url}/Task09_Spleen.tar"
    monkeypatch.setattr(download, "msd_resource", lambda task: (url, "0" * 32))
    root = tmp_path / "msd"
    with pytest.raises(DataError, match="Task09_Spleen"):
        download.download_msd("Task09_Spleen", root)
    assert list(root.iterdir()) == []


def test_download_msd_refuses_an_archive_without_the_task(server, tmp_path, monkeypatch):
    data = io.BytesIO()
    write_tar(data, {"Other/dataset.json": b"{}"})
    server.files["/t.tar"] = data.getvalue()
    monkeypatch.setattr(download, "msd_resource", lambda task: (f"{server.url}/t.tar", md5(data.getvalue())))
    root = tmp_path / "msd"
    with pytest.raises(DataError, match="Task09_Spleen/dataset.json"):
        download.download_msd("Task09_Spleen", root)
    assert sorted(p.name for p in root.iterdir()) == ["Task09_Spleen.tar"]


def test_download_msd_names_the_task_folder_when_its_archive_is_truncated(server, tmp_path, monkeypatch):
    """An archive cut short (its MD5 the cut file's, as a mirror serving a broken copy would give): refused naming
    the archive and the task folder it was for, not this process's hidden staging folder; only the archive is
    left, so a rerun extracts it again."""
    data = io.BytesIO()
    write_tar(data, {"Task09_Spleen/dataset.json": b"{}", "Task09_Spleen/imagesTr/a.nii.gz": bytes(20000)})
    cut = data.getvalue()[:3000]
    server.files["/t.tar"] = cut
    monkeypatch.setattr(download, "msd_resource", lambda task: (f"{server.url}/t.tar", md5(cut)))
    root = tmp_path / "msd"
    with pytest.raises(DataError) as err:
        download.download_msd("Task09_Spleen", root)
    assert f"could not extract '{root / 'Task09_Spleen.tar'}' into '{root / 'Task09_Spleen'}'" in str(err.value)
    assert sorted(p.name for p in root.iterdir()) == ["Task09_Spleen.tar"]


def test_download_by_registry_name_then_prepare(server, tmp_path, monkeypatch):
    """`s2dc download msd_spleen` puts the release where `s2dc prepare msd_spleen` reads it."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_sources_msd import make_task

    make_task(tmp_path / "src", "msd_spleen")
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        tar.add(tmp_path / "src" / "Task09_Spleen", arcname="Task09_Spleen")
    server.files["/Task09_Spleen.tar"] = data.getvalue()
    monkeypatch.setattr(download, "msd_resource", lambda task: (f"{server.url}/{task}.tar", md5(data.getvalue())))
    raw = tmp_path / "raw" / "msd_spleen"
    assert download.download("msd_spleen", raw) == raw / "Task09_Spleen" / "dataset.json"
    from s2dc.data.sources import prepare

    doc = json.loads(prepare("msd_spleen", raw, tmp_path / "common").read_text())
    assert doc["name"] == "msd_spleen" and len(doc["training"]) + len(doc["validation"]) > 0


def test_a_registration_only_dataset_cannot_be_downloaded(tmp_path):
    with pytest.raises(DataError, match="(?s)BTCV .btcv. has no open archive.*synapse.org.*RawData/"):
        download.download("btcv", tmp_path / "raw")


def test_fetch_into_a_folder_is_refused_before_downloading(server, tmp_path):
    """The archive's destination (root/<task>.tar) being a folder is named before any byte is fetched (was an
    IsADirectoryError traceback after the whole download)."""
    server.files["/f.bin"] = PAYLOAD
    dest = tmp_path / "f.bin"
    (dest / "notes").mkdir(parents=True)
    with pytest.raises(DataError, match=f"'{dest}' is a folder"):
        download.fetch(f"{server.url}/f.bin", dest, md5(PAYLOAD))
    assert server.requests == [] and sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]
    assert (dest / "notes").is_dir()


def test_a_release_s2dc_extracted_is_fingerprinted_by_what_changed_since(spleen_tar, server, tmp_path):
    """The conversion job's fingerprint of an open release (a Snakemake param): '' while its download is pending and
    right after s2dc extracted it (the same, so the first run's DAG, built before the download, and the next run's
    agree: no conversion rerun for nothing); a file edited, added or removed in place since gives another
    fingerprint (so the release is converted again), the same one on every later start."""
    root = tmp_path / "msd_spleen"
    assert download.release_fingerprint(root, pending=True) == ""
    download.download_msd("Task09_Spleen", root)
    assert download.release_fingerprint(root) == ""
    (root / "Task09_Spleen.tar").unlink()  # deleted after extraction to save space: no conversion reads it
    assert download.release_fingerprint(root) == ""
    volume = root / "Task09_Spleen" / "imagesTr" / "spleen_1.nii.gz"
    volume.write_bytes(b"corrected in place")
    edited = download.release_fingerprint(root)
    assert edited != "" and download.release_fingerprint(root) == edited
    (root / "Task09_Spleen" / "imagesTr" / "spleen_2.nii.gz").write_bytes(b"added")
    assert download.release_fingerprint(root) not in ("", edited)


def test_a_release_extracted_by_hand_is_recorded_never_touched(spleen_tar, server, tmp_path):
    """An MSD task the user extracted by hand: `s2dc download` keeps every file of it as it is and records it as s2dc
    records what it extracts (`.Task09_Spleen.extracted.json`, the workflow's download job's output: a forced rerun
    deletes that record, never a file of the release); the release is then fingerprinted by what changed since."""
    root = tmp_path / "msd_spleen"
    download.download_msd("Task09_Spleen", tmp_path / "elsewhere")
    shutil.copytree(tmp_path / "elsewhere" / "Task09_Spleen", root / "Task09_Spleen")  # "by hand", no archive
    before = {p: p.read_bytes() for p in sorted((root / "Task09_Spleen").rglob("*")) if p.is_file()}
    assert download.release_fingerprint(root) not in ("", "absent")  # nothing recorded: every file counts
    assert download.download_msd("Task09_Spleen", root) == root / "Task09_Spleen" / "dataset.json"
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in root.iterdir()) == [".Task09_Spleen.extracted.json", "Task09_Spleen"]
    assert download.release_fingerprint(root) == ""
    (root / "Task09_Spleen" / "imagesTr" / "spleen_1.nii.gz").write_bytes(b"corrected in place")
    assert download.release_fingerprint(root) != ""


def test_a_release_no_one_recorded_is_fingerprinted_whole(tmp_path):
    """A release the user put in place (registration-only, or an open one extracted by hand): every file counts;
    'absent' without the folder."""
    root = tmp_path / "btcv"
    assert download.release_fingerprint(root) == "absent"
    (root / "RawData").mkdir(parents=True)
    (root / "RawData" / "img0001.nii.gz").write_bytes(b"a volume")
    first = download.release_fingerprint(root)
    assert first not in ("", "absent") and download.release_fingerprint(root) == first
    (root / "RawData" / "img0001.nii.gz").write_bytes(b"another volume")
    assert download.release_fingerprint(root) != first


def test_a_signal_between_the_renames_of_an_extraction_puts_the_old_target_back(tmp_path, monkeypatch):
    import os

    target = download.extract(write_tar(tmp_path / "a.tar", {"old.txt": b"old"}), tmp_path / "out")
    calls = []

    def interrupted_after_the_first(real):
        def rename(src, dst):
            calls.append(dst)
            if len(calls) == 2:
                raise KeyboardInterrupt  # the signal's handler runs as the second rename begins
            return real(src, dst)
        return rename

    monkeypatch.setattr(os, "replace", interrupted_after_the_first(os.replace))
    monkeypatch.setattr(os, "rename", interrupted_after_the_first(os.rename))
    with pytest.raises(KeyboardInterrupt):
        download.extract(write_tar(tmp_path / "b.tar", {"new.txt": b"new"}), target)
    monkeypatch.undo()
    assert (target / "old.txt").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar", "b.tar", "out"]


def test_download_msd_refuses_a_file_where_the_task_folder_goes_before_fetching(spleen_tar, server, tmp_path):
    root = tmp_path / "msd"
    root.mkdir()
    (root / "Task09_Spleen").write_text("a user's notes")
    with pytest.raises(DataError, match=rf"'{root / 'Task09_Spleen'}' is a file"):
        download.download_msd("Task09_Spleen", root)
    assert server.requests == [] and (root / "Task09_Spleen").read_text() == "a user's notes"


def test_a_pools_fingerprint_covers_the_volumes_its_list_names_outside_its_folder(tmp_path):
    """A pool is its dataset.json and the volumes it lists, wherever they lie (`../vols/...`): replacing one of those
    changes the fingerprint, so the conversion and the pretraining after it run again."""
    import os

    vols, pool = tmp_path / "vols", tmp_path / "ct_pool"
    vols.mkdir()
    pool.mkdir()
    for i in range(2):
        (vols / f"case_{i}.nii.gz").write_bytes(b"volume %d" % i)
    (pool / "inside.nii.gz").write_bytes(b"inside")
    (pool / "dataset.json").write_text(json.dumps({"training": [
        {"image": "../vols/case_0.nii.gz"}, "../vols/case_1.nii.gz", {"image": "inside.nii.gz"}]}))
    before = download.release_fingerprint(pool)
    assert download.release_fingerprint(pool) == before
    (vols / "unlisted.nii.gz").write_bytes(b"not in the pool")
    assert download.release_fingerprint(pool) == before
    target = vols / "case_1.nii.gz"
    target.write_bytes(b"another volume")
    os.utime(target, ns=(1, 1))
    assert download.release_fingerprint(pool) != before


def test_fetch_resumes_the_part_an_earlier_version_left(server, tmp_path):
    """s2dc before 2026-12-05 downloaded into ``<dest>.part``: a user who updates s2dc while a large download (an
    8.5 GB MSD task) is stopped resumes it, not starts it again, and the old part is gone after."""
    server.files["/f.bin"] = PAYLOAD
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:5000])
    download.fetch(f"{server.url}/f.bin", dest, md5(PAYLOAD))
    assert [r["range"] for r in server.requests] == ["bytes=5000-"]
    assert dest.read_bytes() == PAYLOAD
    assert sorted(tmp_path.iterdir()) == [dest]


def test_download_msd_removes_the_work_folders_an_earlier_version_left(spleen_tar, server, tmp_path):
    """s2dc before 2026-12-05 unpacked an MSD task into a fixed ``.<task>.unpacked`` (staged in
    ``..<task>.unpacked.extracting``), removed at its next start: a download stopped under it left a whole unpacked
    release there (8.5 GB for Task03_Liver), which the updated s2dc never looked at again. Its start removes them."""
    root = tmp_path / "msd"
    for legacy in (".Task09_Spleen.unpacked", "..Task09_Spleen.unpacked.extracting"):
        (root / legacy / "Task09_Spleen").mkdir(parents=True)
        (root / legacy / "Task09_Spleen" / "dataset.json").write_text("{}")
    download.download_msd("Task09_Spleen", root)
    assert sorted(p.name for p in root.iterdir()) == [".Task09_Spleen.extracted.json", "Task09_Spleen",
                                                      "Task09_Spleen.tar"]


def test_extract_removes_the_staging_folder_an_earlier_version_left(tmp_path):
    """s2dc before 2026-12-05 staged an extraction in a fixed ``.<target>.extracting``, removed at its next start:
    an extraction stopped under it left it behind, which the updated s2dc never looked at again."""
    archive = tmp_path / "a.tar"
    write_tar(archive, {"x.txt": b"x"})
    (tmp_path / ".out.extracting" / "half").mkdir(parents=True)
    download.extract(archive, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar", "out"]
