"""Synthetic skull-stripped brains: tissue maps (and an optional glioma) shared by every MRI sequence.

:func:`brain_anatomy` draws one brain as a map of tissue codes (:data:`TISSUES`) from which
:mod:`.render_mri` renders any sequence, plus the BraTS label map of its tumour (if any). The same
tissue map under every sequence is what makes the sequences of one case consistent (BraTS
segmentation and BraTS 2023 translation).

Axis conventions
----------------
Arrays are indexed ``[x, y, z]`` in RAS+ voxel order (``x`` patient right, ``y`` anterior, ``z``
superior), written with the affine ``diag(spacing)`` like every twin.

Shape and placement (per case)
------------------------------
The brain is a deformed ellipsoid: semi-axes 0.33-0.40 (x), 0.37-0.44 (y), 0.34-0.42 (z) of the grid,
centre jitter ~3 % of the grid per axis, orientation yaw +-14 deg, pitch +-12 deg, roll +-8 deg, and a
low-frequency random deformation of its surface (+-5 %). Everything inside is placed in the brain's
*local* coordinates ``(u, v, w)`` (right, anterior, superior; the brain surface is ``|(u, v, w)| ~ 1``),
so the anatomy rotates, moves and scales with the brain; it is zero outside (skull-stripped).

Anatomy (local coordinates)
---------------------------
* white matter (WM): everything inside not claimed below;
* cortical grey matter (GM): a ribbon under the deformed surface (thickness 0.09-0.14 of the radius,
  thinning with atrophy) that follows the sulci into the depth (gyral folding);
* sulcal CSF: sheets along the zero level set of a smooth random field in the outer 0.17-0.27 of the
  radius (wider with atrophy), a thin rim of surface CSF, and the interhemispheric fissure (``|u|``
  small, upper brain);
* ventricles: two lateral ventricles (arched bodies along ``v`` beside the midline) and a thin third
  ventricle, scaled per case by a log-uniform factor of 0.7-1.9 (atrophy) plus +-15 % left/right;
* deep grey nuclei: caudate heads beside the frontal horns, lentiform nuclei, thalami;
* vessels: choroid plexus in the lateral ventricles' trigones, the superior sagittal sinus along the
  top of the midline, and veins in some sulci (these enhance on T1ce, like a tumour's rim);
* white-matter hyperintensities (WMH): periventricular caps and rim, and a few patches, more with atrophy
  (bright on T2 / FLAIR like edema, unlabelled).

Tumour (glioma, optional)
-------------------------
A deformed core in one hemisphere's white matter (radius 0.15-0.28 of the brain radius, centre
anywhere with ``|u|`` 0.15-0.55): an **enhancing** rim (BraTS label 4) around a **necrotic** core
(label 1, 0.45-0.8 of the core radius, its own deformation, clipped to 0.2-0.85, so inside a rim of 15-80 % of
the core radius that, on the voxel grid, can be thinner than a voxel in places: measured on quick twins, the
necrosis of 4 of 10 cases touches edema at 1-24 voxel faces, and a core cut by the brain's edge touches
normal tissue), inside a
**peritumoral edema** (label 2) reaching 1.4-2.6 times the core radius (at most 0.5 of the brain
radius; an irregular margin of 30-200 % of its mean width) that spreads only through white matter /
deep grey / WMH (it spares the cortex and CSF). The edema fades from the core to its margin and the
rim enhances patchily (``Brain.grade``), so their intensities run into those of grey matter / deep
grey. The tumour displaces the anatomy: the inner structures (sulci, nuclei, ventricles, WMH) are
sampled through a radial mass-effect warp around the tumour (ventricles compressed, midline
shifted), and the core replaces whatever lies under it.

Tissue codes (:data:`TISSUES`): 0 outside, 1 CSF, 2 GM, 3 WM, 4 deep GM, 5 vessel/choroid, 6 WMH,
7 necrosis, 8 edema, 9 enhancing tumour. BraTS labels (:data:`BRATS_LABEL_OF`): 7 -> 1, 8 -> 2, 9 -> 4.

Determinism: one ``numpy.random.Generator`` per case, element-wise NumPy (no global RNG, no torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .checks import check_shape
from .fields import smooth_field
from .geometry import grid, normal, rotation, uniform

__all__ = ["BRATS_LABEL_OF", "Brain", "TISSUES", "brain_anatomy"]

#: Tissue code -> name.
TISSUES: dict[int, str] = {
    0: "outside", 1: "CSF", 2: "grey matter", 3: "white matter", 4: "deep grey nuclei",
    5: "vessel/choroid", 6: "WM hyperintensity", 7: "necrosis", 8: "edema", 9: "enhancing tumour",
}
CSF, GM, WM, DEEP, VESSEL, WMH, NECROSIS, EDEMA, ENHANCING = range(1, 10)
NORMAL_TISSUES = (CSF, GM, WM, DEEP, VESSEL, WMH)

#: Tissue code -> BraTS label value (other codes are label 0).
BRATS_LABEL_OF: dict[int, int] = {NECROSIS: 1, EDEMA: 2, ENHANCING: 4}


@dataclass
class Brain:
    """One brain. ``tissue``: uint8 ``(X, Y, Z)`` codes of :data:`TISSUES`; ``mask``: bool brain mask;
    ``label``: uint8 BraTS labels {0, 1, 2, 4}; ``tumour``: whether a tumour was drawn; ``grade``: float32
    ``(X, Y, Z)`` in [0, 1], how far the edema / enhancing voxels are from the tissue they fade into
    (edema: 1 next to the core, 0 at its margin; enhancing rim: patchy enhancement), 1 elsewhere."""

    tissue: np.ndarray
    mask: np.ndarray
    label: np.ndarray
    tumour: bool
    grade: np.ndarray


def _ell(u, v, w, c, semi) -> np.ndarray:
    """Squared normalised distance to an axis-aligned ellipsoid in local coordinates."""
    return (((u - np.float32(c[0])) / np.float32(semi[0])) ** 2 + ((v - np.float32(c[1])) / np.float32(semi[1])) ** 2
            + ((w - np.float32(c[2])) / np.float32(semi[2])) ** 2)


def _local(shape: Sequence[int], centre: np.ndarray, semi: np.ndarray, rot: np.ndarray):
    """Local brain coordinates ``(u, v, w)`` (each float32 ``(X, Y, Z)``) of every voxel."""
    x, y, z = grid(shape)
    dx, dy, dz = x - np.float32(centre[0]), y - np.float32(centre[1]), z - np.float32(centre[2])
    r = rot.astype(np.float32)
    return tuple((dx * r[0, j] + dy * r[1, j] + dz * r[2, j]) / np.float32(semi[j]) for j in range(3))


def brain_anatomy(rng: np.random.Generator, shape: Sequence[int], tumour: bool) -> Brain:
    """Draw one brain on grid ``shape`` (each >= 16) from ``rng``; with a glioma when ``tumour``."""
    shape = check_shape(tuple(shape))
    n = np.asarray(shape, float)
    semi = np.array([uniform(rng, 0.33, 0.40), uniform(rng, 0.37, 0.44), uniform(rng, 0.34, 0.42)]) * n
    centre = (n - 1) / 2 + np.array([normal(rng, 0.03 * s) for s in n])
    rot = rotation(np.deg2rad(normal(rng, 7.0)), np.deg2rad(normal(rng, 6.0)), np.deg2rad(normal(rng, 4.0)))
    u, v, w = _local(shape, centre, semi, rot)
    f32 = np.float32

    # brain outline: deformed unit sphere, flatter base
    rho = np.sqrt(u * u + v * v + (w * np.where(w < 0, f32(1.15), f32(1.0))) ** 2)
    surf = np.clip(smooth_field(rng, (5, 5, 4), shape), -2, 2)
    rho = rho / (1 + f32(0.025) * surf)
    mask = rho <= 1

    atrophy = uniform(rng, 0.0, 1.0)
    vsize = float(np.exp(uniform(rng, np.log(0.7), np.log(1.9)))) * (0.8 + 0.4 * atrophy)

    # ---- tumour geometry (local coordinates, before the anatomy: its mass effect warps the anatomy)
    if tumour:
        side = 1.0 if rng.random() < 0.5 else -1.0
        r_core = uniform(rng, 0.15, 0.28)
        t = np.array([side * uniform(rng, 0.15, 0.55), uniform(rng, -0.5, 0.5), uniform(rng, -0.3, 0.45)])
        reach = np.linalg.norm(t) + r_core
        if reach > 0.82:
            t = t * (0.82 - r_core) / np.linalg.norm(t)
        tu, tv, tw = u - f32(t[0]), v - f32(t[1]), w - f32(t[2])
        r = np.sqrt(tu * tu + tv * tv + tw * tw)
        mass = uniform(rng, 0.3, 1.0)
        amp, length = 0.6 * r_core * mass, 1.5 * r_core + 0.1
        r_src = np.maximum(r - f32(amp) * np.exp(-(r * r) / f32(2 * length * length)), 0)
        k = r_src / np.maximum(r, f32(1e-6))
        au, av, aw = f32(t[0]) + tu * k, f32(t[1]) + tv * k, f32(t[2]) + tw * k
    else:
        au, av, aw = u, v, w
    arho = np.sqrt(au * au + av * av + aw * aw)

    tissue = np.where(mask, np.uint8(WM), np.uint8(0))

    # ---- cortex and sulci (in the unwarped outline; sulci in the warped interior)
    thick = uniform(rng, 0.11, 0.15) * (1 - 0.25 * atrophy)
    depth = uniform(rng, 0.17, 0.22) + 0.05 * atrophy
    sulcus_w = 0.08 + 0.08 * atrophy
    gyri = smooth_field(rng, (9, 10, 8), shape)
    ag = np.abs(gyri)
    outer = f32(1) - rho
    cortex = mask & ((outer < f32(thick)) | ((ag < f32(sulcus_w + 0.22)) & (outer < f32(depth + thick))))
    sulci = mask & (((ag < f32(sulcus_w)) & (outer < f32(depth))) | (outer < f32(0.02 + 0.02 * atrophy)))
    fissure = mask & (np.abs(au + f32(0.02) * av) < f32(0.025 + 0.02 * atrophy)) & (aw > f32(0.05)) & (arho > 0.35)
    tissue[cortex] = GM
    tissue[sulci | fissure] = CSF
    # veins in some sulci, superior sagittal sinus along the top of the midline
    veins = mask & (ag < f32(sulcus_w + 0.05)) & (outer < f32(depth)) & (outer > 0.02) \
        & (smooth_field(rng, (6, 6, 5), shape) > f32(0.6))
    sinus = mask & (np.abs(u) < f32(0.06)) & (outer < f32(0.08)) & (w > f32(0.15)) & (v > -0.85)
    falx = fissure & (np.abs(au + f32(0.02) * av) < f32(0.02))  # the dura of the falx enhances too
    tissue[veins | sinus | falx] = VESSEL

    # ---- deep grey nuclei, ventricles, choroid plexus (warped by the tumour)
    sep = 0.11 * (0.85 + 0.3 * vsize / 1.3)
    jit = [normal(rng, 0.02) for _ in range(6)]
    deep = np.zeros(shape, bool)
    for s in (-1.0, 1.0):
        deep |= _ell(au, av, aw, (s * (sep + 0.11 * vsize ** 0.5 + 0.04), 0.24 + jit[0], 0.14), (0.07, 0.13, 0.12)) <= 1
        deep |= _ell(au, av, aw, (s * 0.34, 0.08 + jit[1], 0.0 + jit[2]), (0.08, 0.19, 0.15)) <= 1
        deep |= _ell(au, av, aw, (s * 0.14, -0.12 + jit[3], 0.0), (0.10, 0.16, 0.13)) <= 1
    tissue[deep & mask & (tissue == WM)] = DEEP
    vent = np.zeros(shape, bool)
    chor = np.zeros(shape, bool)
    for i, s in enumerate((-1.0, 1.0)):
        vs = vsize * (1 + normal(rng, 0.08))
        arch = aw - f32(0.16) + f32(0.45) * av * av  # bodies arch over the thalami
        vent |= (((au - f32(s * sep)) / f32(0.085 * vs)) ** 2 + (av / f32(0.46)) ** 2 + (arch / f32(0.11 * vs)) ** 2) <= 1
        chor |= _ell(au, av, arch, (s * sep, -0.26 + jit[4 + i], 0.0), (0.06 * vs, 0.09, 0.06 * vs)) <= 1
    vent |= _ell(au, av, aw, (0.0, -0.06, -0.02), (0.022 * vsize, 0.14, 0.11)) <= 1
    vent &= mask & (rho < 0.8)
    tissue[vent] = CSF
    tissue[vent & chor] = VESSEL

    # ---- white-matter hyperintensities: periventricular caps and patches (more with atrophy)
    cap = np.zeros(shape, bool)
    for s in (-1.0, 1.0):
        cap |= _ell(au, av, aw, (s * sep, 0.42, 0.18), (0.08 * vsize, 0.09, 0.09 * vsize)) <= 1
        cap |= _ell(au, av, aw, (s * sep * 1.4, -0.42, 0.18), (0.09 * vsize, 0.09, 0.09 * vsize)) <= 1
    vent_d = np.zeros(shape, np.float32) + f32(9)
    for s in (-1.0, 1.0):  # distance-like quadratic form of the lateral ventricles, for a periventricular rim
        q = (((au - f32(s * sep)) / f32(0.085 * vsize)) ** 2 + (av / f32(0.46)) ** 2
             + ((aw - f32(0.16) + f32(0.45) * av * av) / f32(0.11 * vsize)) ** 2)
        vent_d = np.minimum(vent_d, q)
    cap |= vent_d < f32(1.5 + 0.8 * atrophy)
    patches = smooth_field(rng, (8, 8, 6), shape) > f32(2.1 - 0.5 * atrophy)
    tissue[(cap | patches) & (tissue == WM)] = WMH

    # ---- tumour: edema through WM / deep grey / WMH, then the core replaces everything under it
    label = np.zeros(shape, np.uint8)
    grade = np.ones(shape, np.float32)
    if tumour:
        f_core = np.clip(smooth_field(rng, (4, 4, 4), shape), -2, 2)
        f_nec = np.clip(smooth_field(rng, (4, 4, 4), shape), -2, 2)
        f_ed = np.clip(smooth_field(rng, (5, 5, 5), shape), -2, 2)
        nec_frac = uniform(rng, 0.45, 0.8)
        r_ed = min(r_core * uniform(rng, 1.4, 2.6), 0.5)
        inner = mask & (rho < 0.95)
        core_r = f32(r_core) * (1 + f32(0.15) * f_core)  # core boundary (local radius per direction)
        core = inner & (r <= core_r)
        # necrosis 20-85 % of the core radius: the enhancing rim never vanishes (in continuous coordinates)
        nec = core & (r <= core_r * np.clip(f32(nec_frac) * (1 + f32(0.3) * f_nec), 0.2, 0.85))
        # edema: a margin of irregular width (30-200 % of the mean) around the core
        margin = f32(r_ed - r_core) * np.clip(1 + f32(0.5) * f_ed, 0.3, 2.0)
        edema = inner & (r <= core_r + margin) & np.isin(tissue, (WM, DEEP, WMH)) & ~core
        tissue[edema] = EDEMA
        tissue[core] = ENHANCING
        tissue[nec] = NECROSIS
        label[edema] = BRATS_LABEL_OF[EDEMA]
        label[core] = BRATS_LABEL_OF[ENHANCING]
        label[nec] = BRATS_LABEL_OF[NECROSIS]
        # edema fades from the core (1) to its margin (0); the rim enhances patchily (0.35-1)
        fade = np.clip(1 - (r - core_r) / margin, 0, 1)
        grade = np.where(edema, fade, grade)
        patch = np.clip(f32(0.75) + f32(0.25) * smooth_field(rng, (6, 6, 6), shape), 0.35, 1.0)
        grade = np.where(core & ~nec, patch, grade).astype(np.float32)
    return Brain(tissue=tissue, mask=mask, label=label, tumour=bool(tumour), grade=grade)
