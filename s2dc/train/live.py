"""Training curves and progress: DVCLive when it is installed, a progress bar or plain progress lines."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tqdm import tqdm


class MetricLog:
    """Curves of one run in ``folder`` (DVCLive's layout: ``plots/metrics/<name>.tsv``, ``metrics.json``).

    ``resume_step``: continue an earlier log, first dropping the rows it wrote after that step (a run
    killed between logging and checkpointing would otherwise log those steps twice). Without DVCLive
    (``pip install s2dc[pipeline]``) nothing is written and a notice says so.
    """

    def __init__(self, folder: str | Path, resume_step: int | None = None) -> None:
        self.folder = Path(folder)
        try:
            from dvclive import Live
        except ImportError:
            print("note: dvclive is not installed, so no training curves are written "
                  "(pip install 's2dc[pipeline]')", file=sys.stderr)
            self.live = None
            return
        if resume_step is not None:
            truncate_history(self.folder, resume_step)
        self.live = Live(str(self.folder), resume=resume_step is not None, save_dvc_exp=False, dvcyaml=False)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self.live is None:
            return
        self.live.step = step
        for name, value in metrics.items():
            self.live.log_metric(name, value)

    def close(self) -> None:
        if self.live is not None:
            self.live.end()


def truncate_history(folder: Path, step: int) -> None:
    """Drop the rows after ``step`` from every DVCLive curve (``*.tsv`` with a ``step`` column) in ``folder``."""
    for tsv in (Path(folder) / "plots" / "metrics").rglob("*.tsv"):
        lines = tsv.read_text().splitlines(keepends=True)
        if not lines or not lines[0].startswith("step\t"):
            continue
        kept = [lines[0]] + [row for row in lines[1:] if int(row.split("\t", 1)[0]) <= step]
        if len(kept) != len(lines):
            tsv.write_text("".join(kept))


class Progress:
    """A tqdm bar (``bar=True``) or, for logs, one line every ``every`` steps: step, metrics, speed, time left."""

    def __init__(self, desc: str, total: int, initial: int, every: int, bar: bool) -> None:
        self.desc, self.total, self.every = desc, total, every
        self.start_step, self.started = initial, time.perf_counter()
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True) if bar else None

    def update(self, step: int, metrics: dict[str, float]) -> None:
        shown = {k: f"{v:.4g}" for k, v in metrics.items()}
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(shown)
            return
        if step % self.every and step != self.total:
            return
        done = step - self.start_step
        per_step = (time.perf_counter() - self.started) / max(done, 1)
        left = per_step * (self.total - step)
        values = " ".join(f"{k} {v}" for k, v in shown.items())
        print(f"{self.desc} step {step}/{self.total} {values} | {per_step:.2f} s/step, {_clock(left)} left", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
