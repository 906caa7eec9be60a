"""The synthetic twins, keyed by registry name: what one case of each twin is.

A twin's ``make(seed, shape, index)`` returns one :class:`Case` in the roles of its registry
dataset's task (the common layout of :mod:`s2dc.data.sources.common`): ``image`` channels in the
order of the spec's ``channels``, and a ``label`` (segmentation), a ``klass`` (classification) or a
``target`` (reconstruction). ``index`` is the case's place in the dataset, so a classification twin
can balance its classes (class ``index % K``). Everything derives from ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..registry import get
from .abdomen import ct_phantom
from .render_mri import mri_case


@dataclass
class Case:
    """One synthetic case. ``image``: float32 ``(C, X, Y, Z)``; ``label``: uint8 ``(X, Y, Z)`` with the
    registry's label values; ``klass``: class index; ``target``: float32 ``(X, Y, Z)``."""

    image: np.ndarray
    label: np.ndarray | None = None
    klass: int | None = None
    target: np.ndarray | None = None


@dataclass(frozen=True)
class Twin:
    """How to draw cases of one registry dataset, and what they look like (for ``s2dc synth`` and the json)."""

    make: Callable[[int, tuple[int, int, int], int], Case]
    description: str


def _ct_pool(seed: int, shape: tuple[int, int, int], index: int) -> Case:
    image, _ = ct_phantom(seed, shape)
    return Case(image[None])


def _btcv(seed: int, shape: tuple[int, int, int], index: int) -> Case:
    image, labels = ct_phantom(seed, shape)
    return Case(image[None], label=labels)


def _mri_pool(seed: int, shape: tuple[int, int, int], index: int) -> Case:
    image, _ = mri_case(seed, shape, get("mri_pool").channels, tumour_probability=0.25)
    return Case(image)


def _brats21(seed: int, shape: tuple[int, int, int], index: int) -> Case:
    image, brain = mri_case(seed, shape, get("brats21").channels)
    return Case(image, label=brain.label)


def _brats23(seed: int, shape: tuple[int, int, int], index: int) -> Case:
    image, _ = mri_case(seed, shape, get("brats23").channels)
    return Case(image)


TWINS: dict[str, Twin] = {
    "ct_pool": Twin(_ct_pool, "Synthetic abdominal CT phantoms (unlabelled pretraining pool)"),
    "btcv": Twin(_btcv, "Synthetic abdominal CT phantoms with 13 BTCV organ labels (BTCV twin)"),
    "mri_pool": Twin(_mri_pool, "Synthetic skull-stripped brain T1w MRI, healthy (some with a glioma; unlabelled "
                                "pretraining pool)"),
    "brats21": Twin(_brats21, "Synthetic brain MRI with a glioma, t1/t1ce/t2/flair rendered from shared tissue maps, "
                              "BraTS labels 1 necrosis, 2 edema, 4 enhancing (BraTS 2021 twin)"),
    "brats23": Twin(_brats23, "Synthetic brain MRI with a glioma, t1n/t1c/t2w/t2f rendered from shared tissue maps "
                              "(BraTS 2023 sequence-translation twin)"),
}
