"""S²DC pretraining engine: one process or DDP under ``torchrun`` (gloo on CPU, NCCL on GPU).

Every random draw of step ``t`` on rank ``r`` (which volumes, where the ROI is cut, the view
augmentations, the L_g crop) comes from a generator seeded with ``(seed, t, r)``, so a run resumed
from a checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..data.datalist import list_volumes
from ..data.errors import DataError
from ..data.volumes import CachedVolumes, check_all
from ..files import atomic_write_text, is_json_with, remove_abandoned
from ..losses.s2dc_loss import S2DCLoss
from ..models.queue import KeyQueue
from ..models.s2dc_net import EMATeacher, S2DCNet, momentum_at
from ..views import make_views
from .checkpoint import (
    atomic_save,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    lock_folder,
    prune,
    rng_state,
    set_rng_state,
)
from .config import RESUME_MODES, PretrainConfig
from .device import pick_device
from .finite import NonFiniteError, describe_step, gradient_norm, non_finite_tensors, step_is_finite
from ..fingerprint import code_fingerprint, libraries
from .identity import (
    data_fingerprint,
    record_content,
    result_options,
    run_differences,
    volumes_sha256,
)
from .live import MetricLog, Progress
from .optim import EagerAdamW
from .precision import autocast_for, precision_for
from .schedule import warmup_cosine
from .seeding import step_generator
from .timing import PhaseTimer


class RoiStream(torch.utils.data.Dataset):
    """Item ``t`` = the (B, C, X, Y, Z) batch of ROIs of step ``t`` on this rank, drawn from cached volumes."""

    def __init__(self, volumes: CachedVolumes, roi_size, batch_size: int, seed: int, rank: int) -> None:
        self.volumes, self.roi_size, self.batch_size, self.seed, self.rank = volumes, tuple(roi_size), batch_size, seed, rank

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, step: int) -> torch.Tensor:
        gen = step_generator(self.seed, step, self.rank, stream=1)
        picks = torch.randint(len(self.volumes), (self.batch_size,), generator=gen).tolist()
        rois = []
        for i in picks:
            vol = self.volumes[i]
            start = [int(torch.randint(s - r + 1, (1,), generator=gen)) for s, r in zip(vol.shape[1:], self.roi_size)]
            x, y, z = (slice(a, a + r) for a, r in zip(start, self.roi_size))
            rois.append(vol[:, x, y, z])
        return torch.stack(rois)


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> Distributed:
    """Join the ``torchrun`` process group if one is described by the environment; pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = pick_device(device, int(os.environ.get("LOCAL_RANK", "0")))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Distributed(rank=rank, world_size=world, device=dev)


def state_fingerprint(module: nn.Module) -> str:
    """SHA-256 of every parameter and buffer (exact bitwise identity check across ranks or runs)."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class Pretrainer:
    """Holds model, teacher, queue, optimiser and schedule; ``run()`` trains to ``optim.steps``."""

    def __init__(self, cfg: PretrainConfig) -> None:
        self.cfg = cfg
        self.dist = setup_distributed(cfg.run.device)
        self.out = Path(cfg.run.out_dir)
        self.ckpt_dir = self.out / "checkpoints"
        torch.manual_seed(cfg.run.seed)  # identical initial weights on every rank
        random.seed(cfg.run.seed)  # unused by training, but saved in checkpoints: seeded, they are reproducible
        np.random.seed(cfg.run.seed)
        device = self.dist.device
        self.model = S2DCNet(cfg.encoder, cfg.head.hidden_dim, cfg.head.embed_dim).to(device)
        self.teacher = EMATeacher(self.model).to(device)
        self.queue = KeyQueue(cfg.loss.queue_size, cfg.head.embed_dim).to(device)
        self.loss = S2DCLoss(cfg.loss)
        self.ddp = None
        if self.dist.world_size > 1:
            unused = not (self.loss.needs_global and self.loss.needs_tokens)
            self.ddp = DistributedDataParallel(self.model, find_unused_parameters=unused,
                                               device_ids=[device.index] if device.type == "cuda" else None)
        self.optimizer = EagerAdamW(self.model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_cosine(s, cfg.optim.warmup_steps, cfg.optim.steps))
        self.step = 0
        self.identity: dict = {}
        self._content = None  # () -> the hash of the data's bytes (identity.volumes_sha256), made at most once
        self._lock = None  # the run folder's lock (main rank), held until pretrain() returns
        self._rng = None  # generator states of a resumed checkpoint, set before its first step
        self._made_out = False  # whether this run made run.out_dir (a refused run removes it again if still empty)
        self.autocast = autocast_for(device, cfg.run.amp, "run.amp")
        self.precision = precision_for(device, cfg.run.amp, "run.amp")
        self.timer = PhaseTimer(enabled=False, device=device)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "config": self.cfg.to_dict(),
            "identity": self.identity,
            "world_size": self.dist.world_size,
            "student": self.model.state_dict(),
            "teacher": self.teacher.net.state_dict(),
            "queue": self.queue.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["student"])
        self.teacher.net.load_state_dict(state["teacher"])
        self.queue.load_state_dict(state["queue"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self._rng = state["rng"]  # restored just before the first step: setting up may draw (preprocessing, checks)
        self.step = int(state["step"])

    def run_identity(self, paths: list[Path]) -> dict:
        """Options, data and code of this run (see :mod:`s2dc.train.identity`)."""
        return {
            "options": result_options(self.cfg.to_dict()),
            "world_size": self.dist.world_size,
            "precision": self.precision,
            "data": data_fingerprint(self.cfg.data.source, paths),
            "code": code_fingerprint(__name__),
            "libraries": libraries(),
        }

    def prepare_out_dir(self) -> Path | None:
        """Resume, start afresh or refuse, as ``run.resume`` says; returns the checkpoint resumed from.

        Raises ``ValueError`` listing the differences when the run found in ``run.out_dir`` (or the checkpoint
        given) is not this run. An earlier run that is not continued is moved to ``run.out_dir/previous/``.
        """
        choice = self.cfg.run.resume
        self._refuse_a_users_files()
        if self.dist.is_main:
            remove_abandoned(self.out, "run.json", "summary.json", every_host=True)  # the run folder is locked
            remove_abandoned(self.ckpt_dir, "step_????????.pt", every_host=True)
        self._barrier()
        state, path, why = None, None, []  # why: what makes the run in out_dir another run (it is then set aside)
        here = self._identity_in_out_dir()
        if choice not in RESUME_MODES:  # an explicit checkpoint: it and any run in out_dir must be this run
            path = Path(choice)
            state = load_checkpoint(path, map_location=self.dist.device)
            if not isinstance(state, dict) or "student" not in state:
                raise ValueError(f"run.resume: '{path}' is not an s2dc pretraining checkpoint (expected a "
                                 "run.out_dir/checkpoints/step_XXXXXXXX.pt)")
            self._require_same_run(state.get("identity"), f"checkpoint '{path}'", explicit=True)
            if here is not None:
                self._require_same_run(here, f"run.out_dir '{self.out}'", explicit=True)
                why = self._differences(here)  # a run of other code: kept in previous/, not overwritten
        elif choice == "never":
            why = ["--run.resume never starts afresh"]
        elif self._run_files():
            if why := self._differences(here):
                if choice == "auto":
                    self._require_same_run(here, f"run.out_dir '{self.out}'")
            elif found := list_checkpoints(self.ckpt_dir):
                path = found[-1]
                state = load_checkpoint(path, map_location=self.dist.device)
                if why := self._differences(state.get("identity")):  # run.json is this run, the checkpoint is not
                    if choice == "auto":
                        self._require_same_run(state.get("identity"), f"checkpoint '{path}'")
                    state, path = None, None
        self._barrier()  # every rank has read out_dir before it changes
        if why:
            dest = self._set_aside(why)
            if path is not None and dest is not None and self.out.resolve() in path.resolve().parents:
                path = dest / path.resolve().relative_to(self.out.resolve())  # the checkpoint moved with its run
        if state is not None:
            self.load_state_dict(state)
        return path

    #: What each file of a run in run.out_dir holds (a file of that name without it is a user's, never a run's).
    RUN_FILES = {"run.json": {"identity"}, "summary.json": {"steps", "losses_this_run", "checkpoint"}}

    def _refuse_a_users_files(self) -> None:
        """Raise ValueError, naming the file, if run.out_dir holds a run.json, summary.json or dvclive/ that no
        pretraining run wrote (a user's results): they are never moved aside, replaced or taken for a run."""
        for name, keys in self.RUN_FILES.items():
            if (self.out / name).exists() and not is_json_with(self.out / name, keys):
                self._refuse(name)
        live, ours = self.out / "dvclive", (self.out / "run.json").exists()  # run.json is written before dvclive/
        if live.exists() and not ours and not (live / "plots" / "metrics" / "pretrain").is_dir():
            self._refuse("dvclive")

    def _refuse(self, name: str) -> None:
        raise ValueError(f"run.out_dir '{self.out}' holds {name}, which no pretraining run wrote there; it never "
                         "moves, replaces or resumes from such a file: give the run a folder of its own")

    def _identity_in_out_dir(self) -> dict | None:
        path = self.out / "run.json"
        if path.is_file():
            return json.loads(path.read_text())["identity"]  # checked by _refuse_a_users_files
        found = list_checkpoints(self.ckpt_dir)
        return load_checkpoint(found[-1]).get("identity") if found else None

    def _differences(self, found: dict | None) -> list[str]:
        if found is None:
            return ["it was made by an earlier s2dc that did not record its options, data and code"]
        return run_differences(found, self.identity, self._content)

    def _require_same_run(self, found: dict | None, where: str, explicit: bool = False) -> None:
        lines = self._differences(found)
        if explicit:  # an explicitly named checkpoint may come from other code: say so, continue
            code = [line for line in lines if line.startswith(("code:", "libraries:"))]
            for line in code:
                print(f"warning: resuming {where} although {line}", file=sys.stderr)
            lines = [line for line in lines if line not in code]
        if lines:
            listed = "".join(f"\n  - {line}" for line in lines)
            raise ValueError(
                f"{where} holds another run than this one, so it cannot be resumed:{listed}\n"
                f"Resuming only continues the same run. To start afresh, pass --run.resume never (the old run is "
                f"moved to {self.out / 'previous'}/) or another --run.out_dir; --run.resume if_unchanged does this "
                "whenever the run changed (as the pipeline does).")

    def _run_files(self) -> list[Path]:
        """The files and folders of a run in ``run.out_dir`` (never the preprocessing cache or previous/)."""
        files = [self.out / n for n in ("dvclive", "summary.json", "run.json") if (self.out / n).exists()]
        return files + ([self.ckpt_dir] if list_checkpoints(self.ckpt_dir) else [])

    def _set_aside(self, why: list[str]) -> Path | None:
        """Move an earlier run's files to ``run.out_dir/previous/<UTC time>/`` (nothing is deleted), saying ``why``
        (what makes it another run); returns that folder (None on other ranks or with nothing to move)."""
        files = self._run_files()
        if not files or not self.dist.is_main:
            return None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        dest = self.out / "previous" / stamp
        n = 1
        while dest.exists():
            n += 1
            dest = self.out / "previous" / f"{stamp}-{n}"
        dest.mkdir(parents=True)
        for path in files:
            shutil.move(str(path), str(dest / path.name))
        reasons = "".join(f"\n  {line}" for line in why)
        print(f"an earlier run in {self.out} was moved to {dest}, as it is another run:{reasons}", file=sys.stderr)
        return dest

    def save(self) -> None:
        if not self.dist.is_main:
            return
        state = self.state_dict()
        bad = non_finite_tensors(state["student"]) + non_finite_tensors(state["teacher"])
        if bad:
            raise NonFiniteError(f"weights at step {self.step} are not finite ({bad[:3]}); not saved")
        atomic_save(state, checkpoint_path(self.ckpt_dir, self.step))
        prune(self.ckpt_dir, self.cfg.run.keep_last)

    # ------------------------------------------------------------------ training
    def train_step(self, roi: torch.Tensor) -> dict[str, float]:
        cfg, device, timer = self.cfg, self.dist.device, self.timer
        gen = step_generator(cfg.run.seed, self.step, self.dist.rank, stream=2)
        b, p = roi.shape[0], cfg.views.grid
        need_tokens, need_global = self.loss.needs_tokens, self.loss.needs_global
        with timer("views"):
            views = make_views(roi.to(device, non_blocking=True), cfg.views, gen)
            chosen = torch.randint(p * p, (b,), generator=gen).to(device)
        student = self.ddp or self.model
        with self.autocast():
            with timer("student_forward"):
                s_tokens, s_global = student(views.student, p, tokens=need_tokens, pooled=need_global)
            with timer("teacher_forward"):
                t_tokens = self.teacher(views.patch, p, pooled=False)[0] if need_tokens else None
                t_keys = queue_keys = None
                if need_global:
                    # The queue takes the teacher's embedding of the un-augmented chosen crop (as in the
                    # release); it rides along with the global-branch crops so BatchNorm never sees one row.
                    clean = views.student.view(b, p * p, *views.student.shape[1:])[torch.arange(b, device=device), chosen]
                    t_keys = self.teacher(torch.cat([views.crops, clean]), p, tokens=False)[1]
                    t_keys, queue_keys = t_keys[: b * p * p], t_keys[b * p * p :]
        with timer("losses_forward"):
            query = s_global.view(b, p * p, -1)[torch.arange(b, device=device), chosen] if need_global else None
            terms = self.loss(s_tokens, t_tokens, views.correspondence, cfg.views.token_grid[2],
                              query, t_keys, chosen, self.queue.negatives())
        with timer("backward"):
            self.optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
        with timer("optimizer_ema_queue"):
            grad_norm = gradient_norm(self.model.parameters(), cfg.optim.grad_clip)
            if not step_is_finite(terms["loss"], grad_norm):
                raise NonFiniteError(describe_step(self.step + 1, {k: float(v.detach()) for k, v in terms.items()},
                                                   float(grad_norm), self._divergence_hint()))
            lr = self.optimizer.param_groups[0]["lr"]
            self.optimizer.step()
            self.scheduler.step()
            self.teacher.update(self.model, momentum_at(self.step, cfg.optim.steps, cfg.ema.momentum, cfg.ema.schedule))
            if need_global:
                self.queue.push(queue_keys.float())
        self.step += 1
        out = {k: float(v.detach()) for k, v in terms.items()}
        out["lr"] = lr
        return out

    def _divergence_hint(self) -> str:
        found = list_checkpoints(self.ckpt_dir)
        last = f"The newest checkpoint, {found[-1]}, holds finite weights. " if found else ""
        clip = self.cfg.optim.grad_clip
        return (f"{last}Try a lower optim.lr (now {self.cfg.optim.lr:g})"
                + (f" or a lower optim.grad_clip (now {clip:g})." if clip > 0 else " or optim.grad_clip > 0."))

    def run(self) -> dict:
        cfg = self.cfg
        if Path(cfg.data.source).is_dir() and cfg.data.key != "training":  # a folder has no sections
            raise ValueError(f"data.key '{cfg.data.key}' names a section of a dataset.json, but data.source "
                             f"'{cfg.data.source}' is a folder, whose every .nii/.nii.gz file is read: leave data.key "
                             "unset, or give the dataset.json")
        paths = list_volumes(cfg.data.source, cfg.data.key)
        self.identity = self.run_identity(paths)
        self._content = functools.cache(lambda: volumes_sha256(paths))
        if self.dist.is_main:
            self._made_out = not self.out.exists()
            self._lock = lock_folder(self.out)
        resumed_from = self.prepare_out_dir()
        self._barrier()
        cache_root = cfg.data.cache_dir or self.out / "cache"
        volumes = CachedVolumes(paths, cfg.preprocess, cfg.views.roi_size, cache_root)
        if self.step < cfg.optim.steps:
            self._check_volumes(volumes)
        if self.dist.is_main:  # only now: a run refused for its data is no run to resume once the data is fixed
            record_content(self.identity, self._content)  # (the data's bytes, read if the run has no hash of them)
            atomic_write_text(self.out / "run.json", json.dumps({"identity": self.identity}, indent=1))
        stream = RoiStream(volumes, cfg.views.roi_size, cfg.optim.batch_size, cfg.run.seed, self.dist.rank)
        loader = torch.utils.data.DataLoader(  # its own generator: torch's global one is drop-path's (resume)
            stream, batch_size=None, sampler=range(self.step, cfg.optim.steps), num_workers=cfg.data.workers,
            pin_memory=self.dist.device.type == "cuda", persistent_workers=False,
            generator=torch.Generator().manual_seed(cfg.run.seed),
        )
        live = MetricLog(self.out / "dvclive", self.step if resumed_from else None) if self.dist.is_main else None
        progress = Progress("pretrain", cfg.optim.steps, self.step, cfg.run.log_every,
                            bar=cfg.run.progress and self.dist.is_main) if self.dist.is_main else None
        history = []
        self.model.train()
        self.teacher.net.train()
        if self._rng is not None:
            set_rng_state(self._rng)
        for roi in loader:
            metrics = self.train_step(roi)
            history.append(metrics["loss"])
            if live is not None and (self.step % cfg.run.log_every == 0 or self.step == cfg.optim.steps):
                live.log(self.step, {f"pretrain/{k}": v for k, v in metrics.items()})
            if progress is not None:
                progress.update(self.step, {"loss": metrics["loss"], **{k.removeprefix("loss_"): v for k, v in metrics.items() if k != "loss"}})
            if self.step % cfg.run.checkpoint_every == 0 or self.step == cfg.optim.steps:
                if live is not None:
                    live.close()  # the curves' summary as of the checkpoint (a run resumed after it logs nothing)
                self.save()
        if progress is not None:
            progress.close()
        summary = self._summary(history, resumed_from)
        if live is not None:
            live.close()
        self._barrier()
        return summary

    def _check_volumes(self, volumes: CachedVolumes) -> None:
        """Read and preprocess every volume before step 1 (each rank a share); a bad file stops every rank,
        named in one DataError."""
        rank, world = self.dist.rank, self.dist.world_size
        try:
            check_all(volumes, self.cfg.data.workers, "check volumes", self.cfg.run.progress and self.dist.is_main,
                      indices=range(rank, len(volumes), world))
            error = ""
        except DataError as err:
            error = str(err)
        if dist.is_initialized():
            errors = [None] * world
            dist.all_gather_object(errors, error)
            error = next((e for e in errors if e), "")
        if error:
            raise DataError(error)

    def _barrier(self) -> None:
        if dist.is_initialized():
            dist.barrier()

    def _last_checkpoint(self, resumed_from: Path | None) -> Path:
        """The checkpoint of the weights at ``self.step``: this run's, or (no step trained here) the one resumed."""
        path = checkpoint_path(self.ckpt_dir, self.step)
        return resumed_from if resumed_from is not None and not path.is_file() else path

    def _summary(self, history: list[float], resumed_from: Path | None) -> dict:
        fingerprints = [state_fingerprint(self.teacher.net)]
        if dist.is_initialized():
            gathered = [None] * self.dist.world_size
            dist.all_gather_object(gathered, fingerprints[0])
            fingerprints = gathered
        kept = self.out / "summary.json"
        if not history and resumed_from is not None and is_json_with(kept, set(self.RUN_FILES["summary.json"])):
            earlier = json.loads(kept.read_text())
            if earlier["steps"] == self.step:  # a finished run run again: nothing trained, its summary stands (the
                # losses of the process that trained them); this process's has none, and names the checkpoint where
                # it is now (the run folder may have moved since)
                return {**earlier, "losses_this_run": [], "checkpoint": str(self._last_checkpoint(resumed_from))}
        summary = {
            "steps": self.step,
            "world_size": self.dist.world_size,
            "resumed_from": str(resumed_from) if resumed_from else None,
            "losses_this_run": history,
            "teacher_fingerprint_per_rank": fingerprints,
            "checkpoint": str(self._last_checkpoint(resumed_from)),
        }
        if self.dist.is_main:
            atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=2))
        return summary


def pretrain(cfg: PretrainConfig) -> dict:
    """Train S²DC as configured; returns this process's run summary, written to ``run.out_dir/summary.json``
    (``losses_this_run``: one per step this process trained). A finished run run again trains nothing: its file keeps
    the summary of the process that trained it, and the summary returned has no losses."""
    trainer = Pretrainer(cfg)
    try:
        return trainer.run()
    except BaseException:
        # refused before its first checkpoint or output (a bad volume found by the check before step 1 leaves the
        # cache of the good ones), as a refused fine-tuning run is; or before the folder was made, where the
        # clean-up's own error must not hide the refusal
        # (only by the process that holds the folder's lock: one that lost it to a run started at the same moment
        # found no folder either, and must leave that run's lock and cache alone)
        if trainer._made_out and trainer._lock is not None and trainer.out.is_dir() and \
                {p.name for p in trainer.out.iterdir()} <= {".lock", "cache"}:
            shutil.rmtree(trainer.out, ignore_errors=True)
        raise
    finally:
        if trainer._lock is not None:
            trainer._lock.close()  # the folder is free when this returns (e.g. for the export that follows)
        if dist.is_initialized():
            dist.destroy_process_group()
