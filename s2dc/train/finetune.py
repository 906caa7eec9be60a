"""Segmentation fine-tuning of MONAI ``SwinUNETR(use_v2=True)``, from scratch or from an S²DC encoder.

The release's BTCV protocol (method.md §6): CT window HU [-175, 250] -> [0, 1], (1.5 mm spacing),
96³ crops centred on foreground or background voxels with equal odds, DiceCE loss, sliding-window
inference, Dice averaged over the organs. Pipeline::

    dataset.json --(label_ratio, seed)--> training cases --> split.json
    LoadImageLabeld -> Orientationd -> [Spacingd bilinear/nearest] -> [CropForegroundd] -> intensity
        -> SpatialPadd(roi) -> label to integers                      (deterministic, cached on disk)
    RandCropByPosNegLabeld(pos=1, neg=1) -> RandFlipd x3                (random, per step)
    SwinUNETR -> DiceCELoss -> AdamW (warm-up + cosine)
    validation: sliding_window_inference -> argmax -> Dice per class (ignore_empty) -> nanmean

Outputs in ``run.out_dir``: ``split.json`` (the training cases drawn), ``dvclive/``, ``model.pt``
(final weights) and, last of all, ``metrics.json``: a run that fails leaves no ``metrics.json``.
"""

from __future__ import annotations

import json
import math
import random
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.networks.utils import one_hot
from monai.transforms import Compose, RandCropByPosNegLabeld, RandFlipd

from ..data.datalist import class_names, list_cases, read_datalist
from ..data.splits import choose_subset
from ..data.volumes import LabelledCases, check_all, plain
from ..export import load_encoder_weights, swinunetr_for
from .checkpoint import atomic_save, atomic_write_text
from .device import pick_device
from .finetune_config import FinetuneConfig
from .finite import NonFiniteError, describe_step, gradient_norm, require_finite, step_is_finite
from .live import MetricLog, Progress
from .precision import autocast_for
from .schedule import warmup_cosine

KEYS = ("image", "label")


# --------------------------------------------------------------------------- training data


def train_transforms(roi_size, samples_per_volume: int, flip_prob: float) -> Compose:
    """Random crops centred on foreground or background with equal odds, then flips along each axis."""
    keys = list(KEYS)
    return Compose([
        RandCropByPosNegLabeld(keys, label_key="label", spatial_size=tuple(roi_size), pos=1, neg=1,
                               num_samples=samples_per_volume, image_key="image", image_threshold=0),
        *(RandFlipd(keys, prob=flip_prob, spatial_axis=axis) for axis in range(3)),
    ])


def _sorted(cases: list[dict]) -> list[dict]:
    """Cases by image path: the label-ratio subset then does not depend on the json's order."""
    return sorted(cases, key=lambda c: str(c["image"]))


def _forever(loader):
    while True:
        yield from loader


# --------------------------------------------------------------------------- Dice


def dice_per_class(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> np.ndarray:
    """Dice of classes 1..C-1 for one case from integer maps ``pred`` and ``label`` (same shape, e.g.
    ``(1, X, Y, Z)``); ``NaN`` where the class is absent from the ground truth (MONAI ``ignore_empty``:
    such a class is left out of the averages instead of counting as 0 or 1)."""
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    p = one_hot(pred.reshape(1, 1, *pred.shape[-3:]).long(), num_classes)
    g = one_hot(label.reshape(1, 1, *label.shape[-3:]).long(), num_classes)
    return metric(p, g)[0].float().cpu().numpy()


def summarize_dice(per_case: list[np.ndarray], names: list[str]) -> tuple[dict[str, float], float]:
    """Per-class Dice (``nanmean`` over cases) keyed by class name (background excluded) and their
    ``nanmean``; classes absent from every case are ``NaN`` and left out of the mean."""
    table = np.stack(per_case).astype(np.float64)  # (cases, C-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns -> NaN
        per_class = np.nanmean(table, axis=0)
        mean = float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")
    return {name: float(v) for name, v in zip(names[1:], per_class)}, mean


def _json_number(x: float):
    return None if x is None or not math.isfinite(x) else x


def _atomic_json(obj, path: Path) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2))


# --------------------------------------------------------------------------- engine


class Finetuner:
    """Data, SwinUNETR, loss, optimiser and schedule of one fine-tuning run; ``run()`` trains and evaluates."""

    def __init__(self, cfg: FinetuneConfig) -> None:
        self.started = time.perf_counter()
        self.cfg = cfg
        self.out = Path(cfg.run.out_dir)
        self.device = pick_device(cfg.run.device)
        source = Path(cfg.data.source)
        self.spec = read_datalist(source)
        self.names = class_names(self.spec, source)
        self.num_classes = len(self.names)
        self.all_train = _sorted(list_cases(source, cfg.data.train_key, KEYS, self.spec))
        self.train_cases = choose_subset(self.all_train, cfg.data.label_ratio, cfg.run.seed)
        self.val_cases = _sorted(list_cases(source, cfg.data.val_key, KEYS, self.spec))
        self.dataset_name = str(self.spec.get("name") or source.parent.name)

        random.seed(cfg.run.seed)
        np.random.seed(cfg.run.seed)
        torch.manual_seed(cfg.run.seed)  # same initial decoder weights for scratch and pretrained runs
        self.model = swinunetr_for(cfg.model.encoder_config(), out_channels=self.num_classes,
                                   dropout_path_rate=cfg.model.drop_path_rate, use_checkpoint=cfg.model.use_checkpoint)
        self.init_report = "scratch: random initialisation"
        if cfg.model.init != "scratch":
            self.init_report = load_encoder_weights(self.model, cfg.model.init, cfg.model.init_which,
                                                    expected=cfg.model.encoder_config())
        self.model.to(self.device)
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        encoder = list(self.model.swinViT.parameters())
        ids = {id(p) for p in encoder}
        rest = [p for p in self.model.parameters() if id(p) not in ids]
        self.optimizer = torch.optim.AdamW(
            [{"params": encoder, "lr": cfg.train.lr * cfg.train.encoder_lr_scale}, {"params": rest, "lr": cfg.train.lr}],
            weight_decay=cfg.train.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_cosine(s, cfg.train.warmup_steps, cfg.train.steps))
        self.autocast = autocast_for(self.device, cfg.train.amp, "train.amp")
        self.step = 0

    # ------------------------------------------------------------------ data
    def _datasets(self) -> tuple[LabelledCases, LabelledCases]:
        cfg = self.cfg
        cache_root = cfg.data.cache_dir or self.out / "cache"
        roi = cfg.train.roi_size
        train = LabelledCases(self.train_cases, cfg.preprocess, roi, self.num_classes, cache_root)
        val = LabelledCases(self.val_cases, cfg.preprocess, roi, self.num_classes, cache_root)
        # Preprocess (and check) every case before training: bad files fail now, naming them.
        for name, ds in (("train", train), ("val", val)):
            check_all(ds, cfg.data.workers, f"preprocess {name}", cfg.run.progress)
        return train, val

    def _train_loader(self, train: LabelledCases) -> DataLoader:
        cfg = self.cfg
        augment = train_transforms(cfg.train.roi_size, cfg.train.samples_per_volume, cfg.train.flip_prob)
        augment.set_random_state(seed=cfg.run.seed)  # workers are re-seeded by MONAI's DataLoader from `generator`
        return DataLoader(
            Dataset(train, transform=augment), batch_size=cfg.train.batch_size, shuffle=True,
            generator=torch.Generator().manual_seed(cfg.run.seed), num_workers=cfg.data.workers,
            persistent_workers=cfg.data.workers > 0, pin_memory=self.device.type == "cuda",
        )

    # ------------------------------------------------------------------ steps
    def train_step(self, batch: dict) -> dict[str, float]:
        image = plain(batch["image"]).to(self.device, torch.float32, non_blocking=True)
        label = plain(batch["label"]).to(self.device, non_blocking=True).long()
        self.model.train()
        with self.autocast():
            logits = self.model(image)
        loss = self.loss_fn(logits.float(), label)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = gradient_norm(self.model.parameters(), self.cfg.train.grad_clip)
        if not step_is_finite(loss, grad_norm):
            raise NonFiniteError(describe_step(self.step + 1, {"loss": float(loss.detach())}, float(grad_norm),
                                               f"Try a lower train.lr (now {self.cfg.train.lr:g}) or train.grad_clip > 0."))
        lr = self.optimizer.param_groups[1]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return {"loss": float(loss.detach()), "lr": lr}

    @torch.no_grad()
    def evaluate(self, val: LabelledCases) -> list[np.ndarray]:
        """Dice per class (classes 1..C-1, NaN where absent from the ground truth) of every validation case."""
        cfg = self.cfg
        self.model.eval()
        per_case = []
        for i in range(len(val)):
            item = val[i]
            image = plain(item["image"])[None].to(self.device, torch.float32)
            with self.autocast():
                logits = sliding_window_inference(image, cfg.train.roi_size, cfg.eval.sw_batch_size, self.model,
                                                  overlap=cfg.eval.overlap)
            pred = plain(logits).float().argmax(dim=1)
            per_case.append(dice_per_class(pred.cpu(), plain(item["label"]), self.num_classes))
        self.model.train()
        return per_case

    # ------------------------------------------------------------------ run
    def run(self) -> dict:
        cfg = self.cfg
        # A rerun replaces the earlier run's outputs (metrics.json, written last, goes first); DVCLive clears dvclive/.
        for name in ("metrics.json", "model.pt", "split.json"):
            (self.out / name).unlink(missing_ok=True)
        print(f"model.init: {self.init_report}", flush=True)
        train, val = self._datasets()
        _atomic_json({
            "source": str(cfg.data.source), "train_key": cfg.data.train_key, "label_ratio": cfg.data.label_ratio,
            "seed": cfg.run.seed, "available": len(self.all_train),
            "cases": [{k: str(v) for k, v in c.items()} for c in self.train_cases],
        }, self.out / "split.json")
        batches = _forever(self._train_loader(train))

        live = MetricLog(self.out / "dvclive")
        progress = Progress("finetune", cfg.train.steps, 0, cfg.train.log_every, bar=cfg.run.progress)
        history, losses, dice = [], [], ({}, float("nan"))
        while self.step < cfg.train.steps:
            metrics = self.train_step(next(batches))
            losses.append(metrics["loss"])
            if self.step % cfg.train.log_every == 0 or self.step == cfg.train.steps:
                live.log(self.step, {"train/loss": metrics["loss"], "train/lr": metrics["lr"]})
            if (cfg.eval.every and self.step % cfg.eval.every == 0) or self.step == cfg.train.steps:
                dice = summarize_dice(self.evaluate(val), self.names)
                history.append({"step": self.step, "dice_mean": _json_number(dice[1])})
                scores = {"val/dice_mean": dice[1], **{f"val/dice/{name}": v for name, v in dice[0].items()}}
                live.log(self.step, {k: v for k, v in scores.items() if math.isfinite(v)})
                metrics["dice"] = dice[1]
            progress.update(self.step, metrics)
        progress.close()
        live.close()

        weights = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        require_finite(weights, "the fine-tuned weights")
        atomic_save(weights, self.out / "model.pt")
        per_class, mean = dice
        result = {
            "task": "segmentation",
            "dataset": self.dataset_name,
            "method": cfg.method,
            "init_from": None if cfg.model.init == "scratch" else str(cfg.model.init),
            "label_ratio": cfg.data.label_ratio,
            "seed": cfg.run.seed,
            "train_cases": len(self.train_cases),
            "val_cases": len(self.val_cases),
            "steps": self.step,
            "dice_mean": _json_number(mean),
            "dice_per_class": {k: _json_number(v) for k, v in per_class.items()},
            "history": history,
            "train_loss_first_last": [losses[0], losses[-1]],
            "seconds": time.perf_counter() - self.started,
        }
        _atomic_json(result, self.out / "metrics.json")
        return result


def finetune(cfg: FinetuneConfig) -> dict:
    """Fine-tune SwinUNETR as configured; returns the metrics (also written to ``run.out_dir/metrics.json``)."""
    if not cfg.data.source:
        raise ValueError("data.source is required: pass --data.source <dataset.json with image/label pairs>")
    return Finetuner(cfg).run()
