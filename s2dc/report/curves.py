"""DVCLive curves of the fine-tuning runs gathered per dataset, one column per method (mean over seeds), so that
``dvc plots show`` draws S²DC and scratch on one chart: ``<dataset>/train_loss.tsv`` and ``<dataset>/val_score.tsv``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..files import atomic_write_text
from .runs import TASK_METRICS


def train_loss(run: dict) -> pd.DataFrame:
    """step, loss of one run, from its DVCLive folder beside metrics.json."""
    path = Path(run["_path"]).parent / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv"
    try:
        return pd.read_csv(path, sep="\t")[["step", "loss"]]
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"bad DVCLive curve '{path}': expected a tab-separated step/loss table ({err})") from err


def val_score(run: dict) -> pd.DataFrame:
    """step, score of one run, from metrics.json's validation history (the task's score, as the table shows it)."""
    key = run["score"]["key"]
    scale = dict((k, s) for k, _, s in TASK_METRICS[run["task"]])[key]  # 100 for a score shown in %
    return pd.DataFrame([{"step": h["step"], "score": scale * h[key]} for h in run["history"]])


def by_method(runs: list[dict], read, column: str) -> pd.DataFrame:
    """step, then one column per method: the mean over seeds of ``read(run)[column]`` at each step."""
    frames = [read(r).assign(method=r["method"]) for r in runs]
    long = pd.concat(frames, ignore_index=True)
    wide = long.groupby(["step", "method"])[column].mean().unstack("method")
    order = list(dict.fromkeys(r["method"] for r in runs))
    return wide[order].reset_index()


def write_curves(runs: list[dict], out_dir: Path) -> list[Path]:
    """For each dataset (and label ratio after the first: ``<dataset>_labels<N>pct``) the two tables, as TSV."""
    written = []
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["dataset"], float(r["label_ratio"])), []).append(r)
    lowest = {d: min(ratio for dd, ratio in groups if dd == d) for d, _ in groups}
    for (dataset, ratio), members in groups.items():
        name = dataset if ratio == lowest[dataset] else f"{dataset}_labels{round(100 * ratio)}pct"
        for stem, read, column in (("train_loss", train_loss, "loss"), ("val_score", val_score, "score")):
            path = Path(out_dir) / stem / f"{name}.tsv"
            atomic_write_text(path, by_method(members, read, column).to_csv(sep="\t", index=False, float_format="%.6g"))
            written.append(path)
    return written
