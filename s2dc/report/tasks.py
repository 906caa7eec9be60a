"""How the report shows each downstream task: the one table of the report that names a task (the registry says what a
task reads and is scored by; each task's module under :mod:`s2dc.downstream.tasks`, how it trains)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskView:
    """``metrics``: the columns of a run's metrics.json drawn for the task, as (key, label, scale); the first is the
    score of the benchmark table and its figures. ``percent``: (key, scale) of the score in % that the average over
    all datasets takes. ``probe_metric``: what the frozen protocol scores the task by (``s2dc probe``).
    ``per_class``: the metrics.json key of a ``{class: score}`` map in the first metric's scale, read into rows
    ``<label> <class>`` beside the score and drawn as one bar per class (None: the task has none)."""

    metrics: tuple[tuple[str, str, float], ...]
    percent: tuple[str, float]
    probe_metric: str
    per_class: str | None = None


#: The probe's metric of the tasks it reads with a linear classifier (the others: a ridge regression, R²).
CLASSIFIER_METRIC = "balanced accuracy"

TASK_VIEWS = {
    "segmentation": TaskView((("dice_mean", "Dice %", 100.0),), ("dice_mean", 100.0), CLASSIFIER_METRIC,
                             per_class="dice_per_class"),
    "classification": TaskView((("accuracy", "accuracy %", 100.0), ("auc", "AUC %", 100.0)), ("accuracy", 100.0),
                               CLASSIFIER_METRIC),
    "reconstruction": TaskView((("psnr", "PSNR dB", 1.0), ("ssim", "SSIM", 1.0), ("nrmse", "NRMSE", 1.0)),
                               ("ssim", 100.0), "R²"),
    "translation": TaskView((("psnr", "PSNR dB", 1.0), ("ssim", "SSIM", 1.0), ("mse", "MSE", 1.0)),
                            ("ssim", 100.0), "R²"),
}
#: Metrics drawn per task (:attr:`TaskView.metrics`).
TASK_METRICS = {task: view.metrics for task, view in TASK_VIEWS.items()}
#: Tasks whose frozen protocol is a linear classifier: what the counts under the effect table are first given over.
CLASSIFIER_TASKS = tuple(task for task, view in TASK_VIEWS.items() if view.probe_metric == CLASSIFIER_METRIC)
