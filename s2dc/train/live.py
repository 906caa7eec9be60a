"""Training curves and progress: curves in DVCLive's file layout, a progress bar or plain progress lines."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
from pathlib import Path

from tqdm import tqdm

from s2dc.files import atomic_write_text, remove_abandoned


class MetricLog:
    """Curves of one run in ``folder``, in DVCLive's layout (``plots/metrics/<name>.tsv`` with a ``step`` column,
    ``metrics.json`` with the last value of each name, nested at its ``/``), so that ``dvc plots`` and
    ``dvc metrics`` read them.

    Written here rather than by DVCLive, whose ``Live()`` runs ``dvc init`` in whatever Git repository it starts
    in and stages its files in the user's index (treeverse/dvclive#539), and costs ~1.3 s of start-up per run.
    ``resume_step``: continue an earlier log, first dropping the rows it wrote after that step (a run killed
    between logging and checkpointing would otherwise log those steps twice); without it, an earlier log in
    ``folder`` is replaced. Either way the temporary files of a killed run's writes go first
    (:func:`remove_stale_writes`).
    """

    def __init__(self, folder: str | Path, resume_step: int | None = None) -> None:
        self.folder = Path(folder)
        self.curves = self.folder / "plots" / "metrics"
        self.summary_file = self.folder / "metrics.json"
        self.summary: dict = {}
        self.step: int | None = None
        remove_stale_writes(self.folder)
        if resume_step is None:
            shutil.rmtree(self.curves, ignore_errors=True)
            self.summary_file.unlink(missing_ok=True)
        else:
            truncate_history(self.folder, resume_step)
            if self.summary_file.exists():
                self.summary = json.loads(self.summary_file.read_text())
        self.curves.mkdir(parents=True, exist_ok=True)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Append ``step`` and each value to the curve of its name (``train/loss`` -> ``train/loss.tsv``)."""
        for name, value in metrics.items():
            value = value.item() if hasattr(value, "item") else value  # a numpy or torch scalar
            if isinstance(value, float) and not math.isfinite(value):
                value = str(value)  # DVCLive's spelling: 'nan', 'inf'
            path = self.curves / f"{name}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            existed = path.exists()
            with open(path, "a", encoding="utf-8", newline="") as handle:
                writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
                if not existed:
                    writer.writerow(["step", os.path.basename(name)])
                writer.writerow([step, value])
            *parents, leaf = name.split("/")
            node = self.summary
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value
        self.step = step

    def close(self) -> None:
        """Write ``metrics.json`` (atomically: a killed run leaves the earlier one or none)."""
        if self.step is None:
            return
        self.summary.pop("step", None)
        self.summary["step"] = self.step  # last, as DVCLive writes it
        atomic_write_text(self.summary_file, json.dumps(self.summary, indent=4) + "\n")


def remove_stale_writes(folder: Path) -> None:
    """Delete the temporary files that a killed run's atomic writes left in ``folder``: ``metrics.json``'s and the
    curves' (:func:`truncate_history`). The workflow copies a pretraining's folder as its curves, where such a file is
    no curve (its start check refuses it)."""
    curves = Path(folder) / "plots" / "metrics"
    remove_abandoned(folder, "metrics.json", every_host=True)
    for sub in (curves, *curves.rglob("*")):
        if sub.is_dir():
            remove_abandoned(sub, "*.tsv", every_host=True)


def truncate_history(folder: Path, step: int) -> None:
    """Drop the rows after ``step`` from every curve (``*.tsv`` with a ``step`` column) in ``folder``."""
    for tsv in (Path(folder) / "plots" / "metrics").rglob("*.tsv"):
        lines = tsv.read_text().splitlines(keepends=True)
        if not lines or not lines[0].startswith("step\t"):
            continue
        if not lines[0].endswith("\n"):  # a header cut off by a failed write (a full disk): the log writes it anew
            tsv.unlink()
            continue
        # a row cut off by a failed write goes too: the next row would be appended to it ("1" + "11\t..." = step 111)
        kept = [lines[0]] + [row for row in lines[1:] if row.endswith("\n") and int(row.split("\t", 1)[0]) <= step]
        if len(kept) != len(lines):
            atomic_write_text(tsv, "".join(kept))  # a kill mid-write must not leave a cut-off curve


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
