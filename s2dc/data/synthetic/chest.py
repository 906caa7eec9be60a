"""Chest CT phantom: thoracic anatomy as a tissue map, and its CT rendering (HU or 8-bit lung window).

The chest twins (MSD Task06 Lung, CC-CCII) need lungs whose content is told apart by *context*: a
nodule has the density of the vessels it sits among and of the heart beside the lung, so only its
shape (a compact blob, not a branching tube) and its place decide. :func:`chest_anatomy` draws the
anatomy of one case as a :class:`Chest` (tissue map plus the per-voxel mean HU and texture sd that
lesions can edit, see :mod:`.lesions`); :func:`render_ct` turns it into integer HU and
:func:`to_8bit` into a lung-window 8-bit image like CC-CCII's PNG slices.

Axis conventions are those of :mod:`.abdomen`: arrays ``[x, y, z]`` in RAS+ voxel order (``x``
towards the patient's right, ``y`` anterior, ``z`` superior), written with the affine ``diag(spacing)``.

Scale
-----
A shrunken thorax that fills the grid: at the default 96 x 96 x 64 voxels the slab spans the lungs
from the apices (top) to the diaphragm domes (bottom). Sizes and positions are fractions of the grid
and of the sampled body ellipse (layout units ``u`` = patient right +, ``v`` = anterior +, in body
semi-axes; ``t`` = 0 inferior ... 1 superior), so any grid >= 16 per axis gives the same anatomy.

Anatomy (tissue ids :data:`TISSUES`)
------------------------------------
* body: elliptical outline (random semi-axes, centre jitter, flatter back, smooth deformation);
  subcutaneous fat, a muscle wall with oblique rib bands and an anterior sternum;
* spine: vertebral body with discs, spinal canal, posterior arch, paraspinal muscles;
* lungs: per side a randomly sized, placed and rotated deformed ellipsoid clipped to the thoracic
  cavity and carved by the mediastinum, the heart (cardiac notch on the left) and the spine; the
  right lung sits higher (liver dome); below the domes, upper-abdominal soft tissue;
* mediastinum: fat band between the lungs with the heart (deformed ellipsoid, anterior-left-inferior),
  the aorta (ascending, arch, descending left of the spine) and the pulmonary trunk, the trachea
  (air, soft-tissue wall) splitting at the carina into the two main bronchi;
* pulmonary vessels: from each hilum a random branching tree of tubes (5 primary branches, 3
  bifurcating generations, radius x 0.72 and length x 0.72 per generation, random directions), kept
  inside the lung; the pulmonary arteries join the trunk to the hila.

Per case: body size/shape, lung size (log-uniform per side), centre jitter and rotation of every
part, the z-shift of the whole layout, the vessel trees, and the intensities below.

Intensities (HU, ``(mean, texture sd)``, :data:`TISSUE_HU`): lung parenchyma about -850 (per case
-880...-800, denser posteriorly by up to 30 HU: dependent atelectasis), vessels and heart +40, nodule
+30 (the same as vessels and heart: shape and context decide), mediastinal fat -90, subcutaneous fat
-100, muscle 50, bone 380-700, airway -980. Per case: a global offset (+-5 HU), a per-tissue offset
(+-3 HU) and acquisition noise of 10-18 HU sd; values are rounded to integer HU.

Determinism: one ``numpy.random.Generator`` per case (passed in), element-wise NumPy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .fields import blur, noise_field, smooth_field
from .geometry import bounding_box, box_coords, ellipsoid, grid, normal, rotation, tube, uniform

__all__ = ["TISSUES", "TISSUE_HU", "LUNG_WINDOW", "Chest", "chest_anatomy", "render_ct", "to_8bit"]

#: Tissue ids of :attr:`Chest.tissue`.
TISSUES: dict[int, str] = {
    0: "air", 1: "subcutaneous fat", 2: "muscle", 3: "bone", 4: "lung", 5: "pulmonary vessel",
    6: "heart and great vessels", 7: "mediastinal fat", 8: "airway", 9: "upper abdomen", 10: "lesion",
    11: "cancellous bone", 12: "spinal canal",
}
AIR, FAT, MUSCLE, BONE, LUNG, VESSEL, HEART, MEDIASTINUM, AIRWAY, ABDOMEN, LESION, CANCELLOUS, CANAL = range(13)

#: Tissue intensity: id -> (mean HU, texture sd HU), before per-case offsets and noise.
TISSUE_HU: dict[int, tuple[float, float]] = {
    AIR: (-1000.0, 0.0), FAT: (-100.0, 12.0), MUSCLE: (50.0, 10.0), BONE: (700.0, 40.0),
    LUNG: (-850.0, 25.0), VESSEL: (40.0, 10.0), HEART: (40.0, 10.0), MEDIASTINUM: (-90.0, 14.0),
    AIRWAY: (-980.0, 10.0), ABDOMEN: (55.0, 10.0), LESION: (30.0, 10.0), CANCELLOUS: (380.0, 40.0),
    CANAL: (15.0, 6.0),
}

#: Lung window of the 8-bit rendering (level -600, width 1500): HU [-1350, 150] -> [0, 255].
LUNG_WINDOW = (-1350.0, 150.0)
_HU_MIN, _HU_MAX = -1024.0, 3071.0


@dataclass
class Chest:
    """One chest case before rendering. All arrays ``(X, Y, Z)``.

    ``tissue``: uint8 :data:`TISSUES` ids; ``mean``/``sd``: float32 mean HU and texture sd per voxel
    (lesions edit them); ``side``: uint8 lung of the voxel (0 none, 1 right, 2 left; vessels and lesions
    inside a lung included); ``depth``: float32 blurred lung mask (about 0.5 on the pleura, 1 deep inside,
    0 outside); ``body``: bool; ``v``: float32 anterior layout coordinate; ``rng``: the case's generator.
    """

    tissue: np.ndarray
    mean: np.ndarray
    sd: np.ndarray
    side: np.ndarray
    depth: np.ndarray
    body: np.ndarray
    v: np.ndarray
    rng: np.random.Generator


def _capsule(shape: Sequence[int], a: np.ndarray, b: np.ndarray, r: float):
    """Box and mask of the voxels within ``r`` of segment ``a``-``b`` (or None outside the grid)."""
    box = bounding_box((a + b) / 2, np.abs(b - a) / 2 + r + 1, shape)
    if box is None:
        return None
    x, y, z = box_coords(box)
    ab = (b - a).astype(np.float32)
    px, py, pz = x - np.float32(a[0]), y - np.float32(a[1]), z - np.float32(a[2])
    t = np.clip((px * ab[0] + py * ab[1] + pz * ab[2]) / np.float32(max(float(ab @ ab), 1e-6)), 0, 1)
    dx, dy, dz = px - t * ab[0], py - t * ab[1], pz - t * ab[2]
    return box, dx * dx + dy * dy + dz * dz <= np.float32(r * r)


def _vessel_tree(rng: np.random.Generator, shape: Sequence[int], hilum: np.ndarray, side: float,
                 length: float, radius: float) -> np.ndarray:
    """Bool mask of a random branching tree of tubes from ``hilum`` (5 primaries, 3 generations)."""
    out = np.zeros(tuple(shape), bool)
    primaries = [(0.5, 0.0, 0.9), (1.0, 0.1, 0.15), (0.6, 0.4, -0.7), (0.5, -0.6, -0.6), (0.5, 0.8, 0.2)]
    stack = []
    for dx, dy, dz in primaries:
        d = np.array([side * dx, dy, dz]) + np.array([normal(rng, 0.15) for _ in range(3)])
        stack.append((hilum, d / np.linalg.norm(d), length * uniform(rng, 0.85, 1.15), radius, 3))
    while stack:  # depth-first, children in a fixed order: deterministic
        start, d, ln, r, gen = stack.pop()
        end = start + d * ln
        cap = _capsule(shape, start, end, max(r, 0.6))
        if cap is not None:
            box, m = cap
            out[box] |= m
        if gen > 0:
            for _ in range(2):
                c = d + np.array([normal(rng, 0.6) for _ in range(3)])
                stack.append((end, c / max(np.linalg.norm(c), 1e-6), ln * 0.72, r * 0.72, gen - 1))
    return out


def chest_anatomy(rng: np.random.Generator, shape: tuple[int, int, int]) -> Chest:
    """Draw the thoracic anatomy of one case (see the module docstring) on grid ``shape``."""
    nx, ny, nz = shape
    x, y, z = grid(shape)
    t = z / np.float32(max(nz - 1, 1))

    # ---- body outline, wall, ribs, sternum
    cx, cy = (nx - 1) / 2 + normal(rng, 0.015 * nx), (ny - 1) / 2 + normal(rng, 0.015 * ny)
    ax, ay = uniform(rng, 0.38, 0.47) * nx, uniform(rng, 0.27, 0.35) * ny
    ay_back = ay * uniform(rng, 0.85, 0.95)
    fat, wall = uniform(rng, 0.03, 0.10), uniform(rng, 0.06, 0.08)
    z_shift = normal(rng, 0.03)
    scale = float(np.sqrt(ax * ay / (0.43 * nx * 0.31 * ny)))
    u = (x - np.float32(cx)) / np.float32(ax)
    v = (y - np.float32(cy)) / np.where(y >= cy, np.float32(ay), np.float32(ay_back))
    deform = 1 + np.float32(0.03) * np.clip(smooth_field(rng, (5, 5, 3), shape), -2.5, 2.5)
    rho = np.sqrt(u * u + v * v) / deform
    body = rho <= 1
    cavity_r = 1 - fat - wall
    cavity = rho <= cavity_r
    tissue = np.where(body, np.uint8(FAT), np.uint8(AIR))
    tissue[body & (rho > cavity_r) & (rho <= 1 - fat)] = MUSCLE
    period = max(4.0, 0.14 * nz)
    phase = np.mod(z / np.float32(period) + np.float32(0.5) * v + np.float32(rng.random()), 1.0)
    ribs = (rho > cavity_r - 0.01) & (rho <= 1 - fat - 0.015) & (phase < 0.35) & ((np.abs(u) > 0.18) | (v < 0.5))
    tissue[ribs] = BONE
    tissue[(rho > cavity_r - 0.02) & (rho <= 1 - fat - 0.01) & (np.abs(u) <= 0.09) & (v > 0.5)] = BONE

    # ---- spine (posterior midline) and paraspinal muscles
    sx0, sy0 = cx + normal(rng, 0.5), cy - (0.60 + normal(rng, 0.02)) * ay_back
    rx, ry = 0.07 * nx * scale, 0.06 * ny * scale
    sx, sy = x - np.float32(sx0), y - np.float32(sy0)
    vb = (sx / np.float32(rx)) ** 2 + (sy / np.float32(ry)) ** 2
    r_canal = 0.028 * nx * scale
    canal_y = -(ry + r_canal + 0.6)
    cd = np.sqrt(sx * sx + (sy - np.float32(canal_y)) ** 2)
    arch = (cd > r_canal) & (cd <= r_canal + 0.03 * nx * scale) & (sy < canal_y + 0.3 * r_canal)
    level = np.mod(z / np.float32(max(4.0, 0.12 * nz)) + np.float32(rng.random()), 1.0)
    para = (((np.abs(sx) - np.float32(0.2 * ax)) / np.float32(0.17 * ax)) ** 2
            + ((y - np.float32(cy - 0.74 * ay_back)) / np.float32(0.2 * ay_back)) ** 2) <= 1
    tissue[para & body] = MUSCLE
    tissue[(vb <= 1) & body] = BONE
    tissue[(vb <= 0.7) & (level >= 0.25) & body] = CANCELLOUS
    tissue[(vb <= 1) & (level < 0.25) & body] = MUSCLE  # discs: soft tissue
    tissue[arch & body] = BONE
    tissue[(cd <= r_canal) & body] = CANAL
    spine = np.broadcast_to((vb <= 1.3) | arch | (cd <= r_canal) | para, tuple(shape))

    def voxel(uu: float, vv: float, tt: float) -> np.ndarray:
        return np.array([cx + uu * ax, cy + vv * (ay if vv >= 0 else ay_back), (tt + z_shift) * (nz - 1)])

    # ---- mediastinum band, heart, great vessels, airways
    mid = normal(rng, 0.03)
    width = 0.13 + np.float32(0.03) * smooth_field(rng, (1, 1, 3), (1, 1, nz))
    mediastinum = cavity & (np.abs(u - np.float32(mid)) < width) & (v > -0.75)
    heart_c = voxel(-0.12 + normal(rng, 0.04), 0.25 + normal(rng, 0.04), 0.22 + normal(rng, 0.04))
    heart_semi = np.array([0.36 * ax, 0.50 * ay, 0.30 * nz]) * float(np.exp(uniform(rng, -0.1, 0.1)))
    heart = ellipsoid(rng, shape, heart_c, heart_semi, rotation(np.deg2rad(-25 + normal(rng, 10)),
                                                                np.deg2rad(normal(rng, 8))), 0.08)
    r_ao = 0.04 * nx * scale * uniform(rng, 0.9, 1.1)
    aorta_pts = np.stack([voxel(0.06 + mid, 0.22, 0.35), voxel(0.05 + mid, 0.15, 0.80), voxel(-0.04 + mid, -0.15, 0.95),
                          voxel(-0.16 + mid, -0.40, 0.80), voxel(-0.16 + mid, -0.42, -0.1)])
    aorta_pts += np.array([[normal(rng, 0.8), normal(rng, 0.8), 0.0] for _ in range(len(aorta_pts))])
    aorta = tube(rng, shape, aorta_pts, np.full(len(aorta_pts), r_ao), 0.06)
    hila = {s: voxel(s * 0.30 + mid + normal(rng, 0.03), -0.05 + normal(rng, 0.04), 0.58 + normal(rng, 0.03))
            for s in (1.0, -1.0)}
    trunk = voxel(-0.06 + mid, 0.25, 0.42)
    bifurcation = voxel(-0.05 + mid, 0.08, 0.58)
    r_pa = 0.032 * nx * scale
    arteries = [tube(rng, shape, np.stack([trunk, bifurcation, hila[s]]), np.full(3, r_pa), 0.05) for s in (1.0, -1.0)]
    r_tr = 0.035 * nx * scale
    carina = voxel(mid, 0.0, 0.70 + normal(rng, 0.03))
    trachea_pts = np.stack([voxel(mid + 0.02, 0.08, 1.15), voxel(mid, 0.04, 0.9), carina])
    airway_wall = np.zeros(shape, bool)
    airway = np.zeros(shape, bool)
    for pts, r in [(trachea_pts, r_tr)] + [
        (np.stack([carina, (carina + hila[s]) / 2 + np.array([0, -0.05 * ay, 0.02 * nz]), hila[s] + np.array([s * 0.08 * ax, -0.03 * ay, 0])]),
         0.65 * r_tr) for s in (1.0, -1.0)
    ]:
        for target, rr in ((airway_wall, r * 1.4 + 0.5), (airway, r)):
            m = tube(rng, shape, pts, np.full(len(pts), rr), 0.03)
            if m is not None:
                target[m.box] |= m.mask

    # ---- lungs: per side a deformed ellipsoid clipped to the cavity, carved by the mediastinum
    carve = mediastinum | spine | ~cavity
    if heart is not None:
        hm = np.zeros(shape, bool)
        hm[heart.box] = heart.mask
        carve |= hm
    side = np.zeros(shape, np.uint8)
    for label, s in ((1, 1.0), (2, -1.0)):
        c = voxel(s * 0.47 + mid + normal(rng, 0.03), -0.05 + normal(rng, 0.03), (0.66 if s > 0 else 0.62) + normal(rng, 0.04))
        semi = np.array([0.42 * ax, 0.92 * ay, 0.60 * nz]) * float(np.exp(uniform(rng, np.log(0.9), np.log(1.12))))
        semi *= np.array([1 + normal(rng, 0.05) for _ in range(3)])
        m = ellipsoid(rng, shape, c, semi, rotation(np.deg2rad(normal(rng, 6)), np.deg2rad(normal(rng, 5))), 0.08)
        if m is not None:
            sub = side[m.box]
            sub[m.mask & ~carve[m.box] & (sub == 0)] = label
    lung = side > 0
    below = cavity & ~lung & ~mediastinum & (t < 0.55 + z_shift)
    tissue[cavity & ~spine] = np.where(below[cavity & ~spine], np.uint8(ABDOMEN), np.uint8(MEDIASTINUM))
    tissue[mediastinum & ~spine] = MEDIASTINUM
    tissue[lung] = LUNG
    if heart is not None:
        tissue[hm & cavity & ~spine] = HEART
    for m in (aorta, *arteries):
        if m is not None:
            sub = tissue[m.box]
            sub[m.mask & cavity[m.box] & ~spine[m.box]] = HEART
    tissue[airway_wall & cavity & ~lung] = MUSCLE
    tissue[airway & cavity] = AIRWAY

    # ---- pulmonary vessel trees, inside the lungs only (airways stay air)
    length, radius = 0.36 * ax, 0.03 * nx * scale
    for label, s in ((1, 1.0), (2, -1.0)):
        tree = _vessel_tree(rng, shape, hila[s], s, length, radius)
        tissue[tree & (side == label) & ~airway] = VESSEL
    side[airway] = 0
    depth = blur(side.astype(bool).astype(np.float32), max(1.0, 0.035 * nx))
    depth = np.where(side > 0, depth, np.float32(0))

    # ---- per-voxel mean and texture sd, with per-case offsets
    mean_lut = np.array([TISSUE_HU[k][0] + (normal(rng, 3.0) if k else 0.0) for k in range(len(TISSUES))], np.float32)
    mean_lut[LUNG] = uniform(rng, -880.0, -800.0)
    sd_lut = np.array([TISSUE_HU[k][1] for k in range(len(TISSUES))], np.float32)
    mean = mean_lut[tissue]
    mean = np.where(tissue == LUNG, mean + np.float32(30.0) * np.clip(-v, 0, 1), mean)  # dependent density
    return Chest(tissue=tissue, mean=mean, sd=sd_lut[tissue], side=side, depth=depth, body=body,
                 v=np.broadcast_to(v, shape).astype(np.float32), rng=rng)


def render_ct(chest: Chest) -> np.ndarray:
    """Integer HU (float32 ``(X, Y, Z)``, in [-1024, 3071]): mean + texture + offset + noise."""
    rng, shape = chest.rng, chest.tissue.shape
    tex = np.float32(0.6) * noise_field(rng, shape, 0.7) + np.float32(0.8) * noise_field(rng, shape, 1.5)
    offset = np.float32(uniform(rng, -5.0, 5.0))
    noise_sd = np.float32(uniform(rng, 10.0, 18.0))
    noise = noise_field(rng, shape, 0.5)
    image = chest.mean + chest.sd * tex + np.where(chest.body, offset, np.float32(0)) + noise_sd * noise
    return np.rint(np.clip(image, _HU_MIN, _HU_MAX)).astype(np.float32)


def to_8bit(hu: np.ndarray, window: tuple[float, float] = LUNG_WINDOW) -> np.ndarray:
    """Lung-window 8-bit image: HU ``window`` -> integers [0, 255] (float32, like a PNG slice stack)."""
    lo, hi = window
    return np.rint(np.clip((hu - np.float32(lo)) * np.float32(255.0 / (hi - lo)), 0, 255)).astype(np.float32)
