"""What the task modules share: what each declares (:class:`Task`), the data they are handed, the refusal of
validation volumes too thin for an SSIM window, windowed inference and random crops."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from monai.inferers import sliding_window_inference
from monai.transforms import Compose, RandFlipd, RandRotate90d, RandSpatialCropSamplesd

from ...data.errors import DataError
from ...data.preprocess import EXTENT, preprocess_transforms
from ...data.volumes import TransformedCases, plain
from ...messages import listed


#: How the frozen protocol (``s2dc probe``) reads a task: each token's structure from the per-voxel labels, one class
#: per volume from pooled features, or each token's mean target values (a ridge regression).
READOUTS = ("labels", "class", "values")


class Task:
    """What a task module declares besides its methods (``datasets``, ``augment``, ``build_model``, ``loss``,
    ``evaluate``; a ``values`` read-out also ``input_and_target``): the engine, the probe and its figures read
    these, never a task's name.

    ``roles``: the keys of a case it reads. ``score_key``/``score_name``/``percent``: the validation score the run
    reports (``percent``: shown x 100). ``readout``: one of :data:`READOUTS`. ``stratify_by``: the case key whose
    proportions a label-ratio subset keeps (None: a plain draw). ``picks_input_channel``: the network reads one of
    the cases' channels, chosen by ``data.input_channel`` (else every channel, and that option must stay unset).
    ``why_not_finite``: what makes its validation score NaN or infinite, for the error that stops such a run.
    ``options_section``: the fine-tuning options' section of its own (classification: ``classify``), handed to its
    constructor as ``options`` (None: the defaults); the engine refuses a section another task owns, set.
    ``steps_per_batch``: optimiser steps each training batch serves (the engine's ``StepBatches`` hands each of them
    the batch with its ``"turn"``, 0 .. steps_per_batch - 1; translation's ``inputs: cycle``).
    ``build_model(encoder, **kwargs)`` returns a network whose Swin encoder is its ``swinViT`` (where a pretrained
    encoder is loaded, trained at ``train.encoder_lr_scale`` times the rate of the rest). Each task is built as
    ``Task(doc, dataset_json, data[, options])`` from the dataset json's contents ``doc`` and its path, kept as
    ``dataset_json`` (the name its errors give)."""

    name: str
    dataset_json: Path
    roles: tuple[str, ...]
    score_key: str
    score_name: str
    percent: bool
    readout: str
    stratify_by: str | None = None
    picks_input_channel: bool = False
    why_not_finite: str = "a diverged model"
    options_section: str | None = None
    steps_per_batch: int = 1

    def check(self, s: "Setting") -> None:
        """Raise ValueError when the run's setting ``s`` does not suit the task (by default every setting does)."""

    def check_training(self, train) -> None:
        """Raise DataError when the preprocessed training cases ``train`` (the dataset :meth:`datasets` gave, each
        item read and checked) can teach the task nothing (by default any can)."""

    def check_validation(self, val, cases: list[dict]) -> None:
        """Raise DataError, naming ``cases`` (the validation cases' entries: ``id`` and files), when the preprocessed
        validation cases ``val`` give the task no score at all (by default any can be scored)."""


@dataclass(frozen=True)
class Setting:
    """What a task needs from the run: preprocessing, crop size, inference options, device, precision."""

    preprocess: Any  # PreprocessConfig
    roi_size: tuple[int, int, int]
    samples_per_volume: int
    flip_prob: float
    sw_batch_size: int
    overlap: float
    device: torch.device
    autocast: Callable
    flip_axes: tuple[int, ...] = (0, 1, 2)
    rot90_prob: float = 0.0


def cached_pair(train: list[dict], val: list[dict], s: Setting, cache_root, tag: str, transform=None,
                built_by: str | None = None):
    """Training and validation cases through one preprocessing ``transform`` (default: the image chain of
    ``s.preprocess``, padded to the crop size, each item's ``extent`` where its own voxels lie:
    :func:`~s2dc.data.preprocess.own_voxels`; ``built_by``: the module that built another), cached under ``cache_root``
    in a folder named after ``tag``, the preprocessing and its code; returns the two datasets."""
    transform = transform or preprocess_transforms(s.preprocess, s.roi_size)
    name, extra = f"{tag}-{s.preprocess.cache_key()}", {"min_size": list(s.roi_size)}
    return (TransformedCases(train, transform, cache_root, name, extra, built_by),
            TransformedCases(val, transform, cache_root, name, extra, built_by))


def refuse_thin_validation(val, cases: list[dict], dataset_json, window: int, how: str, whose: str,
                           hint: str = "") -> None:
    """Raise DataError, naming each case (its ``id``, its ``image`` file, the first of a list, and its size), when the
    own voxels (``extent``) of a preprocessed validation case of ``val`` are fewer than ``window`` along an axis: an
    SSIM window scores them, not the padding up to the crop. Only validation cases are checked (training cases are
    never scored). The message says how the task scores (``how``, e.g. ``"(translate.score brain)"``), whose window
    it is (``whose``, e.g. ``"SSIM's smallest window is"``) and ``hint``, another way out than leaving the cases out."""
    thin = []
    for i, case in enumerate(cases):
        start, stop = torch.as_tensor(val[i][EXTENT])
        if (stop - start).min() < window:
            file = case["image"][0] if isinstance(case["image"], list) else case["image"]
            thin.append(f"'{case['id']}' ('{file}', {' x '.join(map(str, (stop - start).tolist()))} voxels)")
    if thin:
        raise DataError(f"{len(thin)} of the {len(cases)} validation case(s) of '{dataset_json}' cannot be scored "
                        f"{how}: {listed(thin)}; {whose} {window} voxels along every axis, so expected validation "
                        f"volumes of at least {window} voxels along each once preprocessed (the padding up to the crop "
                        f"is not scored): leave these cases out of the validation cases{hint}")


def random_crops(keys: list[str], s: Setting) -> Compose:
    """Random ``roi_size`` crops of every key at one place (``samples_per_volume`` per volume), then flips and turns."""
    return Compose([
        RandSpatialCropSamplesd(keys, roi_size=s.roi_size, num_samples=s.samples_per_volume, random_size=False),
        *random_flips_and_turns(keys, s),
    ])


def random_flips_and_turns(keys: list[str], s: Setting) -> list:
    """A flip of every key at once along each of ``s.flip_axes``, each with probability ``s.flip_prob``; then, with
    ``s.rot90_prob`` > 0, a quarter turn of 1-3 (drawn alike) in the X-Y plane with that probability (the release's
    ``RandRotate90d(prob, max_k=3)``; none at 0, so that the other draws stay as they were)."""
    flips = [RandFlipd(keys, prob=s.flip_prob, spatial_axis=axis) for axis in s.flip_axes]
    return flips + ([RandRotate90d(keys, prob=s.rot90_prob, max_k=3)] if s.rot90_prob else [])


@torch.no_grad()
def infer(model: torch.nn.Module, image: torch.Tensor, s: Setting, mode: str = "constant") -> torch.Tensor:
    """Sliding-window prediction ``(1, K, X, Y, Z)`` float32 of one ``(C, X, Y, Z)`` image; ``mode``: how the
    overlapping windows are blended (MONAI's ``constant`` or ``gaussian``)."""
    x = plain(image)[None].to(s.device, torch.float32)
    with s.autocast():
        out = sliding_window_inference(x, s.roi_size, s.sw_batch_size, model, overlap=s.overlap, mode=mode)
    return plain(out).float()
