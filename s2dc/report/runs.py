"""Fine-tuning runs read once for the figures and curves: every ``metrics.json`` as rows of (run, metric, value)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

#: Metrics drawn per task, as (key in metrics.json, label, scale); segmentation adds one bar per class.
TASK_METRICS = {
    "segmentation": (("dice_mean", "Dice %", 100.0),),
    "classification": (("accuracy", "accuracy %", 100.0), ("auc", "AUC %", 100.0)),
    "reconstruction": (("psnr", "PSNR dB", 1.0), ("ssim", "SSIM", 1.0), ("nrmse", "NRMSE", 1.0)),
    "translation": (("psnr", "PSNR dB", 1.0), ("ssim", "SSIM", 1.0), ("mse", "MSE", 1.0)),
}


def read_runs(metric_files: list[Path]) -> tuple[list[dict], pd.DataFrame]:
    """The runs' metrics.json contents, and long rows: dataset, task, method, label_ratio, seed, metric, value
    (segmentation: one row per class, metric 'Dice % <class>', beside the mean); a null value (not scorable on the
    run's validation cases) gives no row."""
    runs, rows = [], []
    for path in metric_files:
        try:
            m = json.loads(Path(path).read_text())
            base = {"dataset": m["dataset"], "task": m["task"], "method": m["method"],
                    "label_ratio": float(m["label_ratio"]), "seed": int(m["seed"])}
            # null: not scorable on these validation cases (a class none of them holds; an AUC with one class)
            for key, label, scale in TASK_METRICS[m["task"]]:
                if m[key] is not None:
                    rows.append({**base, "metric": label, "value": scale * float(m[key])})
            for name, value in (m.get("dice_per_class") or {}).items():
                if value is not None:
                    rows.append({**base, "metric": f"Dice % {name}", "value": 100.0 * float(value)})
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"bad metrics file '{path}': {err!r}") from err
        runs.append({**m, "_path": str(path)})
    if not runs:
        raise ValueError("no metrics files given")
    return runs, pd.DataFrame(rows)
