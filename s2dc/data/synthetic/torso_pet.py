"""Torso FDG-PET phantoms: the abdominal phantom of :mod:`.abdomen` as an FDG activity map, with hot lesions.

Anatomy
-------
The anatomy is the CT phantom's (:func:`.abdomen._build`: body outline, abdominal cavity, the 13 BTCV
organs; axes ``[x, y, z]`` RAS+, x towards the patient's right, y anterior, z superior; see that
module for the layout and its per-case variation). The background tissues are read from the
phantom's CT as a PET/CT attenuation map would be (HU of the CT blurred by 0.8 voxel): gas
(< -400 HU), fat (< -30 HU), bone marrow (200-520 HU, the cancellous vertebral body), cortical
bone (>= 520 HU: cortex, posterior arch, ribs), and soft tissue, which is bowel inside the cavity
(away from the spine) and muscle elsewhere (wall, paraspinal muscles, psoas). The slab (about
T11-L3) holds neither heart nor bladder.

Uptake (SUV, before per-case factors; ``ORGAN_SUV`` and ``TISSUE_SUV``)
---------------------------------------------------------------------
liver ~2.5, spleen ~2.0, kidneys ~4.5 with a hot core (excreted tracer in the collecting system,
x1.4-2.4), stomach variable (1.4-3.6), bowel 1.0 with patchy physiological uptake up to ~4-5,
blood pool (aorta, IVC, portal/splenic vein) 1.5-2.0 per case, pancreas ~1.5, adrenals ~1.8,
oesophagus ~1.8, gallbladder ~1.0, muscle ~0.7, fat ~0.3, marrow 1.5-2.0, cortical bone ~0.6,
gas and air 0. Per case: every value drawn around its mean, a global factor 0.85-1.15 (uptake time,
glucose) and a multiplicative texture (smoothed noise, ~8 % sd).

Lesions
-------
``n`` lesions (deformed ellipsoids, semi-axes 2-6 % of the grid, i.e. 2-6 voxels at 96) at sites
drawn among liver, spleen, vertebral marrow, para-aortic nodes (fat beside the aorta/IVC) and
mesenteric nodes (among the bowel). A lesion's SUV is the case's kidney parenchyma SUV times
0.7-1.6 (a third of the lesions: 1.6-3.0), so that the lesions and the physiological high uptake
(kidneys, stomach, hot bowel) overlap in intensity: telling them apart takes location and shape.
The lesion label is the lesion mask before the PET blur (the delineation).

The activity map is acquired with :mod:`.render_pet` (PSF sigma 1-1.5 voxels at 96, full dose 20-50
counts per SUV per voxel: liver noise ~15-25 %). Everything derives from the seed: the CT
anatomy from ``default_rng(seed)`` (inside ``_build``), the PET part from ``default_rng([seed, STREAM])``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .abdomen import _build
from .checks import check_seed, check_shape
from .fields import blur, noise_field, smooth_field
from .geometry import ellipsoid, normal, rotation, uniform
from .render_pet import PetScan, acquire, resolution_sigma, thin

__all__ = ["ORGAN_SUV", "TISSUE", "TISSUE_SUV", "TorsoPET", "torso_pet"]

STREAM = 0x50455431  # second entropy word of the PET generator ("PET1")

#: Background tissue classes of :attr:`TorsoPET.tissue` (0 where an organ or air is).
TISSUE: dict[int, str] = {0: "air_or_organ", 1: "fat", 2: "muscle", 3: "bowel", 4: "marrow", 5: "cortical_bone", 6: "gas"}
#: Background uptake: class -> (mean SUV, per-case sd).
TISSUE_SUV: dict[int, tuple[float, float]] = {
    1: (0.3, 0.05), 2: (0.7, 0.1), 3: (1.0, 0.15), 4: (1.75, 0.15), 5: (0.6, 0.08), 6: (0.0, 0.0),
}
#: Organ uptake: BTCV label -> (mean SUV, per-case sd). Vessels share one blood-pool draw.
ORGAN_SUV: dict[int, tuple[float, float]] = {
    1: (2.0, 0.15),   # spleen
    2: (4.5, 0.6),    # right kidney (parenchyma; hot core added)
    3: (4.5, 0.6),    # left kidney
    4: (1.0, 0.15),   # gallbladder
    5: (1.8, 0.3),    # oesophagus
    6: (2.5, 0.25),   # liver
    7: (2.5, 0.55),   # stomach (variable)
    8: (1.75, 0.0),   # aorta      (blood pool)
    9: (1.75, 0.0),   # IVC        (blood pool)
    10: (1.75, 0.0),  # portal/splenic vein (blood pool)
    11: (1.5, 0.15),  # pancreas
    12: (1.8, 0.25),  # right adrenal
    13: (1.8, 0.25),  # left adrenal
}
_SITES = ("liver", "spleen", "marrow", "node_paraaortic", "node_mesenteric")
_SITE_P = np.array([0.3, 0.1, 0.15, 0.25, 0.2])


@dataclass
class TorsoPET:
    """One torso FDG phantom. ``activity``: float32 ``(X, Y, Z)`` SUV (noise-free, unblurred);
    ``organs``: uint8 BTCV labels; ``tissue``: uint8 :data:`TISSUE` classes; ``lesions``: uint8 0/1;
    ``body``: bool; ``scans``: one :class:`PetScan` per requested dose fraction (first = full dose);
    ``lesion_suv``: the lesions' drawn SUVs; ``kidney_suv``: the kidney parenchyma SUV."""

    activity: np.ndarray
    organs: np.ndarray
    tissue: np.ndarray
    lesions: np.ndarray
    body: np.ndarray
    scans: list[PetScan] = field(default_factory=list)
    lesion_suv: list[float] = field(default_factory=list)
    kidney_suv: float = 0.0


def _tissue_classes(ct: np.ndarray, body: np.ndarray, cavity: np.ndarray, organs: np.ndarray, scale: float) -> np.ndarray:
    """Background classes from the CT (HU), as an attenuation map would give them."""
    hu = blur(ct, 0.8)
    tissue = np.zeros(ct.shape, np.uint8)
    soft = body & (hu >= -30)
    bone = body & (hu >= 200)
    near_bone = blur(bone.astype(np.float32), max(1.0, 3.0 * scale)) > 0.02
    tissue[body & (hu < -30)] = 1
    tissue[soft & ~(cavity & ~near_bone)] = 2
    tissue[soft & cavity & ~near_bone] = 3
    tissue[bone & (hu < 520)] = 4
    tissue[bone & (hu >= 520)] = 5
    tissue[body & (hu < -400)] = 6
    tissue[organs > 0] = 0
    # the stomach's gas cap is gas, not stomach wall
    tissue[(organs == 7) & (hu < -400)] = 6
    return tissue


def _pick(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray | None:
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        rng.integers(1)  # keep the stream independent of empty sites
        return None
    return np.array(np.unravel_index(idx[rng.integers(idx.size)], mask.shape), float)


def torso_pet(
    seed: int, shape: tuple[int, int, int] = (96, 96, 64), lesions: tuple[int, int] = (0, 0),
    dose_fractions: Sequence[float] = (1.0,),
) -> TorsoPET:
    """One torso FDG-PET phantom with ``lesions[0]..lesions[1]`` lesions, acquired at each dose fraction.

    Parameters
    ----------
    seed : int
        Non-negative; the same seed gives bit-identical arrays.
    shape : 3 ints
        Grid ``(X, Y, Z)``, each >= 16 (designed for 96 x 96 x 64).
    lesions : (lo, hi)
        Number of lesions, uniform in ``lo..hi`` (inclusive).
    dose_fractions : floats in (0, 1]
        Doses to acquire: each is the full-dose acquisition, thinned to that fraction (1: itself).
    """
    seed, shape = check_seed(seed), check_shape(shape)
    ph = _build(seed, shape)
    rng = np.random.default_rng([seed, STREAM])
    nx, ny, nz = shape
    scale = min(nx, ny) / 96.0
    organs = ph.labels
    tissue = _tissue_classes(ph.image, ph.body, ph.cavity, organs, scale)

    g = uniform(rng, 0.85, 1.15)
    lut = np.zeros(32, np.float32)  # 0..13 organs, 16+k tissue classes
    blood = uniform(rng, 1.5, 2.0)
    for label, (mean, sd) in ORGAN_SUV.items():
        lut[label] = blood * (1 + normal(rng, 0.03)) if label in (8, 9, 10) else max(0.2, mean + normal(rng, sd))
    lut[3] = lut[2] * (1 + normal(rng, 0.05))  # two kidneys of one patient
    for k, (mean, sd) in TISSUE_SUV.items():
        lut[16 + k] = max(0.0, mean + normal(rng, sd))
    code = np.where(organs > 0, organs, np.where(tissue > 0, tissue.astype(np.int32) + 16, 0)).astype(np.intp)
    activity = lut[code] * np.float32(g)

    # kidneys: hot core (collecting system with excreted tracer)
    kidney = (organs == 2) | (organs == 3)
    core = kidney & (blur(kidney.astype(np.float32), max(0.8, 2.0 * scale)) > 0.75)
    activity[core] *= np.float32(uniform(rng, 1.4, 2.4))
    # stomach wall / bowel: patchy physiological uptake
    patches = np.clip(smooth_field(rng, (max(2, nx // 10), max(2, ny // 10), max(2, nz // 10)), shape), 0, 3)
    hot_gain = np.float32(uniform(rng, 0.6, 1.3))
    gut = (tissue == 3) | ((organs == 7) & (tissue != 6))
    activity = np.where(gut, activity * (1 + hot_gain * patches * patches), activity)
    # texture: smoothed multiplicative noise
    tex = noise_field(rng, shape, max(0.6, 1.5 * scale))
    activity *= 1 + np.float32(0.08) * np.clip(tex, -3, 3)

    # lesions
    kidney_suv = float(lut[2] * g)
    label = np.zeros(shape, np.uint8)
    suvs: list[float] = []
    n = int(rng.integers(lesions[0], lesions[1] + 1))
    if n:
        vessels = (organs == 8) | (organs == 9)
        near_vessel = blur(vessels.astype(np.float32), max(1.0, 2.5 * scale)) > 0.03
        free = ph.cavity & (organs == 0) & (tissue != 6) & (tissue != 4) & (tissue != 5)
        sites = {
            "liver": organs == 6, "spleen": organs == 1, "marrow": tissue == 4,
            "node_paraaortic": free & near_vessel, "node_mesenteric": free & (tissue == 3),
        }
        forbidden = vessels | kidney | (tissue == 6) | ~ph.body
        for _ in range(n):
            site = _SITES[int(rng.choice(len(_SITES), p=_SITE_P))]
            c = _pick(rng, sites[site] & ~forbidden)
            if c is None:
                c = _pick(rng, ph.cavity & ~forbidden)
            if c is None:
                continue
            semi = np.array([uniform(rng, 0.02, 0.06) * s for s in (nx, ny, nz)]) * np.array(
                [1 + normal(rng, 0.15) for _ in range(3)])
            semi = np.maximum(semi, 0.6)
            rot = rotation(uniform(rng, 0, np.pi), uniform(rng, -0.5, 0.5), uniform(rng, -0.5, 0.5))
            m = ellipsoid(rng, shape, c, semi, rot, 0.12)
            hot = rng.random() < 1 / 3
            suv = kidney_suv * (uniform(rng, 1.6, 3.0) if hot else uniform(rng, 0.7, 1.6))
            if m is None:
                continue
            sub = m.mask & ~forbidden[m.box]
            label[m.box][sub] = 1
            activity[m.box][sub] = np.float32(suv) * (1 + np.float32(0.08) * np.clip(tex[m.box][sub], -3, 3))
            suvs.append(float(suv))

    activity = np.maximum(activity, np.float32(0)).astype(np.float32)
    sigma = resolution_sigma(rng, shape)
    dose = float(np.exp(uniform(rng, np.log(20.0), np.log(50.0))))
    full = acquire(rng, activity, dose, sigma)
    scans = [full if f == 1 else thin(rng, full, f) for f in dose_fractions]
    return TorsoPET(activity, organs, tissue, label, ph.body, scans, suvs, kidney_suv)
