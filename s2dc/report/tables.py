"""Benchmark table: every fine-tuning ``metrics.json`` -> mean ± std over seeds, beside the paper's numbers.

Writes ``<out>/benchmark.csv`` (one row per dataset × method × label ratio), ``<out>/benchmark.md``
(the same as a Markdown table, then the structure-probe table when ``s2dc probe`` results are given, then
whether pretraining shows, dataset by dataset: :mod:`s2dc.report.effect`)
and ``<out>/metrics.json`` (nested, for ``dvc metrics diff``; the probe under ``"probe"``), recorded by their SHA-256
in ``<out>/.s2dc-tables.json`` (:data:`RECORD`: a table edited by hand is never replaced).
"""

from __future__ import annotations

import json
import math
import reprlib
from pathlib import Path

import pandas as pd

from ..data.datalist import registry_spec
from ..losses.options import ASSIGNMENTS
from ..pages import markdown_page
from ..recorded import folder_locked, is_recorded, read_record, write_recorded
from ..train.outputs import edit_found
from .averages import averages, averages_markdown, nested_averages, percent_score
from .effect import effect_markdown, effect_table, nested_effect, seed_spread
from .outputs import check_out_dir, is_own, record_present, record_problem
from .runs import check_runs, is_number, ratio_text, read_run
from .tasks import TASK_VIEWS
from .versions import check_code, refuse_two_versions


def poster_spec(dataset: str, task: str):
    """The registry spec whose poster numbers may stand beside a row of ``dataset`` and ``task``: None unless the
    registry knows the dataset and the row is of its task (the poster's numbers are that task's score: CC-CCII
    accuracy, BTCV and AutoPET Dice), so that no number is set beside a score of another metric."""
    spec = registry_spec({"name": dataset})
    return spec if spec is not None and spec.task == task else None


def paper_score(dataset: str, method: str, label_ratio: float, task: str) -> float:
    """The poster's number for this row (the registry's), NaN where it prints none (or the row is of another task)."""
    spec = poster_spec(dataset, task)
    score = spec.paper_score(method, label_ratio) if spec is not None else None
    return math.nan if score is None else score


def collect(metric_files: list[Path]) -> pd.DataFrame:
    """One row per fine-tuning run: dataset, task, metric, method, label_ratio, seed, score, train_cases, seconds, path,
    code (the hash of the fine-tuning code that made it); each file checked by :func:`~s2dc.report.runs.read_run`, the
    runs together by :func:`~s2dc.report.runs.check_runs`.

    The score is the task's first metric as the run recorded it (``score``: Dice or accuracy in %, PSNR in dB);
    ``percent`` is the score in % that the average over all datasets takes (:func:`~s2dc.report.averages.percent_score`)."""
    runs = [read_run(path) for path in metric_files]
    check_runs(runs)
    return runs_frame(runs)


def runs_frame(runs: list[dict]) -> pd.DataFrame:
    """:func:`collect`'s rows from runs already read and checked (``read_run`` contents, with their ``_path``)."""
    return pd.DataFrame([{
        "dataset": m["dataset"], "task": m["task"], "metric": m["score"]["name"], "method": m["method"],
        "label_ratio": float(m["label_ratio"]), "seed": m["seed"], "score": float(m["score"]["value"]),
        "train_cases": m["train_cases"], "seconds": float(m["seconds"]), "path": m["_path"], "percent": percent_score(m),
        "code": m["code"],
    } for m in runs])


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sample std over seeds per (dataset, task, method, label_ratio), with the paper's number (the std is NaN
    for one seed: it has none)."""
    grouped = runs.groupby(["dataset", "task", "metric", "method", "label_ratio"], sort=True)
    table = grouped.agg(
        mean=("score", "mean"), std=("score", "std"), seeds=("seed", "nunique"),
        train_cases=("train_cases", "first"), minutes=("seconds", lambda s: s.sum() / 60),
    ).reset_index()
    table["paper"] = [paper_score(d, m, r, t) for d, m, r, t in zip(table.dataset, table.method, table.label_ratio,
                                                                     table.task)]
    return table


#: What each poster table beside the benchmark is (seed-poster.txt; method.md §7), said under the table when one of
#: its numbers is shown: the label ratio a number stands at is the poster's only where it prints one.
POSTER_TABLES = {
    "poster Table 1": "CC-CCII accuracy (%) at the 10 / 50 / 100 % of the training labels it prints; its Swin-UNETR "
                      "row stands beside scratch (our reading: the poster does not say that row was trained from scratch)",
    "poster Table 2": "BTCV and AutoPET Dice (%) of the loss ablation (L_g, + L_p2p, + L_p2s, all three = s2dc); the "
                      "poster prints no label ratio for it, so 100 % is our reading, as is the order of its rows "
                      "(their markers were lost in the poster text)",
}


def paper_table(dataset: str, method: str, label_ratio: float, task: str) -> str | None:
    """The poster table this row's paper number comes from (the registry's), None where it prints none."""
    spec = poster_spec(dataset, task)
    for p in spec.paper if spec is not None else ():
        if p.method == method and abs(p.label_ratio - label_ratio) < 1e-9:
            return p.table
    return None


def markdown(table: pd.DataFrame) -> str:
    """The benchmark as a Markdown table (score: the task's first metric), then where its paper numbers come from."""
    lines = [
        "| dataset | task | metric | method | labels | score (mean ± std) | seeds | train cases | paper (real data) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.itertuples():
        paper = "—" if math.isnan(row.paper) else f"{row.paper:.2f}"
        lines.append(
            f"| {row.dataset} | {row.task} | {row.metric} | {row.method} | {ratio_text(row.label_ratio)} | {_mean_std(row.mean, row.std)} "
            f"| {row.seeds} | {row.train_cases} | {paper} |"
        )
    sources = {paper_table(r.dataset, r.method, r.label_ratio, r.task) for r in table.itertuples() if not math.isnan(r.paper)}
    notes = [f"- {name}: {what}." for name, what in POSTER_TABLES.items() if name in sources]
    if notes:
        lines += ["", "The paper column (the poster's numbers on the real data):", *notes]
    return "\n".join(lines) + "\n"


def _mean_std(mean: float, std: float) -> str:
    """'mean ± std', or 'mean ± —' for one seed (no spread to give)."""
    return f"{mean:.2f} ± " + ("—" if math.isnan(std) else f"{std:.2f}")


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


def nested_metrics(table: pd.DataFrame) -> dict:
    """{dataset: {method: {"labels_10%": {"mean", "std", "seeds"}}}} for ``dvc metrics``."""
    out: dict = {}
    for row in table.itertuples():
        cell = out.setdefault(row.dataset, {}).setdefault(row.method, {})
        cell[f"labels_{ratio_text(row.label_ratio)}"] = {"mean": round(row.mean, 4), "std": _round(row.std), "seeds": int(row.seeds)}
    return out


#: Structure scores of a segmentation probe (``s2dc.eval.probe.structure_scores``) carried into the tables.
STRUCTURE = ("consistency", "discrepancy", "ratio")


#: The metric ``s2dc probe`` scores each task by (:func:`s2dc.eval.probe.probe`): balanced accuracy (a fraction)
#: for the classifier probes, R² for the regressions.
PROBE_METRICS = {task: view.probe_metric for task, view in TASK_VIEWS.items()}
#: The Swin stages a probe reads (0 = patch embedding, 4 = the last stage).
PROBE_STAGES = range(5)
_ROUNDING = 1e-9  # a mean of recalls of 1 may land an ulp above 1


#: Keys of every probe result (`s2dc probe`): a file with none of them is of another kind.
PROBE_KEYS = ("encoders", "stage", "metric")


def check_probe(p: dict) -> None:
    """Raise ValueError naming the key unless the probe result ``p`` holds what ``s2dc probe`` can write: the ``code``
    that made it, a known task scored by its metric (:data:`PROBE_METRICS`), a stage 0..4 and per encoder a score in
    the metric's range (balanced accuracy in [0, 1], R² <= 1), a standard error >= 0 or null, an organ recall in
    [0, 1] or null, each draw's score (finite numbers) or null and well-formed paired differences
    (:func:`check_versus`)."""
    if not (isinstance(p, dict) and any(key in p for key in PROBE_KEYS)):
        raise ValueError(f"it is not a probe result (none of the keys {', '.join(PROBE_KEYS)}: a fine-tuning run's "
                         "metrics.json?)")
    check_code(p.get("code"), "probe")
    if p["task"] not in PROBE_METRICS:
        raise ValueError(f"task is {p['task']!r}; expected one of {list(PROBE_METRICS)}")
    if p["metric"] != PROBE_METRICS[p["task"]]:
        raise ValueError(f"metric is {p['metric']!r}; a {p['task']} probe is scored by {PROBE_METRICS[p['task']]!r}")
    stage = p["stage"]
    if not (isinstance(stage, int) and not isinstance(stage, bool) and stage in PROBE_STAGES):
        raise ValueError(f"stage is {stage!r}; expected a Swin stage 0..4")
    if not isinstance(p["encoders"], dict):
        raise ValueError(f"encoders is {p['encoders']!r}; expected an object {{encoder: result}}")
    shas = p.get("encoder_sha256")
    if shas is not None and not (isinstance(shas, dict) and all(isinstance(v, str) and v for v in shas.values())):
        raise ValueError(f"encoder_sha256 is {reprlib.repr(shas)}; expected an object {{encoder: SHA-256 of its file}} "
                         "or null")
    fraction = p["metric"] != "R²"
    for encoder, r in p["encoders"].items():
        key, score = f"encoders.{encoder}", r["score"]
        if not is_number(score):
            raise ValueError(f"{key}.score is {score!r}; expected a finite number")
        if fraction and not -_ROUNDING <= score <= 1 + _ROUNDING:
            raise ValueError(f"{key}.score is {score!r}; expected a balanced accuracy in [0, 1]")
        if not fraction and score > 1 + _ROUNDING:
            raise ValueError(f"{key}.score is {score!r}; expected an R² <= 1")
        se = r.get("se")
        if se is not None and not (is_number(se) and se >= 0):
            raise ValueError(f"{key}.se is {se!r}; expected a finite number >= 0 or null")
        organ = r.get("organ_recall")
        if organ is not None and not (is_number(organ) and -_ROUNDING <= organ <= 1 + _ROUNDING):
            raise ValueError(f"{key}.organ_recall is {organ!r}; expected a recall in [0, 1] or null")
        draws = r.get("draws")
        if draws is not None and not (isinstance(draws, list) and all(is_number(d) for d in draws)):
            raise ValueError(f"{key}.draws is {reprlib.repr(draws)}; expected a list of finite numbers (each random "
                             "draw's score) or null")
        check_versus(encoder, r.get("versus"), fraction)


def check_versus(encoder: str, versus, fraction: bool = False) -> None:
    """Raise ValueError naming the key unless ``versus`` (an encoder's paired differences in a probe result) is
    absent or ``{other: {"difference": finite number, "se": finite number >= 0 or null}}``; a difference of two
    balanced accuracies (``fraction``) in [-1, 1]."""
    key = f"encoders.{encoder}.versus"
    if versus is None:
        return
    if not isinstance(versus, dict):
        raise ValueError(f"{key} is {versus!r}; expected an object {{baseline: {{difference, se}}}} or null")
    for other, pair in versus.items():
        if not isinstance(pair, dict):
            raise ValueError(f"{key}.{other} is {pair!r}; expected an object {{difference, se}}")
        if not is_number(pair.get("difference")):
            raise ValueError(f"{key}.{other}.difference is {pair.get('difference')!r}; expected a finite number")
        if fraction and abs(pair["difference"]) > 1 + _ROUNDING:
            raise ValueError(f"{key}.{other}.difference is {pair['difference']!r}; expected a difference of balanced "
                             "accuracies in [-1, 1]")
        se = pair.get("se")
        if se is not None and not (is_number(se) and se >= 0):
            raise ValueError(f"{key}.{other}.se is {se!r}; expected a finite number >= 0 or null")


def collect_probes(probe_files: list[Path]) -> pd.DataFrame:
    """One row per (dataset, encoder) of ``s2dc probe`` results: task, stage, metric, score (balanced accuracy in
    %, or R²) and its bootstrap standard error ``se`` (NaN in a file without one), organ recall (%) and the
    structure scores (segmentation; NaN otherwise). The results of one dataset, set side by side in its rows, must
    have been made by one version of the probe code."""
    rows, first, versions, given = [], {}, {}, {}
    for index, path in enumerate(probe_files):
        try:
            same = given.setdefault(Path(path).resolve(), index)
            if same != index:  # its rows would be printed twice, its dataset tallied twice by the effect counts
                raise ValueError(f"it is given twice (as '{probe_files[same]}' too): a probe result counts once")
            p = json.loads(Path(path).read_text())
            if (edit := edit_found(p)) is not None:
                raise ValueError(f"its content is not what the probe wrote ({edit}): edited after it")
            check_probe(p)
            version = versions.setdefault(p["dataset"], (str(path), p["code"]))
            if version[1] != p["code"]:
                refuse_two_versions("probe", version, (str(path), p["code"]),
                                    f"the probe rows of {p['dataset']} are set side by side in one table")
            percent = p["metric"] != "R²"
            for encoder, r in p["encoders"].items():
                other = first.setdefault((p["dataset"], encoder), path)
                if other != path:
                    raise ValueError(f"'{other}' gives the {encoder} encoder on {p['dataset']} too: one probe result "
                                     "per dataset and encoder (the tables key on them)")
            for encoder, r in p["encoders"].items():
                organ = r.get("organ_recall")
                structure = r.get("structure") or {}
                rows.append({"dataset": p["dataset"], "task": p["task"], "stage": int(p["stage"]), "encoder": encoder,
                             "metric": p["metric"], "score": (100.0 if percent else 1.0) * float(r["score"]),
                             "se": (100.0 if percent else 1.0) * float(math.nan if r.get("se") is None else r["se"]),
                             "organ_recall": math.nan if organ is None else 100.0 * float(organ),
                             **{k: math.nan if structure.get(k) is None else float(structure[k]) for k in STRUCTURE}})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"bad probe file '{path}': {err}") from err
    return pd.DataFrame(rows, columns=["dataset", "task", "stage", "encoder", "metric", "score", "se",
                                       "organ_recall", *STRUCTURE])


def check_probed_encoders(runs: pd.DataFrame, probe_files: list[Path]) -> None:
    """Raise ValueError, naming both files, if a probe result's row of a method (``s2dc``, a variant) read another
    encoder file than the one that method's runs on that dataset started from (by the SHA-256 both record; a file
    that records none is not compared), or if it probes a dataset as another task than its runs fine-tune it as: the
    frozen and the fine-tuned protocol of one table read one encoder and one task."""
    started, tasks = {}, {}
    for row in runs.itertuples():
        tasks.setdefault(row.dataset, (row.task, row.path))
        sha = json.loads(Path(row.path).read_text()).get("init_sha256")
        if sha:
            started.setdefault((row.dataset, row.method), (sha, row.path))
    for path in probe_files:
        p = json.loads(Path(path).read_text())
        task, run = tasks.get(p.get("dataset"), (p.get("task"), None))
        if p.get("task") != task:
            raise ValueError(f"probe result '{path}' is a {p.get('task')} probe of {p.get('dataset')}, which the runs "
                             f"fine-tune as {task} (e.g. '{run}'): a dataset is one task, one row of the tables and "
                             "one verdict; probe it as its task")
        for name, sha in (p.get("encoder_sha256") or {}).items():
            sha_run, run = started.get((p.get("dataset"), name), (sha, None))
            if sha != sha_run:
                raise ValueError(f"the {name} row of probe result '{path}' read another encoder file (SHA-256 "
                                 f"{str(sha)[:12]}…) than the {name} runs on {p.get('dataset')} started from ('{run}': "
                                 f"{sha_run[:12]}…): the frozen and the fine-tuned protocol of one table read one "
                                 "encoder; probe the runs' encoder again")


def probe_markdown(probes: pd.DataFrame) -> str:
    """The frozen-encoder protocol as a Markdown table (balanced accuracy %, or R², of a linear model, ± its
    bootstrap standard error over the validation cases where the probe gives one)."""
    lines = [
        "| dataset | stage | encoder | task | metric | score | organ recall | consistency | discrepancy | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    dash = lambda v, fmt: "—" if math.isnan(v) else format(v, fmt)  # noqa: E731
    for row in probes.itertuples():
        digits = 1 if row.metric != "R²" else 3
        score = f"{row.score:.{digits}f}" + ("" if math.isnan(row.se) else f" ± {row.se:.{digits}f}")
        lines.append(f"| {row.dataset} | {row.stage} | {row.encoder} | {row.task} | {row.metric} | {score} | "
                     f"{dash(row.organ_recall, '.1f')} | {dash(row.consistency, '.3f')} | {dash(row.discrepancy, '.3f')} | "
                     f"{dash(row.ratio, '.2f')} |")
    return "\n".join(lines) + "\n"


def _html_of(title: str):
    return lambda text: text.startswith(markdown_page(title, "").split("<style>")[0])


def _json_of(test):
    def recognise(text: str) -> bool:
        try:
            doc = json.loads(text)
        except ValueError:
            return False
        return isinstance(doc, dict) and bool(doc) and all(isinstance(v, dict) and v and test(k, v)
                                                           for k, v in doc.items())
    return recognise


def _cells(methods) -> bool:
    """Whether ``methods`` is ``{method: {"labels_N%": {"mean": ...}}}``, a dataset's (or a scope's) part of the
    report's metrics.json."""
    return isinstance(methods, dict) and bool(methods) and all(
        isinstance(c, dict) and c and all(isinstance(x, dict) and "mean" in x for x in c.values())
        for c in methods.values())


#: How each file the two table commands write is recognised (by its start or its shape), so that a rerun replaces
#: its own files and never a user's (an input metrics.json, notes named benchmark.md) in the folder given as --out.
OWN_OUTPUTS = {
    "benchmark.csv": lambda text: text.startswith("dataset,task,metric,method,label_ratio,"),
    "benchmark.md": lambda text: text.startswith("| dataset | task | metric | method | labels |"),
    "benchmark.html": _html_of("The benchmark"),
    "probe.csv": lambda text: text.startswith("dataset,task,stage,encoder,"),
    "metrics.json": _json_of(lambda k, v: all(isinstance(c, dict) for c in v.values()) if k in ("probe", "effect")
                             else all(_cells(c) for c in v.values()) if k == "averages" else _cells(v)),
    "ablation.csv": lambda text: text.startswith("dataset,task,metric,method,label_ratio,"),
    "ablation.md": lambda text: text.startswith("Loss ablation (poster Table 2)"),
    "ablation.html": _html_of("The loss ablation"),
    "ablation.json": _json_of(lambda k, v: "variants" in v or "probe" in v),
}


#: The record of the tables a folder holds from `s2dc report` or `s2dc ablation-table` (:mod:`s2dc.recorded`): a
#: table it lists is replaced only while its bytes are those recorded, so that a user's edit of one is never lost. It
#: travels with the tables (a DVC output of their stage, committed with them), so that `dvc exp apply` and
#: `git checkout` bring back tables and record together.
RECORD = ".s2dc-tables.json"


def record_refusal(out_dir: Path) -> str | None:
    """Why the tables in ``out_dir`` may not be written, if its :data:`RECORD` is not one (unreadable, a merge's
    conflict markers, a user's file, a folder): as a sentence naming it; else None."""
    problem = record_problem(out_dir, RECORD)
    if problem is None:
        return None
    return (f"'{Path(out_dir) / RECORD}' is not the record of the tables s2dc wrote there: {problem} (a merge left "
            "conflict markers in it?); mend it, or move it away, and the tables beside it count as s2dc's again "
            "only by their text")


def table_refusal(path: Path) -> str | None:
    """Why the table at ``path`` (named as in :data:`OWN_OUTPUTS`) may not be replaced, as words after its path, or
    None if it may (absent, or as its command wrote it): a table its folder's :data:`RECORD` lists must hold the bytes
    recorded (not edited since); one it does not list (none was written here, or an s2dc that kept no record wrote
    it) must be recognised by its text as that table. (Check the record first: :func:`record_refusal`.)"""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return None
    if path.is_symlink() or not path.is_file():
        return f"exists and is not the {path.name} s2dc writes (a link or a folder)"
    if path.name in read_record(path.parent, RECORD):
        if is_recorded(path.parent, path.name, RECORD):
            return None
        return (f"is the {path.name} s2dc wrote, changed since (its bytes are not those recorded in "
                f"'{path.parent / RECORD}'): edited by hand, or brought back from elsewhere (one file checked out of "
                "an older commit)?")
    if is_own(path, OWN_OUTPUTS[path.name]):
        return None
    return f"exists and is not the {path.name} s2dc writes"


def check_tables_out(out_dir: Path, names: list[str]) -> None:
    """Raise ValueError, naming the file, if the record in ``out_dir`` is not one (:func:`record_refusal`) or one of
    ``names`` there may not be replaced (:func:`table_refusal`): an input, a user's file, a table edited by hand."""
    check_out_dir(out_dir)
    if (why := record_refusal(out_dir)) is not None:
        raise ValueError(f"{why}; refusing to write the tables")
    for name in names:
        why = table_refusal(out_dir / name)
        if why is not None and why.startswith("exists"):
            raise ValueError(f"'{out_dir / name}' {why}; refusing to overwrite it (give --out a folder of its own)")
        if why is not None:
            raise ValueError(f"'{out_dir / name}' {why} Refusing to overwrite it; move it away (or put back what s2dc "
                             f"wrote) to have it written again; if every table beside it is s2dc's, deleting "
                             f"'{out_dir / RECORD}' has them recognised by their text")


def _write_all(out_dir: Path, texts: dict[str, str]) -> None:
    """Every text made before the first is written, every name checked (:func:`check_tables_out`), the tables there
    that the record does not list recorded as they are (:func:`.outputs.record_present`), then all written as one
    and recorded (:func:`s2dc.recorded.write_recorded`), so that a report never leaves a mix of the previous tables and
    the new, and a later one replaces only tables left as written (or as a stopped write left them)."""
    check_out_dir(out_dir)
    with folder_locked(out_dir):  # another table command into this folder waits: one record, one command's tables
        check_tables_out(out_dir, list(texts))
        record_present(out_dir, list(texts), RECORD)
        write_recorded(out_dir, texts, RECORD)


#: The keys of the report's metrics.json beside its datasets' names (no dataset may take one).
NESTED_KEYS = ("averages", "probe", "effect")


def write_report(metric_files: list[Path], out_dir: Path, probe_files: list[Path] = ()) -> pd.DataFrame:
    """Aggregate ``metric_files`` (and ``probe_files``) and write benchmark.csv, benchmark.md (and .html: the table,
    the averages per task and over all datasets beside the poster's, the probe table), metrics.json (with
    ``averages``) and probe.csv (the probe table; only its header without probe files) into ``out_dir``."""
    runs = collect(metric_files)
    for row in runs.itertuples():
        if row.dataset in NESTED_KEYS:
            raise ValueError(f"bad metrics file '{row.path}': dataset is {row.dataset!r}, a key metrics.json keeps for "
                             f"its {row.dataset} ({', '.join(NESTED_KEYS)}): its rows would be replaced there; give "
                             "the dataset another name")
    table, means = summarise(runs), averages(runs)
    probes = collect_probes(list(probe_files))
    check_probed_encoders(runs, list(probe_files))
    text, nested = markdown(table) + "\n" + averages_markdown(means), nested_metrics(table)
    nested["averages"] = nested_averages(means)
    if len(probes):
        text += ("\nFrozen-encoder protocol (`s2dc probe`): a linear model on the frozen encoder's features, "
                 "scored on the validation cases (± the bootstrap standard error over the cases; the paired "
                 "differences between encoders are in each dataset's probe table). Segmentation also gives the "
                 "structure awareness of the validation tokens: consistency = mean cosine of token pairs within one structure, discrepancy = 1 - mean "
                 "cosine between structures, ratio = discrepancy / (1 - consistency) (> 1: a structure's tokens are "
                 "closer to each other than to other structures').\n\n" + probe_markdown(probes))
        nested["probe"] = {}
        for row in probes.itertuples():
            key = "r2" if row.metric == "R²" else "balanced_accuracy"
            nested["probe"].setdefault(row.dataset, {})[row.encoder] = {
                key: round(row.score, 4), **({} if math.isnan(row.se) else {f"{key}_se": round(row.se, 4)}),
                "organ_recall": None if math.isnan(row.organ_recall) else round(row.organ_recall, 4),
                **{k: round(getattr(row, k), 4) for k in STRUCTURE if not math.isnan(getattr(row, k))}}
    effect = effect_table(table, runs, probe_files)
    if len(effect):
        text += ("\nDoes pretraining show? S²DC against its baselines, dataset by dataset (`s2dc.report.effect`). "
                 "Fine-tuning: at the lowest label ratio, the S²DC arm's mean over seeds minus the scratch arm's, in "
                 "the task's metric, beyond the seed spread when it exceeds the largest of the two arms' seed stds "
                 "and of the std of their per-seed differences (a seed fixes the labelled subset, unless "
                 "data.split_seed fixes one for all, and the new layers' first weights for both arms, so each seed is "
                 "a pair); seed by seed, on how many seeds S²DC scored above scratch and below it. "
                 "Frozen: the probe's paired differences on the same validation cases (points of balanced accuracy, "
                 "or R²; ± the bootstrap standard error over the cases, and against the random encoder, the mean of "
                 "K draws, with the draws' spread too: sqrt(se² + s²/K), s² their sample variance).\n\n"
                 + effect_markdown(effect))
        nested["effect"] = nested_effect(effect)
    _write_all(out_dir, {
        "benchmark.csv": table.to_csv(index=False, float_format="%.4f"),
        "benchmark.md": text,
        "metrics.json": json.dumps(nested, indent=2) + "\n",
        "probe.csv": probes.to_csv(index=False, float_format="%.4f"),
        "benchmark.html": markdown_page("The benchmark", text),
    })
    return table


#: The label ratio of the poster's Table 2 (loss ablation; our reading: fine-tuned on all labels).
ABLATION_PAPER_RATIO = 1.0
#: The poster's Table 2 rows (the registry's names for them) by the loss terms and assignment they pretrain with: a
#: variant gets the poster's number of the row that trains as it does, whatever params.yaml names it.
POSTER_TABLE2 = {"global:dual_softmax": "lg", "global+p2p:dual_softmax": "lg_p2p",
                 "global+p2s:dual_softmax": "lg_p2s", "global+p2p+p2s:dual_softmax": "s2dc"}
#: The loss terms, in the order a variant's terms are written.
TERMS = ("global", "p2p", "p2s")


def parse_terms(items: list[str]) -> dict[str, str]:
    """``['lg=global:dual_softmax', ...]`` (``--terms``) -> {variant: 'global:dual_softmax'}, the terms in
    :data:`TERMS` order; ValueError naming the item otherwise."""
    terms = {}
    for item in items:
        name, sep, value = item.partition("=")
        losses, colon, assignment = value.partition(":")
        parts = losses.split("+")
        if (not sep or not name or not colon or not assignment or ":" in assignment or len(set(parts)) != len(parts)
                or not set(parts) <= set(TERMS) or name in terms):
            raise ValueError(f"--terms {item!r}: expected VARIANT=TERMS:ASSIGNMENT once per variant, TERMS one or more "
                             f"of {'+'.join(TERMS)} (e.g. lg=global:dual_softmax)")
        if assignment not in ASSIGNMENTS:
            raise ValueError(f"--terms {item!r}: the assignment {assignment!r} is none of {ASSIGNMENTS} "
                             "(loss.assignment)")
        terms[name] = "+".join(t for t in TERMS if t in parts) + ":" + assignment
    return terms


def table2_score(dataset: str, terms: str, task: str) -> float:
    """The poster's Table 2 number on ``dataset`` of the row that pretrains with ``terms``, NaN where it prints none
    (or the row is of another task than the dataset's)."""
    spec, row = poster_spec(dataset, task), POSTER_TABLE2.get(terms)
    scores = [p.score for p in (spec.paper if spec is not None else ()) if p.method == row
              and p.table == "poster Table 2" and abs(p.label_ratio - ABLATION_PAPER_RATIO) < 1e-9]
    return scores[0] if scores else math.nan


def ablation_table(runs: pd.DataFrame, terms: dict[str, str]) -> pd.DataFrame:
    """The loss ablation (poster Table 2) of ``runs`` (:func:`collect`): mean ± std over seeds per (dataset, variant),
    the variant's loss terms (``terms``: {variant: 'global+p2p:dual_softmax'}), the poster's number and both rankings
    within each dataset."""
    missing = sorted(set(runs.method) - set(terms))
    if missing:
        raise ValueError(f"no loss terms given for variant(s) {missing} (expected --terms NAME=TERMS for each)")
    absent = [v for v in terms if v not in set(runs.method)]
    if absent:
        raise ValueError(f"--terms names {absent}, of which no metrics file was given")
    for dataset, ratios in runs.groupby("dataset").label_ratio.unique().items():
        if len(ratios) > 1:
            ratios = sorted(float(r) for r in ratios)
            files = [runs[(runs.dataset == dataset) & (runs.label_ratio == r)].path.iloc[0] for r in ratios]
            raise ValueError(f"the ablation compares its variants at one label ratio, but {dataset} has runs at "
                             f"{ratios} (e.g. {', '.join(repr(f) for f in files)})")
    table = summarise(runs)
    table["terms"] = table.method.map(terms)
    table["order"] = table.method.map({v: i for i, v in enumerate(terms)})  # rows in the order the terms were given
    table["paper"] = [table2_score(d, t, k) for d, t, k in zip(table.dataset, table.terms, table.task)]
    table["rank"] = table.groupby("dataset")["mean"].rank(ascending=False, method="min").astype(int)
    table["paper_rank"] = table.groupby("dataset")["paper"].rank(ascending=False, method="min")
    return table


#: Two means of the ablation closer than this are equal but for floating-point rounding: a tie, not an order.
_TIE = 1e-9


def ordering(table: pd.DataFrame, runs: pd.DataFrame, dataset: str) -> dict:
    """Our order of the variants the poster prints, best first, as groups of equal means (ties), and the poster's;
    Kendall's tau between them, and how far ours is resolved, step by step (:func:`_steps`, from the table's means and
    ``runs``' per-seed scores): the order is resolved when every step between neighbours is. A range of all the means
    against the largest std would let one noisy variant far below call the others ordered; a mean of the stds would
    let variants stuck at the floor, whose std is 0, shrink the noise of one that leaves it on a single seed."""
    from scipy.stats import kendalltau

    rows = table[(table.dataset == dataset) & table.paper.notna()].sort_values("mean", ascending=False, kind="stable")
    mine = runs[runs.dataset == dataset]
    steps = _steps(rows, mine.pivot_table(index="seed", columns="method", values="score", aggfunc="first"))
    ours = _tie_groups(list(rows.method), steps.gap)
    poster = list(rows.sort_values("paper", ascending=False).method)
    tau = float(kendalltau(rows["mean"], rows["paper"]).statistic) if len(rows) >= 2 else math.nan
    return {"ours": ours, "poster": poster, "kendall_tau": tau,
            "same_best": bool(ours and len(ours[0]) == 1 and ours[0][0] == poster[0]),
            "steps": len(steps), "steps_resolved": int(steps.resolved.sum()),
            "one_seed": list(rows.method[rows["std"].isna()]), "resolved": bool(len(steps) and steps.resolved.all())}


def _steps(rows: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """One row per step between neighbours of ``rows`` (sorted by mean, best first): the gap of their means, and
    whether it is resolved: larger than its seed spread, the largest of the two variants' seed stds and of the std of
    their per-seed differences (``scores``: seed x variant; a seed fixes the labelled subset and the new layers' first
    weights of every variant, so the seeds pair them, as they pair the benchmark's two arms), and no tie. A NaN std
    (one seed) resolves no step of its variant."""
    gap = -rows["mean"].diff().iloc[1:]
    names, stds = list(rows.method), list(rows["std"])
    noise = [seed_spread(stds[k], stds[k + 1], float((scores[a] - scores[b]).std()))
             for k, (a, b) in enumerate(zip(names, names[1:]))]
    return pd.DataFrame({"gap": gap, "resolved": (gap >= _TIE) & (gap > noise)})


def _tie_groups(methods: list[str], gaps: pd.Series) -> list[list[str]]:
    """``methods`` (best first) in groups of equal means: a gap below :data:`_TIE` joins the one before."""
    groups: list[list[str]] = []
    for method, new in zip(methods, [True, *(gaps >= _TIE)]):
        if new:
            groups.append([method])
        else:
            groups[-1].append(method)
    return groups


def ablation_markdown(table: pd.DataFrame, runs: pd.DataFrame) -> str:
    """One row per variant, two columns per dataset (ours at the run's label ratio on its data; the poster's Table 2),
    then the orderings compared (:func:`ordering`, from ``runs``' per-seed scores too)."""
    datasets = sorted(table.dataset.unique())
    head = "| variant | losses | assignment | " + " | ".join(
        f"{d} {table[table.dataset == d].metric.iloc[0]} (ours, {ratio_text(table[table.dataset == d].label_ratio.iloc[0])} labels) "
        f"| {d} poster" for d in datasets) + " |"
    lines = [head, "|---|---|---|" + "---|---|" * len(datasets)]
    variants = list(table.sort_values("order", kind="stable").drop_duplicates("method").method)
    for variant in variants:
        losses, assignment = table[table.method == variant].terms.iloc[0].split(":")
        cells = []
        for d in datasets:
            row = table[(table.dataset == d) & (table.method == variant)]
            if row.empty:
                cells += ["—", "—"]
                continue
            r = row.iloc[0]
            cells += [f"{_mean_std(r['mean'], r['std'])} (#{r['rank']})",
                      "—" if math.isnan(r.paper) else f"{r.paper:.2f} (#{int(r.paper_rank)})"]
        pretty = " + ".join({"global": "L_g", "p2p": "L_p2p", "p2s": "L_p2s"}[t] for t in losses.split("+"))
        lines.append(f"| {variant} | {pretty} | {assignment} | " + " | ".join(cells) + " |")
    lines.append("")
    for d in datasets:
        o = ordering(table, runs, d)
        tau = "—" if math.isnan(o["kendall_tau"]) else f"{o['kendall_tau']:+.2f}"
        ours = " > ".join(" = ".join(tied) for tied in o["ours"])
        absent = [v for v in variants if v not in set(table[table.dataset == d].method)]
        among = f" (among the variants run on it; not run: {', '.join(absent)})" if absent else ""
        lines.append(f"- {d}{among}: ours {ours or '—'}; poster {' > '.join(o['poster']) or '—'}; "
                     f"Kendall τ {tau}; same best: {'yes' if o['same_best'] else 'no'}; " + _resolution(o))
    return "\n".join(lines) + "\n"


def _resolution(o: dict) -> str:
    """How many steps of our order stand out of the seeds' noise, and whether the order is resolved, in words."""
    if not o["poster"]:
        return "no variant the poster prints"
    if not o["steps"]:
        return "one variant, no order to resolve"
    text = (f"{o['steps_resolved']} of {o['steps']} step{'s' if o['steps'] > 1 else ''} of our order beyond its "
            "seed spread")
    if o["resolved"]:
        return text
    unresolved = o["steps"] - o["steps_resolved"]
    if o["one_seed"]:
        why = "a variant has one seed, so no seed std"
    else:
        why = f"{'every step' if unresolved == o['steps'] else unresolved} within the seeds’ noise"
    return f"{text} (not resolved: {why})"


def write_ablation(metric_files: list[Path], terms: dict[str, str], out_dir: Path,
                   probe_files: list[Path] = ()) -> pd.DataFrame:
    """Write ablation.csv, ablation.md (and .html) and ablation.json (nested, with the orderings, for ``dvc metrics``) into
    ``out_dir``; ``probe_files`` (``s2dc probe`` of every variant's encoder) add the frozen-encoder table."""
    runs = collect(metric_files)
    table = ablation_table(runs, terms)
    probes = collect_probes(list(probe_files))
    check_probed_encoders(runs, list(probe_files))
    nested = {d: {"variants": {r.method: {"mean": round(r.mean, 4), "std": _round(r.std), "seeds": int(r.seeds)}
                               for r in table[table.dataset == d].itertuples()},
                  "ordering": _finite(ordering(table, runs, d))} for d in sorted(table.dataset.unique())}
    text = ("Loss ablation (poster Table 2): each pretraining variant's encoder fine-tuned on the same cases; ours is the "
            "mean ± std over seeds (rank among the variants), the poster's is Dice % on the real data at "
            f"{ratio_text(ABLATION_PAPER_RATIO)} labels (our reading of its table).\n\n" + ablation_markdown(table, runs))
    if len(probes):
        text += ("\nThe variants' encoders read directly (`s2dc probe`: a linear model on the frozen features, beside a "
                 "random encoder and the raw voxels; consistency, discrepancy and their ratio as in the benchmark's "
                 "probe table):\n\n" + probe_markdown(probes))
        for row in probes.itertuples():
            nested.setdefault(row.dataset, {}).setdefault("probe", {})[row.encoder] = {
                "score": round(row.score, 4), **{k: round(getattr(row, k), 4) for k in STRUCTURE
                                                 if not math.isnan(getattr(row, k))}}
    _write_all(out_dir, {
        "ablation.csv": table.to_csv(index=False, float_format="%.4f"),
        "ablation.md": text,
        "ablation.html": markdown_page("The loss ablation", text),
        "ablation.json": json.dumps(nested, indent=2) + "\n",
    })
    return table


def _finite(d: dict) -> dict:
    """NaN -> None (JSON has no NaN)."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in d.items()}
