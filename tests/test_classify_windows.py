"""Classification scores a validation volume by every ROI window of it (eval.overlap apart, eval.sw_batch_size a
forward pass), their logits averaged; it scored the centre ROI crop alone, and took eval.overlap and sw_batch_size
without a word. Under ``classify.view whole`` a validation case is one ROI (one window); in training each volume
gives ``train.samples_per_volume`` random views, as crops do (it gave one, whatever the option said)."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch

from s2dc.data.preprocess import PreprocessConfig
from s2dc.downstream.tasks.classification import Classification
from s2dc.downstream.tasks.common import Setting
from s2dc.train.finetune_config import ClassifyConfig


class MeanLogits(torch.nn.Module):
    """Logits (B, 2) = (m, -m) of each window's mean intensity m; records the batch sizes it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        m = x.mean(dim=(1, 2, 3, 4))
        return torch.stack([m, -m], dim=1)


def _setting(overlap: float, sw_batch_size: int) -> Setting:
    return Setting(PreprocessConfig(intensity="zscore"), (8, 8, 8), 1, 0.0, sw_batch_size, overlap,
                   torch.device("cpu"), nullcontext)


def _task(**options) -> Classification:
    return Classification({"classes": ["a", "b"]}, "dataset.json", None, ClassifyConfig(**options))


def test_a_volume_is_classified_by_all_its_windows_not_its_centre():
    # class a (positive mean): its two ends are 3, its centre -1; class b: -1 everywhere
    ends = -np.ones((1, 16, 8, 8), np.float32)
    ends[:, :4] = ends[:, 12:] = 3.0
    val = [{"image": torch.from_numpy(ends), "class": 0}, {"image": -torch.ones(1, 16, 8, 8), "class": 1}]
    model = MeanLogits()
    scores = _task().evaluate(model, val, _setting(overlap=0.0, sw_batch_size=4))
    # windows x 0-7 and 8-15: means (12 - 4) / 8 = 1 each, so logits (1, -1): class a; the centre 4-11 alone is -1
    assert scores["accuracy"] == 1.0 and scores["auc"] == 1.0
    assert model.batches == [2, 2]


def test_the_overlap_and_the_windows_per_pass_are_the_options():
    ramp = torch.arange(12, dtype=torch.float32)[:, None, None].expand(12, 8, 8)[None].clone()  # x = 0..11
    val = [{"image": ramp - 6.0, "class": 0}, {"image": 6.0 - ramp, "class": 1}]
    model = MeanLogits()
    _task().evaluate(model, val, _setting(overlap=0.5, sw_batch_size=1))
    assert model.batches == [1, 1, 1, 1]  # windows at x 0 and 4 (the last inside the volume), one a pass
    # averaged logits: windows 0-7 (mean 3.5) and 4-11 (mean 7.5) less 6 -> (3.5 + 7.5) / 2 - 6 = -0.5: class b
    scores = _task().evaluate(MeanLogits(), val, _setting(overlap=0.5, sw_batch_size=2))
    assert scores["accuracy"] == 0.0  # both wrong: the test reads the average, not one window
    centred = [{"image": torch.full((1, 8, 8, 8), 2.0), "class": 0}, {"image": torch.full((1, 8, 8, 8), -2.0),
                                                                      "class": 1}]
    model = MeanLogits()
    assert _task().evaluate(model, centred, _setting(overlap=0.5, sw_batch_size=4))["accuracy"] == 1.0
    assert model.batches == [1, 1]  # a volume of one ROI: one window whatever the overlap


def test_the_whole_view_gives_samples_per_volume_views_of_a_volume():
    s = Setting(PreprocessConfig(intensity="zscore"), (8, 8, 8), 3, 0.5, 1, 0.5, torch.device("cpu"), nullcontext)
    augment = _task(view="whole", in_plane=0.75, shift=0.1).augment(s)
    augment.set_random_state(seed=0)
    views = augment({"image": torch.rand(1, 20, 20, 10), "class": 1})
    assert isinstance(views, list) and len(views) == 3
    assert all(tuple(v["image"].shape) == (1, 8, 8, 8) and v["class"] == 1 for v in views)
    assert not torch.equal(views[0]["image"], views[1]["image"])  # each its own draw
