"""PET renderer: an activity map becomes a PET image through a resolution blur and count (Poisson) noise.

An activity map (SUV-like, non-negative, float32 ``(X, Y, Z)``, zero in air) is "acquired" in three steps:

1. resolution: :func:`~.fields.blur` with ``sigma`` voxels (the scanner's point-spread function,
   FWHM = 2.355 sigma); :func:`resolution_sigma` draws a per-case sigma scaled with the grid;
2. counts: ``counts = Poisson(blurred * dose_scale)``, ``dose_scale`` the expected counts per voxel per
   SUV unit at full dose (per case: injected activity, patient size, scan time);
3. image: ``counts / dose_scale`` (SUV units, unbiased: its mean is the blurred activity).

A reduced dose keeps each full-dose count with probability ``fraction`` (binomial thinning, as
low-dose data are made from list-mode data by subsampling), image ``counts_low / (dose_scale * fraction)``:
the same mean, relative noise ``1 / sqrt(activity * dose_scale * fraction)``, so a lower dose is noisier,
and the low-dose image is the full-dose acquisition's own subsample (not an independent scan).
Values are non-negative; air stays zero apart from counts blurred across the body outline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .fields import blur
from .geometry import uniform

__all__ = ["PetScan", "acquire", "resolution_sigma", "thin"]


@dataclass
class PetScan:
    """One acquisition: ``image`` float32 ``(X, Y, Z)`` in SUV, ``counts`` int64 ``(X, Y, Z)``,
    ``dose_scale`` (counts per voxel per SUV unit of this dose) and ``mean`` (the blurred activity, float32)."""

    image: np.ndarray
    counts: np.ndarray
    dose_scale: float
    mean: np.ndarray


def resolution_sigma(rng: np.random.Generator, shape: Sequence[int], lo: float = 1.0, hi: float = 1.5) -> float:
    """Per-case PSF sigma in voxels: uniform in ``[lo, hi]`` at 96 voxels in-plane, scaled with the grid."""
    return max(0.4, uniform(rng, lo, hi) * min(int(shape[0]), int(shape[1])) / 96.0)


def acquire(rng: np.random.Generator, activity: np.ndarray, dose_scale: float, sigma: float) -> PetScan:
    """Blur ``activity`` by ``sigma`` voxels, draw Poisson counts at ``dose_scale``; the full-dose scan."""
    mean = np.maximum(blur(activity.astype(np.float32), sigma), np.float32(0))
    counts = rng.poisson(mean.astype(np.float64) * dose_scale)
    return PetScan((counts / dose_scale).astype(np.float32), counts, float(dose_scale), mean)


def thin(rng: np.random.Generator, scan: PetScan, fraction: float) -> PetScan:
    """The scan at ``fraction`` (0, 1] of its dose: each count kept with probability ``fraction``."""
    if not 0 < fraction <= 1:
        raise ValueError(f"dose fraction must be in (0, 1], got {fraction}")
    counts = rng.binomial(scan.counts, fraction)
    dose = scan.dose_scale * fraction
    return PetScan((counts / dose).astype(np.float32), counts, dose, scan.mean)
