"""Benchmark table: every fine-tuning ``metrics.json`` -> mean ± std over seeds, beside the paper's numbers.

Writes ``<out>/benchmark.csv`` (one row per dataset × method × label ratio), ``<out>/benchmark.md``
(the same as a Markdown table) and ``<out>/metrics.json`` (nested, for ``dvc metrics diff``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from .train.checkpoint import atomic_write_text

# Numbers printed in the poster (method.md §7): (dataset, method, label ratio) -> score in %.
# Table 2 is the full-label ablation on BTCV (Dice); Table 1 is CC-CCII accuracy.
PAPER = {
    ("btcv", "s2dc", 1.0): 84.14,
    ("btcv", "s2dc_lg", 1.0): 83.43,
    ("btcv", "s2dc_lg_p2p", 1.0): 83.98,
    ("btcv", "s2dc_lg_p2s", 1.0): 84.02,
    ("cc-ccii", "scratch", 0.1): 77.15,
    ("cc-ccii", "scratch", 0.5): 92.28,
    ("cc-ccii", "scratch", 1.0): 94.15,
    ("cc-ccii", "s2dc", 0.1): 88.29,
    ("cc-ccii", "s2dc", 0.5): 93.89,
    ("cc-ccii", "s2dc", 1.0): 95.34,
}

SCORE_KEYS = {"segmentation": "dice_mean"}


def paper_name(dataset: str) -> str:
    """The real dataset a (possibly synthetic) dataset stands for: 'synthetic_btcv' -> 'btcv'."""
    return dataset.lower().removeprefix("synthetic_")


def collect(metric_files: list[Path]) -> pd.DataFrame:
    """One row per fine-tuning run: dataset, task, method, label_ratio, seed, score (%), train_cases, seconds."""
    rows = []
    for path in metric_files:
        try:
            m = json.loads(Path(path).read_text())
            score = m[SCORE_KEYS[m["task"]]]
            rows.append({
                "dataset": m["dataset"], "task": m["task"], "method": m["method"],
                "label_ratio": float(m["label_ratio"]), "seed": int(m["seed"]),
                "score": 100.0 * float(score), "train_cases": int(m["train_cases"]), "seconds": float(m["seconds"]),
            })
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"bad metrics file '{path}': {err!r}") from err
    if not rows:
        raise ValueError("no metrics files to aggregate")
    return pd.DataFrame(rows)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sample std over seeds per (dataset, task, method, label_ratio), with the paper's number."""
    grouped = runs.groupby(["dataset", "task", "method", "label_ratio"], sort=True)
    table = grouped.agg(
        mean=("score", "mean"), std=("score", "std"), seeds=("seed", "nunique"),
        train_cases=("train_cases", "first"), minutes=("seconds", lambda s: s.sum() / 60),
    ).reset_index()
    table["std"] = table["std"].fillna(0.0)
    table["paper"] = [PAPER.get((paper_name(d), m, r), math.nan) for d, m, r in zip(table.dataset, table.method, table.label_ratio)]
    return table


def markdown(table: pd.DataFrame) -> str:
    """The benchmark as a Markdown table (score: Dice % for segmentation)."""
    lines = [
        "| dataset | task | method | labels | score (mean ± std) | seeds | train cases | paper (real data) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in table.itertuples():
        paper = "—" if math.isnan(row.paper) else f"{row.paper:.2f}"
        lines.append(
            f"| {row.dataset} | {row.task} | {row.method} | {row.label_ratio:.0%} | {row.mean:.2f} ± {row.std:.2f} "
            f"| {row.seeds} | {row.train_cases} | {paper} |"
        )
    return "\n".join(lines) + "\n"


def nested_metrics(table: pd.DataFrame) -> dict:
    """{dataset: {method: {"labels_10%": {"mean", "std", "seeds"}}}} for ``dvc metrics``."""
    out: dict = {}
    for row in table.itertuples():
        cell = out.setdefault(row.dataset, {}).setdefault(row.method, {})
        cell[f"labels_{row.label_ratio:.0%}"] = {"mean": round(row.mean, 4), "std": round(row.std, 4), "seeds": int(row.seeds)}
    return out


def write_report(metric_files: list[Path], out_dir: Path) -> pd.DataFrame:
    """Aggregate ``metric_files`` and write benchmark.csv, benchmark.md and metrics.json into ``out_dir``."""
    table = summarise(collect(metric_files))
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "benchmark.csv", table.to_csv(index=False, float_format="%.4f"))
    atomic_write_text(out_dir / "benchmark.md", markdown(table))
    atomic_write_text(out_dir / "metrics.json", json.dumps(nested_metrics(table), indent=2) + "\n")
    return table
