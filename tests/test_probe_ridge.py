"""fit_ridge: primal and dual closed forms agree with numpy, and the solved system is min(N, D) square."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from s2dc.eval.probe import fit_ridge


def numpy_ridge(x: np.ndarray, y: np.ndarray, alpha: float, xv: np.ndarray) -> np.ndarray:
    """Independent primal closed form on features standardised as fit_ridge does (unbiased std clamped at 1e-6)."""
    mean, std = x.mean(0), np.maximum(x.std(0, ddof=1), 1e-6)
    z = (x - mean) / std
    w = np.linalg.solve(z.T @ z + alpha * np.eye(x.shape[1]), z.T @ (y - y.mean(0)))
    return (xv - mean) / std @ w + y.mean(0)


@pytest.mark.parametrize("n, d", [(15, 40), (60, 7)])  # fewer samples than features (dual), more (primal)
def test_fit_ridge_matches_numpy(n, d):
    rng = np.random.default_rng(n + d)
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 5, size=d) + 3
    x[:, 1] = 2.5  # a constant feature: its std clamps at 1e-6
    y = rng.normal(size=(n, 3))
    xv = rng.normal(size=(9, d)) + 3
    predict = fit_ridge(torch.from_numpy(x), torch.from_numpy(y), alpha=2.0)
    got = predict(torch.from_numpy(xv))
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), numpy_ridge(x, y, 2.0, xv), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("n, d", [(12, 5000), (50, 3)])
def test_fit_ridge_solves_the_smaller_system(monkeypatch, n, d):
    shapes, solve = [], torch.linalg.solve

    def recording(a, b, *args, **kwargs):
        shapes.append(tuple(a.shape))
        return solve(a, b, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "solve", recording)
    rng = np.random.default_rng(0)
    fit_ridge(torch.from_numpy(rng.normal(size=(n, d))), torch.from_numpy(rng.normal(size=(n, 2))))
    assert shapes == [(min(n, d), min(n, d))]
