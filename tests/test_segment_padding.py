"""Segmentation is scored on a volume's own voxels: the zero padding that brings a volume smaller than the crop up to
it (for training) is no part of the patient, and a prediction of foreground there is no false positive."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from s2dc.data.preprocess import PreprocessConfig
from s2dc.downstream.tasks.common import Setting
from s2dc.downstream.tasks.segmentation import Segmentation

SHAPE = (10, 12, 6)  # the case; a crop of 16 x 16 x 8 pads it on every axis, one of 8 x 8 x 4 on none


def _case(tmp_path: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    """A positive, noisy image ``SHAPE`` (no voxel 0, as in a body) with a brighter box labelled 1; returns the case,
    the image and the label."""
    rng = np.random.default_rng(3)
    label = np.zeros(SHAPE, np.uint8)
    label[1:8, 2:10, 1:5] = 1
    image = (1.0 + rng.random(SHAPE) + 1.2 * label).astype(np.float32)  # some background above the mean: errors
    for name, array in (("image", image), ("label", label)):
        nib.save(nib.Nifti1Image(array.astype(np.float32), np.eye(4)), str(tmp_path / f"{name}.nii.gz"))
    return {"image": tmp_path / "image.nii.gz", "label": tmp_path / "label.nii.gz"}, image, label


def _hand_dice(image: np.ndarray, label: np.ndarray) -> float:
    """The Dice of the threshold rule below on the case's own voxels, by hand: foreground where the z-scored image
    is >= 0, i.e. where the raw image is at least the mean of its (non-zero) voxels."""
    pred = image >= image.mean()
    return 2 * np.logical_and(pred, label == 1).sum() / (pred.sum() + (label == 1).sum())


class AtOrAboveMean(torch.nn.Module):
    """Foreground where the z-scored input is >= 0: right or wrong on the case's voxels, and foreground in all of the
    zero padding (a network may predict anything where it never saw a patient). ``channels`` 2: softmax logits
    (background, foreground); 1: a region's sigmoid logit."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = (x[:, :1] >= 0).float() * 2 - 1  # (B, 1, X, Y, Z): +1 foreground, -1 background
        return fg if self.channels == 1 else torch.cat([-fg, fg], dim=1)


DOCS = {"classes": {"task": "segmentation", "labels": {"0": "background", "1": "box"}},
        "regions": {"task": "segmentation", "labels": {"0": "background", "1": "box"}, "regions": {"box": [1]}}}


@pytest.mark.parametrize("kind", sorted(DOCS))
@pytest.mark.parametrize("roi", [(8, 8, 4), (16, 16, 8)], ids=["no padding", "padded on every axis"])
def test_dice_is_scored_on_the_volumes_own_voxels_not_its_padding(tmp_path, kind, roi):
    """A 10 x 12 x 6 case under a 16 x 16 x 8 crop is zero-padded to it; a model foreground in the padding was scored
    as if the padded voxels were the patient's (every one a false positive). The Dice must be that of the case's own
    voxels, computed here by hand, whatever the crop size."""
    case, image, label = _case(tmp_path)
    s = Setting(PreprocessConfig(intensity="zscore", crop_foreground=False), roi, 1, 0.0, 1, 0.0,
                torch.device("cpu"), nullcontext)
    task = Segmentation(DOCS[kind], tmp_path / "dataset.json", None)
    _, val = task.datasets([case], [case], s, None)
    scores = task.evaluate(AtOrAboveMean(task.out_channels if kind == "regions" else 2), val, s)
    expected = _hand_dice(image, label)
    assert 0.5 < expected < 0.95  # the rule errs on the case's voxels: the score is not trivially 1
    assert scores["dice_mean"] == pytest.approx(expected, abs=1e-12), (roi, scores, expected)
    assert scores["dice_per_class"] == {"box": pytest.approx(expected, abs=1e-12)}
