"""Figures of the fine-tuning runs: a per-class bar chart per dataset and the label-ratio curves (score vs % labels
per method, the poster's numbers on the same axis)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..pyplot import png_bytes, pyplot
from .runs import ratio_text
from .tables import poster_spec
from .tasks import TASK_METRICS, TASK_VIEWS

#: One colour per method, stable across figures (scratch grey, s2dc blue, the ablation variants after).
COLOURS = {"scratch": "#8c8c8c", "s2dc": "#1f77b4", "lg": "#ff7f0e", "lg_p2p": "#2ca02c", "lg_p2s": "#d62728",
           "sinkhorn": "#9467bd"}


def colour(method: str, index: int) -> str:
    return COLOURS.get(method, f"C{index % 10}")


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std (0 for one seed) over seeds per dataset, task, method, label ratio and metric."""
    grouped = rows.groupby(["dataset", "task", "method", "label_ratio", "metric"], sort=False)["value"]
    out = grouped.agg(mean="mean", std="std", seeds="count").reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def pairs(table: pd.DataFrame) -> list[tuple[str, str]]:
    """The (dataset, task) of each dataset of ``table``, in order; ValueError for a dataset of two tasks (the runs it
    is read from refuse one: :func:`s2dc.report.runs.check_runs`)."""
    found = list(dict.fromkeys(zip(table.dataset, table.task)))
    if len(found) != len({dataset for dataset, _ in found}):
        raise ValueError(f"a dataset of two tasks in {found}: a dataset is one task (its registry entry)")
    return found


def per_class_figure(table: pd.DataFrame, dataset: str):
    """Grouped bars of one dataset's runs: a row of panels per label ratio; segmentation shows every class's Dice (and
    the mean), other tasks one panel per metric; one bar per method, the seeds' std as error bars."""
    plt = pyplot()
    rows = table[table.dataset == dataset]
    task = rows.task.iloc[0]
    ratios = sorted(rows.label_ratio.unique())
    methods = list(dict.fromkeys(rows.method))
    per_class, score = TASK_VIEWS[task].per_class, TASK_METRICS[task][0][1]  # per class: rows '<score> <class>'
    if per_class:
        metrics = [[m for m in dict.fromkeys(rows.metric) if m.startswith(f"{score} ")] + [score]]
    else:
        metrics = [[label] for _, label, _ in TASK_METRICS[task]]
    width = max(4.0, 0.45 * len(metrics[0]) * len(methods)) if per_class else 2.6
    fig, axes = plt.subplots(len(ratios), len(metrics), figsize=(width * len(metrics), 2.8 * len(ratios)),
                             squeeze=False)
    for r, ratio in enumerate(ratios):
        for c, group in enumerate(metrics):
            ax = axes[r][c]
            x = np.arange(len(group))
            step = 0.8 / len(methods)
            for i, method in enumerate(methods):
                cell = rows[(rows.label_ratio == ratio) & (rows.method == method)].set_index("metric")
                means = [cell["mean"].get(m, math.nan) for m in group]
                stds = [cell["std"].get(m, 0.0) for m in group]
                ax.bar(x - 0.4 + step * (i + 0.5), means, step, yerr=stds, capsize=2, color=colour(method, i),
                       label=method)
            names = [("mean" if m == score else m.removeprefix(f"{score} ")) if per_class else m for m in group]
            ax.set_xticks(x, names, rotation=45 if len(group) > 3 else 0, ha="right" if len(group) > 3 else "center")
            ax.set_ylabel(score if per_class else group[0])
            ax.set_title(f"{ratio_text(ratio)} labels", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="best")
    fig.suptitle(f"{dataset}: per-class scores (mean ± std over seeds)", fontsize=10)
    fig.tight_layout()
    return fig


def paper_points(dataset: str, methods: list[str], task: str) -> dict[str, list[tuple[float, float]]]:
    """The poster's (label ratio, score) points of each method for a dataset (the registry's numbers; none for runs
    of another task than the dataset's, whose score is another metric)."""
    spec = poster_spec(dataset, task)
    points: dict[str, list[tuple[float, float]]] = {}
    for p in spec.paper if spec is not None else ():
        if p.method in methods:
            points.setdefault(p.method, []).append((p.label_ratio, p.score))
    return {m: sorted(v) for m, v in points.items()}


#: How far apart (points) the methods of one panel are drawn at the same label ratio, so that equal scores do not
#: hide one another; the data stay where they are, only the drawing is shifted.
DODGE_POINTS = 5.0


def _dodged(ax, index: int, count: int):
    """``ax``'s data transform shifted sideways for the ``index``-th of ``count`` methods (:data:`DODGE_POINTS`)."""
    from matplotlib.transforms import ScaledTranslation

    shift = (index - (count - 1) / 2) * DODGE_POINTS / 72
    return ax.transData + ScaledTranslation(shift, 0, ax.figure.dpi_scale_trans)


def _ours(datasets) -> str:
    """What our numbers are, for the legend: the synthetic twins when every dataset is one."""
    synthetic = all(str(d).startswith("synthetic_") for d in datasets)
    return "this run (synthetic twins)" if synthetic else "this run"


def label_ratio_figure(table: pd.DataFrame):
    """One panel per dataset (:func:`pairs`):
    the task's score vs % labels, mean ± std over seeds per method (solid line, filled markers); the poster's numbers
    for the same methods on the real data (dashed, hollow diamonds) on the same axis, so that the gap between the
    two is seen as it is. The methods at one label ratio are drawn a few points apart (:data:`DODGE_POINTS`). A run
    of one label ratio shows no trend, and says so (in the figure's title, or a panel's)."""
    plt = pyplot()
    first = {task: metrics[0][1] for task, metrics in TASK_METRICS.items()}
    scores = table[table.metric == table.task.map(first)]
    panels = pairs(scores)
    ratios = {pair: sorted(scores[(scores.dataset == pair[0]) & (scores.task == pair[1])].label_ratio.unique())
              for pair in panels}
    single = {tuple(r) for r in ratios.values()}
    one_for_all = len(single) == 1 and len(next(iter(single))) == 1
    ours = _ours(scores.dataset.unique())
    cols = min(5, len(panels))
    rows_n = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.3 * cols, 3.1 * rows_n), squeeze=False)
    legend: dict[str, object] = {}
    for k, (dataset, task) in enumerate(panels):
        ax = axes[k // cols][k % cols]
        rows = scores[(scores.dataset == dataset) & (scores.task == task)]
        methods = list(dict.fromkeys(rows.method))
        poster = paper_points(dataset, methods, rows.task.iloc[0])
        span = []  # what the axis limits must hold (a shifted drawing is not autoscaled)
        for i, method in enumerate(methods):
            line = rows[rows.method == method].sort_values("label_ratio")
            shifted = _dodged(ax, i, len(methods))
            drawn = ax.errorbar(100 * line.label_ratio, line["mean"], yerr=line["std"], marker="o", capsize=3,
                                color=colour(method, i), label=method, transform=shifted, zorder=3)
            legend.setdefault(f"{method}, {ours}", drawn)
            for x, mean, std in zip(100 * line.label_ratio, line["mean"], line["std"]):
                span += [(x, mean - std), (x, mean + std)]
            if method in poster:
                xs, ys = zip(*poster[method])
                (drawn,) = ax.plot([100 * x for x in xs], ys, linestyle="--", marker="D", markerfacecolor="none",
                                   color=colour(method, i), label=f"{method}, poster (real data)",
                                   transform=shifted, zorder=2)
                legend.setdefault(drawn.get_label(), drawn)
                span += [(100 * x, y) for x, y in zip(xs, ys)]
        ax.update_datalim(span)
        ax.autoscale_view()
        title = dataset
        if len(ratios[(dataset, task)]) == 1 and not one_for_all:
            title += f"\nours at one label ratio ({ratio_text(ratios[(dataset, task)][0])})"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("% labels", fontsize=8)
        ax.set_ylabel(rows.metric.iloc[0], fontsize=8)
        ax.set_xlim(0, 105)
        ax.grid(alpha=0.3)
    for k in range(len(panels), rows_n * cols):
        axes[k // cols][k % cols].axis("off")
    fig.legend(list(legend.values()), list(legend), loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=min(4, len(legend)), fontsize=8)
    title = ("Score vs label ratio: ours (filled, solid; mean ± std over seeds) and the poster's on the real data "
             "(hollow, dashed), on one axis per panel")
    if one_for_all:
        title += (f"\nthis run has one label ratio ({ratio_text(next(iter(single))[0])}): one point per method, "
                  "no trend")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def benchmark_pngs(rows: pd.DataFrame) -> dict[str, bytes]:
    """The benchmark's figures as marked PNGs (:func:`s2dc.pyplot.write_pngs` writes them): ``per_class/<dataset>.png``
    for every dataset and ``label_ratio.png``."""
    table = summary(rows)
    pngs = {f"per_class/{dataset}.png": png_bytes(per_class_figure(table, dataset)) for dataset, _ in pairs(table)}
    pngs["label_ratio.png"] = png_bytes(label_ratio_figure(table))
    return pngs
