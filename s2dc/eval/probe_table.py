"""The table of a probe result (`s2dc probe`'s .md beside its .json): a light module (no torch), so that the check of
where the probe writes (:mod:`s2dc.eval.outputs`, read by the workflow's start check too) can tell an earlier result's
own table from notes put in its place."""

from __future__ import annotations

#: The number of cross-validation folds of the pooled (classification) probe's weight decay
#: (:func:`s2dc.eval.probe.cross_validated_weight_decay`).
FOLDS = 5


def markdown(result: dict) -> str:
    """A table: one row per encoder, balanced accuracy ± its bootstrap standard error, organ recall and each class's
    recall (%), and for a segmentation the structure scores (:func:`structure_scores`); R² ± SE for a regression;
    then the paired differences between the encoders (:func:`differences_markdown`)."""
    if result["metric"] == "R²":
        rows = ["| encoder | R² |", "|---|---|"]
        rows += [f"| {name} | {r['score']:.3f} ± {'–' if r['se'] is None else format(r['se'], '.3f')} |"
                 for name, r in result["encoders"].items()]
        return "\n".join(rows + differences_markdown(result) + draws_markdown(result))
    classes = result["classes"]
    head = "| encoder | balanced accuracy | organ recall | " + " | ".join(classes) + " |"
    rows = [head, "|" + "---|" * (len(classes) + 3)]
    pct = lambda v: "–" if v is None else f"{100 * v:.1f}"  # noqa: E731
    for name, r in result["encoders"].items():
        rows.append(f"| {name} | {pct(r['balanced_accuracy'])} ± {pct(r['se'])} | {pct(r.get('organ_recall'))} | "
                    + " | ".join(pct(r["recall"][c]) for c in classes) + " |")
    rows += differences_markdown(result)
    rows += draws_markdown(result)
    if all("weight_decay" in r for r in result["encoders"].values()):
        rows += ["", f"Weight decay of each probe, chosen by {FOLDS}-fold cross-validation on the training volumes (fewer "
                 f"folds where a class has fewer than {FOLDS} volumes): "
                 + ", ".join(f"{name} {_decays(r['weight_decay'])}" for name, r in result["encoders"].items()) + "."]
    if all("structure" in r for r in result["encoders"].values()):
        rows += ["", "Structure awareness of the validation tokens (cosine; ratio: distance between structures over "
                 "distance within):", "", "| encoder | consistency (within) | cosine between | discrepancy | ratio |",
                 "|---|---|---|---|---|"]
        for name, r in result["encoders"].items():
            t = r["structure"]
            num = lambda v, f: "–" if v is None else format(v, f)  # noqa: E731
            rows.append(f"| {name} | {num(t['consistency'], '.3f')} | {t['inter']:.3f} | {t['discrepancy']:.3f} | "
                        f"{num(t['ratio'], '.2f')} |")
    return "\n".join(rows)


def _decays(decay) -> str:
    """A weight decay, or those of a baseline's draws (a list)."""
    return " / ".join(f"{d:g}" for d in decay) if isinstance(decay, list) else f"{decay:g}"


def draws_markdown(result: dict) -> list[str]:
    """Lines naming each row that is the mean of several draws (the random baseline) and the draws' scores."""
    scale, digits = (1, 3) if result["metric"] == "R²" else (100, 1)
    lines = [f"{name}: the mean of {len(r['draws'])} randomly initialised encoders (the probe's --seed and the next "
             f"{len(r['draws']) - 1}), which score " + " / ".join(f"{scale * d:.{digits}f}" for d in r["draws"]) + "."
             for name, r in result["encoders"].items() if "draws" in r]
    return ["", *lines] if lines else []


def differences_markdown(result: dict) -> list[str]:
    """Lines of a table: each encoder's score minus each other's on the same validation cases, ± the bootstrap
    standard error of that difference (%, or R²)."""
    names = list(result["encoders"])
    scale, digits = (1, 3) if result["metric"] == "R²" else (100, 1)
    rows = ["", f"Paired differences (row minus column; ± bootstrap standard error over the {result['val_cases']} "
            f"validation cases, {result['resamples']} resamples):", "",
            "| encoder | " + " | ".join(f"− {n}" for n in names) + " |", "|---|" + "---|" * len(names)]
    for name, r in result["encoders"].items():
        se = {other: v["se"] for other, v in r["versus"].items()}
        cells = ["" if other == name else f"{scale * r['versus'][other]['difference']:+.{digits}f} ± "
                 + ("–" if se[other] is None else f"{scale * se[other]:.{digits}f}") for other in names]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows
