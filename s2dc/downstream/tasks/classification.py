"""Classification: the Swin encoder, its last-stage features averaged over space, a linear head.

Each volume is preprocessed (padded to at least the ROI); training draws random ROI crops with flips,
validation classifies the centre ROI crop. Scores: accuracy and macro one-vs-rest ROC AUC.
"""

from __future__ import annotations

from pathlib import Path

import torch
from monai.transforms import CenterSpatialCrop, Compose

from ...data.errors import DataError
from ...data.volumes import plain
from ...export import swinunetr_for
from ...models.encoder import EncoderConfig
from ..metrics import accuracy, roc_auc
from .common import Setting, Task, cached_pair, random_crops


class SwinClassifier(torch.nn.Module):
    """``swinViT`` (a SwinUNETR encoder, so pretrained weights load as for segmentation) + linear head.

    ``(B, C, X, Y, Z)`` -> logits ``(B, K)`` from the mean of the last stage's ``(B, 16 F, ...)`` features.
    """

    def __init__(self, encoder: EncoderConfig, num_classes: int, **kwargs) -> None:
        super().__init__()
        self.swinViT = swinunetr_for(encoder, out_channels=1, **kwargs).swinViT
        self.head = torch.nn.Linear(16 * encoder.feature_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.swinViT(x, normalize=True)[-1]
        return self.head(features.flatten(2).mean(dim=2))


class Classification(Task):
    name = "classification"
    roles = ("image", "class")
    score_key, score_name, percent = "accuracy", "accuracy", True
    readout, stratify_by = "class", "class"
    why_not_finite = "the model's outputs were not finite"

    def __init__(self, doc: dict, source: Path, data) -> None:
        classes = doc.get("classes")
        if not isinstance(classes, list) or len(classes) < 2:
            raise DataError(f"dataset json '{source}' has no 'classes' list of at least two class names "
                            "(e.g. [\"CN\", \"AD\"]) for classification")
        self.names = [str(c) for c in classes]
        self.source = source
        self.loss_fn = torch.nn.CrossEntropyLoss()

    def datasets(self, train: list[dict], val: list[dict], s: Setting, cache_root: Path):
        for case in (*train, *val):
            if not 0 <= case["class"] < len(self.names):
                raise DataError(f"case '{case['id']}' has class {case['class']}; the dataset's classes are "
                                f"0..{len(self.names) - 1} {self.names}")
        held = {case["class"] for case in (*train, *val)}
        if missing := [name for k, name in enumerate(self.names) if k not in held]:
            raise DataError(f"dataset json '{self.source}' declares classes {missing} that no case holds: nothing "
                            "learns or scores them; list their cases or leave them out of 'classes'")
        if len(seen := {case["class"] for case in val}) < 2:
            raise DataError(f"the validation cases of '{self.source}' hold one class only "
                            f"({[self.names[k] for k in seen]}): a model that always predicts it scores 100 % "
                            "accuracy; give validation cases of at least two classes")
        return cached_pair(train, val, s, cache_root, "cls1")

    def augment(self, s: Setting) -> Compose:
        return random_crops(["image"], s)

    def build_model(self, encoder: EncoderConfig, **kwargs) -> torch.nn.Module:
        return SwinClassifier(encoder, len(self.names), **kwargs)

    def loss(self, model: torch.nn.Module, batch: dict, s: Setting) -> torch.Tensor:
        image = plain(batch["image"]).to(s.device, torch.float32, non_blocking=True)
        target = torch.as_tensor(batch["class"]).to(s.device).long().reshape(-1)
        with s.autocast():
            logits = model(image)
        return self.loss_fn(logits.float(), target)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, val, s: Setting) -> dict:
        crop = CenterSpatialCrop(s.roi_size)
        logits, target = [], []
        for i in range(len(val)):
            item = val[i]
            x = plain(crop(plain(item["image"])))[None].to(s.device, torch.float32)
            with s.autocast():
                logits.append(model(x).float().cpu())
            target.append(int(item["class"]))
        logits_t, target_t = torch.cat(logits), torch.tensor(target)
        return {"accuracy": accuracy(logits_t, target_t), "auc": roc_auc(logits_t, target_t)}
