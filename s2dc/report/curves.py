"""DVCLive curves of the fine-tuning runs gathered per dataset, one column per method (mean over seeds), so that
``dvc plots show`` draws S²DC and scratch on one chart: ``train_loss/<dataset>.tsv`` and ``val_score/<dataset>.tsv``;
and the loss terms of each encoder the runs started from, ``pretrain_loss/<modality>_<variant>.tsv`` (so the charts
follow the modalities and variants of params.yaml). Recorded by their SHA-256 in the folder's ``.s2dc-curves.json``
(the only tables a rerun replaces)."""

from __future__ import annotations

import sys

from pathlib import Path

import numpy as np
import pandas as pd

from ..files import file_sha256
from ..recorded import check_recorded, folder_locked, is_recorded, write_recorded
from .outputs import record_problem
from .runs import ratio_text
from .tasks import TASK_METRICS


def train_loss(run: dict) -> pd.DataFrame:
    """step, loss of one run, from its DVCLive folder beside metrics.json; ValueError naming the table unless each
    step is an integer logged once with a finite loss."""
    path = Path(run["_path"]).parent / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv"
    try:
        table = pd.read_csv(path, sep="\t")[["step", "loss"]]
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"bad DVCLive curve '{path}': expected a tab-separated step/loss table ({err})") from err
    steps, loss = pd.to_numeric(table.step, errors="coerce"), pd.to_numeric(table.loss, errors="coerce")
    if not (np.isfinite(loss).all() and np.isfinite(steps).all() and (steps == steps.round()).all()):
        raise ValueError(f"bad DVCLive curve '{path}': expected an integer step and a finite loss on every row (a run "
                         "killed while it wrote, or an edit?)")
    if steps.duplicated().any():
        raise ValueError(f"bad DVCLive curve '{path}': step {int(steps[steps.duplicated()].iloc[0])} is logged more "
                         "than once; expected each step once")
    return pd.DataFrame({"step": steps.astype(int), "loss": loss.astype(float)})


def val_score(run: dict) -> pd.DataFrame:
    """step, score of one run, from metrics.json's validation history (the task's score, as the table shows it); a
    step whose score is null (not scorable on the validation cases) is left out."""
    key = run["score"]["key"]
    scale = dict((k, s) for k, _, s in TASK_METRICS[run["task"]])[key]  # 100 for a score shown in %
    return pd.DataFrame([{"step": h["step"], "score": scale * h[key]} for h in run["history"] if h.get(key) is not None],
                        columns=["step", "score"])


def by_method(runs: list[dict], read, column: str, same_steps: bool = False) -> pd.DataFrame:
    """step, then one column per method: the mean over seeds of ``read(run)[column]`` at each step; ``same_steps``:
    ValueError naming two files unless the seeds of a method hold the same steps (a mean at a step that one seed
    lacks would be the others' alone)."""
    frames = [read(r).assign(method=r["method"]) for r in runs]
    if same_steps:
        first: dict[str, tuple[dict, list]] = {}
        for run, frame in zip(runs, frames):
            other, steps = first.setdefault(run["method"], (run, list(frame.step)))
            if list(frame.step) != steps:
                raise ValueError(f"the {column} curves of '{other['_path']}' and '{run['_path']}' ({run['method']}, "
                                 f"{run['dataset']}) hold other steps ({len(steps)} and {len(frame)} rows): expected "
                                 "the seeds of a method to log the same steps (a run cut short?)")
    long = pd.concat(frames, ignore_index=True)
    wide = long.groupby(["step", "method"])[column].mean().unstack("method")
    order = list(dict.fromkeys(r["method"] for r in runs))
    return wide[order].reset_index()


#: The pretraining's loss terms, as its DVCLive folder names them (``plots/metrics/pretrain/<term>.tsv``).
PRETRAIN_TERMS = ("loss", "loss_global", "loss_p2p", "loss_p2s")


def pretrain_loss(encoder: Path) -> pd.DataFrame | None:
    """step, then each loss term the pretraining run that made ``encoder`` logged: its DVCLive folder beside it (the
    workflow's encoder.pt), or its run's for a checkpoint in ``<run>/checkpoints/``; None when there is none (an
    encoder exported elsewhere by hand); ValueError naming the file if the total loss is missing or a table is bad."""
    encoder = Path(encoder)
    runs = [encoder.parent] + ([encoder.parent.parent] if encoder.parent.name == "checkpoints" else [])
    found = [run / "dvclive" for run in runs if (run / "dvclive").is_dir()]
    if not found:
        return None
    folder = found[0] / "plots" / "metrics" / "pretrain"
    table = None
    for term in PRETRAIN_TERMS:
        path = folder / f"{term}.tsv"
        if term != "loss" and not path.exists():
            continue  # a term the variant does not compute
        try:
            curve = pd.read_csv(path, sep="\t")[["step", term]]
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"bad DVCLive curve '{path}' of encoder '{encoder}': expected a tab-separated step/{term} "
                             f"table ({err})") from err
        table = curve if table is None else table.merge(curve, on="step", how="outer")
    return table


def curve_tables(runs: list[dict]) -> dict[str, pd.DataFrame]:
    """For each dataset (and label ratio after the first: ``<dataset>_labels<N>pct``) the two tables, by their path
    under the curves folder (``train_loss/<name>.tsv``, ``val_score/<name>.tsv``), and for each encoder the runs
    started from (``init_from``, ``.../<modality>/<variant>/encoder.pt``) ``pretrain_loss/<modality>_<variant>.tsv``;
    every DVCLive file read here, before anything is written."""
    tables, encoder_of, digests = {}, {}, {}
    for r in runs:
        if r.get("init_from"):
            digests.setdefault(Path(r["init_from"]), set()).add(r.get("init_sha256"))
    for encoder, recorded in digests.items():
        label = "_".join(n for n in (encoder.parent.parent.name, encoder.parent.name) if n) or encoder.stem
        name = f"pretrain_loss/{label}.tsv"
        if name in encoder_of:
            raise ValueError(f"the curves of encoders '{encoder_of[name]}' and '{encoder}' would both be {name}: "
                             "give the runs of one pretraining tree at a time")
        encoder_of[name] = encoder
        if not encoder.is_file() or recorded != {file_sha256(encoder)}:
            print(f"note: '{encoder}' is not the encoder its runs started from (no such file here, or not the bytes "
                  "whose SHA-256 they recorded; a relative path is read from the folder this command runs in): its "
                  "runs are drawn without a pretraining curve", file=sys.stderr)
        elif (table := pretrain_loss(encoder)) is None:
            print(f"note: no DVCLive curves of the pretraining that made '{encoder}' (no dvclive/ folder beside it or "
                  "its run): its runs are drawn without a pretraining curve", file=sys.stderr)
        else:
            tables[name] = table
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["dataset"], float(r["label_ratio"])), []).append(r)
    lowest = {d: min(ratio for dd, ratio in groups if dd == d) for d, _ in groups}
    for (dataset, ratio), members in groups.items():
        name = dataset if ratio == lowest[dataset] else f"{dataset}_labels{ratio_text(ratio).removesuffix('%')}pct"
        tables[f"train_loss/{name}.tsv"] = by_method(members, train_loss, "loss", same_steps=True)
        tables[f"val_score/{name}.tsv"] = by_method(members, val_score, "score")
    return tables


#: The record of the tables a folder holds from ``s2dc plots`` (:mod:`s2dc.recorded`). A table is replaced only while
#: its bytes are those recorded (a user's table, or one of ours the user edited, never is).
RECORD = ".s2dc-curves.json"


def is_own_table(out_dir: Path, name: str) -> bool:
    """Whether ``out_dir/name`` is a curve table this command wrote there, unchanged since (:data:`RECORD`)."""
    return is_recorded(out_dir, name, RECORD)


def check_curves_out(out_dir: Path, names: list[str]) -> None:
    """Raise ValueError, naming the file, if a table's path under ``out_dir`` holds a file that is not a curve table
    this command wrote there (:data:`RECORD`): a user's file is never replaced."""
    if (problem := record_problem(out_dir, RECORD)) is not None:
        raise ValueError(f"'{Path(out_dir) / RECORD}' is not the record of the curve tables s2dc wrote there: {problem} "
                         "(a merge left conflict markers in it?); mend it, or move it away with the tables it lists; "
                         "refusing to write the curves")
    check_recorded(out_dir, names, RECORD, "a curve table s2dc wrote",
                   "; move it away to let s2dc plots write its own")


def write_curves(tables: dict[str, pd.DataFrame], out_dir: Path) -> list[Path]:
    """Write :func:`curve_tables` as TSV under ``out_dir`` (:func:`check_curves_out` first) and record them: the
    record lists the old and the new bytes of each table while they are replaced (an interrupted rerun leaves only
    tables of ours), then the new ones."""
    texts = {name: table.to_csv(sep="\t", index=False, float_format="%.6g") for name, table in tables.items()}
    with folder_locked(out_dir):
        check_curves_out(out_dir, list(tables))
        return write_recorded(Path(out_dir), texts, RECORD)
