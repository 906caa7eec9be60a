"""Shapes on a voxel grid: rotations, boxed masks, deformed ellipsoids, tubes along smooth centrelines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .fields import smooth_field


def rotation(yaw: float, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Rotation matrix: yaw about z, then pitch about x, then roll about y (radians)."""
    cz, sz = np.cos(yaw), np.sin(yaw)
    cx, sx = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(roll), np.sin(roll)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return rz @ rx @ ry


def bounding_box(center: np.ndarray, half: np.ndarray, shape: Sequence[int]) -> tuple[slice, ...] | None:
    lo = np.maximum(np.floor(center - half).astype(int), 0)
    hi = np.minimum(np.ceil(center + half).astype(int) + 1, np.asarray(shape))
    if np.any(hi <= lo):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def box_coords(box: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.arange(box[0].start, box[0].stop, dtype=np.float32)[:, None, None]
    y = np.arange(box[1].start, box[1].stop, dtype=np.float32)[None, :, None]
    z = np.arange(box[2].start, box[2].stop, dtype=np.float32)[None, None, :]
    return x, y, z


@dataclass
class Mask:
    """Boolean mask restricted to a box of the full grid."""

    box: tuple[slice, ...]
    mask: np.ndarray


def ellipsoid(
    rng: np.random.Generator, shape: Sequence[int], center: np.ndarray, semi: np.ndarray,
    rot: np.ndarray, amp: float,
) -> Mask | None:
    """Deformed ellipsoid: ``|R^T (p - c) / semi| <= 1 + amp * f(p)`` with a smooth random ``f``."""
    half = np.sqrt(((rot * semi[None, :]) ** 2).sum(axis=1)) * (1 + 2.2 * amp) + 1
    box = bounding_box(center, half, shape)
    field_coarse = (4, 4, 4)
    if box is None:
        rng.standard_normal(field_coarse)  # keep the random stream independent of clipping
        return None
    x, y, z = box_coords(box)
    dx, dy, dz = x - np.float32(center[0]), y - np.float32(center[1]), z - np.float32(center[2])
    r = rot.astype(np.float32)
    d2 = np.zeros(tuple(s.stop - s.start for s in box), np.float32)
    for j in range(3):  # local axis j = column j of rot
        local = dx * r[0, j] + dy * r[1, j] + dz * r[2, j]
        d2 += (local / np.float32(semi[j])) ** 2
    f = np.clip(smooth_field(rng, field_coarse, d2.shape), -2.0, 2.0)
    lim = 1 + np.float32(amp) * f
    return Mask(box, d2 <= lim * lim)


def catmull_rom_curve(points: np.ndarray, per_segment: int = 8) -> np.ndarray:
    """Dense points along a Catmull-Rom spline through ``points`` (K, D)."""
    p = np.concatenate([2 * points[:1] - points[1:2], points, 2 * points[-1:] - points[-2:-1]])
    t = np.linspace(0, 1, per_segment, endpoint=False)[:, None]
    t2, t3 = t * t, t * t * t
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t3))
    out.append(points[-1:])
    return np.concatenate(out)


def tube(
    rng: np.random.Generator, shape: Sequence[int], points: np.ndarray, radii: np.ndarray, amp: float,
) -> Mask | None:
    """Tube of varying radius around a smooth centreline through ``points`` (K, 3), deformed.

    A voxel is inside when ``dist / r(s) <= 1 + amp * f`` for some centreline segment, ``dist``
    its distance to the segment and ``r(s)`` the radius interpolated at the closest point.
    """
    dense = catmull_rom_curve(np.concatenate([points, radii[:, None]], axis=1))
    centre, rad = dense[:, :3], np.maximum(dense[:, 3], 0.5)
    lo, hi = centre.min(axis=0), centre.max(axis=0)
    half = (hi - lo) / 2 + rad.max() * (1 + 2.2 * amp) + 1
    box = bounding_box((hi + lo) / 2, half, shape)
    field_coarse = (3, 3, 5)
    if box is None:
        rng.standard_normal(field_coarse)
        return None
    bshape = tuple(sl.stop - sl.start for sl in box)
    a, b = centre[:-1].astype(np.float32), centre[1:].astype(np.float32)  # segments (S, 3)
    ra, rb = rad[:-1].astype(np.float32), rad[1:].astype(np.float32)
    ab = b - a
    inv_ab2 = 1 / np.maximum((ab * ab).sum(axis=1), 1e-6)
    reach = np.maximum(ra, rb) * (1 + 2.2 * amp) + 1  # beyond this a segment cannot matter
    seg_lo, seg_hi = np.minimum(a, b) - reach[:, None], np.maximum(a, b) + reach[:, None]
    # Work slab by slab along the box's longest axis, each against the segments that reach it.
    axis = int(np.argmax(bshape))
    nd = np.full(bshape, np.inf, np.float32)
    for start in range(box[axis].start, box[axis].stop, 8):
        stop = min(start + 8, box[axis].stop)
        keep = (seg_hi[:, axis] >= start) & (seg_lo[:, axis] <= stop - 1)
        if not keep.any():
            continue
        sub = list(box)
        sub[axis] = slice(start, stop)
        x, y, z = box_coords(tuple(sub))
        shp = (x.shape[0], y.shape[1], z.shape[2])
        px, py, pz = (np.broadcast_to(c, shp).reshape(-1, 1) for c in (x, y, z))  # (N, 1) each
        sa, sab, sinv, sra, sdr = a[keep], ab[keep], inv_ab2[keep], ra[keep], (rb - ra)[keep]
        apx, apy, apz = px - sa[:, 0], py - sa[:, 1], pz - sa[:, 2]  # (N, S), one component at a time
        t = np.clip((apx * sab[:, 0] + apy * sab[:, 1] + apz * sab[:, 2]) * sinv, 0.0, 1.0)
        dx, dy, dz = apx - t * sab[:, 0], apy - t * sab[:, 1], apz - t * sab[:, 2]
        r = sra + t * sdr
        idx = [slice(None)] * 3
        idx[axis] = slice(start - box[axis].start, stop - box[axis].start)
        nd[tuple(idx)] = np.sqrt(((dx * dx + dy * dy + dz * dz) / (r * r)).min(axis=1)).reshape(shp)
    f = np.clip(smooth_field(rng, field_coarse, bshape), -2.0, 2.0)
    return Mask(box, nd <= 1 + np.float32(amp) * f)


def union(*masks: Mask | None) -> Mask | None:
    masks = tuple(m for m in masks if m is not None)
    if not masks:
        return None
    lo = [min(m.box[i].start for m in masks) for i in range(3)]
    hi = [max(m.box[i].stop for m in masks) for i in range(3)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    out = np.zeros([b - a for a, b in zip(lo, hi)], bool)
    for m in masks:
        sub = tuple(slice(s.start - lo[i], s.stop - lo[i]) for i, s in enumerate(m.box))
        out[sub] |= m.mask
    return Mask(box, out)


def grid(shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return box_coords(tuple(slice(0, int(n)) for n in shape))


def uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * rng.random())


def normal(rng: np.random.Generator, sd: float, clip: float = 2.0) -> float:
    return float(sd * np.clip(rng.standard_normal(), -clip, clip))
