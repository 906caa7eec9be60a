"""Fine-tuning runs, read and checked once for every table and figure: each ``metrics.json`` as a checked dict, and
the runs as long rows of (run, metric, value).

A run is one seed of one row (dataset, task, method, label ratio in whole percent). Two files that are the same
seed of one row (a copied run, a file given twice), two label ratios that share a percent, and the seeds of one row
with different training settings (cases, steps, starting encoder: runs of two scales) are refused, naming the files:
averaging them would print a number no experiment gave. So are the runs of one dataset (its methods, label ratios and
seeds, compared with each other) made by two versions of the fine-tuning code, and a run that records no version
(:mod:`s2dc.report.versions`).
"""

from __future__ import annotations

import json
import math
import reprlib
from pathlib import Path

import pandas as pd

from ..files import is_plain_name
from ..train.identity import option_changes
from ..train.outputs import FINETUNE_KEYS, edit_found
from .tasks import TASK_METRICS, TASK_VIEWS
from .versions import check_code, refuse_two_versions


#: What the seeds of one row share (a run of other settings is no seed of it), besides the ``options`` each records:
#: training and validation cases, steps and the starting encoder, by its file's SHA-256 (a path names another file
#: once overwritten, and one file by several spellings); by its path in files written before it was recorded. The
#: arms of one comparison share all but the last.
SETTINGS = ("train_cases", "val_cases", "steps", "init_sha256")


def ratio_text(ratio: float) -> str:
    """A label ratio in percent as the tables print it: '20%', and a ratio that is no whole percent as it is ('12.5%',
    where Python's '.0%' would print the 12 % it rounds to, half to even)."""
    return f"{round(100 * float(ratio), 6):g}%"


def is_number(value) -> bool:
    """A finite JSON number (not a bool, NaN or Infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _get(doc: dict, key: str):
    value = doc
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


CHECKS = {  # key: (test, what is expected)
    "dataset": (is_plain_name, "a dataset name, one a file can be named after (no '/', not '.' or '..')"),
    "task": (lambda v: v in TASK_METRICS, f"one of {sorted(TASK_METRICS)}"),
    "method": (lambda v: isinstance(v, str) and v != "", "a method name"),
    "label_ratio": (lambda v: is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0"),
    "train_cases": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
    "seconds": (lambda v: is_number(v) and v >= 0, "the run's time in seconds, a number >= 0"),
    "score.key": (lambda v: isinstance(v, str) and v != "", "the name of the score's metric"),
    "score.name": (lambda v: isinstance(v, str) and v != "", "the score's label"),
    "score.value": (is_number, "a finite number (a run whose score is not finite fails, it writes no metrics.json)"),
}


def read_run(path: Path, history: bool = False) -> dict:
    """One ``metrics.json`` of ``s2dc finetune``, checked (the ``code`` that made it, :data:`CHECKS`; the task's metrics
    finite or null; with ``history``, its validation history too), as a dict with its ``_path``. ValueError names the
    file and the key."""
    try:
        run = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"bad metrics file '{path}': {err}") from err
    if not isinstance(run, dict):
        raise ValueError(f"bad metrics file '{path}': expected a JSON object, got {type(run).__name__}")
    if not FINETUNE_KEYS & run.keys():  # of another kind (the report's own metrics.json), not an older s2dc's run
        raise ValueError(f"bad metrics file '{path}': it is not a fine-tuning run's metrics.json (none of the keys "
                         f"{', '.join(sorted(FINETUNE_KEYS))}: the report's own metrics.json, a dataset.json?)")
    if (edit := edit_found(run)) is not None:
        raise ValueError(f"bad metrics file '{path}': its content is not what the run wrote ({edit}): edited after "
                         "the run? Run it again (delete the file: the workflow redoes the run)")
    try:
        check_code(run.get("code"), "fine-tuning")
    except ValueError as err:
        raise ValueError(f"bad metrics file '{path}': {err}") from None
    checks = dict(CHECKS)
    if checks["task"][0](run.get("task")):
        for key, _, _ in TASK_METRICS[run["task"]]:
            checks[key] = (lambda v: v is None or is_number(v), "a finite number, or null where it cannot be scored")
        percent = TASK_VIEWS[run["task"]].percent[0]
        if percent not in run:  # missing is no null: it would silently drop the run's method from the average
            raise ValueError(f"bad metrics file '{path}': {percent} is missing; expected a finite number or null (null "
                             "where it cannot be scored; the average over all datasets takes it)")
    for key, (test, expected) in checks.items():
        if not test(_get(run, key)):
            raise ValueError(f"bad metrics file '{path}': {key} is {_get(run, key)!r}; expected {expected}")
    _check_score(run, path)
    if history:
        entries = run.get("history")
        score = run["score"]["key"]
        if not isinstance(entries, list) or not all(
                isinstance(h, dict) and isinstance(h.get("step"), int) and (h.get(score) is None or is_number(h[score]))
                for h in entries):
            raise ValueError(f"bad metrics file '{path}': history is {reprlib.repr(entries)}; expected a list of "
                             f"{{step: integer, {score}: finite number or null}}")
    return {**run, "_path": str(path)}


def _check_score(run: dict, path) -> None:
    """ValueError naming the file unless the run's ``score`` is its task's score (the first of its metrics, e.g. Dice %
    = 100 × dice_mean): the value the tables show and the metric the curves read."""
    key, _, scale = TASK_METRICS[run["task"]][0]
    if run["score"]["key"] != key:
        raise ValueError(f"bad metrics file '{path}': score.key is {run['score']['key']!r}; expected {key!r}, the "
                         f"score of a {run['task']} run")
    if key not in run:
        raise ValueError(f"bad metrics file '{path}': {key} is missing; expected a finite number or null")
    value, metric = run["score"]["value"], run[key]
    if not is_number(metric) or not math.isclose(value, scale * metric, rel_tol=1e-9, abs_tol=1e-9):
        raise ValueError(f"bad metrics file '{path}': score.value is {value!r}; expected {scale:g} × {key} = "
                         f"{scale * metric if is_number(metric) else metric!r}")


def check_runs(runs: list[dict]) -> None:
    """Raise ValueError, naming the files, unless every run is its own seed of its row, the runs of each dataset were
    made by one version of the fine-tuning code (``code``), each percent of labels is one label ratio (the rows' and
    the averages' names), the seeds of each row share :data:`SETTINGS`, and the methods compared on one dataset and
    label ratio share every setting but the starting encoder."""
    if not runs:
        raise ValueError("no metrics files given")
    seen: dict[tuple, dict] = {}
    ratios: dict[tuple, dict] = {}
    rows: dict[tuple, dict] = {}
    arms: dict[tuple, dict] = {}
    datasets: dict[str, dict] = {}
    for run in runs:
        first = datasets.setdefault(run["dataset"], run)
        if first["task"] != run["task"]:
            raise ValueError(f"'{first['_path']}' ({first['task']}) and '{run['_path']}' ({run['task']}) fine-tune "
                             f"{run['dataset']} under two tasks: a dataset is one task (its registry entry), one row "
                             "of the tables, one probe verdict and one set of curves; report each task's runs apart")
        if first["code"] != run["code"]:
            refuse_two_versions("fine-tuning", (first["_path"], first["code"]), (run["_path"], run["code"]),
                                f"the runs of {run['dataset']} are compared with each other (its methods, label "
                                "ratios and seeds)")
        if first["score"]["name"] != run["score"]["name"]:
            raise ValueError(f"the runs of {run['dataset']} differ in score.name ('{first['_path']}': "
                             f"{first['score']['name']!r}, '{run['_path']}': {run['score']['name']!r}): one task, "
                             "one score")
        percent = round(100 * run["label_ratio"])
        row = (run["dataset"], run["task"], run["method"], percent)
        where = f"{run['method']} on {run['dataset']} at {percent} % labels"
        first = seen.setdefault((*row, run["seed"]), run)
        if first is not run:
            raise ValueError(f"'{first['_path']}' and '{run['_path']}' are both seed {run['seed']} of {where}: a run "
                             "counts once (remove the copy, or give each file once)")
        other = ratios.setdefault(percent, run)
        if abs(other["label_ratio"] - run["label_ratio"]) > 1e-9:
            of = f" of {run['dataset']}" if other["dataset"] == run["dataset"] else ""
            raise ValueError(f"label ratios {other['label_ratio']} ('{other['_path']}') and {run['label_ratio']} "
                             f"('{run['_path']}'){of} both round to {percent} %, the rows', averages' and files' "
                             "names: give ratios in distinct whole percents")
        first = rows.setdefault(row, run)
        for key in SETTINGS if "init_sha256" in first or "init_sha256" in run else (*SETTINGS[:-1], "init_from"):
            if first.get(key) != run.get(key):
                raise ValueError(f"the seeds of {where} differ in {key} ('{first['_path']}': {first.get(key)!r}, "
                                 f"'{run['_path']}': {run.get(key)!r}): runs of other settings (another scale, "
                                 "another encoder) are not seeds of one row")
        if (differ := _option_difference(first, run)) is not None:
            raise ValueError(f"the seeds of {where} differ in {differ}: runs of other options are not seeds of one row "
                             "(rerun every seed with the current options)")
        arm = arms.setdefault((run["dataset"], run["task"], percent), run)
        if arm["method"] != run["method"]:
            compared = f"{arm['method']} and {run['method']} on {run['dataset']} at {percent} % labels"
            for key in SETTINGS[:-1]:
                if arm.get(key) != run.get(key):
                    raise ValueError(f"{compared} differ in {key} ('{arm['_path']}': {arm.get(key)!r}, '{run['_path']}': "
                                     f"{run.get(key)!r}): the arms of one comparison share every setting but the "
                                     "starting encoder")
            if (differ := _option_difference(arm, run)) is not None:
                raise ValueError(f"{compared} differ in {differ}: the arms of one comparison share every option but the "
                                 "starting encoder (rerun both with the current options)")
    _check_arm_seeds(runs)


def _check_arm_seeds(runs: list[dict]) -> None:
    """Raise ValueError, naming a file of each, unless the methods compared on one dataset and label ratio hold the
    same seeds: each seed draws its own training cases and crops, so arms of other seeds compare draws, not methods."""
    arms: dict[tuple, dict[str, list[dict]]] = {}
    for run in runs:
        key = (run["dataset"], run["task"], round(100 * run["label_ratio"]))
        arms.setdefault(key, {}).setdefault(run["method"], []).append(run)
    for (dataset, _, percent), methods in arms.items():
        (first, a), *others = methods.items()
        for method, b in others:
            seeds = sorted(r["seed"] for r in a), sorted(r["seed"] for r in b)
            if seeds[0] != seeds[1]:
                raise ValueError(f"{first} and {method} on {dataset} at {percent} % labels were fine-tuned on other "
                                 f"seeds ({first}: seeds {seeds[0]}, e.g. '{a[0]['_path']}'; {method}: seeds {seeds[1]}, "
                                 f"e.g. '{b[0]['_path']}'): each seed draws its own training cases, so the arms of one "
                                 "comparison hold the same seeds (run the missing ones, or leave the others out)")


def _option_difference(first: dict, run: dict) -> str | None:
    """How the ``options`` two runs record differ (the first option that does, with both values), or None."""
    a, b = first.get("options"), run.get("options")
    if a == b:
        return None
    if not isinstance(a, dict) or not isinstance(b, dict):
        count = lambda o: f"{len(o)} options" if isinstance(o, dict) else "none"  # noqa: E731
        return f"the options they record ('{first['_path']}': {count(a)}, '{run['_path']}': {count(b)})"
    key, there, here = option_changes(a, b)[0]
    return f"{key} ('{first['_path']}': {there}, '{run['_path']}': {here})"


def read_runs(metric_files: list[Path]) -> tuple[list[dict], pd.DataFrame]:
    """The runs' metrics.json contents (:func:`read_run` with the history, :func:`check_runs`), and long rows:
    dataset, task, method, label_ratio, seed, metric, value (a task with per-class scores,
    :attr:`~s2dc.report.tasks.TaskView.per_class`, also one row per class, e.g. metric 'Dice % <class>' beside the
    mean); a null value (not scorable on the run's validation cases) gives no row."""
    runs = [read_run(path, history=True) for path in metric_files]
    check_runs(runs)
    rows = []
    for m in runs:
        base = {k: m[k] for k in ("dataset", "task", "method", "label_ratio", "seed")}
        # null: not scorable on these validation cases (a class none of them holds; an AUC with one class)
        for key, label, scale in TASK_METRICS[m["task"]]:
            value = m.get(key, "missing")
            if value is not None and not is_number(value):
                shown = "missing" if key not in m else repr(value)
                raise ValueError(f"bad metrics file '{m['_path']}': {key} is {shown}; expected a finite number or null")
            if value is not None:
                rows.append({**base, "metric": label, "value": scale * float(value)})
        view = TASK_VIEWS[m["task"]]
        (_, label, scale), key = view.metrics[0], view.per_class
        per_class = (m.get(key) if key else None) or {}
        if not isinstance(per_class, dict):
            raise ValueError(f"bad metrics file '{m['_path']}': {key} is {per_class!r}; expected "
                             f"{{class: {label.split()[0]}}}")
        for name, value in per_class.items():
            if value is not None and not is_number(value):
                raise ValueError(f"bad metrics file '{m['_path']}': {key}.{name} is {value!r}; expected a "
                                 "finite number or null")
            if value is not None:
                rows.append({**base, "metric": f"{label} {name}", "value": scale * float(value)})
    return runs, pd.DataFrame(rows)
