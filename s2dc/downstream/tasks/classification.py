"""Classification: the Swin encoder, its last-stage features averaged over space, a linear head (or the release's
two linear layers, ``classify.head_hidden``).

What the network sees (``classify.view``): ``crops``, each volume preprocessed (padded to at least the ROI),
``train.samples_per_volume`` random ROI crops with flips in training; ``whole``, the release's CC-CCII input, each
volume cropped in plane to a centred box (moved at random in training, ``train.samples_per_volume`` draws) and
resized to the ROI by nearest neighbour, then flipped. Training may also jitter the intensities
(``classify.brightness``, ``classify.contrast``). In validation a volume is classified by the mean logits of every
ROI window of it, ``eval.overlap`` apart, ``eval.sw_batch_size`` a forward pass, as the other tasks slide theirs
(a ``whole`` view is one ROI: one window). Scores: accuracy and macro one-vs-rest ROC AUC.
"""

from __future__ import annotations

from pathlib import Path

import torch
from monai.data.utils import dense_patch_slices
from monai.transforms import (Compose, MapTransform, Randomizable, RandScaleIntensityd, RandShiftIntensityd, Resized,
                              ScaleIntensityRanged, Transform)

from ...data.errors import DataError
from ...data.preprocess import preprocess_transforms
from ...data.volumes import TransformedCases, plain
from ...export import swinunetr_for
from ...models.encoder import EncoderConfig
from ...train.finetune_config import ClassifyConfig
from ..metrics import accuracy, roc_auc
from .common import Setting, Task, cached_pair, random_crops, random_flips_and_turns


class SwinClassifier(torch.nn.Module):
    """``swinViT`` (a SwinUNETR encoder, so pretrained weights load as for segmentation) + a linear head, or with
    ``head_hidden`` > 0 two linear layers (``16 F -> head_hidden -> K``, nothing between: the release's CC-CCII head).

    ``(B, C, X, Y, Z)`` -> logits ``(B, K)`` from the mean of the last stage's ``(B, 16 F, ...)`` features.
    """

    def __init__(self, encoder: EncoderConfig, num_classes: int, head_hidden: int = 0, **kwargs) -> None:
        super().__init__()
        self.swinViT = swinunetr_for(encoder, out_channels=1, **kwargs).swinViT
        width = 16 * encoder.feature_size
        self.head = torch.nn.Linear(width, num_classes) if not head_hidden else torch.nn.Sequential(
            torch.nn.Linear(width, head_hidden), torch.nn.Linear(head_hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.swinViT(x, normalize=True)[-1]
        return self.head(features.flatten(2).mean(dim=2))


class InPlaneBoxd(Randomizable, MapTransform):
    """Crop ``keys`` of ``(C, X, Y, Z)`` in plane to a box of ``fraction`` of the X and Y sizes (rounded), centred
    and moved along X and Y by a whole number of voxels drawn uniformly from ``[-m, m]``, ``m`` = ``shift`` times
    the size (rounded), kept inside the volume; Z whole. ``shift`` 0: the centred box, nothing drawn."""

    def __init__(self, keys, fraction: float, shift: float = 0.0) -> None:
        MapTransform.__init__(self, keys)
        self.fraction, self.shift = fraction, shift
        self._moves = (0, 0)

    def randomize(self, sizes: tuple[int, int]) -> None:
        """Draw the moves along X and Y for a volume of in-plane ``sizes``."""
        self._moves = tuple(int(self.R.randint(-m, m + 1)) if (m := round(self.shift * n)) else 0 for n in sizes)

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        sizes = plain(d[self.keys[0]]).shape[1:3]
        self.randomize(sizes)
        boxes = [max(1, round(self.fraction * n)) for n in sizes]
        x, y = (min(max((n - box) // 2 + move, 0), n - box) for n, box, move in zip(sizes, boxes, self._moves))
        for key in self.key_iterator(d):
            d[key] = plain(d[key])[:, x:x + boxes[0], y:y + boxes[1]]
        return d


class Views(Transform):
    """``n`` copies of a case (a list), each of which the transforms after it in a ``Compose`` draw apart: the whole
    view's ``train.samples_per_volume``, as ``RandSpatialCropSamplesd`` gives the crops'."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, data: dict) -> list[dict]:
        return [dict(data) for _ in range(self.n)]


def windows(shape: tuple[int, ...], roi: tuple[int, ...], overlap: float) -> list[tuple[slice, ...]]:
    """The ROI windows of a volume of ``shape`` (X, Y, Z), at least the ROI, that MONAI's sliding-window inference
    visits: ``int(roi (1 - overlap))`` apart (the whole axis where it is one ROI), the last moved inside."""
    interval = tuple(r if n == r else max(int(r * (1 - overlap)), 1) for n, r in zip(shape, roi))
    return dense_patch_slices(shape, roi, interval)


def resized_to_roi(s: Setting) -> Resized:
    """The whole view's resize of ``image`` to the ROI: nearest neighbour at voxel centres (``nearest-exact``)."""
    return Resized("image", s.roi_size, mode="nearest-exact")


class Classification(Task):
    name = "classification"
    roles = ("image", "class")
    score_key, score_name, percent = "accuracy", "accuracy", True
    readout, stratify_by = "class", "class"
    why_not_finite = "the model's outputs were not finite"
    options_section = "classify"

    def __init__(self, doc: dict, dataset_json: Path, data, options: ClassifyConfig | None = None) -> None:
        self.options = options or ClassifyConfig()
        classes = doc.get("classes")
        if not isinstance(classes, list) or len(classes) < 2:
            raise DataError(f"dataset json '{dataset_json}' has no 'classes' list of at least two class names "
                            "(e.g. [\"CN\", \"AD\"]) for classification")
        self.names = [str(c) for c in classes]
        self.dataset_json = dataset_json
        self.loss_fn = torch.nn.CrossEntropyLoss()

    def datasets(self, train: list[dict], val: list[dict], s: Setting, cache_root: Path):
        for case in (*train, *val):
            if not 0 <= case["class"] < len(self.names):
                raise DataError(f"case '{case['id']}' has class {case['class']}; the dataset's classes are "
                                f"0..{len(self.names) - 1} {self.names}")
        held = {case["class"] for case in (*train, *val)}
        if missing := [name for k, name in enumerate(self.names) if k not in held]:
            raise DataError(f"dataset json '{self.dataset_json}' declares classes {missing} that no case holds: "
                            "nothing learns or scores them; list their cases or leave them out of 'classes'")
        if len(seen := {case["class"] for case in train}) < 2:
            raise DataError(f"the training cases of '{self.dataset_json}' hold one class only "
                            f"({[self.names[k] for k in seen]}): a classifier trained on them always predicts it; "
                            "give training cases of at least two classes")
        if len(seen := {case["class"] for case in val}) < 2:
            raise DataError(f"the validation cases of '{self.dataset_json}' hold one class only "
                            f"({[self.names[k] for k in seen]}): a model that always predicts it scores 100 % "
                            "accuracy; give validation cases of at least two classes")
        if self.options.view == "crops":
            return cached_pair(train, val, s, cache_root, "cls1")
        # The whole view: training caches the preprocessed volumes (padded to nothing: a box is a fraction of the
        # scan), validation its centred box resized to the ROI, the one view each case is classified from.
        whole = preprocess_transforms(s.preprocess, (1, 1, 1))
        name = f"cls1-whole-{s.preprocess.cache_key()}"
        centred = Compose([whole, InPlaneBoxd("image", self.options.in_plane),
                           resized_to_roi(s)])
        return (TransformedCases(train, whole, cache_root, name, {"min_size": [1, 1, 1]}),
                TransformedCases(val, centred, cache_root, f"{name}-val",
                                 {"in_plane": self.options.in_plane, "size": list(s.roi_size)}, __name__))

    def augment(self, s: Setting) -> Compose:
        """Random crops and flips (``crops``) or the moved box, resized, and flips (``whole``), then the intensity
        jitter if any (one offset and one factor a crop: they commute with the crop, the resize and the flips)."""
        o, jitter = self.options, []
        if o.brightness:
            jitter.append(RandShiftIntensityd("image", offsets=o.brightness, prob=1.0))
        if o.contrast:
            jitter.append(RandScaleIntensityd("image", factors=o.contrast, prob=1.0))
        if jitter and s.preprocess.intensity == "ct":  # the window's [0, 1], as the release clips
            jitter.append(ScaleIntensityRanged("image", a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True))
        if o.view == "crops":
            return Compose([*random_crops(["image"], s).transforms, *jitter])
        return Compose([Views(s.samples_per_volume), InPlaneBoxd("image", o.in_plane, o.shift), resized_to_roi(s),
                        *random_flips_and_turns(["image"], s), *jitter])

    def build_model(self, encoder: EncoderConfig, **kwargs) -> torch.nn.Module:
        return SwinClassifier(encoder, len(self.names), self.options.head_hidden, **kwargs)

    def loss(self, model: torch.nn.Module, batch: dict, s: Setting) -> torch.Tensor:
        image = plain(batch["image"]).to(s.device, torch.float32, non_blocking=True)
        target = torch.as_tensor(batch["class"]).to(s.device).long().reshape(-1)
        with s.autocast():
            logits = model(image)
        return self.loss_fn(logits.float(), target)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, val, s: Setting) -> dict:
        logits, target = [], []
        for i in range(len(val)):
            item = val[i]
            image = plain(item["image"])
            crops = torch.stack([image[(slice(None), *w)] for w in windows(image.shape[1:], s.roi_size, s.overlap)])
            case = []
            for batch in crops.split(s.sw_batch_size):
                with s.autocast():
                    case.append(model(batch.to(s.device, torch.float32)).float().cpu())
            logits.append(torch.cat(case).mean(dim=0, keepdim=True))  # (1, K): the windows' mean
            target.append(int(item["class"]))
        logits_t, target_t = torch.cat(logits), torch.tensor(target)
        return {"accuracy": accuracy(logits_t, target_t), "auc": roc_auc(logits_t, target_t)}
