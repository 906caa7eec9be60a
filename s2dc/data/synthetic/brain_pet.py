"""Brain FDG-PET phantoms (skull-stripped): cognitively normal (CN) or Alzheimer's disease (AD) patterns.

Anatomy (axes ``[x, y, z]`` RAS+: x towards the patient's right, y anterior, z superior)
--------------------------------------------------------------------------------------
A cerebrum ellipsoid of per-case size (log-uniform 0.88-1.08 around semi-axes of 0.36 / 0.43 / 0.34 of
the grid, +-4 % per axis), centre jitter (2 % of the grid), orientation (yaw ~8 deg, pitch ~10 deg,
roll ~5 deg sd) and a smooth random deformation (~4 %). In the brain's own normalised coordinates
``(u, v, w)`` (u right, v anterior, w superior; the cerebrum is ``|.| <= 1``):

* cortical grey matter: the outer ribbon ``r >= 1 - t`` (``t`` ~0.11, thinner with atrophy) and the medial
  cortex along the interhemispheric fissure (a CSF gap ``|u|`` < 0.5-1.7 voxels, wider with atrophy,
  above the corpus callosum and at the poles); sulci are CSF speckles of the ribbon (10-25 %, more with
  atrophy); focal atrophy (see Classes) turns more of the cortex into CSF in the AD pattern's region;
* deep grey matter (basal ganglia / thalamus): a paramedian ellipsoid on each side;
* lateral ventricles: paramedian ellipsoids, larger with atrophy; white matter: the rest of the cerebrum;
* cerebellum: an ellipsoid below the occipital lobe (centre v -0.45, w -0.80), brainstem: a column under the
  centre. Outside the brain: zero (skull-stripped).

Uptake (SUV-like)
-----------------
Cortex ``g`` = 8 x a global factor (log-uniform 0.65-1.5: dose, weight, glucose), deep grey 0.95 g,
cerebellum 0.8-0.9 g, white matter 0.32-0.40 g, brainstem 0.45 g, CSF 0.04 g; the cortex is modulated by a
smooth per-case field (2 % sd) and a multiplicative texture (~5 %).

Classes
-------
Both classes act on one region, ``W = max(W_tp, W_pc)``: Gaussian weights centred on the lateral
temporo-parietal cortex (``|u|`` 0.85, v -0.3, w 0.05) and on the posterior cingulate (medial, v -0.35,
w 0.3); sensorimotor, occipital, frontal cortex, deep grey and cerebellum lie outside it.

* AD, hypometabolism: the cortex's uptake reduced by ``s W`` (``s`` uniform 0.30-0.50), the ribbon in place
  but uniformly dim; little focal atrophy (``f`` uniform 0-0.10).
* CN, focal atrophy (a nuisance, as the atrophy of ageing or of other disease is): ``f`` uniform 0.31-0.57,
  a fraction ``f W`` of the cortex becomes CSF: a quarter of it by thinning the ribbon from the pial side,
  the rest by widening sulci, bands around the zero-level sheets of a smooth field (sigma 4 voxels at 96,
  scaled with the grid: ~7.5 voxels apart at 64 x 64 x 48, the widened sulci there ~2-4 voxels wide at the
  pattern's peak, so they stay visible through the PET blur). Uptake per unit cortex is normal: bright
  cortex fragments between dark CSF gaps.

What does not tell the classes: the regional mean uptake. Replacing cortex by CSF (0.04 g) lowers a region's
uptake by ``0.96 f W`` in CN; hypometabolism with its little atrophy by ``s W + f W (0.96 - s W)`` in AD; the
ranges are matched (0.30-0.55 at the peak in both), so the mean of a temporo-parietal block, even relative to
a sensorimotor one, is alike in the two classes: the partial-volume confound of FDG-PET (atrophy lowers the
apparent uptake) made the twin's nuisance. Nor does the brain's mean: the global factor (log-uniform
0.65-1.5) dwarfs the few-percent loss that either causes. Atrophy ``a`` (uniform 0-1 in both classes,
age-related) thins the cortex and widens sulci, fissure and ventricles everywhere.

What tells them: the local texture in the region, the uptake per unit cortex: near normal in CN (relative to
sensorimotor cortex; large contrast between cortex and gaps), reduced in AD (a continuous dim ribbon, low
contrast).

The activity map is acquired with :mod:`.render_pet` (dose 15-30 counts per SUV per voxel). Everything
derives from ``default_rng([seed, STREAM])``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .checks import check_seed, check_shape
from .fields import noise_field, smooth_field
from .geometry import grid, normal, rotation, uniform
from .render_pet import PetScan, acquire, resolution_sigma

__all__ = ["CLASSES", "REGION", "BrainPET", "brain_pet"]

STREAM = 0x50455432  # "PET2"
CLASSES = ("CN", "AD")
#: Focal-atrophy level (the fraction of the cortex turned into CSF at the pattern's peak) per class.
FOCAL_CN = (0.31, 0.57)
FOCAL_AD = (0.0, 0.10)
#: Smoothness (voxels at 96) of the field whose zero-level sheets are the sulci that focal atrophy widens.
SHEET_SIGMA = 4.0
#: Region ids of :attr:`BrainPET.regions`.
REGION: dict[int, str] = {0: "outside", 1: "cortex", 2: "white_matter", 3: "deep_grey", 4: "csf",
                          5: "cerebellum", 6: "brainstem"}


@dataclass
class BrainPET:
    """One brain phantom. ``activity`` float32 ``(X, Y, Z)`` (noise-free, unblurred); ``regions`` uint8
    :data:`REGION` ids; ``scan`` the full-dose :class:`PetScan`; ``ad`` the class (True: AD); pose of the
    cerebrum: ``centre`` (3,) voxels, ``semi`` (3,) voxels, ``rot`` (3, 3) (column j = local axis j);
    ``atrophy`` in [0, 1], ``focal_atrophy`` the focal-atrophy level ``f`` (the fraction of the cortex turned into
    CSF at the peak of the AD pattern's region), ``severity`` the AD reduction (0 for CN), ``global_factor``."""

    activity: np.ndarray
    regions: np.ndarray
    scan: PetScan
    ad: bool
    centre: np.ndarray
    semi: np.ndarray
    rot: np.ndarray
    atrophy: float
    focal_atrophy: float
    severity: float
    global_factor: float


def brain_pet(seed: int, shape: tuple[int, int, int] = (96, 96, 64), ad: bool | None = None) -> BrainPET:
    """One skull-stripped brain FDG-PET phantom; ``ad`` None draws the class from the seed."""
    seed, shape = check_seed(seed), check_shape(shape)
    rng = np.random.default_rng([seed, STREAM])
    if ad is None:
        ad = bool(rng.random() < 0.5)
    nx, ny, nz = shape
    scale = min(nx, ny) / 96.0
    x, y, z = grid(shape)

    # ---- pose
    centre = np.array([(nx - 1) / 2 + normal(rng, 0.02 * nx), (ny - 1) / 2 + normal(rng, 0.02 * ny),
                       0.56 * (nz - 1) + normal(rng, 0.02 * nz)])
    size = float(np.exp(uniform(rng, np.log(0.88), np.log(1.08))))
    semi = np.array([0.36 * nx, 0.43 * ny, 0.34 * nz]) * size * np.array([1 + normal(rng, 0.04) for _ in range(3)])
    rot = rotation(np.deg2rad(normal(rng, 8.0)), np.deg2rad(normal(rng, 10.0)), np.deg2rad(normal(rng, 5.0)))
    r32 = rot.astype(np.float32)
    dx, dy, dz = x - np.float32(centre[0]), y - np.float32(centre[1]), z - np.float32(centre[2])
    u, v, w = ((dx * r32[0, j] + dy * r32[1, j] + dz * r32[2, j]) / np.float32(semi[j]) for j in range(3))
    deform = 1 + np.float32(0.04) * np.clip(smooth_field(rng, (5, 5, 4), shape), -2.5, 2.5)
    r = np.sqrt(u * u + v * v + w * w) / deform

    # ---- anatomy
    a = uniform(rng, 0.0, 1.0)  # age-related in both classes: a nuisance, not the sign
    cerebrum = r <= 1
    cerebellum = ~cerebrum & ((u / 0.68) ** 2 + ((v + 0.45) / 0.42) ** 2 + ((w + 0.80) / 0.40) ** 2 <= deform)
    stem = ~cerebrum & ~cerebellum & ((u / 0.13) ** 2 + ((v + 0.08) / 0.15) ** 2 + ((w + 0.85) / 0.4) ** 2 <= 1)
    thick = 0.11 * (1 - 0.25 * a)
    ribbon = cerebrum & (r >= 1 - thick)
    au = np.abs(u) * np.float32(semi[0])  # distance from the midsagittal plane (voxels)
    fw = (0.5 + 1.2 * a) * scale
    fissure_zone = (w > 0.05) | (np.abs(v) > 0.55)
    fissure = cerebrum & fissure_zone & (au < fw)
    medial = cerebrum & fissure_zone & ~fissure & (au < fw + thick * semi[0])
    cortex = (ribbon | medial) & ~fissure
    fold = noise_field(rng, shape, max(0.5, 0.9 * scale))
    sulcal = 0.10 + 0.15 * a
    if cortex.any():
        cortex_fold = fold[cortex]
        thr = np.quantile(cortex_fold, 1 - sulcal)
        sulci = cortex & (fold > thr)
    else:
        sulci = np.zeros(shape, bool)
    # focal atrophy in the AD pattern's region: the ribbon thins from the pial side and sulci widen
    w_tp = np.exp(-(((np.abs(u) - 0.85) / 0.35) ** 2 + ((v + 0.30) / 0.40) ** 2 + ((w - 0.05) / 0.45) ** 2))
    w_pc = np.exp(-((u / 0.20) ** 2 + ((v + 0.35) / 0.22) ** 2 + ((w - 0.30) / 0.25) ** 2))
    weight = np.maximum(w_tp, w_pc)
    focal = uniform(rng, *(FOCAL_AD if ad else FOCAL_CN))
    sheets = noise_field(rng, shape, max(0.5, SHEET_SIGMA * scale))  # sulcal fundi: its zero-level sheets
    widened = _focal_atrophy(cortex & ~sulci, ribbon, r, thick, np.float32(focal) * weight, sheets)
    vs = 1 + a
    ventricles = np.zeros(shape, bool)
    deep = np.zeros(shape, bool)
    for side in (-1.0, 1.0):
        ventricles |= ((u - side * 0.11) / (0.07 * vs)) ** 2 + ((v - 0.02) / (0.32 * (1 + 0.3 * a))) ** 2 \
            + ((w - 0.12) / (0.11 * (1 + 0.6 * a))) ** 2 <= 1
        deep |= ((u - side * 0.27) / 0.14) ** 2 + (v / 0.25) ** 2 + ((w + 0.12) / 0.18) ** 2 <= 1
    regions = np.zeros(shape, np.uint8)
    regions[cerebrum] = 2
    regions[cerebrum & deep] = 3
    regions[cortex] = 1
    regions[cerebrum & (fissure | sulci | widened | ventricles)] = 4
    regions[cerebellum] = 5
    regions[stem] = 6

    # ---- uptake
    gf = float(np.exp(uniform(rng, np.log(0.65), np.log(1.5))))
    g = 8.0 * gf
    lut = np.zeros(8, np.float32)
    lut[1] = g
    lut[2] = g * uniform(rng, 0.32, 0.40)
    lut[3] = g * 0.95 * (1 + normal(rng, 0.03))
    lut[4] = g * 0.04
    lut[5] = g * uniform(rng, 0.80, 0.90)
    lut[6] = g * 0.45 * (1 + normal(rng, 0.05))
    activity = lut[regions]
    regional = 1 + np.float32(0.02) * np.clip(smooth_field(rng, (3, 3, 3), shape), -2.5, 2.5)
    severity = uniform(rng, 0.30, 0.50) if ad else 0.0
    pattern = regional * (1 - np.float32(severity) * weight)
    activity = np.where(regions == 1, activity * pattern, activity)
    tex = noise_field(rng, shape, max(0.5, 1.2 * scale))
    activity = np.maximum(activity * (1 + np.float32(0.05) * np.clip(tex, -3, 3)), np.float32(0)).astype(np.float32)

    sigma = resolution_sigma(rng, shape)
    dose = float(np.exp(uniform(rng, np.log(15.0), np.log(30.0))))
    scan = acquire(rng, activity, dose, sigma)
    return BrainPET(activity, regions, scan, bool(ad), centre, semi, rot, float(a), float(focal), float(severity), gf)


def _focal_atrophy(cortex: np.ndarray, ribbon: np.ndarray, r: np.ndarray, thick: float, loss: np.ndarray,
                   sheets: np.ndarray) -> np.ndarray:
    """The cortex voxels that focal atrophy turns into CSF: a fraction ``loss`` (per voxel, expected) of
    ``cortex``. On the outer ribbon a quarter of it by thinning (the pial surface recedes by ``loss / 4`` of the
    thickness ``thick``), the rest (all of it on the medial cortex) by widening sulci: bands around the
    zero-level sheets of ``sheets`` (a smooth unit-sd field), a voxel falling in the band when the rank of
    ``|sheets|`` among the cortex voxels is below the fraction still to be lost. Draws nothing."""
    out = np.zeros(cortex.shape, bool)
    if not cortex.any():
        return out
    thinning = np.where(ribbon, loss / np.float32(4), np.float32(0))
    pial = ribbon & (r > 1 - thick * thinning)
    band = 1 - (1 - loss) / (1 - thinning)  # of the voxels left after thinning
    depth = np.abs(sheets[cortex])
    rank = np.empty(depth.size, np.float32)
    rank[np.argsort(depth, kind="stable")] = (np.arange(depth.size, dtype=np.float32) + 0.5) / depth.size
    out[cortex] = pial[cortex] | (rank < band[cortex])
    return out
