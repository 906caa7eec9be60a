"""Metrics at their edges, each against an independent count (tests/test_tasks.py has the ordinary cases): AUC of
confident classifiers, translation scored sequence by sequence, image metrics of predictions far out of range,
class names given twice."""

from __future__ import annotations

import contextlib
import itertools
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from s2dc.data.datalist import class_names
from s2dc.data.errors import DataError
from s2dc.data.preprocess import EXTENT
from s2dc.downstream import metrics
from s2dc.downstream.tasks.common import Setting
from s2dc.downstream.tasks.translation import Translation


def pairwise_auc(scores: list[float], positive: list[bool]) -> float:
    """Mann-Whitney: the fraction of (positive, negative) pairs ranked right, ties counting half."""
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg)) / (len(pos) * len(neg))


def test_roc_auc_ranks_cases_whose_softmax_is_one_even_in_double_precision():
    """Margins over ~37 round a softmax to exactly 1.0 in float64: a classifier that ranks every case right scored
    0.75 (the positives tied with the negatives it was surest of); and a float32 one-hot left 0.8888888955 for 8/9."""
    logits = torch.tensor([[0.0, 40.0], [0.0, 44.0], [0.0, 39.0], [0.0, 41.0], [-38.0, 0.0]])
    assert metrics.roc_auc(logits, torch.tensor([1, 1, 0, 0, 0])) == pytest.approx(5 / 6, abs=1e-15)
    logits = torch.tensor([[0.0, 45.0], [0.0, 41.0], [0.0, 39.0], [0.0, -2.0]])
    assert metrics.roc_auc(logits, torch.tensor([1, 1, 0, 0])) == 1.0
    # three classes, every one-vs-rest margin far beyond float64's softmax; the margins' own order decides
    generator = torch.Generator().manual_seed(3)
    logits = 60.0 * torch.randn(12, 3, generator=generator)
    target = torch.tensor([0, 1, 2] * 4)
    margins = [[float(z[k] - torch.logsumexp(torch.cat([z[:k], z[k + 1:]]).double(), 0)) for k in range(3)]
               for z in logits.double()]
    expected = np.mean([pairwise_auc([m[k] for m in margins], [int(t) == k for t in target]) for k in range(3)])
    assert metrics.roc_auc(logits, target) == pytest.approx(expected, abs=1e-15)
    ties = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 0.0], [0.0, 2.0], [0.0, 1.0], [0.0, 0.0]])
    labels = [1, 0, 0, 1, 1, 0]
    assert metrics.roc_auc(ties, torch.tensor(labels)) == pytest.approx(
        pairwise_auc([1.0, 1.0, 0.0, 2.0, 1.0, 0.0], [bool(v) for v in labels]), abs=1e-15)


def _setting() -> Setting:
    return Setting(preprocess=None, roi_size=(8, 8, 8), samples_per_volume=1, flip_prob=0.0, sw_batch_size=1,
                   overlap=0.0, device=torch.device("cpu"), autocast=contextlib.nullcontext)


class _Zeros(torch.nn.Module):
    """Predicts 0 for each output sequence."""

    def forward(self, x):
        return torch.zeros(len(x), 2, *x.shape[2:])


def test_translation_scores_each_target_sequence_on_its_own_range():
    """Two target sequences, one of four times the other's range: PSNR took one MSE and one range over both (a
    sequence's score moved with the other's range, +2.4 dB here), SSIM one range and fill value. Each sequence is now
    scored alone and the scores averaged, as the release scores each pair."""
    generator = torch.Generator().manual_seed(0)
    task = Translation({"modality": {"0": "t1n", "1": "t2w", "2": "t2f"}}, Path("dataset.json"),
                       SimpleNamespace(input_channel=None))
    image = torch.zeros(3, 8, 8, 8)
    image[:, 2:6, 2:6, 2:6] = torch.randn(3, 4, 4, 4, generator=generator)
    image[2, 2:6, 2:6, 2:6] *= 4
    scores = task.evaluate(_Zeros(), [{"image": image, EXTENT: torch.tensor([[0, 0, 0], [8, 8, 8]])}], _setting())
    brain = image[0] != 0
    psnrs, mses = [], []
    for c in (1, 2):
        t = image[c][brain].double()
        mses.append(float((t**2).mean()))
        psnrs.append(10 * math.log10(float(t.max() - t.min()) ** 2 / mses[-1]))
    assert scores["psnr"] == pytest.approx(np.mean(psnrs), rel=1e-6)
    assert scores["mse"] == pytest.approx(np.mean(mses), rel=1e-6)
    ssims = [metrics.ssim(torch.zeros(1, 8, 8, 8), image[c : c + 1], brain[None]) for c in (1, 2)]
    assert scores["ssim"] == pytest.approx(np.mean(ssims), rel=1e-6)


def test_image_metrics_of_predictions_far_out_of_range_are_finite_and_right():
    """Predictions of 1e18-1e20 (a diverged model) overflowed float32: PSNR -inf, SSIM NaN, NRMSE inf, and the run
    was stopped blaming a constant target. In double precision they are the finite values the formulas give (SSIM is
MONAI's, in float32: NaN there, written null, beside the PSNR that scores the run)."""
    target = torch.linspace(0.0, 1.0, 8**3).reshape(1, 8, 8, 8)
    pred = torch.full_like(target, 1.0e20)
    t, p = target.double().reshape(-1), pred.double().reshape(-1)
    err = float(((p - t) ** 2).mean())
    assert metrics.psnr(pred, target) == pytest.approx(10 * math.log10(1.0 / err), rel=1e-9)
    assert metrics.nrmse(pred, target) == pytest.approx(math.sqrt(err) / math.sqrt(float((t**2).mean())), rel=1e-9)
    assert metrics.mse(pred, target) == pytest.approx(err, rel=1e-9)


def test_two_classes_of_one_name_are_refused_naming_the_json():
    """`{"1": "kidney", "2": "kidney"}` was accepted and metrics.json's dice_per_class kept one 'kidney' (the second
    class's Dice), beside a dice_mean over both."""
    with pytest.raises(DataError, match=r"'labels' of dataset json 'x\.json' name .*'kidney'.* twice"):
        class_names({"labels": {"0": "background", "1": "kidney", "2": "kidney"}}, "x.json")
