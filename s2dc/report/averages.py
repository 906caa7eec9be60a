"""Per-task and overall averages of the benchmark, beside the poster's ten-dataset averages.

The poster averages one "score" (%) over its ten datasets: from scratch 77.93, VoCo 80.65, S²DC 81.43
(method.md §7). Here, for each method and label ratio:

* per task: the mean over the task's datasets of each dataset's mean over seeds, in the task's own metric
  (Dice %, accuracy %, PSNR dB);
* over all datasets: the same mean of a score in % — Dice, accuracy, and SSIM × 100 for reconstruction and
  translation, whose PSNR in dB is no percentage. This is our reading of the poster's average, which states
  neither a label ratio nor how it scored its two image tasks.

An average is given only for a method that has every dataset of the group (a partial one would average other
datasets); its std is the sample std over seeds of the per-seed average, when every dataset has the same seeds. The
datasets an average takes together must have been fine-tuned by one version of the code (:mod:`.versions`).
"""

from __future__ import annotations

import math

import pandas as pd

from ..data.datalist import registry_spec
from ..data.registry import PAPER_AVERAGE, PAPER_AVERAGE_DATASETS, REGISTRY
from .runs import ratio_text
from .tasks import TASK_VIEWS
from .versions import check_one_version

#: The score in % of each task for the average over all datasets: (metrics.json key, scale).
PERCENT_SCORE = {task: view.percent for task, view in TASK_VIEWS.items()}
ALL = "all datasets"
#: The poster's averages are over its ten datasets (the registry's): set beside an overall average of those ten only
#: (with `only=`, a shorter experiments list or another dataset among the ten, an average is another quantity).
POSTER_DATASETS = frozenset(PAPER_AVERAGE_DATASETS)


def _posters_datasets(datasets: set) -> bool:
    """Whether ``datasets`` (the runs' dataset names, a twin's ``synthetic_<name>`` too) are the poster's ten."""
    specs = [registry_spec({"name": d}) for d in datasets]
    return None not in specs and {s.name for s in specs} == POSTER_DATASETS and len(datasets) == len(POSTER_DATASETS)
ALL_METRIC = "score % (Dice, accuracy, SSIM × 100)"
#: How the poster names the methods of its averages and of its Table 1 (CC-CCII), by the registry's names (its
#: Table 1 row Swin-UNETR stands beside scratch: our reading).
AVERAGE_NAMES = {"scratch": "from scratch", "voco": "VoCo", "s2dc": "S²DC"}
TABLE1_NAMES = {"scratch": "Swin-UNETR", "swinmm": "SwinMM", "voco": "VoCo", "s2dc": "S²DC"}


def percent_score(run: dict) -> float:
    """A run's score in % for the overall average (:data:`PERCENT_SCORE`); NaN where the run recorded none."""
    key, scale = PERCENT_SCORE[run["task"]]
    value = run.get(key)
    return math.nan if value is None else scale * float(value)


def averages(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` (one row per run: dataset, task, metric, method, label_ratio, seed, score, percent, path, code) -> one
    row per scope (a task, or :data:`ALL`), method and label ratio: metric, datasets, mean, std, seeds, poster (the
    poster's average beside the overall rows, NaN elsewhere). ValueError where an average would take datasets
    fine-tuned by two versions of the code (``code``), naming them (:func:`~.versions.check_one_version`)."""
    rows = []
    for ratio, at_ratio in runs.groupby("label_ratio", sort=True):
        scopes = [(task, at_ratio[at_ratio.task == task], "score") for task in sorted(at_ratio.task.unique())]
        for scope, scoped, column in [*scopes, (ALL, at_ratio, "percent")]:
            datasets = set(scoped.dataset)
            metrics = set(scoped.metric)
            for method, mine in scoped.groupby("method", sort=True):
                if set(mine.dataset) != datasets or mine[column].isna().any():
                    continue
                first = mine.drop_duplicates("dataset")  # a dataset's runs are of one version (check_runs)
                over = "all datasets" if scope == ALL else f"the {scope} datasets"
                check_one_version("fine-tuning", dict(zip(first.dataset, zip(first.path, first.code))),
                                  f"the average of {method} over {over} at {ratio_text(ratio)} labels takes them "
                                  "together")
                per_seed = mine.pivot_table(index="seed", columns="dataset", values=column)
                same_seeds = not per_seed.isna().any().any()
                mean = float(mine.groupby("dataset")[column].mean().mean())
                std = float(per_seed.mean(axis=1).std()) if same_seeds and len(per_seed) > 1 else math.nan
                rows.append({"scope": scope, "metric": ALL_METRIC if scope == ALL else " / ".join(sorted(metrics)),
                             "method": method, "label_ratio": float(ratio), "datasets": len(datasets), "mean": mean,
                             "std": std, "seeds": len(per_seed) if same_seeds else 0,
                             "poster": PAPER_AVERAGE.get(method, math.nan)
                             if scope == ALL and _posters_datasets(datasets) else math.nan})
    order = {**{task: i for i, task in enumerate(PERCENT_SCORE)}, ALL: len(PERCENT_SCORE)}
    table = pd.DataFrame(rows, columns=["scope", "metric", "method", "label_ratio", "datasets", "mean", "std",
                                        "seeds", "poster"])
    return table.sort_values(["scope", "label_ratio", "method"], key=lambda c: c.map(order) if c.name == "scope"
                             else c, kind="stable").reset_index(drop=True)


def averages_markdown(table: pd.DataFrame) -> str:
    """The averages as a Markdown table, then every number of the poster's averages and Table 1 (methods not run
    here included, so that they stand beside ours in every report)."""
    lines = [
        "Averages over the datasets: each dataset's mean over seeds, the datasets weighted alike (± the sample std over "
        "seeds of the per-seed average). Over all datasets, a score in % (Dice, accuracy, and SSIM × 100 for "
        "reconstruction and translation, whose PSNR in dB is no percentage): our reading of the poster's average "
        "over its ten datasets, which states neither its label ratio nor how it scored the two image tasks. A "
        "method without every dataset of a row's group, or with a score that is null on a run (one its validation "
        "cases could not score), has no average there.",
        "",
        "| scope | metric | method | labels | datasets | average (mean ± std) | poster average (real data) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in table.itertuples():
        spread = "—" if math.isnan(row.std) else f"{row.std:.2f}"
        poster = "—" if math.isnan(row.poster) else f"{row.poster:.2f}"
        lines.append(f"| {row.scope} | {row.metric} | {row.method} | {ratio_text(row.label_ratio)} | {row.datasets} | "
                     f"{row.mean:.2f} ± {spread} | {poster} |")
    lines += ["", "The poster's numbers (real data): average over its ten datasets "
              + ", ".join(f"{AVERAGE_NAMES.get(m, m)} {v:.2f}" for m, v in PAPER_AVERAGE.items())
              + "; Table 1, CC-CCII accuracy (%) at 10 / 50 / 100 % of the labels: " + _table1() + "."]
    return "\n".join(lines) + "\n"


def _table1() -> str:
    """The poster's Table 1 (the registry's numbers): 'Swin-UNETR 77.15 / 92.28 / 94.15; SwinMM ...'."""
    by_method: dict[str, list[tuple[float, float]]] = {}
    for p in (p for spec in REGISTRY.values() for p in spec.paper):
        if p.table == "poster Table 1":
            by_method.setdefault(p.method, []).append((p.label_ratio, p.score))
    return "; ".join(f"{TABLE1_NAMES.get(m, m)} " + " / ".join(f"{s:.2f}" for _, s in sorted(points))
                     for m, points in by_method.items())


def nested_averages(table: pd.DataFrame) -> dict:
    """{scope: {method: {"labels_20%": {"mean", "std", "seeds", "datasets"}}}} for ``dvc metrics``."""
    out: dict = {}
    for row in table.itertuples():
        out.setdefault(row.scope, {}).setdefault(row.method, {})[f"labels_{ratio_text(row.label_ratio)}"] = {
            "mean": round(row.mean, 4), "std": None if math.isnan(row.std) else round(row.std, 4),
            "seeds": int(row.seeds), "datasets": int(row.datasets)}
    return out
