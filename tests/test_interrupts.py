"""Commands killed (``kill -9``) in the middle of a write: what they leave is never taken for a user's file or a
result, and the next run (or the workflow's start) carries on."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from s2dc.train.live import MetricLog
from s2dc.train.outputs import foreign_curve_files


def killed_before_rename(code: str, target: str, cwd) -> None:
    """Run ``code`` in a child Python that kills itself with SIGKILL when an atomic write is about to rename its
    temporary file onto a path ending in ``target``: what ``kill -9`` at that moment leaves behind."""
    prelude = textwrap.dedent(f"""
        import os, signal
        real = os.replace
        def replace(src, dst, *args, **kwargs):
            if str(dst).endswith({target!r}):
                os.kill(os.getpid(), signal.SIGKILL)
            return real(src, dst, *args, **kwargs)
        os.replace = replace
        """)
    done = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, capture_output=True, text=True)
    assert done.returncode == -9, done.stderr


def test_a_curve_log_killed_while_writing_leaves_nothing_for_the_next_run_to_copy(tmp_path):
    """A pretraining killed while it wrote its curves' metrics.json (or a curve cut back at resume) left the temporary
    file in its dvclive/, which the resumed run kept: the workflow copies that folder as the encoder's curves, and its
    start check then refused every later run ('... is not a curve file s2dc writes ... (nothing was run)')."""
    killed_before_rename("""
        from s2dc.train.live import MetricLog
        log = MetricLog("live")
        for step in (1, 2, 3):
            log.log(step, {"pretrain/loss": step / 10})
        log.close()
        """, "live/metrics.json", tmp_path)
    live = tmp_path / "live"
    assert [p.name.split(".")[1] for p in live.glob(".*.tmp")] == ["metrics"]
    MetricLog(live, resume_step=3).close()  # the run resumed from its checkpoint at step 3
    assert foreign_curve_files(live) == []
    killed_before_rename("""
        from s2dc.train.live import MetricLog
        MetricLog("live", resume_step=2)
        """, "loss.tsv", tmp_path)
    assert [p.name.split(".")[1] for p in live.rglob(".*.tmp")] == ["loss"]
    MetricLog(live, resume_step=2).close()  # resumed from its checkpoint at step 2
    assert foreign_curve_files(live) == []
    (live / "notes").mkdir()
    (live / "notes" / ".draft.tmp").write_text("mine")  # a file of a user's is no write of the log's
    MetricLog(live).close()  # the run started afresh
    assert [p.name for p in foreign_curve_files(live)] == [".draft.tmp"]
