"""The synthetic twins, keyed by registry name: what one case of each twin is.

A twin's ``make(seed, shape, index)`` returns one :class:`Case` in the roles of its registry
dataset's task (the common layout of :mod:`s2dc.data.sources.common`): ``image`` channels in the
order of the spec's ``channels``, and a ``label`` (segmentation), a ``klass`` (classification) or a
``target`` (reconstruction). ``index`` is the case's place in the dataset, so a classification twin
can balance its classes (class ``index % K``). Everything derives from ``seed``.

A twin may also give an ``anatomy`` map, the tissue of every voxel (names in :attr:`Twin.anatomy`), which
its release does not have: the structure figures can anchor on a tissue that the dataset's labels leave
out (e.g. white matter on the BraTS twin).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..registry import get
from . import abdomen, chest, lesions
from .abdomen import ct_phantom
from .brain import TISSUES
from .brain_pet import brain_pet
from .render_mri import mri_case
from .torso_pet import torso_pet


@dataclass
class Case:
    """One synthetic case. ``image``: float32 ``(C, X, Y, Z)``; ``label``: uint8 ``(X, Y, Z)`` with the
    registry's label values; ``klass``: class index; ``target``: float32 ``(X, Y, Z)``; ``anatomy``: uint8
    ``(X, Y, Z)`` tissue codes (:attr:`Twin.anatomy`)."""

    image: np.ndarray
    label: np.ndarray | None = None
    klass: int | None = None
    target: np.ndarray | None = None
    anatomy: np.ndarray | None = None


@dataclass(frozen=True)
class Twin:
    """How to draw cases of one registry dataset, and what they look like (for ``s2dc synth`` and the json)."""

    make: Callable[[int, tuple[int, int, int], int], Case]
    description: str
    anatomy: dict[int, str] | None = None  # names of the values of Case.anatomy, for twins that draw one


#: The two pneumonia patterns of :func:`.lesions.pneumonia`, as the CT pool draws them (a twin reads no other
#: dataset's registry entry: its job carries only its own entry's digest). The CC-CCII twin draws its class
#: ``index % 3`` by the registry's name of that class (Normal, CP, NCP), read when a case is drawn.
PNEUMONIAS = ("CP", "NCP")
#: Excess density budget of a pneumonia (HU, uniform): the lung parenchyma's mean HU increase, drawn alike for
#: CP and NCP (:func:`.lesions.pneumonia`). CP opacifies about 4-22 % of the parenchyma, NCP about 2-2.5 x that.
PNEUMONIA_EXCESS_HU = (30.0, 160.0)


def _pneumonia_excess(rng: np.random.Generator) -> float:
    return float(rng.uniform(*PNEUMONIA_EXCESS_HU))


def _ct_pool(seed: int, shape: tuple[int, int, int], index: int) -> Case:
    if index % 3 == 2:  # a third of the pool: chest CT (the release pools BTCV with TCIA-COVID19 chest scans)
        return Case(chest_pool_ct(seed, shape)[None])
    image, _ = ct_phantom(seed, shape)
    return Case(image[None])


def chest_pool_ct(seed: int, shape: tuple[int, int, int]) -> np.ndarray:
    """An unlabelled chest CT in HU ``(X, Y, Z)`` like TCIA-COVID19's: normal, or with a CP or NCP pattern (a third
    each, from the seed) adding the same excess density as in :func:`cc_ccii_case` (:data:`PNEUMONIA_EXCESS_HU`)."""
    c = chest.chest_anatomy(np.random.default_rng(seed), shape)
    kind = int(c.rng.integers(3))
    if kind:
        lesions.pneumonia(c, PNEUMONIAS[kind - 1], _pneumonia_excess(c.rng))
    return chest.render_ct(c)


def _btcv(seed: int, shape: tuple[int, int, int], index: int) -> Case:
    image, labels = ct_phantom(seed, shape)
    return Case(image[None], label=labels)


def _pet_pool(seed: int, shape: tuple[int, int, int], index: int) -> Case:
    if index % 4 == 3:  # a quarter of the pool: brain PET (ADNI), class drawn from the seed
        return Case(brain_pet(seed, shape).scan.image[None])
    return Case(torso_pet(seed, shape, lesions=(0, 3)).scans[0].image[None])


def _autopet(seed: int, shape: tuple[int, int, int], index: int) -> Case:
    pet = torso_pet(seed, shape, lesions=(1, 4))
    return Case(pet.scans[0].image[None], label=pet.lesions)


def _adni(seed: int, shape: tuple[int, int, int], index: int) -> Case:
    klass = index % 2  # ("CN", "AD")
    return Case(brain_pet(seed, shape, ad=bool(klass)).scan.image[None], klass=klass)


def _udpet(seed: int, shape: tuple[int, int, int], index: int) -> Case:
    pet = torso_pet(seed, shape, lesions=(0, 2), dose_fractions=(0.25, 1.0))
    return Case(pet.scans[0].image[None], target=pet.scans[1].image)


def _msd_spleen(seed: int, shape: tuple[int, int, int], index: int) -> Case:
    image, labels = ct_phantom(seed, shape)
    return Case(image[None], label=(labels == 1).astype(np.uint8))


def _msd_liver(seed: int, shape: tuple[int, int, int], index: int) -> Case:
    ph = abdomen.phantom(seed, shape)
    liver = ph.labels == 6
    image, tumour = lesions.liver_tumours(ph.rng, ph.image, liver)
    label = np.where(tumour, np.uint8(2), np.where(liver, np.uint8(1), np.uint8(0)))
    return Case(image[None], label=label)


def _msd_lung(seed: int, shape: tuple[int, int, int], index: int) -> Case:
    c = chest.chest_anatomy(np.random.default_rng(seed), shape)
    nodule = lesions.lung_nodule(c)
    return Case(chest.render_ct(c)[None], label=nodule.astype(np.uint8))


def cc_ccii_case(seed: int, shape: tuple[int, int, int], index: int) -> tuple[Case, chest.Chest, np.ndarray]:
    """A CC-CCII case (class ``index % 3``) with its chest and opacity mask (empty for Normal).

    CP and NCP draw the same excess density budget (:data:`PNEUMONIA_EXCESS_HU`, the lung's mean HU increase):
    the dense consolidation covers less of the lung than the faint ground glass, so the lung's mean intensity
    does not tell CP from NCP; the pattern does (compact lobar consolidation in one lung vs. widespread
    peripheral ground glass in both), which averaging raw voxels destroys.
    """
    c = chest.chest_anatomy(np.random.default_rng(seed), shape)
    klass = index % 3
    excess = _pneumonia_excess(c.rng)  # drawn for every class: a Normal case keeps its random stream
    if klass:
        opacity = lesions.pneumonia(c, get("cc_ccii").outputs[klass], excess)
    else:
        opacity = np.zeros(shape, bool)
    level, width = -600.0 + float(c.rng.uniform(-60, 60)), 1500.0 * float(c.rng.uniform(0.9, 1.1))  # scanner/export
    image = chest.to_8bit(chest.render_ct(c), (level - width / 2, level + width / 2))
    return Case(image[None], klass=klass), c, opacity


def _cc_ccii(seed: int, shape: tuple[int, int, int], index: int) -> Case:
    return cc_ccii_case(seed, shape, index)[0]


def _mri_pool(seed: int, shape: tuple[int, int, int], index: int) -> Case:
    image, _ = mri_case(seed, shape, get("mri_pool").channels, tumour_probability=0.25)
    return Case(image)


def _brats21(seed: int, shape: tuple[int, int, int], index: int) -> Case:
    image, brain = mri_case(seed, shape, get("brats21").channels)
    return Case(image, label=brain.label, anatomy=brain.tissue)


def _brats23(seed: int, shape: tuple[int, int, int], index: int) -> Case:
    image, _ = mri_case(seed, shape, get("brats23").channels)
    return Case(image)


TWINS: dict[str, Twin] = {
    "ct_pool": Twin(_ct_pool, "Synthetic CT in HU, unlabelled pretraining pool: abdominal phantoms (2 in 3, like BTCV) "
                    "and chest phantoms, normal or with pneumonia (1 in 3, like TCIA-COVID19)"),
    "btcv": Twin(_btcv, "Synthetic abdominal CT phantoms with 13 BTCV organ labels (BTCV twin)"),
    "pet_pool": Twin(_pet_pool, "Synthetic FDG-PET pool: torso phantoms at full dose (3 in 4) and brain PET (1 in 4)"),
    "autopet": Twin(_autopet, "Synthetic torso FDG-PET (SUV) with 1-4 hot lesions among physiological uptake (AutoPET twin)"),
    "adni": Twin(_adni, "Synthetic brain FDG-PET, CN vs AD: AD temporo-parietal / posterior cingulate "
                 "hypometabolism (a uniformly dim ribbon), CN focal atrophy there (thin cortex, wide sulci) that "
                 "lowers the regional mean as much; the local texture, not the regional mean, tells the classes "
                 "(ADNI twin)"),
    "udpet": Twin(_udpet, "Synthetic torso FDG-PET at 1/4 dose (image) and full dose (target) (UDPET twin)"),
    "msd_spleen": Twin(_msd_spleen, "Synthetic abdominal CT phantoms with the spleen labelled (MSD Task09 twin)"),
    "msd_liver": Twin(_msd_liver, "Synthetic abdominal CT phantoms with 1-3 hypo-dense liver tumours; labels "
                      "liver / cancer (MSD Task03 twin)"),
    "msd_lung": Twin(_msd_lung, "Synthetic chest CT phantoms with a soft-tissue lung nodule among vessels of the "
                     "same density (MSD Task06 twin)"),
    "cc_ccii": Twin(_cc_ccii, "Synthetic chest CT, 8-bit lung window: Normal / CP (lobar consolidation, one lung) / "
                    "NCP (bilateral peripheral ground glass); CP and NCP add the same mean density to the lungs, "
                    "so the pattern tells them apart, not the lungs' mean intensity (CC-CCII twin)"),
    "mri_pool": Twin(_mri_pool, "Synthetic skull-stripped brain T1w MRI, healthy (some with a glioma; unlabelled "
                                "pretraining pool)"),
    "brats21": Twin(_brats21, "Synthetic brain MRI with a glioma, t1/t1ce/t2/flair rendered from shared tissue maps, "
                              "BraTS labels 1 necrosis, 2 edema, 4 enhancing (BraTS 2021 twin)", anatomy=TISSUES),
    "brats23": Twin(_brats23, "Synthetic brain MRI with a glioma, t1n/t1c/t2w/t2f rendered from shared tissue maps "
                              "(BraTS 2023 sequence-translation twin)"),
}
