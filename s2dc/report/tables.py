"""Benchmark table: every fine-tuning ``metrics.json`` -> mean ± std over seeds, beside the paper's numbers.

Writes ``<out>/benchmark.csv`` (one row per dataset × method × label ratio), ``<out>/benchmark.md``
(the same as a Markdown table, then the structure-probe table when ``s2dc probe`` results are given)
and ``<out>/metrics.json`` (nested, for ``dvc metrics diff``; the probe under ``"probe"``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from ..data.datalist import registry_spec
from ..files import atomic_write_text
from ..pages import markdown_page

def paper_score(dataset: str, method: str, label_ratio: float) -> float:
    """The poster's number for this row (the registry's), NaN where it prints none."""
    spec = registry_spec({"name": dataset})
    score = spec.paper_score(method, label_ratio) if spec is not None else None
    return math.nan if score is None else score


def collect(metric_files: list[Path]) -> pd.DataFrame:
    """One row per fine-tuning run: dataset, task, metric, method, label_ratio, seed, score, train_cases, seconds.

    The score is the task's first metric as the run recorded it (``score``: Dice or accuracy in %, PSNR in dB)."""
    rows = []
    for path in metric_files:
        try:
            m = json.loads(Path(path).read_text())
            rows.append({
                "dataset": m["dataset"], "task": m["task"], "metric": m["score"]["name"], "method": m["method"],
                "label_ratio": float(m["label_ratio"]), "seed": int(m["seed"]),
                "score": float(m["score"]["value"]), "train_cases": int(m["train_cases"]), "seconds": float(m["seconds"]),
            })
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"bad metrics file '{path}': {err!r}") from err
    if not rows:
        raise ValueError("no metrics files to aggregate")
    return pd.DataFrame(rows)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sample std over seeds per (dataset, task, method, label_ratio), with the paper's number."""
    grouped = runs.groupby(["dataset", "task", "metric", "method", "label_ratio"], sort=True)
    table = grouped.agg(
        mean=("score", "mean"), std=("score", "std"), seeds=("seed", "nunique"),
        train_cases=("train_cases", "first"), minutes=("seconds", lambda s: s.sum() / 60),
    ).reset_index()
    table["std"] = table["std"].fillna(0.0)
    table["paper"] = [paper_score(d, m, r) for d, m, r in zip(table.dataset, table.method, table.label_ratio)]
    return table


def markdown(table: pd.DataFrame) -> str:
    """The benchmark as a Markdown table (score: the task's first metric)."""
    lines = [
        "| dataset | task | metric | method | labels | score (mean ± std) | seeds | train cases | paper (real data) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.itertuples():
        paper = "—" if math.isnan(row.paper) else f"{row.paper:.2f}"
        lines.append(
            f"| {row.dataset} | {row.task} | {row.metric} | {row.method} | {row.label_ratio:.0%} | {row.mean:.2f} ± {row.std:.2f} "
            f"| {row.seeds} | {row.train_cases} | {paper} |"
        )
    return "\n".join(lines) + "\n"


def nested_metrics(table: pd.DataFrame) -> dict:
    """{dataset: {method: {"labels_10%": {"mean", "std", "seeds"}}}} for ``dvc metrics``."""
    out: dict = {}
    for row in table.itertuples():
        cell = out.setdefault(row.dataset, {}).setdefault(row.method, {})
        cell[f"labels_{row.label_ratio:.0%}"] = {"mean": round(row.mean, 4), "std": round(row.std, 4), "seeds": int(row.seeds)}
    return out


#: Structure scores of a segmentation probe (``s2dc.eval.probe.structure_scores``) carried into the tables.
STRUCTURE = ("consistency", "discrepancy", "ratio")


def collect_probes(probe_files: list[Path]) -> pd.DataFrame:
    """One row per (dataset, encoder) of ``s2dc probe`` results: task, stage, metric, score (balanced accuracy in
    %, or R²) and its bootstrap standard error ``se`` (NaN in a file without one), organ recall (%) and the
    structure scores (segmentation; NaN otherwise)."""
    rows = []
    for path in probe_files:
        try:
            p = json.loads(Path(path).read_text())
            percent = p["metric"] != "R²"
            for encoder, r in p["encoders"].items():
                organ = r.get("organ_recall")
                structure = r.get("structure") or {}
                rows.append({"dataset": p["dataset"], "task": p["task"], "stage": int(p["stage"]), "encoder": encoder,
                             "metric": p["metric"], "score": (100.0 if percent else 1.0) * float(r["score"]),
                             "se": (100.0 if percent else 1.0) * float(r.get("se", math.nan)),
                             "organ_recall": math.nan if organ is None else 100.0 * float(organ),
                             **{k: float(structure.get(k, math.nan)) for k in STRUCTURE}})
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"bad probe file '{path}': {err!r}") from err
    return pd.DataFrame(rows, columns=["dataset", "task", "stage", "encoder", "metric", "score", "se",
                                       "organ_recall", *STRUCTURE])


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


def write_report(metric_files: list[Path], out_dir: Path, probe_files: list[Path] = ()) -> pd.DataFrame:
    """Aggregate ``metric_files`` (and ``probe_files``) and write benchmark.csv, benchmark.md (and .html), metrics.json
    and probe.csv (the probe table; only its header without probe files) into ``out_dir``."""
    table = summarise(collect(metric_files))
    probes = collect_probes(list(probe_files))
    text, nested = markdown(table), nested_metrics(table)
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
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "benchmark.csv", table.to_csv(index=False, float_format="%.4f"))
    atomic_write_text(out_dir / "benchmark.md", text)
    atomic_write_text(out_dir / "metrics.json", json.dumps(nested, indent=2) + "\n")
    atomic_write_text(out_dir / "probe.csv", probes.to_csv(index=False, float_format="%.4f"))
    atomic_write_text(out_dir / "benchmark.html", markdown_page("The benchmark", text))
    return table


#: The label ratio of the poster's Table 2 (loss ablation; our reading: fine-tuned on all labels).
ABLATION_PAPER_RATIO = 1.0


def ablation_table(metric_files: list[Path], terms: dict[str, str]) -> pd.DataFrame:
    """The loss ablation (poster Table 2): mean ± std over seeds per (dataset, variant), the variant's loss terms
    (``terms``: {variant: 'global+p2p:dual_softmax'}), the poster's number and both rankings within each dataset."""
    table = summarise(collect(metric_files))
    missing = sorted(set(table.method) - set(terms))
    if missing:
        raise ValueError(f"no loss terms given for variant(s) {missing} (expected --terms NAME=TERMS for each)")
    table["terms"] = table.method.map(terms)
    table["order"] = table.method.map({v: i for i, v in enumerate(terms)})  # rows in the order the terms were given
    table["paper"] = [paper_score(d, m, ABLATION_PAPER_RATIO) for d, m in zip(table.dataset, table.method)]
    table["rank"] = table.groupby("dataset")["mean"].rank(ascending=False, method="min").astype(int)
    table["paper_rank"] = table.groupby("dataset")["paper"].rank(ascending=False, method="min")
    return table


def ordering(table: pd.DataFrame, dataset: str) -> dict:
    """Our order and the poster's of the variants the poster prints, best first, Kendall's tau between them, and
    whether ours is resolved: the range of our means exceeds the mean of the seeds' std (else it is noise)."""
    from scipy.stats import kendalltau

    rows = table[(table.dataset == dataset) & table.paper.notna()]
    ours = list(rows.sort_values("mean", ascending=False).method)
    poster = list(rows.sort_values("paper", ascending=False).method)
    tau = float(kendalltau(rows["mean"], rows["paper"]).statistic) if len(rows) >= 2 else math.nan
    spread, noise = float(rows["mean"].max() - rows["mean"].min()), float(rows["std"].mean())
    return {"ours": ours, "poster": poster, "kendall_tau": tau, "same_best": bool(ours and ours[0] == poster[0]),
            "range": spread, "seed_std": noise, "resolved": bool(len(rows) >= 2 and spread > noise)}


def ablation_markdown(table: pd.DataFrame) -> str:
    """One row per variant, two columns per dataset (ours at the run's label ratio on its data; the poster's Table 2),
    then the orderings compared."""
    datasets = sorted(table.dataset.unique())
    head = "| variant | losses | assignment | " + " | ".join(
        f"{d} {table[table.dataset == d].metric.iloc[0]} (ours, {table[table.dataset == d].label_ratio.iloc[0]:.0%} labels) "
        f"| {d} poster" for d in datasets) + " |"
    lines = [head, "|---|---|---|" + "---|---|" * len(datasets)]
    for variant in table.sort_values("order", kind="stable").drop_duplicates("method").method:
        losses, assignment = table[table.method == variant].terms.iloc[0].split(":")
        cells = []
        for d in datasets:
            row = table[(table.dataset == d) & (table.method == variant)]
            if row.empty:
                cells += ["—", "—"]
                continue
            r = row.iloc[0]
            cells += [f"{r['mean']:.2f} ± {r['std']:.2f} (#{r['rank']})",
                      "—" if math.isnan(r.paper) else f"{r.paper:.2f} (#{int(r.paper_rank)})"]
        pretty = " + ".join({"global": "L_g", "p2p": "L_p2p", "p2s": "L_p2s"}[t] for t in losses.split("+"))
        lines.append(f"| {variant} | {pretty} | {assignment} | " + " | ".join(cells) + " |")
    lines.append("")
    for d in datasets:
        o = ordering(table, d)
        tau = "—" if math.isnan(o["kendall_tau"]) else f"{o['kendall_tau']:+.2f}"
        lines.append(f"- {d}: ours {' > '.join(o['ours']) or '—'}; poster {' > '.join(o['poster']) or '—'}; "
                     f"Kendall τ {tau}; same best: {'yes' if o['same_best'] else 'no'}; range of our means "
                     f"{o['range']:.2f} against a mean seed std of {o['seed_std']:.2f}"
                     f"{'' if o['resolved'] else ' (not resolved: the order is within the seeds’ noise)'}")
    return "\n".join(lines) + "\n"


def write_ablation(metric_files: list[Path], terms: dict[str, str], out_dir: Path,
                   probe_files: list[Path] = ()) -> pd.DataFrame:
    """Write ablation.csv, ablation.md (and .html) and ablation.json (nested, with the orderings, for ``dvc metrics``) into
    ``out_dir``; ``probe_files`` (``s2dc probe`` of every variant's encoder) add the frozen-encoder table."""
    table = ablation_table(metric_files, terms)
    probes = collect_probes(list(probe_files))
    nested = {d: {"variants": {r.method: {"mean": round(r.mean, 4), "std": round(r.std, 4), "seeds": int(r.seeds)}
                               for r in table[table.dataset == d].itertuples()},
                  "ordering": _finite(ordering(table, d))} for d in sorted(table.dataset.unique())}
    text = ("Loss ablation (poster Table 2): each pretraining variant's encoder fine-tuned on the same cases; ours is the "
            "mean ± std over seeds (rank among the variants), the poster's is Dice % on the real data at "
            f"{ABLATION_PAPER_RATIO:.0%} labels (our reading of its table).\n\n" + ablation_markdown(table))
    if len(probes):
        text += ("\nThe variants' encoders read directly (`s2dc probe`: a linear model on the frozen features, beside a "
                 "random encoder and the raw voxels; consistency, discrepancy and their ratio as in the benchmark's "
                 "probe table):\n\n" + probe_markdown(probes))
        for row in probes.itertuples():
            nested.setdefault(row.dataset, {}).setdefault("probe", {})[row.encoder] = {
                "score": round(row.score, 4), **{k: round(getattr(row, k), 4) for k in STRUCTURE
                                                 if not math.isnan(getattr(row, k))}}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "ablation.csv", table.to_csv(index=False, float_format="%.4f"))
    atomic_write_text(out_dir / "ablation.md", text)
    atomic_write_text(out_dir / "ablation.html", markdown_page("The loss ablation", text))
    atomic_write_text(out_dir / "ablation.json", json.dumps(nested, indent=2) + "\n")
    return table


def _finite(d: dict) -> dict:
    """NaN -> None (JSON has no NaN)."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in d.items()}
