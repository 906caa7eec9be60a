"""MRI sequences rendered from one brain's tissue map (:mod:`.brain`).

Each sequence has a tissue contrast table (:data:`CONTRAST`: tissue code -> (mean, texture sd),
relative to white matter = 1 on T1):

* ``T1``: WM > deep grey > GM > CSF; necrosis dark (~CSF), edema ~GM, the enhancing rim ~deep grey;
* ``T1ce``: T1 with the enhancing rim bright, as bright as the (enhancing) vessels and choroid plexus;
* ``T2``: CSF bright, necrosis ~CSF, edema ~WMH, WM dark, the enhancing rim ~GM, vessels dark (flow void);
* ``FLAIR``: CSF suppressed (dark, necrosis ~CSF), edema ~WMH bright, the enhancing rim ~GM.

So no single sequence's intensity separates the tumour labels: each shares a sequence's intensity
with some normal tissue and only the context (a dark core inside a bright rim inside a bright
margin, away from the ventricles) tells it.

Per case and sequence: each tissue mean moves by +-4 %, a contrast exponent 0.85-1.15 (of the
means), a smooth multiplicative bias field (``exp(N(0, 0.12))`` at low frequency), a global scale
(log-uniform 200-2000 arbitrary units), a mild partial-volume blur, and Gaussian noise of 1.5-4 % of
the scale. The texture (smoothed noise) is shared by the sequences of one case (same microstructure).
Intensities are positive inside the brain and exactly zero outside.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .brain import Brain, brain_anatomy
from .checks import check_seed, check_shape
from .fields import blur, noise_field, smooth_field
from .geometry import normal, uniform

__all__ = ["CONTRAST", "SEQUENCE_OF", "Texture", "mri_case", "render", "texture"]

#: Sequence -> tissue code -> (mean, texture sd), white matter on T1 = 1 (codes of :data:`brain.TISSUES`).
CONTRAST: dict[str, dict[int, tuple[float, float]]] = {
    #        CSF           GM            WM            deep GM       vessel        WMH           necrosis      edema         enhancing
    "T1":    {1: (.30, .03), 2: (.66, .04), 3: (1.0, .04), 4: (.78, .04), 5: (.62, .06), 6: (.74, .05), 7: (.32, .05), 8: (.64, .05), 9: (.80, .06)},
    "T1ce":  {1: (.30, .03), 2: (.66, .04), 3: (1.0, .04), 4: (.78, .04), 5: (1.70, .12), 6: (.74, .05), 7: (.32, .05), 8: (.64, .05), 9: (1.70, .12)},
    "T2":    {1: (1.55, .06), 2: (.85, .05), 3: (.60, .04), 4: (.74, .05), 5: (.35, .06), 6: (1.20, .08), 7: (1.45, .10), 8: (1.22, .08), 9: (.88, .08)},
    "FLAIR": {1: (.22, .03), 2: (.88, .05), 3: (.70, .04), 4: (.80, .05), 5: (.55, .06), 6: (1.28, .08), 7: (.30, .06), 8: (1.28, .08), 9: (.92, .08)},
}  # fmt: skip

#: Tumour tissue -> the normal tissue it fades into where ``Brain.grade`` is 0 (edema at its margin,
#: the weakly enhancing patches of the rim).
FADE: dict[int, int] = {8: 2, 9: 4}

#: Registry channel name -> sequence of :data:`CONTRAST`.
SEQUENCE_OF: dict[str, str] = {
    "T1w": "T1", "t1": "T1", "t1n": "T1", "t1ce": "T1ce", "t1c": "T1ce",
    "t2": "T2", "t2w": "T2", "flair": "FLAIR", "t2f": "FLAIR",
}


@dataclass
class Texture:
    """Tissue microstructure shared by a case's sequences: fine and coarse unit-sd fields ``(X, Y, Z)``."""

    fine: np.ndarray
    coarse: np.ndarray


def texture(rng: np.random.Generator, shape) -> Texture:
    """Draw the shared texture of one case."""
    return Texture(fine=noise_field(rng, shape, 0.8), coarse=smooth_field(rng, (8, 8, 6), shape))


def render(rng: np.random.Generator, brain: Brain, sequence: str, tex: Texture) -> np.ndarray:
    """One sequence of ``brain``: float32 ``(X, Y, Z)``, positive inside the brain, 0 outside."""
    table = CONTRAST[sequence]
    shape = brain.tissue.shape
    gamma = uniform(rng, 0.85, 1.15)
    mean_lut = np.zeros(10, np.float32)
    sd_lut = np.zeros(10, np.float32)
    for code, (mean, sd) in table.items():
        mean_lut[code] = (mean * (1 + normal(rng, 0.04))) ** gamma
        sd_lut[code] = sd
    tissue = brain.tissue
    mix = np.float32(0.7) * tex.fine + np.float32(0.7) * tex.coarse
    mean = mean_lut[tissue]
    for code, into in FADE.items():
        mean = np.where(tissue == code, mean_lut[into] + (mean_lut[code] - mean_lut[into]) * brain.grade, mean)
    image = mean + sd_lut[tissue] * mix
    image = blur(image, 0.6)  # partial volume (the rim darkens towards the zero outside, like real skull-stripping)
    bias = np.exp(np.float32(0.12) * smooth_field(rng, (3, 3, 3), shape))
    scale = np.float32(np.exp(uniform(rng, np.log(200.0), np.log(2000.0))))
    noise = np.float32(uniform(rng, 0.015, 0.04)) * rng.standard_normal(shape, dtype=np.float32)
    image = (image * bias + noise) * scale
    image = np.where(brain.mask, np.maximum(image, np.float32(0.01) * scale), np.float32(0))
    return image.astype(np.float32)


def mri_case(seed: int, shape, channels, tumour_probability: float = 1.0) -> tuple[np.ndarray, Brain]:
    """One brain (:func:`brain.brain_anatomy`, with a tumour with ``tumour_probability``) rendered as the
    registry ``channels`` (names of :data:`SEQUENCE_OF`), from ``numpy.random.default_rng(seed)``.

    Returns the float32 ``(C, X, Y, Z)`` image (channels in the given order) and the :class:`Brain`.
    """
    rng = np.random.default_rng(check_seed(seed))
    shape = check_shape(shape)
    tumour = bool(rng.random() < tumour_probability)
    brain = brain_anatomy(rng, shape, tumour)
    tex = texture(rng, shape)
    image = np.stack([render(rng, brain, SEQUENCE_OF[c], tex) for c in channels])
    return image, brain
