"""Segmentation: SwinUNETR, DiceCE loss, Dice per class (the release's BTCV training protocol) or per region.

Training crops are centred on foreground or background with equal odds (``RandCropByPosNegLabeld``),
then flipped; validation is sliding-window inference, arg-max, Dice per class and its mean over the classes, on the
volume's own voxels (a volume smaller than the crop is zero-padded to it; the padding, no part of the patient, is not
scored: a prediction of foreground there would count as false positives).
A class absent from a case's ground truth is left out of that case (MONAI ``DiceMetric``'s ``ignore_empty``, as
the release's BraTS 2021 validation has it), whatever is predicted there; the release's BTCV ``test.py`` scores
such an organ 0 instead, which lowers a mean over organs that some cases lack. A dataset.json with ``regions`` (BraTS: tumour core = labels {1, 4}, whole
tumour = {1, 2, 4}, enhancing tumour = {4}) is segmented into those overlapping regions instead: one
sigmoid channel each, Dice + binary cross-entropy, Dice per region of the thresholded (> 0.5) maps.
"""

from __future__ import annotations

from pathlib import Path

import torch
from monai.losses import DiceCELoss
from monai.transforms import (Compose, DeleteItemsd, RandCropByPosNegLabeld, RandScaleIntensityd,
                              RandShiftIntensityd, Transform)

from ...data.datalist import class_names
from ...data.errors import DataError
from ...data.preprocess import EXTENT, own_voxels
from ...data.volumes import LabelledCases, plain
from ...export import swinunetr_for
from ...messages import listed
from ...models.encoder import EncoderConfig
from ..metrics import dice_per_class, dice_per_region, summarize_dice
from ...train.finetune_config import SegmentConfig
from .common import Setting, Task, infer, random_flips_and_turns

KEYS = ["image", "label"]


class BodyMaskd(Transform):
    """``d["body"]`` = (1, X, Y, Z) float, 1 where any channel of ``d["image"]`` is non-zero: inside the body after
    either intensity preset (a CT window scaled to 0..1 puts air at 0, z-scoring keeps the zero background at 0 and
    makes half the body negative), where a background crop may be centred."""

    def __call__(self, d: dict) -> dict:
        return {**d, "body": (plain(d["image"]) != 0).any(0, keepdim=True).float()}


class Segmentation(Task):
    name = "segmentation"
    roles = ("image", "label")
    score_key, score_name, percent = "dice_mean", "Dice", True
    readout = "labels"
    why_not_finite = "a Dice is NaN where no validation case holds a class of its labels"

    options_section = "segment"

    def __init__(self, doc: dict, dataset_json: Path, data, options: SegmentConfig | None = None) -> None:
        self.options = options or SegmentConfig()
        self.dataset_json = dataset_json
        regions = doc.get("regions")
        if regions:
            self.regions = _regions(regions, doc, dataset_json)
            self.names = ["background", *self.regions]
            self.num_classes = max(v for values in self.regions.values() for v in values) + 1  # label values
            self.values = sorted(int(k) for k in doc["labels"])  # those of the json's labels only (not 3 of 0..4)
            self.out_channels = len(self.regions)
            self.loss_fn = DiceCELoss(sigmoid=True)
        else:
            self.regions = {}
            self.names = class_names(doc, dataset_json)
            self.num_classes = self.out_channels = len(self.names)
            self.values = None  # 0..C-1
            self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)

    def check_training(self, train) -> None:
        """Refuse training labels that are background in every voxel: nothing to learn to find (stops at the first
        case that holds a structure)."""
        if not any(bool((plain(train[i]["label"]) > 0).any()) for i in range(len(train))):
            raise DataError(f"the training labels of '{self.dataset_json}' hold background only ({len(train)} case(s), "
                            "every voxel 0): a network trained on them learns no structure; label the training "
                            "cases, or take more of them (data.label_ratio)")

    def check_validation(self, val, cases: list[dict]) -> None:
        """Refuse validation labels of which no voxel, in any case, holds a class (a region): every Dice would be NaN,
        no score (stops at the first case that holds one)."""
        if any(self._holds_a_structure(plain(val[i]["label"])) for i in range(len(val))):
            return
        what = (f"regions {', '.join(f'{n!r} (labels {list(v)})' for n, v in self.regions.items())}" if self.regions
                else f"classes {', '.join(f'{n!r} ({k})' for k, n in enumerate(self.names) if k)}")
        shown = listed([f"'{c['id']}' ('{c['label']}')" for c in cases])
        raise DataError(f"the validation labels of '{self.dataset_json}' hold none of its {what}: no voxel of its "
                        f"{len(cases)} validation case(s) {shown} is labelled with one, so no Dice can be scored; "
                        "expected at least one validation case whose label holds one: label them, or give other "
                        "validation cases")

    def _holds_a_structure(self, label: torch.Tensor) -> bool:
        """Does a preprocessed label map hold a voxel of a class (of a region, with ``regions``)?"""
        if self.regions:
            return bool(self.region_maps(label[None].long()).any())
        return bool((label > 0).any())

    def check(self, s: Setting) -> None:
        """Refuse background crops on volumes without a zero background (``zscore_volume``): the body they must
        fall in is the non-zero voxels (:class:`BodyMaskd`), which would then be every voxel."""
        if s.preprocess.intensity == "zscore_volume" and self.options.neg:
            raise ValueError("preprocess.intensity zscore_volume leaves no zero background, so the background crops "
                             f"(segment.neg {self.options.neg:g}) could not be kept inside the body (its non-zero "
                             "voxels): use preprocess.intensity zscore, or segment.neg 0")

    def region_maps(self, label: torch.Tensor) -> torch.Tensor:
        """``(B, 1, ...)`` label values -> ``(B, R, ...)`` float masks of the regions."""
        return torch.cat([torch.isin(label, torch.tensor(v, device=label.device)) for v in self.regions.values()],
                         dim=1).float()

    def datasets(self, train: list[dict], val: list[dict], s: Setting, cache_root: Path):
        return (LabelledCases(train, s.preprocess, s.roi_size, self.num_classes, cache_root, self.values),
                LabelledCases(val, s.preprocess, s.roi_size, self.num_classes, cache_root, self.values))

    def augment(self, s: Setting) -> Compose:
        """Random crops centred on foreground or background (inside the body) at the odds ``segment.pos`` :
        ``segment.neg`` (default 1 : 1), then flips (``train.flip_axes``) and quarter turns (``train.rot90_prob``),
        then the intensity factor and offset of ``segment.intensity_*`` where set."""
        o = self.options
        jitter = []
        if o.intensity_scale:
            jitter.append(RandScaleIntensityd("image", factors=o.intensity_scale, prob=o.intensity_scale_prob))
        if o.intensity_shift:
            jitter.append(RandShiftIntensityd("image", offsets=o.intensity_shift, prob=o.intensity_shift_prob))
        return Compose([
            BodyMaskd(),
            RandCropByPosNegLabeld(KEYS, label_key="label", spatial_size=tuple(s.roi_size), pos=o.pos, neg=o.neg,
                                   num_samples=s.samples_per_volume, image_key="body", image_threshold=0),
            DeleteItemsd("body"),
            *random_flips_and_turns(KEYS, s),
            *jitter,
        ])

    def build_model(self, encoder: EncoderConfig, **kwargs) -> torch.nn.Module:
        return swinunetr_for(encoder, out_channels=self.out_channels, **kwargs)

    def loss(self, model: torch.nn.Module, batch: dict, s: Setting) -> torch.Tensor:
        image = plain(batch["image"]).to(s.device, torch.float32, non_blocking=True)
        label = plain(batch["label"]).to(s.device, non_blocking=True).long()
        with s.autocast():
            logits = model(image)
        return self.loss_fn(logits.float(), self.region_maps(label) if self.regions else label)

    def evaluate(self, model: torch.nn.Module, val, s: Setting) -> dict:
        """Dice per class (or region) of each validation case on its own voxels (the padding cut off: ``extent``),
        then :func:`~s2dc.downstream.metrics.summarize_dice` over the cases."""
        per_case = []
        for i in range(len(val)):
            item = val[i]
            logits = own_voxels(infer(model, item["image"], s).cpu(), item[EXTENT])  # (1, K, X', Y', Z')
            label = own_voxels(plain(item["label"]), item[EXTENT])  # (1, X', Y', Z')
            if self.regions:
                per_case.append(dice_per_region(logits > 0, self.region_maps(label[None].long())))
            else:
                per_case.append(dice_per_class(logits.argmax(dim=1), label, self.num_classes))
        per_class, mean = summarize_dice(per_case, self.names)
        return {"dice_mean": mean, "dice_per_class": per_class}


def _regions(regions, doc: dict, source: Path) -> dict[str, tuple[int, ...]]:
    """``{"name": [label values]}`` of a dataset.json, checked against its ``labels``."""
    labels = doc.get("labels", {})
    try:
        labels = {int(k) for k in labels} if isinstance(labels, dict) else None
    except ValueError:
        labels = None
    if labels is None:
        raise DataError(f"'labels' of dataset json '{source}' must be a dict with integer keys (e.g. "
                        f"{{\"0\": \"background\", \"1\": \"necrosis\"}}), got {doc.get('labels')!r}")
    ok = isinstance(regions, dict) and all(
        isinstance(v, list) and v and all(isinstance(x, int) and x in labels - {0} for x in v) for v in regions.values())
    if not ok:
        raise DataError(f"'regions' of dataset json '{source}' must map each region to a list of its non-background "
                        f"label values {sorted(labels - {0})}, got {regions!r}")
    return {str(k): tuple(v) for k, v in regions.items()}
