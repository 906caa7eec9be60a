"""Segmentation: SwinUNETR, DiceCE loss, Dice per class (the release's BTCV protocol).

Training crops are centred on foreground or background with equal odds (``RandCropByPosNegLabeld``),
then flipped; validation is sliding-window inference, arg-max, Dice per class (``ignore_empty``) and
its mean over the classes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from monai.losses import DiceCELoss
from monai.transforms import Compose, RandCropByPosNegLabeld, RandFlipd

from ...data.datalist import class_names
from ...data.volumes import LabelledCases, plain
from ...export import swinunetr_for
from ...models.encoder import EncoderConfig
from ..metrics import dice_per_class, summarize_dice
from .common import Setting, infer

KEYS = ["image", "label"]


class Segmentation:
    name = "segmentation"
    roles = ("image", "label")
    score_key, score_name, percent = "dice_mean", "Dice", True

    def __init__(self, doc: dict, source: Path, data) -> None:
        self.names = class_names(doc, source)
        self.num_classes = len(self.names)
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)

    def datasets(self, train: list[dict], val: list[dict], s: Setting, cache_root: Path):
        return (LabelledCases(train, s.preprocess, s.roi_size, self.num_classes, cache_root),
                LabelledCases(val, s.preprocess, s.roi_size, self.num_classes, cache_root))

    def augment(self, s: Setting) -> Compose:
        """Random crops centred on foreground or background with equal odds, then flips along each axis."""
        return Compose([
            RandCropByPosNegLabeld(KEYS, label_key="label", spatial_size=tuple(s.roi_size), pos=1, neg=1,
                                   num_samples=s.samples_per_volume, image_key="image", image_threshold=0),
            *(RandFlipd(KEYS, prob=s.flip_prob, spatial_axis=axis) for axis in range(3)),
        ])

    def build_model(self, encoder: EncoderConfig, **kwargs) -> torch.nn.Module:
        return swinunetr_for(encoder, out_channels=self.num_classes, **kwargs)

    def loss(self, model: torch.nn.Module, batch: dict, s: Setting) -> torch.Tensor:
        image = plain(batch["image"]).to(s.device, torch.float32, non_blocking=True)
        label = plain(batch["label"]).to(s.device, non_blocking=True).long()
        with s.autocast():
            logits = model(image)
        return self.loss_fn(logits.float(), label)

    def evaluate(self, model: torch.nn.Module, val, s: Setting) -> dict:
        per_case = []
        for i in range(len(val)):
            item = val[i]
            pred = infer(model, item["image"], s).argmax(dim=1)
            per_case.append(dice_per_class(pred.cpu(), plain(item["label"]), self.num_classes))
        per_class, mean = summarize_dice(per_case, self.names)
        return {"dice_mean": mean, "dice_per_class": per_class}
