"""Smooth random fields and deterministic blurs: textures, deformations and noise of every twin."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def interp_axis(a: np.ndarray, axis: int, n: int) -> np.ndarray:
    """Catmull-Rom (cubic) resampling of ``a`` along ``axis`` to ``n`` samples, end-aligned."""
    g = a.shape[axis]
    if g == 1:
        return np.repeat(a, n, axis=axis)
    pos = np.linspace(0.0, g - 1.0, n)
    i = np.minimum(np.floor(pos).astype(np.int64), g - 2)
    t = pos - i
    t2, t3 = t * t, t * t * t
    weights = (
        (-t3 + 2 * t2 - t) / 2,
        (3 * t3 - 5 * t2 + 2) / 2,
        (-3 * t3 + 4 * t2 + t) / 2,
        (t3 - t2) / 2,
    )
    bshape = [1] * a.ndim
    bshape[axis] = n
    out = None
    for k, w in zip(range(-1, 3), weights):
        term = np.take(a, np.clip(i + k, 0, g - 1), axis=axis) * w.astype(np.float32).reshape(bshape)
        out = term if out is None else out + term
    return out


def smooth_field(rng: np.random.Generator, coarse: Sequence[int], out: Sequence[int]) -> np.ndarray:
    """Low-frequency random field (approx. unit sd) of shape ``out`` from a coarse N(0,1) grid."""
    field = rng.standard_normal(tuple(int(c) for c in coarse), dtype=np.float32)
    for axis, n in enumerate(out):
        field = interp_axis(field, axis, int(n))
    return field


def blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (reflect boundaries) by shifted sums: element-wise, deterministic."""
    radius = max(1, int(np.ceil(3 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    for axis in range(a.ndim):
        n = a.shape[axis]
        moved = np.moveaxis(a, axis, 0)
        pad = [(radius, radius)] + [(0, 0)] * (a.ndim - 1)
        p = np.pad(moved, pad, mode="reflect" if n > radius else "edge")
        out = k[0] * p[0:n]
        for j in range(1, 2 * radius + 1):
            out += k[j] * p[j : j + n]
        a = np.moveaxis(out, 0, axis)
    return a


def noise_field(rng: np.random.Generator, shape: Sequence[int], sigma: float) -> np.ndarray:
    """White noise blurred with ``sigma`` voxels, rescaled to unit sd (analytically)."""
    radius = max(1, int(np.ceil(3 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    gain = float(np.sqrt(np.sum(k * k) ** len(shape)))
    white = rng.standard_normal(tuple(shape), dtype=np.float32)
    return blur(white, sigma) * np.float32(1.0 / gain)
