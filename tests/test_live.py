"""Training curves: DVCLive's file layout, written without DVCLive; a fresh run replaces an earlier log, a resumed
one drops the rows logged after its checkpoint."""

from __future__ import annotations

import json

import pytest

from s2dc.train.live import MetricLog


def test_curves_and_summary_have_dvclives_layout(tmp_path):
    """One tab-separated step/value table per name (nested folders at '/'), the last value of each name nested in
    metrics.json with the last step at the end; a non-finite value is spelt as DVCLive spells it."""
    log = MetricLog(tmp_path / "live")
    log.log(1, {"train/loss": 0.75, "train/lr": 1e-4})
    log.log(2, {"train/loss": 0.5})
    log.log(2, {"val/dice_per_class/tumour core": 0.25, "val/x": float("nan")})
    log.close()
    curves = tmp_path / "live" / "plots" / "metrics"
    assert (curves / "train" / "loss.tsv").read_text() == "step\tloss\n1\t0.75\n2\t0.5\n"
    assert (curves / "train" / "lr.tsv").read_text() == "step\tlr\n1\t0.0001\n"
    assert (curves / "val" / "dice_per_class" / "tumour core.tsv").read_text() == "step\ttumour core\n2\t0.25\n"
    assert (curves / "val" / "x.tsv").read_text() == "step\tx\n2\tnan\n"
    text = (tmp_path / "live" / "metrics.json").read_text()
    assert text.endswith("\n") and list(json.loads(text)) == ["train", "val", "step"]
    assert json.loads(text) == {"train": {"loss": 0.5, "lr": 1e-4},
                                "val": {"dice_per_class": {"tumour core": 0.25}, "x": "nan"}, "step": 2}


def test_a_fresh_log_replaces_an_earlier_one_and_a_resumed_one_continues_it(tmp_path):
    folder = tmp_path / "live"
    first = MetricLog(folder)
    for step in (1, 2, 3):
        first.log(step, {"train/loss": step / 10, "train/old": 1.0})
    first.close()

    resumed = MetricLog(folder, resume_step=2)  # checkpointed at 2, logged 3 before it was killed
    resumed.log(3, {"train/loss": 0.35})
    resumed.close()
    assert (folder / "plots/metrics/train/loss.tsv").read_text() == "step\tloss\n1\t0.1\n2\t0.2\n3\t0.35\n"
    assert json.loads((folder / "metrics.json").read_text()) == {"train": {"loss": 0.35, "old": 1.0}, "step": 3}

    fresh = MetricLog(folder)
    assert not (folder / "metrics.json").exists() and not (folder / "plots/metrics/train").exists()
    fresh.log(1, {"train/loss": 0.9})
    fresh.close()
    assert (folder / "plots/metrics/train/loss.tsv").read_text() == "step\tloss\n1\t0.9\n"
    assert json.loads((folder / "metrics.json").read_text()) == {"train": {"loss": 0.9}, "step": 1}


def test_a_resume_killed_while_cutting_the_curves_back_leaves_them_whole(tmp_path, monkeypatch):
    """Cutting the rows after the resumed step goes through a temporary file: a kill in the middle of that write
    leaves the curve as it was (never a header-less stub that later rows are appended to)."""
    from pathlib import Path

    folder = tmp_path / "live"
    log = MetricLog(folder)
    for step in (1, 2, 3):
        log.log(step, {"train/loss": step / 10})
    log.close()
    curve = folder / "plots/metrics/train/loss.tsv"
    before = curve.read_text()

    def half_then_killed(self, data, *args, **kwargs):
        with open(self, "wb" if isinstance(data, bytes) else "w") as handle:
            handle.write(data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", half_then_killed)
    monkeypatch.setattr(Path, "write_bytes", half_then_killed)
    with pytest.raises(KeyboardInterrupt):
        MetricLog(folder, resume_step=2)
    monkeypatch.undo()
    assert curve.read_text() == before
    assert [p.name for p in curve.parent.iterdir()] == ["loss.tsv"]


def test_a_row_cut_off_by_a_full_disk_is_never_appended_to_on_resume(tmp_path, monkeypatch):
    """A full disk can cut a row short ("1" of "12\t..."): the run fails, and its resume from the checkpoint at step 10
    drops that stub with the rows after 10, as it drops a header cut short, instead of appending step 11 to it (a
    curve with a step 111 and none at 11)."""
    import builtins
    import errno

    import s2dc.train.live as live

    folder = tmp_path / "live"
    log = MetricLog(folder)
    for step in range(1, 12):
        log.log(step, {"train/loss": step / 100})
    real_open = builtins.open

    def cut_short(path, mode="r", *args, **kwargs):
        with real_open(path, mode, *args, **kwargs) as handle:
            handle.write("1" if path.name == "loss.tsv" else "step\tlo")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(live, "open", cut_short, raising=False)
    for name, value in (("train/loss", 0.12), ("val/dice", 0.5)):
        with pytest.raises(OSError):
            log.log(12, {name: value})
    monkeypatch.undo()
    curves = folder / "plots/metrics"
    assert (curves / "train/loss.tsv").read_text().endswith("\n11\t0.11\n1")  # the stub the failed write left
    assert (curves / "val/dice.tsv").read_text() == "step\tlo"

    resumed = MetricLog(folder, resume_step=10)
    resumed.log(11, {"train/loss": 0.5, "val/dice": 0.25})
    resumed.close()
    rows = (curves / "train/loss.tsv").read_text().splitlines()
    assert rows[0] == "step\tloss" and [int(r.split("\t")[0]) for r in rows[1:]] == list(range(1, 12))
    assert rows[-1] == "11\t0.5"
    assert (curves / "val/dice.tsv").read_text() == "step\tdice\n11\t0.25\n"


def test_a_summary_that_fails_to_write_leaves_the_earlier_one_and_no_partial_file(tmp_path, monkeypatch):
    """metrics.json is written through the project's atomic writer: a full disk part-way through leaves the earlier
    summary and no temporary file beside it."""
    import errno
    from pathlib import Path

    folder = tmp_path / "live"
    log = MetricLog(folder)
    log.log(1, {"train/loss": 0.5})
    log.close()
    before = (folder / "metrics.json").read_text()

    def half_then_full(self, data, *args, **kwargs):
        with open(self, "wb" if isinstance(data, bytes) else "w") as handle:
            handle.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    log = MetricLog(folder, resume_step=1)
    log.log(2, {"train/loss": 0.25})
    monkeypatch.setattr(Path, "write_text", half_then_full)
    monkeypatch.setattr(Path, "write_bytes", half_then_full)
    with pytest.raises(OSError):
        log.close()
    monkeypatch.undo()
    assert (folder / "metrics.json").read_text() == before
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.json", "plots"]
