"""The real trial: a short S²DC pretraining, then a short fine-tuning from its encoder per seed of ``finetune_seeds``;
the value is the mean of their last validation scores (the task's score key, e.g. mean Dice); the first seed's are
reported at every validation for the pruner.

Each trial works in ``<out_dir>/<study>/trial_NNNN/{pretrain,finetune}`` (the user attribute ``folder``;
``finetune_seed<s>`` per seed when there are several);
its checkpoints and ``model.pt`` are deleted when it ends, its metrics, curves and summaries are kept. The
preprocessing caches are shared by all trials (``<out_dir>/cache/{pretrain,finetune}``, written atomically, so
concurrent workers can share them) unless the base options set ``data.cache_dir``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import optuna

from ..data.datalist import list_cases, read_datalist, registry_spec
from ..data.registry import pool_for
from ..downstream.defaults import fill_finetune_defaults
from ..downstream.engine import finetune
from ..files import fsync_path, is_json_with, is_temporary, work_sibling
from ..train.config import build_config as build_pretrain_config
from ..train.finetune_config import build_config as build_finetune_config
from ..train.pretrain import pretrain
from .space import merge_options, nest
from .spec import SweepSpec

#: What a finished trial leaves behind only at great size: deleted, the rest of its folder is kept.
HEAVY = ("pretrain/checkpoints", "finetune*/checkpoints", "finetune*/model.pt")


#: In ``<out_dir>/<study>/``: the storage whose study of that name the trial folders belong to.
OWNER = ".s2dc-storage.json"


def storage_label(storage: str) -> str:
    """A storage as recorded: a journal file's absolute path, a database URL without its password."""
    if "://" not in storage:
        return str(Path(storage).resolve())
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1@", storage)


def claim_study_folder(folder: Path, storage: str) -> None:
    """Record in ``folder`` (``<out_dir>/<study>``) that its trial folders are those of the study in ``storage``;
    raise ValueError naming the folder and the other storage if a study of the same name in another storage (or an
    older s2dc, which recorded none) holds it: the trials of one would delete the other's folders. Workers started
    together may claim a new folder at once: the first record made is the claim (:func:`_record_once`), and another
    worker's record being written is no trial."""
    label, record = storage_label(storage), folder / OWNER
    if not is_json_with(record, {"storage"}):
        if folder.is_dir() and any(not is_temporary(p.name) for p in folder.iterdir()):
            raise ValueError(f"sweep out_dir: '{folder}' holds files but no {OWNER} saying which storage's study of "
                             "that name they belong to (an older s2dc's trials, or not a sweep's): its trials would "
                             "delete them; move them away, or give this sweep another study name or out_dir")
        _record_once(record, json.dumps({"storage": label}))
    owner = json.loads(record.read_text())["storage"]
    if owner != label:
        raise ValueError(f"sweep out_dir: '{folder}' holds the trial folders of study {folder.name!r} in the "
                         f"storage '{owner}', not in '{label}'; its trials would delete them: give this sweep "
                         "another study name or another out_dir")


def _record_once(record: Path, text: str) -> None:
    """Create ``record`` holding ``text`` unless another process made it first (written beside it, then hard-linked
    in: a link fails where the name exists, and no reader sees a part of it)."""
    record.parent.mkdir(parents=True, exist_ok=True)
    tmp = work_sibling(record)
    try:
        tmp.write_text(text)
        fsync_path(tmp)  # on the disk before its name, which lasts once the folder is (as files.rename_durably)
        os.link(tmp, record)
        fsync_path(record.parent)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def check_objective_data(spec: SweepSpec) -> None:
    """Refuse data the trials could not train on, before a study is opened or bound to it (so that the corrected
    command finds the study as it was): a ``data.*`` path that is no dataset.json listing its training cases
    (:class:`~s2dc.data.errors.DataError` naming it), or a pool of another modality than the fine-tuning dataset."""
    keys = {"pretrain": (spec.pretrain.get("data") or {}).get("key") or "training",
            "finetune": (spec.finetune.get("data") or {}).get("train_key") or "training"}
    for stage, key in keys.items():
        path = Path(spec.data[stage])
        if not path.is_file():
            raise FileNotFoundError(f"spec data.{stage}: '{path}' is not a file (a dataset.json is expected)")
        list_cases(path, key)  # a section missing, an entry without its image, a file that is not there
    if not _intensity_given(spec):  # given, an encoder of another modality is fine-tuned on purpose (as
        _refuse_another_modality(spec.data)  # s2dc.downstream.defaults lets it)


def make_objective(spec: SweepSpec, storage: str, study_name: str):
    """``objective(trial, params) -> score`` for :func:`~.worker.run_worker` on the study ``study_name`` in
    ``storage`` (which claims ``<out_dir>/<study_name>``, :func:`claim_study_folder`), its data checked
    (:func:`check_objective_data`)."""
    check_objective_data(spec)
    study_dir = Path(spec.out_dir) / study_name
    claim_study_folder(study_dir, storage)

    def objective(trial: optuna.Trial, params: dict) -> float:
        folder = study_dir / f"trial_{trial.number:04d}"
        trial.set_user_attr("folder", str(folder))
        shutil.rmtree(folder, ignore_errors=True)  # left by an earlier study of the same name and storage: a trial
        # is never rerun
        searched = nest(params)
        try:
            summary = pretrain(build_pretrain_config(_stage_options(spec, "pretrain", searched, folder)))
            values = _stage_options(spec, "finetune", searched, folder)
            values, _ = fill_finetune_defaults(merge_options(values, {"model": {"init": summary["checkpoint"]}}))
            finals, results = [], []
            for seed in spec.finetune_seeds:  # the pruner reads the first seed's scores; the value is their mean
                scores: list[float] = []
                stage = "finetune" if len(spec.finetune_seeds) == 1 else f"finetune_seed{seed}"
                run = merge_options(values, {"run": {"seed": seed, "out_dir": str(folder / stage)}})
                results.append(finetune(build_finetune_config(run),
                                        on_score=_scorer(trial, scores, report=not results)))
                finals.append(scores[-1])
            seed_scores = [r["score"]["value"] for r in results]  # as the table shows them (Dice in %)
            trial.set_user_attr("score", {**results[0]["score"], "value": sum(seed_scores) / len(seed_scores)})
            trial.set_user_attr("seed_scores", seed_scores)
            losses = summary["losses_this_run"]
            if losses:
                trial.set_user_attr("pretrain_loss_last", float(losses[-1]))
            return sum(finals) / len(finals)
        finally:
            for path in (p for heavy in HEAVY for p in folder.glob(heavy)):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)

    return objective


def _intensity_given(spec: SweepSpec) -> bool:
    """Whether the spec sets the fine-tuning's intensity normalisation (base options or space) over the dataset's
    preset."""
    return ("intensity" in (spec.finetune.get("preprocess") or {})
            or "finetune.preprocess.intensity" in {dim.key for dim in spec.dims})


def _refuse_another_modality(data: dict) -> None:
    """ValueError naming both files when the pool ``data["pretrain"]`` and the dataset ``data["finetune"]`` are
    registry datasets of two modalities: each trial would pretrain an encoder its fine-tuning then refuses
    (s2dc.export.refuse_another_modality). A dataset the registry does not know is taken as given."""
    pool, task = (registry_spec(read_datalist(data[stage])) for stage in ("pretrain", "finetune"))
    if pool is None or task is None or pool.modality == task.modality:
        return
    raise ValueError(f"spec data: the pool data.pretrain '{data['pretrain']}' ({pool.name}) is {pool.modality}, but "
                     f"data.finetune '{data['finetune']}' ({task.name}) is {task.modality}: each trial would pretrain "
                     f"an encoder its fine-tuning refuses; give the {task.modality} pool ({pool_for(task.modality)})")


def _scorer(trial: optuna.Trial, scores: list[float], report: bool):
    """``on_score(step, value)`` of one fine-tuning: keeps each validation score in ``scores`` and, if ``report``,
    reports it to the pruner (raising ``TrialPruned`` when it says so)."""
    def on_score(step: int, value: float) -> None:
        scores.append(value)
        if report:
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at fine-tuning step {step} (score {value:.4g})")
    return on_score


def _stage_options(spec: SweepSpec, stage: str, searched: dict, folder: Path) -> dict:
    """Base options of ``stage`` + the trial's parameters + the dataset, trial folder and shared cache the sweep
    sets (a new nested dict)."""
    values = merge_options(getattr(spec, stage), searched[stage])
    values = merge_options(values, {"data": {"source": spec.data[stage]}, "run": {"out_dir": str(folder / stage)}})
    values["data"].setdefault("cache_dir", str(Path(spec.out_dir) / "cache" / stage))
    values["run"].setdefault("progress", False)
    return values
