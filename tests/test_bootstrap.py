"""The probe's case-level bootstrap against direct computations on the resampled rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from s2dc.eval.bootstrap import (balanced_accuracy, bootstrap, case_index, confusion_by_case, r_squared_from_sums,
                                 regression_sums, resample_weights)


def numpy_balanced_accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))


def numpy_r_squared(pred: np.ndarray, y: np.ndarray) -> float:
    return float(1 - ((pred - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())


def test_case_index_and_weights():
    assert case_index([2, 0, 3]).tolist() == [0, 0, 2, 2, 2]
    w = resample_weights(5, resamples=50, seed=3)
    assert w.shape == (50, 5) and torch.all(w.sum(1) == 5) and torch.equal(w, resample_weights(5, 50, seed=3))
    assert not torch.equal(w, resample_weights(5, 50, seed=4))


def test_scores_from_case_statistics_equal_the_scores_of_the_rows():
    """Summed over the cases, the per-case statistics give the balanced accuracy and R² of all rows."""
    rng = np.random.default_rng(0)
    lengths = [7, 12, 5, 9]
    case = case_index(lengths)
    y = rng.integers(0, 4, sum(lengths))
    y[y == 3] = 2  # class 3 absent from the ground truth, predicted below: it does not count
    pred = np.where(rng.random(len(y)) < 0.6, y, rng.integers(0, 4, len(y)))
    conf = confusion_by_case(torch.from_numpy(pred), torch.from_numpy(y), case, len(lengths), 4)
    assert conf.shape == (4, 16) and conf.sum() == len(y)
    assert float(balanced_accuracy(conf.sum(0), 4)) == pytest.approx(numpy_balanced_accuracy(pred, y), abs=1e-12)

    target = rng.normal(size=(sum(lengths), 3)) * [1.0, 5.0, 0.2] + [0.0, 3.0, -1.0]
    guess = target + rng.normal(size=target.shape) * 0.5
    sums = regression_sums(torch.from_numpy(guess), torch.from_numpy(target), case, len(lengths))
    assert float(r_squared_from_sums(sums.sum(0))) == pytest.approx(numpy_r_squared(guess, target), abs=1e-12)


def test_standard_errors_equal_those_of_the_resampled_rows():
    """Each resample's score, recomputed from the rows of the drawn cases (a case drawn twice counts twice), gives
    the same standard errors, for one encoder and for the paired difference of two."""
    rng = np.random.default_rng(1)
    lengths = [6, 10, 4, 8, 7]
    case = case_index(lengths)
    y = rng.integers(0, 3, sum(lengths))
    preds = {"a": np.where(rng.random(len(y)) < 0.8, y, 0), "b": np.where(rng.random(len(y)) < 0.5, y, 1)}
    stats = {k: confusion_by_case(torch.from_numpy(p), torch.from_numpy(y), case, len(lengths), 3)
             for k, p in preds.items()}
    out = bootstrap(stats, lambda c: balanced_accuracy(c, 3), resamples=200, seed=7)

    drawn = torch.randint(len(lengths), (200, len(lengths)), generator=torch.Generator().manual_seed(7)).numpy()
    rows = [np.concatenate([np.flatnonzero(case.numpy() == c) for c in sample]) for sample in drawn]
    scores = {k: np.array([numpy_balanced_accuracy(p[r], y[r]) for r in rows]) for k, p in preds.items()}
    assert out["a"]["se"] == pytest.approx(scores["a"].std(ddof=1), abs=1e-12)
    assert out["a"]["versus"]["b"]["se"] == pytest.approx((scores["a"] - scores["b"]).std(ddof=1), abs=1e-12)
    full = {k: numpy_balanced_accuracy(p, y) for k, p in preds.items()}
    assert out["a"]["versus"]["b"]["difference"] == pytest.approx(full["a"] - full["b"], abs=1e-12)
    assert out["b"]["versus"]["a"]["difference"] == pytest.approx(full["b"] - full["a"], abs=1e-12)


def test_an_encoder_against_itself_differs_by_nothing():
    stats = torch.rand(6, 4, dtype=torch.float64) * 10
    out = bootstrap({"x": stats, "y": stats.clone()}, lambda c: balanced_accuracy(c, 2), resamples=100)
    assert out["x"]["se"] > 0 and out["x"]["versus"]["y"] == {"difference": 0.0, "se": 0.0}


def test_one_case_has_no_standard_error():
    """Every resample of one case is that case: no spread can be estimated, so none is given (not 0)."""
    stats = torch.rand(1, 4, dtype=torch.float64) * 10
    out = bootstrap({"x": stats, "y": stats.flip(1)}, lambda c: balanced_accuracy(c, 2), resamples=100)
    assert out["x"]["se"] is None and out["x"]["versus"]["y"]["se"] is None
    assert out["x"]["versus"]["y"]["difference"] == pytest.approx(
        float(balanced_accuracy(stats[0], 2) - balanced_accuracy(stats[0].flip(0), 2)))


def test_a_baseline_of_several_draws_is_scored_by_the_mean_of_their_scores():
    """A random baseline drawn K times: its score, on all cases and on each resample, is the mean of the K draws'
    scores (each from its own rows), and its difference with another encoder is that mean's, resample by resample;
    against the rows of the drawn cases, computed by hand."""
    rng = np.random.default_rng(2)
    lengths = [5, 9, 6, 8]
    case = case_index(lengths)
    y = rng.integers(0, 3, sum(lengths))
    draws = [np.where(rng.random(len(y)) < p, y, 2) for p in (0.4, 0.6, 0.7)]
    mine = np.where(rng.random(len(y)) < 0.8, y, 0)
    conf = lambda p: confusion_by_case(torch.from_numpy(p), torch.from_numpy(y), case, len(lengths), 3)  # noqa: E731
    out = bootstrap({"mine": conf(mine), "random": torch.stack([conf(p) for p in draws])},
                    lambda c: balanced_accuracy(c, 3), resamples=150, seed=5)

    drawn = torch.randint(len(lengths), (150, len(lengths)), generator=torch.Generator().manual_seed(5)).numpy()
    rows = [np.concatenate([np.flatnonzero(case.numpy() == c) for c in sample]) for sample in drawn]
    baseline = np.array([np.mean([numpy_balanced_accuracy(p[r], y[r]) for p in draws]) for r in rows])
    scores = np.array([numpy_balanced_accuracy(mine[r], y[r]) for r in rows])
    full = np.mean([numpy_balanced_accuracy(p, y) for p in draws])
    assert out["random"]["se"] == pytest.approx(baseline.std(ddof=1), abs=1e-12)
    assert out["mine"]["versus"]["random"]["difference"] == pytest.approx(numpy_balanced_accuracy(mine, y) - full,
                                                                         abs=1e-12)
    assert out["mine"]["versus"]["random"]["se"] == pytest.approx((scores - baseline).std(ddof=1), abs=1e-12)
