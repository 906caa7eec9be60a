"""Outputs of a finished study: ``trials.csv`` (and as HTML, ``trials.html``), ``best.yaml`` and three figures (optimisation history, parallel
coordinates, parameter importances), each written atomically. A figure that cannot be drawn (e.g. importances need
two completed trials whose parameters differ) becomes a PNG saying why, with a warning. A rerun replaces only its own
files as it left them (the tables recorded in ``.s2dc-sweep.json``, the figures by their mark): never a user's file,
nor a best.yaml edited by hand."""

from __future__ import annotations

import sys
import textwrap
import warnings
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from ..pages import page
from ..pyplot import check_png_out, pyplot, save_png
from ..recorded import check_recorded, write_recorded
from .liveness import RETRY_ATTR
from .space import nest
from .storage import open_study
from .worker import BUDGET_ATTR, ERROR_ATTR, FINISHED, SURPLUS_ATTR

FIGURES = {
    "history.png": "plot_optimization_history",
    "parallel_coordinate.png": "plot_parallel_coordinate",
    "param_importances.png": "plot_param_importances",
}

#: The record of the tables an export wrote into its folder (:mod:`s2dc.recorded`).
RECORD = ".s2dc-sweep.json"
TABLES = ("trials.csv", "trials.html", "best.yaml")


def check_export_out(out: Path) -> None:
    """Raise ValueError, naming the file, if ``out`` holds a file where an export writes that is not one this command
    wrote there, unchanged since: a user's file, a best.yaml edited by hand, a picture (nothing is written first)."""
    check_recorded(out, list(TABLES), RECORD, "a table s2dc sweep export wrote",
                   "; move it away (an export of an s2dc older than 2026-11-30 is not recorded: delete it)")
    for name in FIGURES:
        check_png_out(out / name)


def failure_kind(trial: optuna.trial.FrozenTrial) -> str:
    """Why a FAILED trial failed: 'surplus' (over the budget, never ran), 'error' (the objective raised or
    diverged), 'killed' (its worker died or was interrupted); '' for any other state."""
    if trial.state != TrialState.FAIL:
        return ""
    if trial.user_attrs.get(SURPLUS_ATTR):
        return "surplus"
    if ERROR_ATTR in trial.user_attrs:
        return "error"
    return "killed"  # failed by another worker's dead-worker check, or interrupted (INTERRUPTED_ATTR)


def export_study(storage: str, study_name: str, out_dir: str | Path, *, force: bool = False) -> dict[str, Path]:
    """Write ``trials.csv``, ``best.yaml`` and the figures of ``study_name`` into ``out_dir``; returns
    ``{name: path}``. Refuses (``ValueError``) a study that has not reached its budget, unless ``force``."""
    study = open_study(storage, study_name, create=False)
    trials = study.get_trials(deepcopy=False)
    budget = study.user_attrs.get(BUDGET_ATTR)
    finished = sum(t.state in FINISHED for t in trials)
    if not force and budget is None:
        raise ValueError(f"study {study_name!r} in '{storage}' has no recorded budget (it was not made by "
                         "`s2dc sweep work`); export it anyway with --force")
    if not force and finished < budget:
        raise ValueError(f"study {study_name!r} in '{storage}' has {finished} finished trials of its budget of "
                         f"{budget}: run its workers to the end first (or export anyway with --force)")
    out = Path(out_dir)
    check_export_out(out)  # before anything is written
    table = _trials_table(study, trials)
    texts = {"trials.csv": table.to_csv(index=False), "trials.html": _trials_page(study_name, table),
             "best.yaml": yaml.safe_dump(_best(study, trials, budget, finished), sort_keys=False)}
    written = dict(zip(texts, write_recorded(out, texts, RECORD)))
    for name, function in FIGURES.items():
        written[name] = _figure(study, out / name, function)
    return written


def _trials_page(study_name: str, table) -> str:
    """The trials as an HTML page (the report shows it in place): number, state, value, parameters, failure."""
    keep = [c for c in table.columns if c in ("number", "state", "value", "duration", "failure", "retried_as", "counted")
            or c.startswith("params_")]
    shown = table[keep].rename(columns=lambda c: c.removeprefix("params_"))
    return page(f"Sweep {study_name}: {len(table)} trials", shown.to_html(index=False, float_format="%.4g"))


def _trials_table(study: optuna.Study, trials: list):
    """``study.trials_dataframe()`` plus ``failure`` (surplus / error / killed), ``retried_as`` (the number of a
    killed trial's retry) and ``counted`` (towards the budget)."""
    table = study.trials_dataframe(multi_index=False)
    if table.empty:
        return table
    retries = {t.user_attrs[RETRY_ATTR]: t.number for t in trials if RETRY_ATTR in t.user_attrs}
    by_number = {t.number: t for t in trials}
    table["failure"] = [failure_kind(by_number[n]) for n in table["number"]]
    table["retried_as"] = [retries.get(n, "") for n in table["number"]]
    table["counted"] = [by_number[n].state in FINISHED for n in table["number"]]
    return table


def _best(study: optuna.Study, trials: list, budget, finished: int) -> dict:
    """The best trial with its parameters nested as in params.yaml (``{pretrain: {section: {field: v}}, ...}``)."""
    summary = {"study": study.study_name, "budget": budget, "finished": finished,
               "complete": sum(t.state == TrialState.COMPLETE for t in trials),
               "pruned": sum(t.state == TrialState.PRUNED for t in trials)}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return {**summary, "best": None}
    best = study.best_trial
    params = {stage: options for stage, options in nest(best.params).items() if options}
    return {**summary, "best": {"value": float(best.value), "trial": best.number, "params": _plain(params)}}


def _plain(value):
    """Plain Python values (YAML-safe) of nested params."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "item"):
        return value.item()
    return value


def _figure(study: optuna.Study, path: Path, function: str) -> Path:
    """Draw one Optuna figure into ``path`` (PNG), or a figure saying why it could not be drawn."""
    from optuna.visualization import matplotlib as optuna_plots

    plt = pyplot()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.simplefilter("ignore", UserWarning)  # degenerate axis limits of a one-trial study
            complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if not complete:
                raise ValueError("the study has no completed trial")
            if function == "plot_param_importances":
                varying = [k for k in complete[0].params if len({repr(t.params.get(k)) for t in complete}) > 1]
                if len(complete) < 2 or not varying:
                    raise ValueError("parameter importances need at least two completed trials whose parameters differ")
            # fANOVA fits a random forest: seeded, the same study draws the same importances
            extra = ({"evaluator": optuna.importance.FanovaImportanceEvaluator(seed=0)}
                     if function == "plot_param_importances" else {})
            axes = getattr(optuna_plots, function)(study, **extra)
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(max(figure.get_size_inches()[0], 10), max(figure.get_size_inches()[1], 6))
    except Exception as err:  # a study too small or too uniform for this figure: say why in the picture
        print(f"warning: {path.name}: cannot draw it ({err}); writing a picture that says so", file=sys.stderr)
        plt.close("all")
        figure = plt.figure(figsize=(8, 3))
        figure.text(0.5, 0.5, textwrap.fill(f"{path.name}: not drawn. {err}", 70), ha="center", va="center",
                    fontsize=11)
    return save_png(figure, path, dpi=100)
