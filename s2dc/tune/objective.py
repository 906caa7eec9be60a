"""The real trial: a short S²DC pretraining, then a short fine-tuning from its encoder; the value is the fine-tuning's
last validation score (the task's score key, e.g. mean Dice), reported at every validation for the pruner.

Each trial works in ``<out_dir>/<study>/trial_NNNN/{pretrain,finetune}`` (the user attribute ``folder``);
its checkpoints and ``model.pt`` are deleted when it ends, its metrics, curves and summaries are kept. The
preprocessing caches are shared by all trials (``<out_dir>/cache/{pretrain,finetune}``, written atomically, so
concurrent workers can share them) unless the base options set ``data.cache_dir``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import optuna

from ..downstream.defaults import fill_finetune_defaults
from ..downstream.engine import finetune
from ..train.config import build_config as build_pretrain_config
from ..train.finetune_config import build_config as build_finetune_config
from ..train.pretrain import pretrain
from .space import merge_options, nest
from .spec import SweepSpec

#: What a finished trial leaves behind only at great size: deleted, the rest of its folder is kept.
HEAVY = ("pretrain/checkpoints", "finetune/checkpoints", "finetune/model.pt")


def make_objective(spec: SweepSpec):
    """``objective(trial, params) -> score`` for :func:`~.worker.run_worker`."""
    for stage in ("pretrain", "finetune"):
        path = Path(spec.data[stage])
        if not path.is_file():
            raise FileNotFoundError(f"spec data.{stage}: '{path}' is not a file (a dataset.json is expected)")
    out_dir = Path(spec.out_dir)

    def objective(trial: optuna.Trial, params: dict) -> float:
        folder = out_dir / trial.study.study_name / f"trial_{trial.number:04d}"
        trial.set_user_attr("folder", str(folder))
        shutil.rmtree(folder, ignore_errors=True)  # left by an earlier study of the same name: a trial is never rerun
        searched = nest(params)
        try:
            summary = pretrain(build_pretrain_config(_stage_options(spec, "pretrain", searched, folder)))
            values = _stage_options(spec, "finetune", searched, folder)
            values, _ = fill_finetune_defaults(merge_options(values, {"model": {"init": summary["checkpoint"]}}))
            scores = []

            def on_score(step: int, value: float) -> None:
                scores.append(value)
                trial.report(value, step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at fine-tuning step {step} (score {value:.4g})")

            result = finetune(build_finetune_config(values), on_score=on_score)
            trial.set_user_attr("score", result["score"])
            losses = summary["losses_this_run"]
            if losses:
                trial.set_user_attr("pretrain_loss_last", float(losses[-1]))
            return scores[-1]
        finally:
            for heavy in HEAVY:
                path = folder / heavy
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)

    return objective


def _stage_options(spec: SweepSpec, stage: str, searched: dict, folder: Path) -> dict:
    """Base options of ``stage`` + the trial's parameters + the dataset, trial folder and shared cache the sweep
    sets (a new nested dict)."""
    values = merge_options(getattr(spec, stage), searched[stage])
    values = merge_options(values, {"data": {"source": spec.data[stage]}, "run": {"out_dir": str(folder / stage)}})
    values["data"].setdefault("cache_dir", str(Path(spec.out_dir) / "cache" / stage))
    values["run"].setdefault("progress", False)
    return values
