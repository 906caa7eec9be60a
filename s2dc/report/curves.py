"""DVCLive curves of the fine-tuning runs gathered per dataset, one column per method (mean over seeds), so that
``dvc plots show`` draws S²DC and scratch on one chart: ``train_loss/<dataset>.tsv`` and ``val_score/<dataset>.tsv``,
recorded by their SHA-256 in the folder's ``.s2dc-curves.json`` (the only tables a rerun replaces)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from ..files import atomic_write_text
from .outputs import refuse_unless_own
from .runs import TASK_METRICS


def train_loss(run: dict) -> pd.DataFrame:
    """step, loss of one run, from its DVCLive folder beside metrics.json."""
    path = Path(run["_path"]).parent / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv"
    try:
        return pd.read_csv(path, sep="\t")[["step", "loss"]]
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"bad DVCLive curve '{path}': expected a tab-separated step/loss table ({err})") from err


def val_score(run: dict) -> pd.DataFrame:
    """step, score of one run, from metrics.json's validation history (the task's score, as the table shows it); a
    step whose score is null (not scorable on the validation cases) is left out."""
    key = run["score"]["key"]
    scale = dict((k, s) for k, _, s in TASK_METRICS[run["task"]])[key]  # 100 for a score shown in %
    return pd.DataFrame([{"step": h["step"], "score": scale * h[key]} for h in run["history"] if h.get(key) is not None],
                        columns=["step", "score"])


def by_method(runs: list[dict], read, column: str) -> pd.DataFrame:
    """step, then one column per method: the mean over seeds of ``read(run)[column]`` at each step."""
    frames = [read(r).assign(method=r["method"]) for r in runs]
    long = pd.concat(frames, ignore_index=True)
    wide = long.groupby(["step", "method"])[column].mean().unstack("method")
    order = list(dict.fromkeys(r["method"] for r in runs))
    return wide[order].reset_index()


def curve_tables(runs: list[dict]) -> dict[str, pd.DataFrame]:
    """For each dataset (and label ratio after the first: ``<dataset>_labels<N>pct``) the two tables, by their path
    under the curves folder (``train_loss/<name>.tsv``, ``val_score/<name>.tsv``); every DVCLive file read here,
    before anything is written."""
    tables = {}
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["dataset"], float(r["label_ratio"])), []).append(r)
    lowest = {d: min(ratio for dd, ratio in groups if dd == d) for d, _ in groups}
    for (dataset, ratio), members in groups.items():
        name = dataset if ratio == lowest[dataset] else f"{dataset}_labels{round(100 * ratio)}pct"
        for stem, read, column in (("train_loss", train_loss, "loss"), ("val_score", val_score, "score")):
            tables[f"{stem}/{name}.tsv"] = by_method(members, read, column)
    return tables


#: The record of the tables a folder holds from ``s2dc plots``: ``{"<path under the folder>": [sha256, ...]}``. A table
#: is replaced only while its bytes are those recorded (a user's table, or one of ours the user edited, never is).
RECORD = ".s2dc-curves.json"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _record(out_dir: Path) -> dict[str, list[str]]:
    try:
        record = json.loads((Path(out_dir) / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def is_own_table(out_dir: Path, name: str) -> bool:
    """Whether ``out_dir/name`` is a curve table this command wrote there, unchanged since (:data:`RECORD`)."""
    path = Path(out_dir) / name
    return path.is_file() and not path.is_symlink() and _sha256(path) in _record(out_dir).get(name, [])


def check_curves_out(out_dir: Path, names: list[str]) -> None:
    """Raise ValueError, naming the file, if a table's path under ``out_dir`` holds a file that is not a curve table
    this command wrote there (:data:`RECORD`): a user's file is never replaced."""
    for name in names:
        if not is_own_table(out_dir, name):
            refuse_unless_own(Path(out_dir) / name, lambda text: False, "a curve table s2dc wrote",
                              " (or it was changed since; move it away to let s2dc plots write its own)")


def write_curves(tables: dict[str, pd.DataFrame], out_dir: Path) -> list[Path]:
    """Write :func:`curve_tables` as TSV under ``out_dir`` (:func:`check_curves_out` first) and record them: the
    record lists the old and the new bytes of each table while they are replaced (an interrupted rerun leaves only
    tables of ours), then the new ones."""
    check_curves_out(out_dir, list(tables))
    out_dir = Path(out_dir)
    texts = {name: table.to_csv(sep="\t", index=False, float_format="%.6g") for name, table in tables.items()}
    new = {name: hashlib.sha256(text.encode()).hexdigest() for name, text in texts.items()}
    record = _record(out_dir)
    during = {**record, **{name: sorted({new[name], *record.get(name, [])}) for name in texts}}
    atomic_write_text(out_dir / RECORD, json.dumps(during, indent=1, sort_keys=True))
    written = []
    for name, text in texts.items():
        atomic_write_text(out_dir / name, text)
        written.append(out_dir / name)
    atomic_write_text(out_dir / RECORD, json.dumps({**record, **{n: [h] for n, h in new.items()}}, indent=1,
                                                   sort_keys=True))
    return written
