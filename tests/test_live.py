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
