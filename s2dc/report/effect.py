"""Does pretraining show? S²DC against its baselines, dataset by dataset, under both evaluation protocols.

* Fine-tuning protocol: at each dataset's lowest label ratio, the S²DC arm's mean over seeds minus the scratch arm's,
  in the task's metric. A seed fixes the labelled subset, unless ``data.split_seed`` fixes one for all, and the new
  layers' first weights for both arms, so each seed is a pair. The **seed spread** is the largest of the two arms'
  sample standard deviations over seeds and of the sample standard deviation of their per-seed differences (S²DC
  minus scratch, seed by seed: a gain carried by one seed is within it). The difference is **beyond the seed
  spread** when it exceeds it, and **behind** when S²DC is below scratch by more than it (undecided, ``—``, with one
  seed: no spread to compare against; a **tie**, with both arms at one same score on every seed, as two arms stuck at
  0 Dice: no spread and nothing to compare). Beside it, seed by seed: on how many of the seeds both arms ran S²DC
  scored above scratch and on how many below.
* Frozen-encoder protocol: the paired differences that ``s2dc probe`` gives (S²DC minus the random encoder, S²DC
  minus the raw voxels, on the same validation cases), ± their standard error: the bootstrap one over the cases,
  and against the random encoder, the mean of K untrained draws, also the draws' own spread, sqrt(se² + s²/K) with
  s² the sample variance of the draws' scores (the bootstrap one alone in a probe result with fewer than two draws).
  S²DC is **above** a baseline
  when the difference is positive, and by two standard errors when it exceeds twice its standard error; a row above
  both but within two standard errors of one says so (``yes, within 2 s.e.``), one whose probe gave no standard error
  too (``yes (no s.e.)``), and the counts lead with the lead by two standard errors.

The counts under the table are over the segmentation and classification datasets (the tasks whose frozen protocol is
a linear classifier of tokens or of pooled features) and over all datasets; the verdicts a count tallies must have been
made by one version of the fine-tuning code, and of the probe code (:mod:`.versions`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..pyplot import png_bytes, pyplot
from .runs import ratio_text
from .tasks import CLASSIFIER_TASKS
from .versions import check_one_version

#: The arm compared and its fine-tuning baseline; the probe's baselines (encoder names of ``s2dc probe``).
PRETRAINED, SCRATCH = "s2dc", "scratch"
FROZEN_BASELINES = ("random", "voxels")
#: ``finetune_beyond`` of a dataset whose two arms are equal on every seed (no spread, no difference), and of one
#: where S²DC is below scratch by more than the spread.
TIE, BEHIND = "tie", "behind"
#: Relative size below which a seed std or a difference of means is floating-point rounding, not a spread.
ROUNDING = 1e-9
#: The frozen protocol's columns: each baseline's paired difference and its standard error (:func:`with_draws`).
PAIRED = [f"{kind}_{b}" for b in FROZEN_BASELINES for kind in ("versus", "versus_se")]
#: Seed by seed: the seeds both arms ran, and of them those where S²DC scored above scratch and below it.
SEED_PAIRS = ["finetune_paired", "finetune_ahead", "finetune_behind"]
#: Which version of the code made each protocol's verdict: a file of the dataset's runs (or its probe result) and the
#: ``code`` it records.
MADE = ["finetune_path", "finetune_code", "probe_path", "probe_code"]
COLUMNS = ["dataset", "task", "metric", "label_ratio", "seeds", "finetune_difference", "finetune_spread",
           "finetune_beyond", *SEED_PAIRS, "probe_metric", *PAIRED, *MADE]


def paired_differences(probe_files: list[Path], encoder: str = PRETRAINED) -> pd.DataFrame:
    """One row per dataset of the probe results: its ``task``, ``probe_metric``, for each of
    :data:`FROZEN_BASELINES`, ``versus_<baseline>`` (``encoder`` minus it: points of balanced accuracy, or R²) and
    ``versus_se_<baseline>`` (:func:`with_draws`; NaN: no standard error), and ``probe_path`` and ``probe_code``
    (the file and the version of the probe code that made it). The files are those
    :func:`~s2dc.report.tables.collect_probes` has read (and checked); ValueError naming the file if one lacks the
    encoder or its paired difference against a baseline (a probe whose rows were not named so: every frozen column
    of its dataset would be empty)."""
    rows = []
    how = (f"name the probe's rows so: `s2dc probe {encoder}=<encoder.pt> {' '.join(FROZEN_BASELINES)} --source ...`")
    for path in probe_files:
        p = json.loads(Path(path).read_text())
        scale = 1.0 if p["metric"] == "R²" else 100.0
        if encoder not in p["encoders"]:
            raise ValueError(f"bad probe file '{path}': no {encoder!r} encoder (it has "
                             f"{', '.join(repr(e) for e in p['encoders'])}), which the frozen protocol compares with "
                             f"{' and '.join(FROZEN_BASELINES)}; {how}")
        versus = p["encoders"][encoder].get("versus") or {}
        row = {"dataset": p["dataset"], "task": p["task"], "probe_metric": p["metric"], "probe_path": str(path),
               "probe_code": p["code"]}
        for baseline in FROZEN_BASELINES:
            if baseline not in versus:
                raise ValueError(f"bad probe file '{path}': no paired difference of {encoder!r} against {baseline!r} "
                                 f"(encoders.{encoder}.versus.{baseline}): the frozen protocol compares {encoder!r} "
                                 f"with {' and '.join(FROZEN_BASELINES)}; {how}")
            pair = versus[baseline]
            row[f"versus_{baseline}"] = scale * float(pair["difference"])
            draws = p["encoders"].get(baseline, {}).get("draws")  # the random row: each of its encoders' score
            row[f"versus_se_{baseline}"] = scale * with_draws(pair.get("se"), draws)
        rows.append(row)
    return pd.DataFrame(rows, columns=["dataset", "task", "probe_metric", *PAIRED, "probe_path", "probe_code"])


def with_draws(se: float | None, draws: list[float] | None) -> float:
    """The standard error of a difference against a baseline scored by the mean of its K ``draws`` (each draw's
    score; None: one encoder): the bootstrap ``se`` over the cases, the draws held fixed, and the draws' own spread,
    sqrt(se² + s²/K) with s² their sample variance; ``se`` alone with fewer than two draws, NaN with no ``se``."""
    if se is None:
        return math.nan
    if draws is None or len(draws) < 2:
        return float(se)
    return math.sqrt(float(se) ** 2 + float(np.var(draws, ddof=1)) / len(draws))


def seed_spread(*stds: float) -> float:
    """The seed spread of two arms (or two ablation variants) that the seeds pair: the largest of their seed stds and
    of the std of their per-seed differences; NaN where one is missing (one seed: no spread)."""
    return math.nan if any(math.isnan(s) for s in stds) else max(stds)


def paired_scores(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` (one row per fine-tuning run: dataset, task, metric, method, label_ratio, seed, score) -> one row per
    seed both arms ran, indexed by (dataset, task, metric, label_ratio, seed): S²DC's score, scratch's and ``lead``,
    S²DC's minus scratch's (empty where no dataset has both arms)."""
    arms = runs[runs.method.isin([PRETRAINED, SCRATCH])]
    if arms.empty:
        return pd.DataFrame(columns=[PRETRAINED, SCRATCH, "lead"])
    wide = arms.pivot_table(index=["dataset", "task", "metric", "label_ratio", "seed"], columns="method",
                            values="score", aggfunc="first").reindex(columns=[PRETRAINED, SCRATCH]).dropna()
    return wide.assign(lead=wide[PRETRAINED] - wide[SCRATCH])


def seed_pairs(wide: pd.DataFrame) -> dict[tuple, tuple[int, int, int]]:
    """:func:`paired_scores` -> ``{(dataset, task, metric, label_ratio): (paired, ahead, behind)}``: the seeds both
    arms ran, and of them those where S²DC's score is above scratch's and below it (equal within rounding: neither)."""
    if wide.empty:
        return {}
    noise = ROUNDING * np.maximum(1.0, np.maximum(wide[PRETRAINED].abs(), wide[SCRATCH].abs()))
    counted = pd.DataFrame({"ahead": wide.lead > noise, "behind": wide.lead < -noise}).groupby(level=[0, 1, 2, 3])
    return {key: (len(group), int(group.ahead.sum()), int(group.behind.sum())) for key, group in counted}


def finetune_differences(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """``table`` (:func:`~s2dc.report.tables.summarise`: mean and std over seeds per dataset, method and label ratio)
    and its ``runs`` -> one row per dataset with both arms: at the lowest label ratio both have, ``finetune_difference``
    (S²DC minus scratch), ``finetune_spread`` (the largest of the two arms' seed stds and of the std of their
    per-seed differences, :func:`paired_scores`: a gain carried by one seed is within it), ``finetune_beyond`` (True:
    above scratch by more than the spread, :data:`BEHIND`: below it by more, False: within it, :data:`TIE` when
    neither arm varies over the seeds and their means are equal, as two arms at 0 Dice on every seed, or None when a
    std is missing: one seed) and :data:`SEED_PAIRS` (:func:`seed_pairs`)."""
    wide = paired_scores(runs)
    pairs = seed_pairs(wide)
    lead_std = wide.lead.groupby(level=[0, 1, 2, 3]).std() if len(wide) else pd.Series(dtype=float)  # ddof 1
    rows = []
    for (dataset, task, metric), group in table.groupby(["dataset", "task", "metric"], sort=True):
        arms = {method: mine.set_index("label_ratio") for method, mine in group.groupby("method")}
        if PRETRAINED not in arms or SCRATCH not in arms:
            continue
        ratios = sorted(set(arms[PRETRAINED].index) & set(arms[SCRATCH].index))
        if not ratios:
            continue
        ratio = ratios[0]
        ours, base = arms[PRETRAINED].loc[ratio], arms[SCRATCH].loc[ratio]
        difference = float(ours["mean"] - base["mean"])
        stds = float(ours["std"]), float(base["std"]), float(lead_std.get((dataset, task, metric, ratio), math.nan))
        spread = seed_spread(*stds)
        # the std of equal scores is rounding noise (3 x 44.44...: 8.7e-15), as is their difference
        noise = ROUNDING * max(1.0, abs(float(ours["mean"])), abs(float(base["mean"])))
        tie = spread <= noise and abs(difference) <= noise
        beyond = (None if math.isnan(spread) else TIE if tie else True if difference > spread
                  else BEHIND if difference < -spread else False)
        paired = pairs.get((dataset, task, metric, ratio), (0, 0, 0))
        rows.append({"dataset": dataset, "task": task, "metric": metric, "label_ratio": float(ratio),
                     "seeds": int(min(ours["seeds"], base["seeds"])), "finetune_difference": difference,
                     "finetune_spread": spread, "finetune_beyond": beyond, **dict(zip(SEED_PAIRS, paired))})
    return pd.DataFrame(rows, columns=COLUMNS[:11])


def effect_table(table: pd.DataFrame, runs: pd.DataFrame, probe_files: list[Path] = ()) -> pd.DataFrame:
    """Both protocols side by side, one row per dataset (:data:`COLUMNS`): those with both fine-tuning arms (``table``,
    summarised from ``runs``), and those with a probe result; :data:`MADE` says which version made each."""
    finetune, probe = finetune_differences(table, runs), paired_differences(list(probe_files))
    made = runs.drop_duplicates("dataset").set_index("dataset")  # a dataset's runs are of one version (check_runs)
    finetune["finetune_path"] = finetune.dataset.map(made.path)
    finetune["finetune_code"] = finetune.dataset.map(made.code)
    both = finetune.merge(probe, on="dataset", how="outer", suffixes=("", "_probe"))
    both["task"] = both["task"].fillna(both.pop("task_probe"))
    return both.reindex(columns=COLUMNS).sort_values("dataset", kind="stable").reset_index(drop=True)


def _signed(value: float, se: float = math.nan, digits: int = 2) -> str:
    if math.isnan(value):
        return "—"
    return f"{value:+.{digits}f}" + ("" if math.isnan(se) else f" ± {se:.{digits}f}")


def _frozen_verdict(row) -> str:
    differences = [getattr(row, f"versus_{b}") for b in FROZEN_BASELINES]
    if any(math.isnan(d) for d in differences):
        return "—"
    if not all(d > 0 for d in differences):
        return "no"
    errors = [getattr(row, f"versus_se_{b}") for b in FROZEN_BASELINES]
    if any(math.isnan(se) for se in errors):
        return "yes (no s.e.)"
    return "yes, by 2 s.e." if all(d > 2 * se for d, se in zip(differences, errors)) else "yes, within 2 s.e."


def _verdict(value) -> str | None:
    """``finetune_beyond`` as one word: 'yes', 'behind', 'no', 'tie', or None (undecided: one seed)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        return value  # TIE, BEHIND
    return "yes" if value else "no"


def _beyond(value) -> str:
    return _verdict(value) or "—"


def _has_pairs(paired: float) -> bool:
    """Whether a row's ``finetune_paired`` counts seeds: NaN on a dataset with a probe only, 0 with no seed in common."""
    return not math.isnan(paired) and paired > 0


def _seeds(row) -> str:
    if not _has_pairs(row.finetune_paired):
        return "—"
    return f"{int(row.finetune_ahead)} / {int(row.finetune_behind)} of {int(row.finetune_paired)}"


def counts(effect: pd.DataFrame, tasks: tuple[str, ...] | None = CLASSIFIER_TASKS) -> dict[str, int]:
    """How many datasets (of ``tasks``; all with None) have each verdict: ``finetune_beyond`` (above by more than the
    spread), ``finetune_behind`` (below by more) and ``finetune_decided`` (a spread to compare against), ``finetune_ties`` (both arms at one same score on every seed), ``frozen_above``
    (above every baseline), ``frozen_strong`` (by two standard errors) and ``frozen_probed``. ValueError where it
    would tally verdicts made by two versions of the fine-tuning code, or of the probe code, naming them
    (:func:`~.versions.check_one_version`)."""
    rows = effect if tasks is None else effect[effect.task.isin(tasks)]
    verdicts = [_verdict(v) for v in rows.finetune_beyond]
    _one_version(rows, [v is not None for v in verdicts],
                 "all datasets" if tasks is None else f"the {' and '.join(tasks)} datasets")
    compared = [v for v in verdicts if v is not None]
    decided = [v for v in compared if v != TIE]
    frozen = [_frozen_verdict(row) for row in rows.itertuples()]
    return {"datasets": len(rows), "finetune_decided": len(decided), "finetune_beyond": decided.count("yes"),
            "finetune_behind": decided.count(BEHIND), "finetune_ties": len(compared) - len(decided),
            "frozen_probed": sum(v != "—" for v in frozen), "frozen_above": sum(v.startswith("yes") for v in frozen),
            "frozen_strong": sum(v == "yes, by 2 s.e." for v in frozen)}


def _one_version(rows: pd.DataFrame, finetuned: list[bool], over: str) -> None:
    """ValueError unless the verdicts that the counts over ``over`` tally (of ``rows``: the fine-tuning ones where
    ``finetuned``, the frozen ones where a probe result gave one) were made by one version of their code each."""
    for kind, column, tallied in (("fine-tuning", "finetune", finetuned), ("probe", "probe", rows.probe_code.notna())):
        made = rows.loc[np.asarray(tallied, dtype=bool)]
        check_one_version(kind, dict(zip(made.dataset, zip(made[f"{column}_path"], made[f"{column}_code"]))),
                          f"the counts under 'Does pretraining show?' over {over} tally their {kind} verdicts "
                          "together")


def effect_markdown(effect: pd.DataFrame) -> str:
    """The table and the counts under it, as Markdown."""
    lines = [
        ("| dataset | task | fine-tuning: S²DC − scratch | labels | seed spread (largest std: arms, paired "
         "differences) | beyond the spread | seeds S²DC ahead / behind | frozen: S²DC − random (± cases and draws) | "
         "S²DC − voxels | frozen: above both |"),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in effect.itertuples():
        digits = 3 if row.probe_metric == "R²" else 1
        finetune = "—" if math.isnan(row.finetune_difference) else f"{row.finetune_difference:+.2f} {row.metric}"
        labels = "—" if math.isnan(row.label_ratio) else ratio_text(row.label_ratio)
        spread = "—" if math.isnan(row.finetune_spread) else f"{row.finetune_spread:.2f}"
        frozen = [_signed(getattr(row, f"versus_{b}"), getattr(row, f"versus_se_{b}"), digits) for b in
                  FROZEN_BASELINES]
        lines.append(f"| {row.dataset} | {row.task} | {finetune} | {labels} | {spread} | {_beyond(row.finetune_beyond)} "
                     f"| {_seeds(row)} | {frozen[0]} | {frozen[1]} | {_frozen_verdict(row)} |")
    lines.append("")
    for label, tasks in ((f"the # {' and '.join(CLASSIFIER_TASKS)} datasets", CLASSIFIER_TASKS),
                         ("all # datasets", None)):
        c = counts(effect, tasks)
        ties = "" if not c["finetune_ties"] else (f" ({c['finetune_ties']} tie{'s' if c['finetune_ties'] > 1 else ''}, "
                                                 "both arms at one same score on every seed)")
        lines.append(f"- Over {label.replace('#', str(c['datasets']))}: fine-tuned, S²DC above scratch by more than the seed "
                     "spread (the largest std of either arm and of their per-seed differences) on "
                     f"{c['finetune_beyond']} of {c['finetune_decided']} with a spread, below it on "
                     f"{c['finetune_behind']}{ties}; frozen, above both the random encoder (its ± over the cases "
                     "and its draws) and the voxels by two standard errors on "
                     f"{c['frozen_strong']} of {c['frozen_probed']} probed (point estimates above both on "
                     f"{c['frozen_above']}).")
    return "\n".join(lines) + "\n"


def nested_effect(effect: pd.DataFrame) -> dict:
    """``{dataset: {"finetune_difference": ..., "finetune_ahead": ..., "versus_random": ..., ...}}`` for metrics.json
    (finite numbers only; the seed counts where both arms ran a seed)."""
    keys = ["finetune_difference", "finetune_spread", *PAIRED]
    return {row["dataset"]: {**{k: round(float(row[k]), 4) for k in keys if not math.isnan(float(row[k]))},
                             **({k: int(row[k]) for k in SEED_PAIRS} if _has_pairs(row["finetune_paired"]) else {})}
            for row in effect.to_dict("records")}


def finetune_points(rows: pd.DataFrame) -> list[tuple[int, float | None, str]]:
    """The left panel of :func:`effect_figure`: for each row (its index) with a fine-tuning difference, its x
    position (the difference in units of the seed spread, clipped to ±3; ±3 when the spread is 0) and its label;
    x None where a std is missing (one seed): no spread to measure it against, so no point is drawn."""
    points = []
    for i, row in rows.iterrows():
        difference, spread = row["finetune_difference"], row["finetune_spread"]
        if math.isnan(difference):
            continue
        if math.isnan(spread):
            points.append((i, None, f"{difference:+.2f} {row['metric']} (one seed: no spread)"))
            continue
        ratio = 0.0 if difference == 0 else difference / spread if spread > 0 else math.copysign(math.inf, difference)
        points.append((i, float(np.clip(ratio, -3.0, 3.0)), f"{difference:+.2f} {row['metric']} (spread {spread:.2f})"))
    return points


def effect_figure(effect: pd.DataFrame):
    """Both protocols as a forest plot, one row per dataset. Left: the fine-tuning difference in units of the seed
    spread (:func:`finetune_differences`; beyond the spread right of the dashed line at 1, behind left of the one at
    -1; a filled marker; no marker for one seed, which has no spread: :func:`finetune_points`); right: the frozen
    protocol's paired
    differences against the random encoder and the voxels, ± two standard errors (against the random encoder, of the
    cases and of its draws; R² × 100 for the image tasks)."""
    plt = pyplot()
    rows = effect.iloc[::-1].reset_index(drop=True)  # the first dataset on top
    y = np.arange(len(rows))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.45 * len(rows) + 1.6), sharey=True)
    for i, shown, label in finetune_points(rows):
        if shown is None:  # one seed: no spread to put the difference in units of, so no point (said in words)
            left.annotate(label, (0.0, i), textcoords="offset points", xytext=(6, 4), fontsize=7, color="grey")
            continue
        beyond = _verdict(rows.loc[i, "finetune_beyond"]) in ("yes", BEHIND)
        left.plot(shown, i, "o", color="#1f77b4", markerfacecolor="#1f77b4" if beyond else "white")
        left.annotate(label, (shown, i), textcoords="offset points", xytext=(6, 4), fontsize=7)
    left.axvline(0, color="grey", lw=0.8)
    for edge in (-1, 1):
        left.axvline(edge, color="grey", lw=0.8, ls="--")
    left.set_xlim(-3.3, 3.3)
    left.set_xlabel("fine-tuning: (S²DC − scratch) / seed spread")
    left.set_title("Fine-tuning, lowest label ratio (filled: beyond the spread, either way)", fontsize=9)
    for offset, baseline, colour in ((0.12, "random", "#d62728"), (-0.12, "voxels", "#2ca02c")):
        scale = np.where(rows.probe_metric == "R²", 100.0, 1.0)
        values, se = rows[f"versus_{baseline}"] * scale, rows[f"versus_se_{baseline}"] * scale
        right.errorbar(values, y + offset, xerr=2 * se.fillna(0.0), fmt="o", color=colour, ms=4, capsize=2,
                       label=f"S²DC − {baseline}")
    right.axvline(0, color="grey", lw=0.8)
    right.set_xlabel("frozen: paired difference (points; R² × 100 for the image tasks) ± 2 s.e.\n"
                     "(against the random encoder: of the cases and of its draws)")
    right.set_title("Frozen encoder, the same validation cases", fontsize=9)
    right.legend(fontsize=8, loc="best")
    left.set_yticks(y, [f"{d} ({t})" for d, t in zip(rows.dataset, rows.task)], fontsize=8)
    fig.tight_layout()
    return fig


def effect_png(effect: pd.DataFrame) -> bytes:
    """:func:`effect_figure` as a marked PNG (:func:`s2dc.pyplot.write_pngs` writes it)."""
    return png_bytes(effect_figure(effect))
