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

import contextlib
import json
import math
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.networks.utils import one_hot
from monai.transforms import (
    CastToTyped,
    Compose,
    CropForegroundd,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandCropByPosNegLabeld,
    RandFlipd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)

from ..data.volumes import (
    DataError,
    LoadVolumed,
    PreprocessConfig,
    _above_min,
    _AtomicPersistentDataset,
    _find_data_error,
    check_all,
)
from ..export import load_encoder_weights, swinunetr_for
from .checkpoint import atomic_save, atomic_write_text
from .device import pick_device
from .finetune_config import FinetuneConfig
from .finite import NonFiniteError, describe_step, gradient_norm, require_finite, step_is_finite
from .live import MetricLog, Progress
from .precision import autocast_for
from .schedule import warmup_cosine

# Bump when the labelled preprocessing changes its output: part of the cache folder name.
_SEG_PIPELINE_VERSION = 1
KEYS = ("image", "label")


# --------------------------------------------------------------------------- dataset listing


def read_dataset(source: str | Path) -> dict:
    """Parse an MSD-style dataset.json; returns the dict. Raises :class:`DataError` naming the file."""
    source = Path(source)
    if not source.is_file():
        raise DataError(f"dataset source '{source}' is not a file; fine-tuning needs an MSD-style dataset.json "
                        "with image/label pairs and a 'labels' dict")
    try:
        spec = json.loads(source.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"could not read dataset json '{source}': {exc}") from exc
    if not isinstance(spec, dict):
        raise DataError(f"dataset json '{source}' must hold a JSON object")
    return spec


def class_names(spec: dict, source: str | Path) -> list[str]:
    """Names of classes 0..C-1 from the json's ``labels`` dict (``{"0": "background", "1": "spleen", ...}``)."""
    labels = spec.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise DataError(f"dataset json '{source}' has no 'labels' dict (e.g. {{\"0\": \"background\", \"1\": \"organ\"}})")
    try:
        by_index = {int(k): str(v) for k, v in labels.items()}
    except (TypeError, ValueError):
        raise DataError(f"'labels' of dataset json '{source}' must have integer keys, got {sorted(labels)}") from None
    if sorted(by_index) != list(range(len(by_index))) or len(by_index) < 2:
        raise DataError(f"'labels' of dataset json '{source}' must number the classes 0..C-1 (C >= 2, 0 = background), "
                        f"got {sorted(by_index)}")
    return [by_index[i] for i in range(len(by_index))]


def list_cases(source: str | Path, key: str, spec: dict | None = None) -> list[dict[str, Path]]:
    """``[{"image": Path, "label": Path}, ...]`` of section ``key``, sorted by image path.

    Relative paths are resolved against the json's folder. Raises :class:`DataError` for a missing
    section (listing the available ones), an entry without image or label, or a file that does not
    exist (naming it, its role and the json).
    """
    source = Path(source)
    spec = read_dataset(source) if spec is None else spec
    if key not in spec:
        raise DataError(f"dataset json '{source}' has no section '{key}'; available sections: {sorted(spec)}")
    entries = spec[key]
    if not isinstance(entries, list) or not entries:
        raise DataError(f"section '{key}' of dataset json '{source}' must be a non-empty list of {{image, label}} entries")
    cases = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) and entry.get(k) for k in KEYS):
            raise DataError(f"entry {i} of section '{key}' in dataset json '{source}' must be a dict with 'image' "
                            f"and 'label' paths, got {entry!r}")
        case = {}
        for role in KEYS:
            rel = Path(entry[role])
            path = Path(os.path.normpath(rel if rel.is_absolute() else source.parent / rel))
            if not path.is_file():
                extra = f" (image '{case['image']}')" if role == "label" else ""
                raise DataError(f"{role} '{path}'{extra} listed in section '{key}' of dataset json '{source}' does not exist")
            case[role] = path
        cases.append(case)
    return sorted(cases, key=lambda c: str(c["image"]))


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def choose_subset(cases: list, ratio: float, seed: int) -> list:
    """The first ``round(ratio * n)`` (>= 1) cases of a permutation drawn by ``numpy.random.default_rng(seed)``,
    in their original order.

    The same ``(cases, ratio, seed)`` always gives the same subset, and for one seed the subsets are
    nested: every case drawn at a ratio is also drawn at any larger ratio.
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"label ratio must be in (0, 1], got {ratio}")
    n = len(cases)
    k = min(n, max(1, round_half_up(ratio * n)))
    order = np.random.default_rng(seed).permutation(n)
    return [cases[i] for i in sorted(order[:k].tolist())]


# --------------------------------------------------------------------------- checked loading


class LoadImageLabeld(MapTransform):
    """Load ``data["image"]`` (checked like :class:`LoadVolumed`) and ``data["label"]`` and check the pair.

    The label comes out as a float32 ``(1, X, Y, Z)`` MetaTensor carrying the *image's* affine, so that
    every spatial transform treats both alike (a differing label affine only warns). Raises
    :class:`DataError` naming the label and its image when the label cannot be read, is not 3-D, has
    another shape than the image, or holds values other than the integers ``0 .. data["num_classes"]-1``.
    """

    def __init__(self) -> None:
        super().__init__(list(KEYS))

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        image_path, label_path = Path(d["image"]), Path(d["label"])
        image = LoadVolumed.load(image_path)
        d["image"] = image
        d["label"] = self.load_label(label_path, image_path, image, int(d["num_classes"]))
        return d

    @staticmethod
    def load_label(path: Path, image_path: Path, image: MetaTensor, num_classes: int) -> MetaTensor:
        try:
            img = nib.load(str(path))
            shape = tuple(int(s) for s in img.shape)
            while len(shape) > 3 and shape[-1] == 1:
                shape = shape[:-1]
            array = np.asarray(img.get_fdata(dtype=np.float32)).reshape(shape)
            affine = np.asarray(img.affine, dtype=np.float64)
        except Exception as exc:  # nibabel, gzip, zlib, EOFError, OSError, ...
            raise DataError(f"could not read label '{path}' of image '{image_path}': {type(exc).__name__}: {exc}; "
                            "expected a readable NIfTI volume (.nii or .nii.gz)") from exc
        image_shape = tuple(image.shape[1:])
        if shape != image_shape:
            raise DataError(f"label '{path}' has shape {shape} but its image '{image_path}' has shape {image_shape}; "
                            "a label must be on the image's voxel grid")
        if not np.isfinite(array).all() or (array != np.round(array)).any() or array.min() < 0 or array.max() >= num_classes:
            finite = array[np.isfinite(array)]
            bad = np.unique(finite[(finite != np.round(finite)) | (finite < 0) | (finite >= num_classes)])
            shown = [int(v) if v == round(v) else float(v) for v in bad[:10]] + (["..."] if len(bad) > 10 else [])
            nonfinite = int(array.size - finite.size)
            raise DataError(f"label '{path}' of image '{image_path}' must hold the integers 0..{num_classes - 1} "
                            f"of the dataset json's 'labels'; it holds {len(bad)} other value(s): {shown}"
                            + (f" and {nonfinite} NaN/Inf voxel(s)" if nonfinite else ""))
        image_affine = image.affine.numpy()
        if not np.allclose(affine, image_affine, atol=1e-3):
            warnings.warn(f"label '{path}' has another affine than its image '{image_path}'; using the image's")
        meta = {"filename_or_obj": str(path), "space": "RAS", "original_channel_dim": "no_channel"}
        return MetaTensor(torch.from_numpy(np.ascontiguousarray(array))[None], affine=torch.as_tensor(image_affine), meta=meta)


def seg_preprocess_transforms(cfg: PreprocessConfig, min_size: tuple[int, int, int], num_classes: int) -> Compose:
    """Deterministic MONAI dict transforms ``{"image", "label", "num_classes"}`` -> image float32 in [0, 1]
    (or z-scored) and integer label, both ``(1, X, Y, Z)`` with ``X, Y, Z >= min_size``.

    Same steps as :func:`s2dc.data.volumes.preprocess_transforms`; the label follows the image through
    orientation, spacing (nearest neighbour), the image's foreground crop and zero padding (background).
    """
    keys = list(KEYS)
    transforms: list = [LoadImageLabeld(), Orientationd(keys, axcodes=cfg.orientation, labels=None)]
    if cfg.spacing is not None:
        transforms.append(Spacingd(keys, pixdim=cfg.spacing, mode=("bilinear", "nearest")))
    if cfg.crop_foreground:
        transforms.append(CropForegroundd(keys, source_key="image", select_fn=_above_min,
                                          start_coord_key=None, end_coord_key=None))
    if cfg.intensity == "ct":
        transforms.append(ScaleIntensityRanged("image", a_min=cfg.a_min, a_max=cfg.a_max, b_min=0.0, b_max=1.0, clip=True))
    else:
        transforms.append(NormalizeIntensityd("image", nonzero=True, channel_wise=True))
    transforms.append(SpatialPadd(keys, spatial_size=tuple(min_size), mode="constant", value=0))
    transforms.append(CastToTyped("label", dtype=torch.uint8 if num_classes <= 256 else torch.int16))
    return Compose(transforms)


def train_transforms(roi_size, samples_per_volume: int, flip_prob: float) -> Compose:
    """Random crops centred on foreground or background with equal odds, then flips along each axis."""
    keys = list(KEYS)
    return Compose([
        RandCropByPosNegLabeld(keys, label_key="label", spatial_size=tuple(roi_size), pos=1, neg=1,
                               num_samples=samples_per_volume, image_key="image", image_threshold=0),
        *(RandFlipd(keys, prob=flip_prob, spatial_axis=axis) for axis in range(3)),
    ])


class _Checked(torch.utils.data.Dataset):
    """Index into a MONAI dataset, re-raising a :class:`DataError` unwrapped from MONAI's transform errors."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        try:
            return self.dataset[i]
        except Exception as exc:
            err = _find_data_error(exc)
            if err is None:
                raise
        raise err


class SegmentationCases(_Checked):
    """Preprocessed ``{"image", "label"}`` cases, cached on disk under ``cache_root/seg<v>-<hash>``.

    Each cache entry is keyed by both paths, their sizes and mtimes, ``min_size`` and the class count,
    so replaced files, another ROI or another class list are recomputed.
    """

    def __init__(self, cases: list[dict[str, Path]], cfg: PreprocessConfig, min_size, num_classes: int,
                 cache_root: str | Path | None) -> None:
        items = [self._item(c, min_size, num_classes) for c in cases]
        transform = seg_preprocess_transforms(cfg, tuple(min_size), num_classes)
        if cache_root is None:
            self.cache_dir = None
            dataset = Dataset(items, transform=transform)
        else:
            self.cache_dir = Path(cache_root) / f"seg{_SEG_PIPELINE_VERSION}-{cfg.cache_key()}"
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            dataset = _AtomicPersistentDataset(items, transform=transform, cache_dir=self.cache_dir)
        super().__init__(dataset)

    @staticmethod
    def _item(case: dict[str, Path], min_size, num_classes: int) -> dict[str, Any]:
        item: dict[str, Any] = {"image": str(case["image"]), "label": str(case["label"]),
                                "min_size": [int(s) for s in min_size], "num_classes": int(num_classes)}
        for role in KEYS:
            with contextlib.suppress(OSError):  # a vanished file is reported by the loader
                st = Path(case[role]).stat()
                item.update({f"{role}_size": st.st_size, f"{role}_mtime_ns": st.st_mtime_ns})
        return item


def _plain(x) -> torch.Tensor:
    return x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)


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
        self.spec = read_dataset(source)
        self.names = class_names(self.spec, source)
        self.num_classes = len(self.names)
        self.all_train = list_cases(source, cfg.data.train_key, self.spec)
        self.train_cases = choose_subset(self.all_train, cfg.data.label_ratio, cfg.run.seed)
        self.val_cases = list_cases(source, cfg.data.val_key, self.spec)
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
    def _datasets(self) -> tuple[SegmentationCases, SegmentationCases]:
        cfg = self.cfg
        cache_root = cfg.data.cache_dir or self.out / "cache"
        roi = cfg.train.roi_size
        train = SegmentationCases(self.train_cases, cfg.preprocess, roi, self.num_classes, cache_root)
        val = SegmentationCases(self.val_cases, cfg.preprocess, roi, self.num_classes, cache_root)
        # Preprocess (and check) every case before training: bad files fail now, naming them.
        for name, ds in (("train", train), ("val", val)):
            check_all(ds, cfg.data.workers, f"preprocess {name}", cfg.run.progress)
        return train, val

    def _train_loader(self, train: SegmentationCases) -> DataLoader:
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
        image = _plain(batch["image"]).to(self.device, torch.float32, non_blocking=True)
        label = _plain(batch["label"]).to(self.device, non_blocking=True).long()
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
    def evaluate(self, val: SegmentationCases) -> list[np.ndarray]:
        """Dice per class (classes 1..C-1, NaN where absent from the ground truth) of every validation case."""
        cfg = self.cfg
        self.model.eval()
        per_case = []
        for i in range(len(val)):
            item = val[i]
            image = _plain(item["image"])[None].to(self.device, torch.float32)
            with self.autocast():
                logits = sliding_window_inference(image, cfg.train.roi_size, cfg.eval.sw_batch_size, self.model,
                                                  overlap=cfg.eval.overlap)
            pred = _plain(logits).float().argmax(dim=1)
            per_case.append(dice_per_class(pred.cpu(), _plain(item["label"]), self.num_classes))
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
