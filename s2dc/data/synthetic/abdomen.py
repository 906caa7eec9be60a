"""Synthetic abdominal CT phantoms and datasets written like the real ones.

The embedded benchmark needs data with *anatomical structure*: several structures whose location,
size and shape vary from case to case, each with its own intensity distribution and texture, inside
a body outline. :func:`ct_phantom` draws one such abdominal CT-like volume (HU) together with its
exact 13-organ BTCV label map; :func:`write_dataset` writes many of them as NIfTI files plus an
MSD-style ``dataset.json``, so the real-data code path (``list_volumes`` -> ``CachedVolumes`` ->
training) runs on them unchanged.

Axis conventions
----------------
Arrays are indexed ``[x, y, z]`` in RAS+ voxel order and are written with the affine
``diag(sx, sy, sz, 1)``, so ``Orientationd("RAS")`` leaves them as they are:

* ``x`` increases towards the patient's **right** (liver at large ``x``, spleen at small ``x``);
* ``y`` increases towards **anterior** (spine at small ``y``, belly wall at large ``y``);
* ``z`` increases towards **superior** (liver dome / oesophagus at large ``z``).

(In radiological display the patient's right is on the left of the screen; that is a viewer choice.)

Scale
-----
The phantom is a shrunken abdomen that fills the grid. At the default 96 x 96 x 64 voxels of
1.5 x 1.5 x 2 mm (144 x 144 x 128 mm) the body is about 0.45 x real size in-plane and the slab spans
roughly T11-L3 at half scale. Sizes and positions are fractions of the grid and of the sampled body
ellipse, so another ``shape`` gives the same anatomy at another resolution. Small organs (adrenals,
gallbladder, oesophagus, portal/splenic vein) are drawn relatively larger than real so that each
keeps more than ~100 voxels at the default shape (about 40 at 64 x 64 x 40; smaller grids can lose them).

Anatomy (layout ``u`` = patient right +, ``v`` = anterior +, both in units of the body semi-axes;
``t`` = 0 inferior ... 1 superior edge of the slab)
--------------------------------------------------------------------------------------------
* body: elliptical outline (random semi-axes, centre jitter, slight taper, flatter back, smooth
  random deformation); subcutaneous fat (-100 HU), muscle wall (50 HU), air outside (-1000 HU);
* spine: vertebral body (cancellous ~380 HU, cortex ~700 HU) with discs, spinal canal, posterior
  arch and spinous process (~600 HU); paraspinal and psoas muscles; rib cross-sections in the
  upper wall;
* intraperitoneal background: fat (-90 HU) with bowel loops (35 HU) and bowel gas pockets;
* the 13 BTCV organs, each a union of randomly deformed ellipsoids or a tube along a smooth
  centreline (see ``_ORGAN_LAYOUT`` and ``_draw_organs``): liver right-anterior-superior (right
  lobe + left lobe across the midline), spleen left-posterior-superior, kidneys posterior on both
  sides (left one higher), adrenals on the upper-medial poles of the kidneys, gallbladder under the
  liver, stomach left-anterior (fundus + body, with a gas cap anteriorly), pancreas a tapering tube
  from head (right, near the duodenum) to tail (spleen), aorta left-anterior of the spine, IVC
  right-anterior of the spine, oesophagus a thin tube in the upper slab joining the stomach,
  portal/splenic vein a thin tube from the liver hilum behind the pancreas to the splenic hilum.
  Positions depend on each other (adrenal on its kidney, gallbladder under the liver, vein from
  the liver to the spleen, aorta/IVC on the spine), so context is informative.

Per case, each organ gets a centre jitter, a log-uniform size factor in [0.8, 1.25] (plus up to
+-10 % per axis), a random orientation and a low-frequency random deformation of its distance function; the whole
layout also shifts with the body and along ``z``. Overlaps are resolved by ``PRIORITY`` (vessels
and small organs first, the liver last), organs are confined to the abdominal cavity and never
overlap bone, and the label map is exactly the set of voxels painted with each organ's intensity.

Intensities (HU, portal-venous phase) are in ``ORGAN_HU``: ``(mean, texture sd)``. Liver vs spleen
and pancreas vs adrenals vs bowel (and kidneys vs IVC) overlap in intensity, so location and shape
matter. Each organ has its own texture (smoothed noise with an organ-specific sd and correlation
length); per case there is a global offset (+-5 HU), a per-organ offset (+-6 HU), a contrast
factor (0.92-1.08 on the enhancement above 40 HU) and white-ish acquisition noise of 10-18 HU sd.
Values are rounded to integer HU (like real CT) and stored as float32.

Determinism: everything derives from one ``numpy.random.Generator(seed)`` (no global RNG, no
torch); the volumes are built from single-threaded element-wise NumPy operations (no FFTs, no
threaded reductions), so the same seed gives bit-identical arrays regardless of thread count.
Across machines / NumPy versions identity is likely but not guaranteed (e.g. libm ``cos`` of the
few rotation angles).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..registry import get
from .checks import check_seed, check_shape
from .fields import noise_field, smooth_field
from .geometry import Mask, ellipsoid, grid, normal, rotation, tube, uniform, union

__all__ = ["BTCV_LABELS", "ORGAN_HU", "PRIORITY", "Phantom", "ct_phantom", "phantom"]

BTCV_LABELS: dict[int, str] = dict(get("btcv").labels)

#: Organ tissue intensity: label -> (mean HU, texture sd HU), before per-case offsets and noise.
ORGAN_HU: dict[int, tuple[float, float]] = {
    1: (52.0, 9.0),     # spleen       (close to liver)
    2: (150.0, 14.0),   # right kidney (contrast; close to IVC)
    3: (150.0, 14.0),   # left kidney
    4: (10.0, 5.0),     # gallbladder  (bile)
    5: (42.0, 9.0),     # esophagus
    6: (60.0, 9.0),     # liver
    7: (25.0, 10.0),    # stomach wall/contents (plus a gas cap, about -850 HU)
    8: (180.0, 10.0),   # aorta
    9: (150.0, 12.0),   # inferior vena cava
    10: (165.0, 10.0),  # portal and splenic veins
    11: (40.0, 12.0),   # pancreas     (lobulated; close to adrenals and bowel)
    12: (32.0, 8.0),    # right adrenal gland
    13: (32.0, 8.0),    # left adrenal gland
}

#: Overlap resolution: earlier organs keep contested voxels (vessels and small organs carve
#: into large parenchymal organs, as the gallbladder into the liver or the IVC through it).
PRIORITY: tuple[int, ...] = (8, 9, 10, 5, 12, 13, 4, 2, 3, 11, 1, 7, 6)


# Texture mix per organ: weights of the (fine, medium, coarse) smoothed-noise fields.
_TEXTURE_MIX = {
    1: (0.4, 0.8, 0.4), 2: (0.3, 1.0, 0.3), 3: (0.3, 1.0, 0.3), 4: (0.2, 0.3, 1.0),
    5: (1.0, 0.5, 0.0), 6: (0.3, 0.7, 0.7), 7: (0.3, 1.0, 0.5), 8: (0.2, 0.3, 1.0),
    9: (0.3, 0.5, 1.0), 10: (0.2, 0.4, 1.0), 11: (1.0, 0.6, 0.2), 12: (1.0, 0.4, 0.0),
    13: (1.0, 0.4, 0.0),
}
_ENHANCED = (2, 3, 8, 9, 10)  # organs whose HU scales with the per-case contrast factor

# Background tissues: (mean HU, texture sd HU)
_AIR = -1000.0
_FAT_SC = (-100.0, 12.0)
_FAT_IP = (-90.0, 14.0)
_MUSCLE = (50.0, 10.0)
_BOWEL = (35.0, 15.0)
_GAS = (-850.0, 40.0)
_BONE_CANC = (380.0, 40.0)
_BONE_CORT = (700.0, 40.0)
_BONE_POST = (600.0, 50.0)
_DISC = (90.0, 10.0)
_CSF = (15.0, 6.0)

_HU_MIN, _HU_MAX = -1024.0, 3071.0


# --------------------------------------------------------------------------- anatomy


@dataclass
class _Body:
    cx: float
    cy: float
    ax: float      # semi-axis along x (voxels)
    ay: float      # anterior semi-axis along y (voxels)
    ay_back: float  # posterior semi-axis along y (flatter back)
    fat: float     # subcutaneous fat thickness (fraction of the radius)
    wall: float    # muscle wall thickness (fraction of the radius)
    scale: float   # body size relative to the reference body
    z_shift: float  # shift of the whole organ layout along t

    def voxel(self, u: float, v: float, t: float, nz: int) -> np.ndarray:
        """Voxel coordinates of layout point (u, v, t)."""
        ay = self.ay if v >= 0 else self.ay_back
        return np.array([self.cx + u * self.ax, self.cy + v * ay, (t + self.z_shift) * (nz - 1)])


def _sample_body(rng: np.random.Generator, shape: Sequence[int]) -> _Body:
    nx, ny, _ = shape
    ax = uniform(rng, 0.40, 0.46) * nx
    ay = uniform(rng, 0.30, 0.36) * ny
    return _Body(
        cx=(nx - 1) / 2 + normal(rng, 0.015 * nx),
        cy=(ny - 1) / 2 + 0.02 * ny + normal(rng, 0.015 * ny),
        ax=ax, ay=ay, ay_back=ay * uniform(rng, 0.86, 0.94),
        fat=uniform(rng, 0.05, 0.10), wall=uniform(rng, 0.05, 0.07),
        scale=float(np.sqrt(ax * ay / (0.43 * nx * 0.33 * ny))),
        z_shift=normal(rng, 0.03),
    )


# Organ layout. Ellipsoid parts: centre (u, v, t), semi-axes as fractions of the grid (x, y, z),
# yaw / pitch / roll in degrees, deformation amplitude. Positions get N(0, jitter) per case.
_ORGAN_LAYOUT: dict[str, dict[str, Any]] = {
    "liver_right": dict(c=(0.42, 0.04, 0.72), semi=(0.20, 0.23, 0.29), rot=(0, 0, -8), amp=0.16),
    "liver_left": dict(c=(-0.02, 0.40, 0.80), semi=(0.17, 0.085, 0.15), rot=(-20, 0, 0), amp=0.18),
    "spleen": dict(c=(-0.64, -0.32, 0.70), semi=(0.065, 0.12, 0.17), rot=(-35, 0, 0), amp=0.15),
    "kidney_r": dict(c=(0.42, -0.44, 0.38), semi=(0.065, 0.08, 0.19), rot=(25, 0, 10), amp=0.10),
    "kidney_l": dict(c=(-0.42, -0.44, 0.46), semi=(0.065, 0.08, 0.19), rot=(-25, 0, -10), amp=0.10),
    "gallbladder": dict(c=(0.30, 0.40, 0.50), semi=(0.045, 0.065, 0.10), rot=(20, 15, 0), amp=0.12),
    "stomach_fundus": dict(c=(-0.38, 0.02, 0.82), semi=(0.11, 0.10, 0.13), rot=(0, 0, 0), amp=0.15),
    "stomach_body": dict(c=(-0.22, 0.36, 0.64), semi=(0.14, 0.075, 0.11), rot=(-30, 0, 15), amp=0.15),
}


def _part(rng, shape, body: _Body, name: str, size: float, jitter: float = 0.04,
          offset: np.ndarray | None = None) -> Mask | None:
    spec = _ORGAN_LAYOUT[name]
    u, v, t = spec["c"]
    c = body.voxel(u + normal(rng, jitter), v + normal(rng, jitter), t + normal(rng, jitter), shape[2])
    if offset is not None:
        c = c + offset
    aspect = np.array([1 + normal(rng, 0.05) for _ in range(3)])
    semi = np.asarray(spec["semi"]) * np.asarray(shape, float) * size * body.scale * aspect
    yaw, pitch, roll = (np.deg2rad(a + normal(rng, 8.0)) for a in spec["rot"])
    return ellipsoid(rng, shape, c, semi, rotation(yaw, pitch, roll), spec["amp"] * uniform(rng, 0.8, 1.2))


def _size(rng: np.random.Generator) -> float:
    """Per-organ size factor, log-uniform in [0.8, 1.25]."""
    return float(np.exp(uniform(rng, np.log(0.8), np.log(1.25))))


@dataclass
class _Spine:
    x: float
    y: float
    rx: float
    ry: float


def _draw_organs(rng: np.random.Generator, shape: Sequence[int], body: _Body, spine: _Spine) -> dict[int, Mask]:
    """Masks of the 13 organs (before overlap resolution and clipping to the cavity)."""
    nx, ny, nz = shape
    organs: dict[int, Mask | None] = {}

    # Liver (right lobe + left lobe), gallbladder under its inferior surface.
    s = _size(rng)
    organs[6] = union(_part(rng, shape, body, "liver_right", s), _part(rng, shape, body, "liver_left", s))
    organs[4] = _part(rng, shape, body, "gallbladder", _size(rng))

    organs[1] = _part(rng, shape, body, "spleen", _size(rng))
    spleen = body.voxel(*_ORGAN_LAYOUT["spleen"]["c"], nz)

    # Aorta and IVC: vertical tubes on the spine, gently wandering.
    r_ao = 0.037 * nx * body.scale * uniform(rng, 0.9, 1.1)
    r_ivc = 0.034 * nx * body.scale * uniform(rng, 0.9, 1.1)
    ts = np.linspace(-0.05, 1.05, 4)
    ao_x = spine.x - 0.35 * spine.rx + np.array([normal(rng, 0.8) for _ in ts])
    ao_y = spine.y + spine.ry + r_ao + 0.8 + np.array([normal(rng, 0.6) for _ in ts])
    zs = ts * (nz - 1)
    organs[8] = tube(rng, shape, np.stack([ao_x, ao_y, zs], 1), np.full(4, r_ao), 0.06)
    ivc_x = spine.x + spine.rx + 0.6 * r_ivc + np.array([normal(rng, 0.8) for _ in ts])
    ivc_y = spine.y + 0.5 * spine.ry + r_ivc + np.array([normal(rng, 0.6) for _ in ts])
    organs[9] = tube(rng, shape, np.stack([ivc_x, ivc_y, zs], 1), np.full(4, r_ivc) * np.array([1, 1, 1.1, 1.2]), 0.08)

    # Kidneys, each with its adrenal on the upper-medial pole.
    for label, adrenal, name, side in ((2, 12, "kidney_r", 1.0), (3, 13, "kidney_l", -1.0)):
        s = _size(rng)
        shift = np.array([normal(rng, 0.04 * body.ax), normal(rng, 0.04 * body.ay), normal(rng, 0.05 * nz)])
        organs[label] = _part(rng, shape, body, name, s, jitter=0.0, offset=shift)
        u, v, t = _ORGAN_LAYOUT[name]["c"]
        upper = t + 0.19 * s * body.scale * nz / max(nz - 1, 1)
        c = body.voxel(u - side * 0.13, v + 0.10, upper + 0.05, nz) + shift
        c += np.array([normal(rng, 0.02 * body.ax), normal(rng, 0.02 * body.ay), normal(rng, 0.02 * nz)])
        semi = np.array([0.028, 0.055, 0.075]) * np.asarray(shape, float) * _size(rng) * body.scale
        rot = rotation(np.deg2rad(side * 35 + normal(rng, 10)), np.deg2rad(normal(rng, 10)), 0.0)
        # keep the gland beside the great vessel (right: lateral-posterior to the IVC; left: lateral
        # to the aorta) rather than inside it: the vessels win overlaps
        reach = 0.6 * float(np.sqrt(((rot[0] * semi) ** 2).sum())) + 1.5
        if side > 0:
            c[0] = max(c[0], ivc_x.max() + r_ivc + reach)
        else:
            c[0] = min(c[0], ao_x.min() - r_ao - reach)
        organs[adrenal] = ellipsoid(rng, shape, c, semi, rot, 0.10)

    # Stomach: fundus + body; the oesophagus joins the fundus from above.
    s = _size(rng)
    fundus_offset = np.array([normal(rng, 0.04 * body.ax), normal(rng, 0.04 * body.ay), normal(rng, 0.03 * nz)])
    organs[7] = union(
        _part(rng, shape, body, "stomach_fundus", s, jitter=0.0, offset=fundus_offset),
        _part(rng, shape, body, "stomach_body", s),
    )
    fundus = body.voxel(*_ORGAN_LAYOUT["stomach_fundus"]["c"], nz) + fundus_offset

    # Oesophagus: anterior to the aorta at the top of the slab, down-left into the fundus.
    r_es = 0.026 * nx * body.scale * uniform(rng, 0.9, 1.15)
    top = np.array([ao_x[-1] - 0.3 * r_ao, ao_y[-1] + r_ao + r_es + 0.5, 1.08 * (nz - 1)])
    junction = fundus + np.array([0.6 * 0.11 * nx, -0.2 * 0.10 * ny, 0.35 * 0.13 * nz])
    mid = (top + junction) / 2 + np.array([normal(rng, 1.0), normal(rng, 1.0), 0.0])
    organs[5] = tube(rng, shape, np.stack([top, mid, junction]), np.full(3, r_es), 0.08)

    # Pancreas: tapering tube head (right, inferior) -> tail (splenic hilum, superior), lying anterior
    # to the aorta with the splenic vein along its back.
    s = _size(rng) * body.scale
    r_pv = 0.022 * nx * body.scale * uniform(rng, 0.9, 1.15)
    radii = np.array([0.058, 0.042, 0.038, 0.032]) * nx * s
    front = ao_y.mean() + r_ao + 2.2 * r_pv + radii[1] + 0.5 + normal(rng, 1.0)
    ctrl = [(0.14, front - 1.0, 0.44), (-0.03, front, 0.47), (-0.27, front - 0.12 * body.ay, 0.52)]
    pts = [body.voxel(u + normal(rng, 0.03), 0.0, t + normal(rng, 0.02), nz) for u, _, t in ctrl]
    for p, (_, yy, _) in zip(pts, ctrl):
        p[1] = yy + normal(rng, 0.8)
    tail = spleen + np.array([0.08 * nx, 0.07 * ny, -0.02 * nz]) + np.array([normal(rng, 1.0) for _ in range(3)])
    pts = np.stack(pts + [tail])
    organs[11] = tube(rng, shape, pts, radii, 0.15)

    # Portal / splenic vein: liver hilum -> behind the pancreas neck -> along the pancreas -> splenic hilum.
    hilum = body.voxel(0.24 + normal(rng, 0.03), 0.0, 0.60 + normal(rng, 0.02), nz)
    hilum[1] = front + normal(rng, 1.0)
    behind = np.array([0.0, -(radii[1:3].mean() + r_pv) * 0.85, 0.0])
    vein = np.stack([hilum, pts[1] + behind, pts[2] + behind, tail + np.array([0.0, -0.8 * radii[3], 0.0])])
    organs[10] = tube(rng, shape, vein, np.full(4, r_pv) * np.array([1.15, 1.1, 1.0, 0.95]), 0.06)
    return {k: v for k, v in organs.items() if v is not None}


@dataclass
class Phantom:
    """One abdominal phantom: ``image`` (HU) and BTCV ``labels`` as :func:`ct_phantom`, the ``body`` and
    abdominal ``cavity`` masks (bool, ``(X, Y, Z)``) and the case's generator ``rng``, positioned after
    the phantom, so a twin can draw more of the same case (lesions) from the same stream."""

    image: np.ndarray
    labels: np.ndarray
    body: np.ndarray
    cavity: np.ndarray
    rng: np.random.Generator


def _build(seed: int, shape: tuple[int, int, int]) -> Phantom:
    rng = np.random.default_rng(seed)
    nx, ny, nz = shape
    x, y, z = grid(shape)
    t = z / np.float32(max(nz - 1, 1))
    body = _sample_body(rng, shape)

    # ---- body outline: ellipse per slice with taper, flatter back and smooth deformation
    taper = 1 + uniform(rng, -0.06, 0.06) * (t - 0.5)
    drift_x = smooth_field(rng, (1, 1, 3), (1, 1, nz)) * np.float32(0.01 * nx)
    u = (x - np.float32(body.cx) - drift_x) / (np.float32(body.ax) * taper)
    ay = np.where(y >= body.cy, np.float32(body.ay), np.float32(body.ay_back))
    v = (y - np.float32(body.cy)) / (ay * taper)
    deform = 1 + np.float32(0.035) * np.clip(smooth_field(rng, (5, 5, 3), shape), -2.5, 2.5)
    rho = np.sqrt(u * u + v * v) / deform
    inside = rho <= 1
    inner_fat = 1 - body.fat
    cavity_r = inner_fat - body.wall
    cavity = rho <= cavity_r
    muscle = inside & (rho > cavity_r) & (rho <= inner_fat)

    # ---- texture fields (shared): fine, medium, coarse; acquisition noise
    tex_fine = noise_field(rng, shape, 0.7)
    tex_med = noise_field(rng, shape, 1.4)
    tex_coarse = np.clip(smooth_field(rng, (max(2, nx // 8), max(2, ny // 8), max(2, nz // 8)), shape), -3, 3)

    tissue = np.full(shape, _AIR, np.float32)
    tissue_sd = np.zeros(shape, np.float32)

    def paint(mask: np.ndarray, hu: tuple[float, float]) -> None:
        tissue[mask] = hu[0]
        tissue_sd[mask] = hu[1]

    paint(inside, _FAT_SC)
    paint(muscle, _MUSCLE)
    paint(cavity, _FAT_IP)

    # bowel loops (anterior / inferior bias) with gas pockets
    bowel_field = smooth_field(rng, (7, 6, 5), shape) + np.float32(0.9) * v + np.float32(0.5) * (0.5 - t)
    bowel = cavity & (bowel_field > 0.35)
    paint(bowel, _BOWEL)
    gas_field = smooth_field(rng, (12, 12, 8), shape)
    paint(bowel & (gas_field > 1.3), _GAS)

    # ribs in the upper wall: oblique bands of the muscle layer
    rib_period = max(4.0, 0.16 * nz)
    phase = np.mod(z / np.float32(rib_period) + np.float32(0.6) * v + np.float32(rng.random()), 1.0)
    ribs = (rho > cavity_r - 0.01) & (rho <= inner_fat - 0.015) & (phase < 0.3) & (t > 0.45 - body.z_shift) \
        & (v > -0.55) & ((np.abs(u) > 0.3) | (v < 0.55))
    paint(ribs, _BONE_CORT)

    # ---- spine and back muscles
    back = body.cy - body.ay_back
    sp = _Spine(
        x=body.cx + normal(rng, 0.5),
        y=back + (0.60 + normal(rng, 0.02)) * body.ay_back,
        rx=0.068 * nx * body.scale, ry=0.052 * ny * body.scale,
    )
    curve = smooth_field(rng, (1, 1, 3), (1, 1, nz)) * np.float32(0.6)
    sx, sy = x - np.float32(sp.x), y - np.float32(sp.y) - curve
    vb = (sx / np.float32(sp.rx)) ** 2 + (sy / np.float32(sp.ry)) ** 2
    r_canal = 0.026 * nx * body.scale
    canal_y = -(sp.ry + r_canal + 0.6)
    cd = np.sqrt(sx * sx + (sy - np.float32(canal_y)) ** 2)
    canal = cd <= r_canal
    arch = (cd > r_canal) & (cd <= r_canal + 0.025 * nx * body.scale) & (sy < canal_y + 0.3 * r_canal)
    spinous = (np.abs(sx) <= 0.012 * nx + 0.5) & (sy < canal_y) & (y > back + (body.fat + 0.01) * body.ay_back)
    period = max(4.0, 0.11 * nz)  # vertebral height (voxels)
    level = np.mod(z / np.float32(period) + np.float32(rng.random()), 1.0)  # 0..0.28: disc
    transverse = (np.abs(sy - np.float32(canal_y + 0.3 * r_canal)) <= 0.012 * ny + 0.5) \
        & (np.abs(sx) <= sp.rx + 0.05 * nx) & (np.abs(sx) > r_canal) \
        & (level > 0.45) & (level < 0.85)
    para_u = np.float32(0.2 * body.ax)
    para = (((np.abs(sx) - para_u) / np.float32(0.17 * body.ax)) ** 2
            + ((y - np.float32(back + 0.26 * body.ay_back)) / np.float32(0.2 * body.ay_back)) ** 2) <= 1
    paint(para & inside, _MUSCLE)
    psoas_scale = np.clip((0.78 - t - body.z_shift) / 0.35, 0, 1) * np.float32(body.scale)
    psoas_r = (0.035 + 0.035 * psoas_scale) * psoas_scale
    psoas = (((np.abs(sx) - np.float32(sp.rx + 0.05 * nx)) / (psoas_r * nx + 1e-3)) ** 2
             + ((sy - np.float32(0.1 * sp.ry)) / (psoas_r * ny + 1e-3)) ** 2) <= 1
    paint(psoas & cavity, _MUSCLE)
    disc = level < 0.28
    bone = ((vb <= 1) | arch | spinous | transverse) & inside
    paint(bone & ~(vb <= 1), _BONE_POST)
    paint((vb <= 1) & ~disc, _BONE_CORT)
    paint((vb <= 0.72) & ~disc, _BONE_CANC)
    paint((vb <= 1) & disc, _DISC)
    paint(canal & inside, _CSF)
    spine_all = bone | canal | para

    # ---- organs: overlap resolution by priority, confined to the cavity, never on bone
    masks = _draw_organs(rng, shape, body, sp)
    allowed = cavity & ~spine_all
    labels = np.zeros(shape, np.uint8)
    for label in PRIORITY:
        m = masks.get(label)
        if m is None:
            continue
        sub = labels[m.box]
        sub[m.mask & allowed[m.box] & (sub == 0)] = label

    # ---- organ intensities: per-case offsets, contrast and texture mix
    contrast = uniform(rng, 0.92, 1.08)
    mean_lut = np.zeros(14, np.float32)
    sd_lut = np.zeros(14, np.float32)
    mix = np.zeros((14, 3), np.float32)
    for label, (hu, sd) in ORGAN_HU.items():
        mean = 40 + (hu - 40) * contrast if label in _ENHANCED else hu
        mean_lut[label] = mean + normal(rng, 3.0)
        sd_lut[label] = sd
        w = np.asarray(_TEXTURE_MIX[label], np.float64)
        mix[label] = w / np.sqrt((w * w).sum())
    organ = labels > 0
    tex = mix[labels, 0] * tex_fine + mix[labels, 1] * tex_med + mix[labels, 2] * tex_coarse
    tissue = np.where(organ, mean_lut[labels], tissue)
    tissue_sd = np.where(organ, sd_lut[labels], tissue_sd)
    bg_tex = np.float32(0.6) * tex_fine + np.float32(0.8) * tex_med
    tex = np.where(organ, tex, bg_tex)

    # stomach gas cap (supine patient: gas rises anteriorly): the top 12-30 % of its AP extent
    stomach = labels == 7
    ys = np.nonzero(stomach.any(axis=(0, 2)))[0]
    frac = uniform(rng, 0.12, 0.3)
    gas_level = ys.max() - frac * (ys.max() - ys.min()) if ys.size else np.inf
    stomach_gas = stomach & (y > np.float32(gas_level))
    tissue = np.where(stomach_gas, np.float32(_GAS[0]), tissue)
    tissue_sd = np.where(stomach_gas, np.float32(_GAS[1]), tissue_sd)

    # ---- acquisition: global offset inside the body, noise everywhere, integer HU
    offset = np.float32(uniform(rng, -5.0, 5.0))
    noise_sd = np.float32(uniform(rng, 10.0, 18.0))
    noise = noise_field(rng, shape, 0.5)
    image = tissue + tissue_sd * tex + np.where(inside, offset, np.float32(0)) + noise_sd * noise
    image = np.rint(np.clip(image, _HU_MIN, _HU_MAX)).astype(np.float32)
    return Phantom(image=image, labels=labels, body=inside, cavity=cavity, rng=rng)


def ct_phantom(seed: int, shape: tuple[int, int, int] = (96, 96, 64)) -> tuple[np.ndarray, np.ndarray]:
    """One abdominal CT-like phantom and its 13-organ label map.

    Parameters
    ----------
    seed : int
        Non-negative seed; the same seed gives bit-identical arrays.
    shape : tuple of 3 int
        Grid ``(X, Y, Z)``, each >= 16; designed for 96 x 96 x 64 voxels of 1.5 x 1.5 x 2 mm.

    Returns
    -------
    image : numpy.ndarray
        ``float32`` of shape ``(X, Y, Z)``, integer-valued HU in [-1024, 3071]; RAS+ voxel order
        (``x`` towards the patient's right, ``y`` anterior, ``z`` superior).
    labels : numpy.ndarray
        ``uint8`` of shape ``(X, Y, Z)`` with :data:`BTCV_LABELS` ids (0 = background).
    """
    phantom = _build(check_seed(seed), check_shape(shape))
    return phantom.image, phantom.labels




def phantom(seed: int, shape: tuple[int, int, int] = (96, 96, 64)) -> Phantom:
    """:func:`ct_phantom` with its body and cavity masks and its generator (see :class:`Phantom`)."""
    return _build(check_seed(seed), check_shape(shape))
