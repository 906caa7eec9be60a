"""Lesions drawn into a phantom: liver tumours (abdomen), a lung nodule and pneumonia patterns (chest).

Every lesion is a random shape placed by context (inside its organ) with an intensity that another,
unlabelled tissue shares, so the shape and the place decide, not the intensity:

* :func:`liver_tumours`: 1-3 deformed ellipsoids inside the liver of an abdominal phantom
  (radius 2.5-7.5 % of the grid, random axes, orientation and lobulation), hypo-dense at 22-40 HU
  (liver 60 HU) with their own texture: the HU of bowel (35), stomach wall (25), pancreas (40) and
  adrenals (32);
* :func:`lung_nodule`: one deformed ellipsoid in a lung (radius 3-9 % of the grid), soft tissue at
  30 HU like the pulmonary vessels and the heart (40 HU);
* :func:`pneumonia`: the two CC-CCII patterns adding the same *excess density* to the lungs: the
  caller draws a budget ``excess`` (the parenchyma's mean HU increase, the same distribution for
  both), each pattern draws its opacity HU and opacifies ``excess / (opacity HU - mean parenchyma
  HU)`` of the lung parenchyma (at most 60 %). ``"CP"`` (common pneumonia): one contiguous
  lobar/segmental consolidation (-100...+20 HU) grown from a point deep in one lung (70 % of cases
  only that lung, else a minor focus of 10-20 % of the volume in the other); ``"NCP"`` (COVID-19):
  multifocal ground-glass patches (-620...-420 HU, vessels kept visible) in both lungs (35-65 %
  each), peripheral/subpleural and posterior-basal. Ground glass is about 2.5 x less dense above
  the parenchyma than consolidation, so NCP opacifies about 2-2.5 x the volume of CP (as COVID-19
  ground glass is typically more extensive than a bacterial lobar consolidation), and the lungs'
  mean intensity does not tell CP from NCP: the pattern and texture (compact dense lobar
  consolidation in one lung vs. widespread faint peripheral ground glass in both) do.

Shapes: all masks are bool ``(X, Y, Z)`` on the phantom's grid. Each function draws from the case's
generator only, so a case stays deterministic from its seed.
"""

from __future__ import annotations

import numpy as np

from .chest import LESION, LUNG, Chest
from .fields import blur, noise_field, smooth_field
from .geometry import ellipsoid, grid, normal, rotation, uniform

__all__ = ["MAX_OPACIFIED", "liver_tumours", "lung_nodule", "pneumonia"]


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    return rotation(uniform(rng, 0, 2 * np.pi), uniform(rng, -np.pi / 2, np.pi / 2), uniform(rng, 0, 2 * np.pi))


def _pick(rng: np.random.Generator, candidates: np.ndarray) -> np.ndarray:
    """Voxel coordinates (float, (3,)) of a random True voxel of ``candidates``."""
    idx = np.flatnonzero(candidates)
    return np.array(np.unravel_index(int(idx[rng.integers(idx.size)]), candidates.shape), float)


def _blob(rng: np.random.Generator, shape, centre: np.ndarray, radius: float, amp: float) -> np.ndarray:
    """Full-grid bool mask of a deformed ellipsoid of mean radius ``radius`` around ``centre``."""
    semi = radius * np.array([np.exp(normal(rng, 0.15)) for _ in range(3)])
    out = np.zeros(shape, bool)
    m = ellipsoid(rng, shape, centre, semi, _random_rotation(rng), amp)
    if m is not None:
        out[m.box] = m.mask
    out[tuple(int(round(c)) for c in centre)] = True  # never empty
    return out


def liver_tumours(rng: np.random.Generator, image: np.ndarray, liver: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw 1-3 hypo-dense tumours inside ``liver`` (bool) of the HU ``image``; returns (image, tumour mask).

    The tumour voxels get ``image + (target - liver mean) + texture`` (integer HU), so the phantom's
    noise stays; ``target`` is drawn per tumour in [22, 40] HU. No liver: no tumour.
    """
    shape = image.shape
    tumour = np.zeros(shape, bool)
    if not liver.any():
        return image, tumour
    interior = blur(liver.astype(np.float32), max(1.0, 0.02 * shape[0])) > 0.8
    candidates = interior & liver if (interior & liver).any() else liver
    liver_mean = float(image[liver].mean())
    delta = np.zeros(shape, np.float32)
    for _ in range(int(rng.integers(1, 4))):
        radius = float(np.exp(uniform(rng, np.log(0.025), np.log(0.075)))) * shape[0]
        blob = _blob(rng, shape, _pick(rng, candidates), radius, uniform(rng, 0.1, 0.3)) & liver & ~tumour
        delta[blob] = uniform(rng, 22.0, 40.0) - liver_mean
        tumour |= blob
    texture = np.float32(8.0) * noise_field(rng, shape, 1.2)
    out = np.where(tumour, np.rint(image + delta + texture), image).astype(np.float32)
    return out, tumour


def lung_nodule(chest: Chest) -> np.ndarray:
    """Draw one soft-tissue nodule (30 HU) in a lung of ``chest`` (edited in place); returns its mask.

    Placed at a random lung voxel: deep in the lung (70 %) or near the pleura (30 %); radius
    log-uniform in 3-9 % of the grid, lobulation 0.15-0.35. It replaces lung and vessels, not airways.
    """
    rng, shape = chest.rng, chest.tissue.shape
    lung = chest.side > 0
    deep = chest.depth > 0.8 if rng.random() < 0.7 else (chest.depth > 0.5) & (chest.depth <= 0.7)
    candidates = deep & lung if (deep & lung).any() else lung
    radius = float(np.exp(uniform(rng, np.log(0.03), np.log(0.09)))) * shape[0]
    nodule = _blob(rng, shape, _pick(rng, candidates), radius, uniform(rng, 0.15, 0.35)) & lung
    chest.tissue[nodule] = LESION
    chest.mean[nodule] = np.float32(30.0 + normal(rng, 4.0))
    chest.sd[nodule] = np.float32(10.0)
    return nodule


def _top(score: np.ndarray, mask: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` voxels of ``mask`` with the highest ``score`` (bool mask)."""
    values = score[mask]
    count = int(min(max(count, 0), values.size))
    if count == 0:
        return np.zeros(mask.shape, bool)
    threshold = np.partition(values, values.size - count)[values.size - count]
    return mask & (score >= threshold)


MAX_OPACIFIED = 0.6  #: at most this fraction of the lung parenchyma is opacified


def pneumonia(chest: Chest, kind: str, excess: float) -> np.ndarray:
    """Opacify the lung parenchyma of ``chest`` with pattern ``kind`` ("CP" or "NCP") adding ``excess`` HU.

    ``excess`` is the budget of excess density: the increase of the parenchyma's mean HU, opacified
    fraction x (opacity HU - mean parenchyma HU). The pattern draws its opacity HU (CP -100...+20,
    NCP -620...-420), then opacifies ``excess / (opacity HU - mean parenchyma HU)`` of the parenchyma
    (clipped to [0, :data:`MAX_OPACIFIED`]), so both classes add the same mean density for the same
    budget and only the pattern tells them apart. Edits ``chest.mean``/``sd``/``tissue`` in place;
    returns the opacity mask (bool ``(X, Y, Z)``).
    """
    if kind not in ("CP", "NCP"):
        raise ValueError(f"pneumonia kind must be 'CP' or 'NCP', got {kind!r}")
    rng, shape = chest.rng, chest.tissue.shape
    parenchyma = chest.tissue == LUNG
    total = int(parenchyma.sum())
    x, y, z = grid(shape)
    opacity = np.zeros(shape, bool)
    base = float(chest.mean[parenchyma].mean()) if total else -850.0
    first = 1 + int(rng.integers(2))  # the main (CP) or first (NCP) lung

    def opacified(value: float) -> float:
        return float(np.clip(excess / max(value - base, 1.0), 0.0, MAX_OPACIFIED))

    if kind == "CP":
        value, sd = uniform(rng, -100.0, 20.0), 15.0
        fraction = opacified(value)
        minor = uniform(rng, 0.1, 0.2) if rng.random() < 0.3 else 0.0
        for label, share in ((first, 1 - minor), (3 - first, minor)):
            lung = parenchyma & (chest.side == label)
            if share <= 0 or not lung.any():
                continue
            deep = lung & (chest.depth > 0.85)
            c = _pick(rng, deep if deep.any() else lung)
            semi = np.array([0.5, 0.7, 1.0]) * uniform(rng, 0.8, 1.2)
            r = _random_rotation(rng).astype(np.float32)
            d2 = np.zeros(shape, np.float32)
            for j in range(3):
                local = (x - np.float32(c[0])) * r[0, j] + (y - np.float32(c[1])) * r[1, j] + (z - np.float32(c[2])) * r[2, j]
                d2 = d2 + (local / np.float32(semi[j] * shape[0])) ** 2
            score = -np.sqrt(d2) + np.float32(0.08) * smooth_field(rng, (4, 4, 4), shape)
            opacity |= _top(score, lung, round(share * fraction * total))
    else:  # NCP
        value, sd = uniform(rng, -620.0, -420.0), 40.0
        fraction = opacified(value)
        share = uniform(rng, 0.35, 0.65)
        periphery = np.clip(2 * (1 - chest.depth), 0, 1)
        t = z / np.float32(max(shape[2] - 1, 1))
        for label, part in ((first, share), (3 - first, 1 - share)):
            lung = parenchyma & (chest.side == label)
            if not lung.any():
                continue
            patches = smooth_field(rng, (max(3, shape[0] // 10), max(3, shape[1] // 10), max(3, shape[2] // 8)), shape)
            score = patches + np.float32(3.0) * periphery + np.float32(0.4) * np.clip(-chest.v, 0, 1) + np.float32(0.3) * (1 - t)
            opacity |= _top(score, lung, round(part * fraction * total))
    chest.mean[opacity] = np.float32(value)
    chest.sd[opacity] = np.float32(sd)
    chest.tissue[opacity] = LESION
    return opacity
