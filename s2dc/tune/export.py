"""Outputs of a finished study: ``trials.csv`` (and as HTML, ``trials.html``), ``best.yaml`` and three figures (optimisation history, parallel
coordinates, parameter importances; the objective in the tables' unit, :func:`objective_label`), each written
atomically. A figure that cannot be drawn (e.g. importances from fewer completed trials than
max(:data:`MIN_IMPORTANCE_TRIALS`, parameters + 1)) becomes a PNG saying why, with a warning. Everything is made
before anything is written, then written as one (:func:`s2dc.recorded.replace_all`). A rerun replaces
only its own files as it left them (the tables recorded in ``.s2dc-sweep.json``, the figures by their mark): never a
user's file, nor a best.yaml edited by hand."""

from __future__ import annotations

import math
import sys
import textwrap
import warnings
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from ..pages import page
from ..pyplot import check_png_out, png_bytes, pyplot
from ..recorded import check_recorded, write_recorded
from .liveness import RETRY_ATTR
from .space import nest
from .storage import open_study
from .worker import BUDGET_ATTR, ERROR_ATTR, FINISHED, SURPLUS_ATTR, TwoBindings, bound_record

FIGURES = {
    "history.png": "history_figure",
    "parallel_coordinate.png": "parallel_figure",
    "param_importances.png": "importances_figure",
}

#: Parameter importances (fANOVA: a random forest over the completed trials) are drawn from at least this many
#: completed trials, and at least one more than the parameters; fewer rank noise, and the figure says so instead.
MIN_IMPORTANCE_TRIALS = 5

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
    ``{name: path}``. Refuses (``ValueError``) a study that has not reached its budget, or that workers of other
    settings bound at once, unless ``force``."""
    study = open_study(storage, study_name, create=False)
    trials = study.get_trials(deepcopy=False)
    try:
        budget = (bound_record(study) or {}).get(BUDGET_ATTR)
    except TwoBindings as err:
        if not force:
            raise ValueError(f"study {study_name!r} in '{storage}' was bound at once by workers of other settings "
                             f"{err.keys}: its trials may mix them; export them all the same with --force (best.yaml "
                             "then records no budget)") from None
        budget = None
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
    figures = {name: _figure(study, name) for name in FIGURES}  # drawn before anything is replaced
    paths = write_recorded(out, texts, RECORD, also=figures)
    return {path.name: path for path in paths}


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


def _figure(study: optuna.Study, name: str) -> bytes:
    """The figure ``name`` of :data:`FIGURES` as a PNG, or a figure saying why it was not drawn."""
    plt = pyplot()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.simplefilter("ignore", UserWarning)  # degenerate axis limits of a one-trial study
            figure = globals()[FIGURES[name]](study)
    except Exception as err:  # a study too small or too uniform for this figure: say why in the picture
        print(f"warning: {name}: cannot draw it ({err}); writing a picture that says so", file=sys.stderr)
        plt.close("all")
        figure = plt.figure(figsize=(8, 3))
        figure.text(0.5, 0.5, textwrap.fill(f"{name}: not drawn. {err}", 70), ha="center", va="center",
                    fontsize=11)
    return png_bytes(figure, dpi=100)


def objective_label(study: optuna.Study) -> tuple[str, float]:
    """The objective's name as the tables show it, and the factor from a trial's value to it: the objective of
    :mod:`.objective` is the task's score as a fraction (mean Dice 0.022) while its ``score`` attribute holds it as
    the tables print it (Dice 2.22 %): ``("Dice %", 100.0)``; ``("objective value", 1.0)`` for a study without it."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        score = trial.user_attrs.get("score")
        if not isinstance(score, dict) or not trial.value or not isinstance(score.get("value"), (int, float)):
            continue
        factor = score["value"] / trial.value
        name = score.get("name", "score")
        if abs(factor - 100) < 0.5:
            return f"{name} %", 100.0
        if abs(factor - 1) < 0.005:
            return name, 1.0
    return "objective value", 1.0


def _counts(trials: list) -> dict[str, int]:
    return {state: sum(t.state == getattr(TrialState, state.upper()) for t in trials)
            for state in ("complete", "pruned", "fail")}


def _complete(study: optuna.Study) -> list:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise ValueError("the study has no completed trial")
    return complete


def _pruned_value(trial) -> float | None:
    """A pruned trial's value: the last score it reported (Optuna stores it as the value)."""
    if trial.value is not None:
        return trial.value
    return trial.intermediate_values[max(trial.intermediate_values)] if trial.intermediate_values else None


def history_figure(study: optuna.Study):
    """Each trial's value against its number, in the tables' unit (:func:`objective_label`): the completed trials
    filled, with the best so far as a step line; the pruned ones hollow, at the last score they reported before the
    pruner stopped them; failed trials have no value and are only counted, in the title."""
    plt = pyplot()
    trials = study.get_trials(deepcopy=False)
    complete = _complete(study)
    label, factor = objective_label(study)
    counts = _counts(trials)
    fig, ax = plt.subplots(figsize=(10, 6))
    pruned = [(t.number, _pruned_value(t)) for t in trials if t.state == TrialState.PRUNED]
    pruned = [(n, v) for n, v in pruned if v is not None]
    if pruned:
        ax.scatter([n for n, _ in pruned], [factor * v for _, v in pruned], facecolors="none", edgecolors="#8c8c8c",
                   label=f"pruned ({len(pruned)}): last score reported before the pruner stopped it", zorder=2)
    ax.scatter([t.number for t in complete], [factor * t.value for t in complete], color="#1f77b4",
               label=f"completed ({len(complete)})", zorder=3)
    better = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    best, steps = None, []
    for t in sorted(complete, key=lambda t: t.number):
        best = t.value if best is None else better(best, t.value)
        steps.append((t.number, factor * best))
    last = max(t.number for t in trials)
    steps.append((last, steps[-1][1]))
    ax.step([n for n, _ in steps], [v for _, v in steps], where="post", color="#d62728", alpha=0.6,
            label="best completed so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{label} (validation; {'maximised' if better is max else 'minimised'})")
    failed = f", {counts['fail']} failed (no value, not drawn)" if counts["fail"] else ""
    ax.set_title(f"Optimisation history: {counts['complete']} completed, {counts['pruned']} pruned trials{failed}",
                 fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize=9)
    fig.tight_layout()
    return fig


def importances_figure(study: optuna.Study):
    """Optuna's fANOVA importances (seeded: the same study draws the same importances), titled by the count of
    completed trials they rest on; ValueError (a picture saying so) with fewer completed trials than
    max(:data:`MIN_IMPORTANCE_TRIALS`, parameters + 1), or none whose parameters differ."""
    from optuna.visualization import matplotlib as optuna_plots

    complete = _complete(study)
    names = sorted({k for t in complete for k in t.params})
    need = max(MIN_IMPORTANCE_TRIALS, len(names) + 1)
    if len(complete) < need:
        raise ValueError(f"parameter importances are not meaningful with {len(complete)} completed trials of "
                         f"{len(names)} parameters (drawn from {need} on; pruned trials do not count): no ranking "
                         "is drawn")
    varying = [k for k in names if len({repr(t.params.get(k)) for t in complete}) > 1]
    if not varying:
        raise ValueError("parameter importances need completed trials whose parameters differ")
    label, _ = objective_label(study)
    ax = optuna_plots.plot_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
                                             target_name=label)
    ax.set_title("", loc="left")  # Optuna's title
    ax.set_title(f"Hyperparameter importances (fANOVA) from {len(complete)} completed trials")
    figure = ax.figure
    figure.set_size_inches(max(figure.get_size_inches()[0], 10), max(figure.get_size_inches()[1], 6))
    return figure


def parallel_figure(study: optuna.Study):
    """Each trial a line through its parameters (each axis from its lowest to its highest value in the study; a log
    parameter on a log scale; a categorical one's choices spread evenly) and its value: the completed trials
    coloured by value, the pruned ones grey and dashed. Every parameter is named in full under its axis, and each
    axis shows its lowest and highest value only, so that no two labels meet."""
    import numpy as np
    from matplotlib import cm, colors

    plt = pyplot()
    complete = _complete(study)
    pruned = [t for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)) if _pruned_value(t) is not None]
    label, factor = objective_label(study)
    trials = complete + pruned
    names = sorted({k for t in trials for k in t.params})
    dists = {k: next(t.distributions[k] for t in trials if k in t.params) for k in names}
    values = {t.number: factor * (t.value if t.state == TrialState.COMPLETE else _pruned_value(t)) for t in trials}

    def scaler(name):
        """(value -> [0, 1], [(position, text)]) of one axis."""
        dist = dists[name]
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            choices = list(dist.choices)
            spread = (lambda c: 0.5) if len(choices) == 1 else (lambda c: choices.index(c) / (len(choices) - 1))
            return spread, [(spread(c), str(c)) for c in choices]
        seen = [t.params[name] for t in trials if name in t.params]
        log = getattr(dist, "log", False)
        key = (lambda v: math.log10(v)) if log else (lambda v: float(v))
        low, high = min(map(key, seen)), max(map(key, seen))
        scale = (lambda v: 0.5) if high == low else (lambda v: (key(v) - low) / (high - low))
        ends = [(0.0, min(seen)), (1.0, max(seen))] if high != low else [(0.5, seen[0])]
        return scale, [(y, f"{v:.3g}") for y, v in ends]

    low, high = min(values.values()), max(values.values())
    axes = [("objective", (lambda v: 0.5) if high == low else (lambda v: (v - low) / (high - low)),
             [(0.0, f"{low:.3g}"), (1.0, f"{high:.3g}")] if high != low else [(0.5, f"{low:.3g}")])]
    axes += [(name, *scaler(name)) for name in names]
    fig, ax = plt.subplots(figsize=(max(10.0, 1.5 * len(axes) + 2), 6))
    norm = colors.Normalize(min(values[t.number] for t in complete), max(values[t.number] for t in complete))
    cmap = cm.get_cmap("viridis") if hasattr(cm, "get_cmap") else plt.get_cmap("viridis")
    for t in sorted(trials, key=lambda t: t.state == TrialState.COMPLETE):  # the completed ones on top
        ys = [axes[0][1](values[t.number])] + [s(t.params[n]) if n in t.params else np.nan for n, s, _ in axes[1:]]
        if t.state == TrialState.COMPLETE:
            ax.plot(range(len(axes)), ys, color=cmap(norm(values[t.number])), linewidth=2, zorder=3)
        else:
            ax.plot(range(len(axes)), ys, color="#b0b0b0", linestyle="--", linewidth=1, zorder=2)
    for x, (_, _, ticks) in enumerate(axes):
        ax.axvline(x, color="black", linewidth=0.8, zorder=1)
        for y, text in ticks:
            ax.text(x + 0.04, y, text, fontsize=7, va="bottom" if y == 0.0 else "top" if y == 1.0 else "center",
                    ha="left", bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 1}, zorder=4)
    ax.set_xticks(range(len(axes)), [f"{label}" if n == "objective" else n for n, _, _ in axes], rotation=90,
                  fontsize=8)  # upright names of 30 characters would run into each other
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(axes) - 0.4)
    ax.set_ylim(-0.03, 1.03)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    bar = fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.02)
    bar.set_label(f"{label} (completed trials)")
    ax.set_title(f"Parallel coordinates: {len(complete)} completed trials (coloured by {label}), "
                 f"{len(pruned)} pruned (grey, dashed; at their last reported score)", fontsize=10)
    fig.tight_layout()
    return fig
