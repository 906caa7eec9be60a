"""Fine-tuning of any downstream task, from scratch or from an S²DC encoder: the task-independent loop.

The task (:mod:`s2dc.downstream.tasks`, chosen by the dataset.json) supplies the data, the random
augmentation, the network (a SwinUNETR, or its encoder with a head), the loss and the validation
scores; this engine does the rest, the same for all four::

    dataset.json --(label_ratio, split seed: data.split_seed or the run's)--> training cases --> split.json
    preprocessing (deterministic, cached on disk) -> augmentation (random, per step)
    network <- encoder weights (model.init), its batch-of-one 3-D convolutions on oneDNN (s2dc.models.cpu_conv)
    AdamW (encoder lr scaled) with warm-up + cosine
    loop: loss -> finite? -> step ; training curves ; validation every eval.every steps and at the end
    checkpoint every run.checkpoint_every steps ; a run started again continues the newest (run.resume)

The batch of step ``t`` (which cases, where the crops are cut, the flips) is a function of ``(seed, t)``
alone (:class:`StepBatches`): loader processes do not change it, and a resumed run draws what the
uninterrupted one drew, so it ends with the same weights, bit for bit.

Outputs in ``run.out_dir``: ``split.json`` (the training cases drawn), ``dvclive/``, ``checkpoints/``
(while the run lasts), ``model.pt`` (final weights) and, last of all, ``metrics.json``: a run that
fails leaves no ``metrics.json``. It records the hash of the fine-tuning code (``code``, its run identity's), and the
checksum of its content (``result_sha256``, which covers ``code``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
import math
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from monai.data import list_data_collate

from ..data.datalist import dataset_name, list_cases, read_datalist, registry_spec
from ..data.errors import DataError
from ..data.registry import spec_digest
from ..data.splits import choose_subset, refuse_training_cases_in_validation
from ..data.volumes import check_all
from ..export import load_encoder_weights
from ..files import atomic_write_text, file_sha256, is_json_with, is_temporary, remove_abandoned
from ..models.cpu_conv import batch_of_one_convs_on_onednn
from ..train.checkpoint import (
    atomic_save,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    lock_folder,
    prune,
    rng_state,
    set_rng_state,
)
from ..train.device import pick_device
from ..train.finetune_config import FinetuneConfig
from ..train.finite import NonFiniteError, describe_step, gradient_norm, require_finite, step_is_finite
from ..fingerprint import code_fingerprint, libraries
from ..messages import listed
from ..train.identity import (
    data_fingerprint,
    record_content,
    run_differences,
    volumes_sha256,
)
from ..train.live import MetricLog, Progress
from ..train.optim import EagerAdamW
from ..train.outputs import edit_found, foreign_curve_files, result_sha256
from ..train.precision import autocast_for, precision_for
from ..train.schedule import SCHEDULES
from ..train.seeding import step_generator, step_seed
from .tasks import TASKS, task_of
from .tasks.common import Setting


def _sorted(cases: list[dict]) -> list[dict]:
    """Cases by image path: the label-ratio subset then does not depend on the json's order."""
    return sorted(cases, key=lambda c: str(c["image"]))


class StepBatches(torch.utils.data.Dataset):
    """Item ``t`` = the collated training batch of step ``t`` (0-based): ``batch_size`` cases, each through the random
    ``augment`` (``samples_per_volume`` crops, flips). Case ``k = t * batch_size + j`` is position ``k % n`` of
    epoch ``k // n``'s permutation of the ``n`` cases, and its augmentation is seeded with ``(seed, t, j)``: the batch
    depends on nothing else (not on the loader processes, nor on the steps before). With ``steps_per_batch`` r > 1,
    steps ``r u .. r u + r - 1`` share the batch ``u`` (built again for each: cheap beside a step, and a step's batch
    stays a function of its number, so a resume between them is exact) and carry their ``turn`` ``t % r`` under
    ``"turn"`` (the task's :attr:`~s2dc.downstream.tasks.common.Task.steps_per_batch`)."""

    ORDER, AUGMENT = 3, 4  # streams of :func:`step_seed`

    def __init__(self, cases, augment, batch_size: int, seed: int, steps_per_batch: int = 1) -> None:
        self.cases, self.augment, self.batch_size, self.seed = cases, augment, batch_size, seed
        self.steps_per_batch = steps_per_batch

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, step: int) -> dict:
        if self.steps_per_batch > 1:
            shared, turn = divmod(step, self.steps_per_batch)
            return {**self._batch(shared), "turn": torch.tensor(turn)}
        return self._batch(step)

    def _batch(self, step: int) -> dict:
        n, samples = len(self.cases), []
        for j in range(self.batch_size):
            epoch, position = divmod(step * self.batch_size + j, n)
            order = torch.randperm(n, generator=step_generator(self.seed, epoch, 0, self.ORDER))
            self.augment.set_random_state(seed=step_seed(self.seed, step, j, self.AUGMENT) % 2**32)
            samples.append(self.augment(self.cases[int(order[position])]))
        return list_data_collate(samples)


def _as_is(batch):
    return batch


def _json_value(x):
    """NaN/Inf -> None (JSON has no NaN), dicts recursively."""
    if isinstance(x, dict):
        return {k: _json_value(v) for k, v in x.items()}
    return None if isinstance(x, float) and not math.isfinite(x) else x


def _atomic_json(obj, path: Path) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2))


#: What a run writes in its ``run.out_dir``. A rerun replaces them (keeping the preprocessing cache, ``cache/``, used
#: where ``data.cache_dir`` is not set); a folder holding anything else is refused, never cleared.
OUTPUTS = frozenset({"metrics.json", "model.pt", "split.json", "dvclive", "checkpoints", "cache"})
#: Of :data:`OUTPUTS`, those a run writes after ``split.json`` (and a rerun deletes before it): where one of them is,
#: a run's ``split.json`` is too, or the folder is not a fine-tuning run's (a user's ``model.pt``).
AFTER_SPLIT = frozenset({"metrics.json", "model.pt", "dvclive", "checkpoints"})
#: ``kind`` of a fine-tuning checkpoint (a pretraining checkpoint in the folder is not one).
CHECKPOINT_KIND = "s2dc-finetune"


def _is_scratch(name: str) -> bool:
    """The run folder's lock (``.lock``) and the temporary file of an interrupted atomic write
    (``.<name>.<host>.<pid>.tmp``)."""
    return name == ".lock" or is_temporary(name)


def _is_split(path: Path) -> bool:
    """Is ``path`` a fine-tuning run's ``split.json``?"""
    return is_json_with(path, {"source", "label_ratio", "seed", "cases"})


def refuse_a_folder_of_something_else(out: Path) -> None:
    """Raise ValueError, naming ``run.out_dir`` and what it holds, if the folder ``out`` is not an earlier fine-tuning
    run's: it holds anything but :data:`OUTPUTS` (a pretraining run, a user's files), a ``split.json`` that is not a
    run's or one of :data:`AFTER_SPLIT` without the run's (a user's ``model.pt``), a ``checkpoints/`` holding
    anything but checkpoints, a ``dvclive/`` holding anything but the run's curves (a note of one's own there), or a
    ``metrics.json`` edited since its run wrote it (its ``result_sha256`` differs);
    its lock and temporary files are a run's own."""
    if not out.is_dir():
        return
    names = {p.name for p in out.iterdir() if not _is_scratch(p.name)}
    other = sorted(names - OUTPUTS)
    if not other and names & (AFTER_SPLIT | {"split.json"}) and not _is_split(out / "split.json"):
        other = sorted(names & (AFTER_SPLIT | {"split.json"}))
    checkpoints = out / "checkpoints"
    if not other and checkpoints.is_dir():  # it holds a run's checkpoints only (and their interrupted writes)
        own = set(list_checkpoints(checkpoints))
        other = [f"checkpoints/{p.name}" for p in sorted(checkpoints.iterdir()) if p not in own and not (
            p.is_file() and is_temporary(p.name) and p.name.startswith(".step_"))]
    live = out / "dvclive"
    if not other and (live.is_symlink() or (live.exists() and not live.is_dir())):
        other = ["dvclive (a link or a file where the run's curves folder goes)"]
    if not other and live.is_dir():  # its curves only (a note of one's own there went with them) and their interrupted
        other = [f"dvclive/{p.relative_to(live).as_posix()}" for p in foreign_curve_files(live)  # atomic writes
                 if not (p.is_file() and not p.is_symlink() and is_temporary(p.name))]
    if other:
        raise ValueError(f"run.out_dir: '{out}' holds {', '.join(other[:4])}{', ...' if len(other) > 4 else ''}, "
                         f"which no earlier fine-tuning run wrote there; it never clears such a folder: give a folder "
                         f"of its own")
    metrics = out / "metrics.json"
    try:
        edited = edit_found(json.loads(metrics.read_text())) if metrics.is_file() else None
    except (OSError, ValueError, TypeError, AttributeError):
        edited = None  # not a run's (then its split.json says so) or unreadable: the run replaces its own file
    if edited:
        raise ValueError(f"run.out_dir: '{metrics}' was edited after its run wrote it ({edited}); the run would "
                         "replace it: move it, or give another folder")


def _case_files(cases: list[dict]) -> list[Path]:
    """Every file the cases list (images, labels, targets), in order."""
    files = []
    for case in cases:
        for value in case.values():
            files += [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, Path)]
    return files


def refuse_an_init_inside(out: Path, init: str) -> None:
    """Raise ValueError if the encoder file ``model.init`` lies inside ``run.out_dir`` (the run replaces its files)."""
    if init != "scratch" and Path(init).resolve().is_relative_to(out.resolve()):
        raise ValueError(f"model.init: '{init}' lies inside run.out_dir '{out}', whose files the run replaces; "
                         "copy the encoder elsewhere first")


def refuse_options_of_other_tasks(cfg: FinetuneConfig, task: type, source: Path) -> None:
    """Raise ValueError if an option section of a task other than ``task`` (``classify.*``) is set: it would change
    nothing in this run."""
    for other in TASKS.values():
        section = other.options_section
        if section and section != task.options_section and getattr(cfg, section) != type(getattr(cfg, section))():
            raise ValueError(f"{section}.* options are for {other.name}; the task of '{source}' is {task.name}: "
                             "leave them unset")


class Finetuner:
    """Data, network, loss, optimiser and schedule of one fine-tuning run; ``run()`` trains and evaluates."""

    def __init__(self, cfg: FinetuneConfig) -> None:
        self.started = time.perf_counter()
        self.cfg = cfg
        self.out = Path(cfg.run.out_dir)
        refuse_a_folder_of_something_else(self.out)  # before anything is read, built or written ...
        refuse_an_init_inside(self.out, cfg.model.init)
        self.made = not (self.out.exists() or self.out.is_symlink())
        self.lock = lock_folder(self.out)  # ... then held for the whole run (a second run into it is refused)
        try:
            self._set_up(cfg)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the folder; one this run made that holds nothing but its lock and cache (the run was refused or
        failed before its first checkpoint or output) goes again."""
        self.lock.close()
        if self.made and self.out.is_dir() and {p.name for p in self.out.iterdir()} <= {".lock", "cache"}:
            shutil.rmtree(self.out, ignore_errors=True)

    def _set_up(self, cfg: FinetuneConfig) -> None:
        """Everything ``__init__`` does once the folder is locked (data, task, network, optimiser)."""
        refuse_a_folder_of_something_else(self.out)  # as another run may have left it before the lock was ours
        self.device = pick_device(cfg.run.device)
        source = Path(cfg.data.source)
        self.spec = read_datalist(source)
        task = TASKS[task_of(self.spec, source)]
        refuse_options_of_other_tasks(cfg, task, source)
        own = (getattr(cfg, task.options_section),) if task.options_section else ()
        self.task = task(self.spec, source, cfg.data, *own)
        if cfg.data.input_channel and not self.task.picks_input_channel:
            readers = " or ".join(name for name, task in TASKS.items() if task.picks_input_channel)
            raise ValueError(f"data.input_channel is for {readers}; this dataset's task is {self.task.name} "
                             f"('{source}'): leave it unset")
        roles = self.task.roles
        self.all_train = _sorted(list_cases(source, cfg.data.train_key, roles, self.spec))
        self.split_seed = cfg.run.seed if cfg.data.split_seed is None else cfg.data.split_seed
        self.train_cases = choose_subset(self.all_train, cfg.data.label_ratio, self.split_seed,
                                         stratify_by=self.task.stratify_by)
        cfg = self.cfg = cfg.in_steps(len(self.train_cases), self.task.steps_per_batch)  # train.epochs -> steps
        self.val_cases = _sorted(list_cases(source, cfg.data.val_key, roles, self.spec))
        refuse_training_cases_in_validation(self.all_train, self.val_cases, source, cfg.data.train_key,
                                            cfg.data.val_key)
        self.dataset_name = dataset_name(self.spec, source)
        self.autocast = autocast_for(self.device, cfg.train.amp, "train.amp")
        self.precision = precision_for(self.device, cfg.train.amp, "train.amp")
        self.setting = Setting(cfg.preprocess, tuple(cfg.train.roi_size), cfg.train.samples_per_volume,
                               cfg.train.flip_prob, cfg.eval.sw_batch_size, cfg.eval.overlap, self.device, self.autocast,
                               cfg.train.flip_axes, cfg.train.rot90_prob)
        self.task.check(self.setting)

        random.seed(cfg.run.seed)
        np.random.seed(cfg.run.seed)
        torch.manual_seed(cfg.run.seed)  # same initial decoder weights for scratch and pretrained runs
        encoder = cfg.model.encoder_config(self._in_channels())
        self.model = batch_of_one_convs_on_onednn(self.task.build_model(
            encoder, dropout_path_rate=cfg.model.drop_path_rate, use_checkpoint=cfg.model.use_checkpoint))
        self.init_report = "scratch: random initialisation"
        if cfg.model.init != "scratch":
            self.init_report = load_encoder_weights(self.model, cfg.model.init, cfg.model.init_which, expected=encoder,
                                                    whole_runs_only=True)
        self.model.to(self.device)
        encoder_params = list(self.model.swinViT.parameters())
        ids = {id(p) for p in encoder_params}
        rest = [p for p in self.model.parameters() if id(p) not in ids]
        self.optimizer = EagerAdamW(
            [{"params": encoder_params, "lr": cfg.train.lr * cfg.train.encoder_lr_scale},
             {"params": rest, "lr": cfg.train.lr}],
            weight_decay=cfg.train.weight_decay, amsgrad=cfg.train.amsgrad)
        schedule = SCHEDULES[cfg.train.schedule]
        frozen = cfg.train.frozen_encoder_steps

        def rest_factor(s: int) -> float:
            return schedule(s, cfg.train.warmup_steps, cfg.train.steps)

        def encoder_factor(s: int) -> float:  # LP-FT: 0 during the frozen phase, then the same schedule
            return 0.0 if s < frozen else rest_factor(s)

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, [encoder_factor, rest_factor])
        self.step = 0
        self.ckpt_dir = self.out / "checkpoints"
        init = [] if cfg.model.init == "scratch" else [Path(cfg.model.init)]
        files = _case_files(self.all_train + self.val_cases) + init
        self.identity = self._identity(source, files)
        self._content = functools.cache(lambda: volumes_sha256(files))  # the files' bytes, hashed at most once

    def _identity(self, source: Path, files: list[Path]) -> dict:
        """What makes a checkpoint this run's (see :mod:`s2dc.train.identity`): the options that change what it
        computes (its seed and label ratio too), the precision, the dataset.json, ``files`` (every case's file and
        the encoder file: path, size, time; their bytes' hash is added with the first checkpoint), the registry
        entry of the dataset (its task, classes and preset are read from it: data, which the code hash leaves out),
        and the fine-tuning code."""
        cfg = self.cfg
        spec = registry_spec(self.spec)
        return {
            "options": {**cfg.result_options(self.precision), "data.label_ratio": cfg.data.label_ratio,
                        "run.seed": cfg.run.seed, "model.init": cfg.model.init},
            "data": data_fingerprint(source, files),
            "dataset_spec": spec_digest(spec.name) if spec is not None else None,
            "code": code_fingerprint(__name__),
            "libraries": libraries(),
        }

    def _in_channels(self) -> int:
        """Input channels of the network: the image channels of the cases (one where the task picks its input channel,
        :attr:`~s2dc.downstream.tasks.common.Task.picks_input_channel`). Raises DataError naming a training or
        validation case that lists another number of channels than the first."""
        if self.task.picks_input_channel:
            return 1
        cases = (*self.all_train, *self.val_cases)
        channels = [len(c["image"]) if isinstance(c["image"], list) else 1 for c in cases]
        odd = next((i for i, n in enumerate(channels) if n != channels[0]), None)
        if odd is not None:
            raise DataError(f"case '{cases[odd]['id']}' of dataset json '{self.cfg.data.source}' lists {channels[odd]} "
                            f"image channel(s), case '{cases[0]['id']}' {channels[0]}; every training and validation "
                            "case must list the same channels")
        return channels[0]

    # ------------------------------------------------------------------ data
    def _datasets(self):
        cfg = self.cfg
        cache_root = cfg.data.cache_dir or self.out / "cache"
        train, val = self.task.datasets(self.train_cases, self.val_cases, self.setting, cache_root)
        # Preprocess (and check) every case before training: bad files fail now, naming them.
        for name, ds in (("train", train), ("val", val)):
            check_all(ds, cfg.data.workers, f"preprocess {name}", cfg.run.progress)
        self.task.check_training(train)
        self.task.check_validation(val, self.val_cases)
        return train, val

    def _batches(self, train):
        """The training batches of steps ``self.step`` .. ``train.steps - 1`` (:class:`StepBatches`)."""
        cfg = self.cfg
        batches = StepBatches(train, self.task.augment(self.setting), cfg.train.batch_size, cfg.run.seed,
                              self.task.steps_per_batch)
        return iter(torch.utils.data.DataLoader(  # its own generator: torch's global one is drop-path's (resume)
            batches, batch_size=None, sampler=range(self.step, cfg.train.steps), collate_fn=_as_is,
            num_workers=cfg.data.workers, generator=torch.Generator().manual_seed(cfg.run.seed),
            pin_memory=self.device.type == "cuda"))

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_to_resume(self) -> tuple[dict | None, Path | None]:
        """The newest checkpoint in ``run.out_dir/checkpoints`` and its path if this run continues it (``run.resume``);
        raises ValueError naming the file if it is no fine-tuning checkpoint, or (``auto``) listing the
        differences if it is another run's."""
        remove_abandoned(self.ckpt_dir, "step_????????.pt", every_host=True)
        found = list_checkpoints(self.ckpt_dir)
        if not found:
            return None, None
        path = found[-1]
        state = load_checkpoint(path)
        if not isinstance(state, dict) or state.get("kind") != CHECKPOINT_KIND:
            raise ValueError(f"'{path}' is not an s2dc fine-tuning checkpoint; a run never resumes from or deletes such "
                             "a file: give run.out_dir a folder of its own")
        if self.cfg.run.resume == "never":
            return None, None
        lines = run_differences(state.get("identity") or {}, self.identity, self._content)
        if not lines:
            return state, path
        listed = "".join(f"\n  - {line}" for line in lines)
        if self.cfg.run.resume == "auto":
            raise ValueError(f"checkpoint '{path}' is another run's than this one, so it cannot be resumed:{listed}\n"
                             "Resuming only continues the same run. To start afresh (the checkpoint is deleted), pass "
                             "--run.resume if_unchanged (as the pipeline does) or never, or give another --run.out_dir.")
        print(f"the checkpoint {path} is another run's, so this run starts afresh:{listed}", flush=True)
        return None, None

    def _save_checkpoint(self, history: list[dict], first_loss: float) -> None:
        weights = self.model.state_dict()
        require_finite(weights, f"the weights at step {self.step}")
        record_content(self.identity, self._content)
        atomic_save({"kind": CHECKPOINT_KIND, "step": self.step, "identity": self.identity, "model": weights,
                     "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                     "rng": rng_state(), "history": history, "first_loss": first_loss},
                    checkpoint_path(self.ckpt_dir, self.step))
        prune(self.ckpt_dir, keep_last=1)

    # ------------------------------------------------------------------ steps
    def train_step(self, batch: dict) -> dict[str, float]:
        self.model.train()
        loss = self.task.loss(self.model, batch, self.setting)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = gradient_norm(self.model.parameters(), self.cfg.train.grad_clip)
        if not step_is_finite(loss, grad_norm):
            raise NonFiniteError(describe_step(self.step + 1, {"loss": float(loss.detach())}, float(grad_norm),
                                               self._divergence_hint()))
        lr = self.optimizer.param_groups[1]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return {"loss": float(loss.detach()), "lr": lr}

    def _divergence_hint(self) -> str:
        init = self.cfg.model.init
        if self.step == 0 and init != "scratch":  # before any update: the learning rate played no part
            return (f"No update had been applied yet: the starting encoder '{init}' (model.init) gives non-finite "
                    "values (finite weights of a diverged run?); fine-tune from another encoder.")
        clip = self.cfg.train.grad_clip
        return f"Try a lower train.lr (now {self.cfg.train.lr:g})" + (
            f" or a lower train.grad_clip (now {clip:g})." if clip > 0 else " or train.grad_clip > 0.")

    def evaluate(self, val) -> dict:
        """The task's validation scores (the score under ``task.score_key``). Raises NonFiniteError at the first
        output of the network that is not finite: finite weights can still give NaN outputs (a diverged step), and
        a task would otherwise score them (an argmax of NaN logits is class 0)."""
        self.model.eval()
        check = self.model.register_forward_hook(self._refuse_non_finite_outputs)
        try:
            return self.task.evaluate(self.model, val, self.setting)
        finally:
            check.remove()
            self.model.train()

    def _refuse_non_finite_outputs(self, module, inputs, output) -> None:
        if torch.is_tensor(output) and not torch.isfinite(output).all():
            raise NonFiniteError(
                f"validation at step {self.step}: the network's outputs are not finite (NaN or infinite, from finite "
                f"weights: a diverged model); no model.pt or metrics.json is written. {self._divergence_hint()}")

    def _require_a_score(self, value: float) -> None:
        """Raise DataError if the validation score is NaN or infinite: such a run is not a result. The network's
        outputs were finite (:meth:`_refuse_non_finite_outputs` stops a diverged model's first), so the validation
        cases are what cannot be scored. The task's ``check_validation`` refuses before training what the data alone
        decides (a target constant on its scored voxels: PSNR -inf); this check stays for what depends on the
        prediction too, which no look at the data foresees (a prediction exact: PSNR +inf; with ``translate.score
        release``, whose range is the larger of the prediction's and the target's, a constant sequence predicted
        constant)."""
        if not math.isfinite(value):
            cases = listed([f"'{c['id']}'" for c in self.val_cases])
            raise DataError(
                f"validation at step {self.step} gave {self.task.score_key} = {value} on the {len(self.val_cases)} "
                f"validation case(s) of '{self.cfg.data.source}' ({cases}) from finite outputs of the network "
                f"({self.task.why_not_finite}); no model.pt or metrics.json is written: expected validation cases "
                "that the task can score")

    # ------------------------------------------------------------------ run
    def run(self, on_score: Callable[[int, float], None] | None = None) -> dict:
        """Train to ``train.steps``, evaluating every ``eval.every`` steps and at the end; ``on_score(step, value)``
        receives each validation score (the task's ``score_key``, unscaled) and may raise to stop the run
        (an Optuna pruner does)."""
        cfg, key = self.cfg, self.task.score_key
        state, resumed_from = self._checkpoint_to_resume()
        print(f"task: {self.task.name}; model.init: {self.init_report}", flush=True)
        if cfg.train.epochs:
            print(f"train.epochs {cfg.train.epochs} of {len(self.train_cases)} training cases, "
                  f"{cfg.train.batch_size} a step: {cfg.train.steps} steps, {cfg.train.warmup_steps} of them warm-up",
                  flush=True)
        history, first_loss = [], None
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.step, history, first_loss = int(state["step"]), list(state["history"]), state["first_loss"]
            print(f"resuming {resumed_from} at step {self.step} of {cfg.train.steps}", flush=True)
        train, val = self._datasets()  # every case read and checked: bad data is refused before anything is replaced
        # A rerun replaces the earlier run's outputs in the reverse order of their writing (metrics.json first,
        # split.json last: an interrupted rerun leaves a folder still recognised as a run's); the folder holds nothing
        # else (checked in __init__). A resumed run keeps its checkpoint and curves.
        for name in ("metrics.json", "model.pt"):
            (self.out / name).unlink(missing_ok=True)
        if state is None:
            shutil.rmtree(self.ckpt_dir, ignore_errors=True)
            shutil.rmtree(self.out / "dvclive", ignore_errors=True)
            (self.out / "split.json").unlink(missing_ok=True)
        _atomic_json({
            "source": str(cfg.data.source), "train_key": cfg.data.train_key, "label_ratio": cfg.data.label_ratio,
            "seed": cfg.run.seed, "split_seed": self.split_seed, "available": len(self.all_train),
            "cases": [{k: str(v) for k, v in c.items()} for c in self.train_cases],
        }, self.out / "split.json")
        batches = self._batches(train)

        live = MetricLog(self.out / "dvclive", self.step if state is not None else None)
        progress = Progress("finetune", cfg.train.steps, self.step, cfg.train.log_every, bar=cfg.run.progress)
        if state is not None:
            set_rng_state(state["rng"])  # after setting up, which may draw (stochastic depth draws from it)
        scores, every = {}, cfg.run.checkpoint_every
        while self.step < cfg.train.steps:
            metrics = self.train_step(next(batches))
            first_loss = metrics["loss"] if first_loss is None else first_loss
            if self.step % cfg.train.log_every == 0 or self.step == cfg.train.steps:
                live.log(self.step, {"train/loss": metrics["loss"], "train/lr": metrics["lr"]})
            if (cfg.eval.every and self.step % cfg.eval.every == 0) or self.step == cfg.train.steps:
                scores = self.evaluate(val)
                self._require_a_score(scores[key])
                history.append({"step": self.step, key: _json_value(scores[key])})
                flat = {f"val/{k}": v for k, v in scores.items() if not isinstance(v, dict)}
                flat.update({f"val/{k}/{name}": v for k, d in scores.items() if isinstance(d, dict) for name, v in d.items()})
                live.log(self.step, {k: v for k, v in flat.items() if math.isfinite(v)})
                metrics[key] = scores[key]
                if on_score is not None:
                    on_score(self.step, float(scores[key]))
            if every and self.step % every == 0 and self.step < cfg.train.steps:
                live.close()  # the curves' summary as of the checkpoint
                self._save_checkpoint(history, first_loss)
            progress.update(self.step, metrics)
        progress.close()
        live.close()

        weights = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        require_finite(weights, "the fine-tuned weights")
        atomic_save(weights, self.out / "model.pt")
        result = {
            "task": self.task.name,
            "dataset": self.dataset_name,
            "method": cfg.method,
            "init_from": None if cfg.model.init == "scratch" else str(cfg.model.init),
            "init_sha256": None if cfg.model.init == "scratch" else file_sha256(cfg.model.init),
            "label_ratio": cfg.data.label_ratio,
            "seed": cfg.run.seed,
            "train_cases": len(self.train_cases),
            "val_cases": len(self.val_cases),
            "steps": self.step,
            "resumed_from_step": None if state is None else int(state["step"]),
            "options": self.cfg.result_options(self.precision),
            "code": self.identity["code"],  # which version of the code made it: the tables compare one version only
            **_json_value(scores),
            "score": {"key": key, "name": self.task.score_name,
                      "value": _json_value(100 * scores[key] if self.task.percent else scores[key])},
            "history": history,
            "train_loss_first_last": [first_loss, metrics["loss"]],
            "seconds": time.perf_counter() - self.started,
        }
        result["result_sha256"] = result_sha256(result)  # the tables refuse the file edited after this
        _atomic_json(result, self.out / "metrics.json")
        shutil.rmtree(self.ckpt_dir, ignore_errors=True)  # model.pt is the result; a finished run is not resumed
        return result


def finetune(cfg: FinetuneConfig, on_score: Callable[[int, float], None] | None = None) -> dict:
    """Fine-tune as configured; returns the metrics (also written to ``run.out_dir/metrics.json``).
    ``on_score(step, value)``: see :meth:`Finetuner.run`."""
    if not cfg.data.source:
        raise ValueError("data.source is required: pass --data.source <dataset.json>")
    tuner = Finetuner(cfg)
    try:
        return tuner.run(on_score)
    finally:
        tuner.close()
