"""Synthetic twins: data written like the real releases, so the real-data code path runs on them unchanged.

Split by concern: :mod:`.fields` (smooth random fields, blurs), :mod:`.geometry` (rotations, boxed
masks, deformed ellipsoids, tubes), :mod:`.abdomen` (the abdominal CT phantom and its 13 BTCV organs),
:mod:`.chest` (the chest CT phantom, CT and 8-bit renderings), :mod:`.lesions` (liver tumours, lung
nodule, pneumonia patterns), :mod:`.brain` (skull-stripped brains: tissue maps and a glioma with BraTS
sub-regions), :mod:`.render_mri` (MRI sequences from a brain's tissue map), :mod:`.torso_pet` and
:mod:`.brain_pet` (FDG uptake maps), :mod:`.render_pet` (PET counts at a dose), :mod:`.twins` (one case of
each registry dataset's twin), :mod:`.checks` (parameter checks) and :mod:`.writer` (NIfTI + dataset.json,
atomically).
"""

from .abdomen import BTCV_LABELS, ORGAN_HU, PRIORITY, ct_phantom
from .checks import SynthParamError
from .writer import GENERATOR_VERSION, KINDS, case_seed, write_dataset

__all__ = ["BTCV_LABELS", "GENERATOR_VERSION", "KINDS", "ORGAN_HU", "PRIORITY", "SynthParamError", "case_seed",
           "ct_phantom", "write_dataset"]
