"""MSD download against a local fixture archive (this machine cannot reach the real URL)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import tarfile
import threading

import pytest
from monai.apps import DecathlonDataset

from s2dc.data import download
from s2dc.data.volumes import DataError


@pytest.fixture
def fake_spleen(tmp_path, monkeypatch):
    """A Task09_Spleen.tar with a dataset.json, served over HTTP on the loopback address, with its real MD5."""
    src = tmp_path / "src" / "Task09_Spleen"
    (src / "imagesTr").mkdir(parents=True)
    (src / "dataset.json").write_text(json.dumps({"name": "Spleen", "training": []}))
    (src / "imagesTr" / "spleen_1.nii.gz").write_bytes(b"not really a volume")
    archive = tmp_path / "served.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(src, arcname="Task09_Spleen")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setitem(DecathlonDataset.resource, "Task09_Spleen", f"http://127.0.0.1:{server.server_port}/served.tar")
    monkeypatch.setitem(DecathlonDataset.md5, "Task09_Spleen", md5)
    yield archive
    server.shutdown()
    server.server_close()


def test_uses_monai_url_and_md5():
    """The task's URL and MD5 are MONAI's own records."""
    url, md5 = download.msd_resource("Task09_Spleen")
    assert url.endswith("Task09_Spleen.tar") and len(md5) == 32


def test_download_extracts_task(fake_spleen, tmp_path):
    """Download + MD5 check + extraction yield root/Task09_Spleen/dataset.json and no staging folder."""
    root = tmp_path / "msd"
    path = download.download_msd("Task09_Spleen", root)
    assert path == root / "Task09_Spleen" / "dataset.json"
    assert json.loads(path.read_text())["name"] == "Spleen"
    assert (root / "Task09_Spleen" / "imagesTr" / "spleen_1.nii.gz").is_file()
    assert not (root / ".Task09_Spleen.extracting").exists()
    assert download.download_msd("Task09_Spleen", root) == path  # already there: kept


def test_md5_mismatch_is_an_error_and_leaves_nothing(fake_spleen, tmp_path, monkeypatch):
    """A wrong checksum fails with the task, URL and file named, and no task folder appears."""
    monkeypatch.setitem(DecathlonDataset.md5, "Task09_Spleen", "0" * 32)
    root = tmp_path / "msd"
    with pytest.raises(DataError, match="Task09_Spleen"):
        download.download_msd("Task09_Spleen", root)
    assert not (root / "Task09_Spleen").exists()


def test_unknown_task_is_named():
    with pytest.raises(ValueError, match="Task99_Nothing"):
        download.msd_resource("Task99_Nothing")
