"""DVCLive curves of the fine-tuning runs gathered per dataset, one column per method (mean over seeds), so that
``dvc plots show`` draws S²DC and scratch on one chart: ``<dataset>/train_loss.tsv`` and ``<dataset>/val_score.tsv``."""

from __future__ import annotations

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


def check_curves_out(out_dir: Path, names: list[str]) -> None:
    """Raise ValueError, naming the file, if a table's path under ``out_dir`` holds a file that is not a curve table
    (its first line is not a ``step`` column header): a user's file is never replaced."""
    for name in names:
        refuse_unless_own(Path(out_dir) / name, lambda text: text.startswith("step\t"), "a curve table s2dc wrote")


def write_curves(tables: dict[str, pd.DataFrame], out_dir: Path) -> list[Path]:
    """Write :func:`curve_tables` as TSV under ``out_dir`` (:func:`check_curves_out` first)."""
    check_curves_out(out_dir, list(tables))
    written = []
    for name, table in tables.items():
        path = Path(out_dir) / name
        atomic_write_text(path, table.to_csv(sep="\t", index=False, float_format="%.6g"))
        written.append(path)
    return written
