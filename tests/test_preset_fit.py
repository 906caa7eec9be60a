"""A preset that does not fit the volumes is refused naming the file (issue 8, item 2): a HU window on volumes that are
not HU (tests/test_input_refusals.py), and here a z-score over the non-zero voxels on a CT in HU, which takes the air
around the body (-1000 HU) for tissue and water (0 HU) for background."""

from __future__ import annotations

import numpy as np
import pytest

from s2dc.data.errors import DataError
from s2dc.data.preprocess import PreprocessConfig
from s2dc.data.volumes import CachedVolumes

from test_data_layer import brain, save


def ct_in_hu() -> np.ndarray:
    """A body (-400..400 HU) in air (-1000 HU): what a CT holds."""
    return np.where(brain() > 0, brain() - 500, -1000.0).astype(np.float32)


def test_a_z_score_over_the_non_zero_voxels_of_a_ct_in_hu_is_refused(tmp_path):
    ct = save(tmp_path / "ct.nii.gz", ct_in_hu())
    with pytest.raises(DataError, match=r"'.*ct\.nii\.gz' has intensities in \[-1000, 400\], .* of its voxels at or "
                                        r"below -500 HU .*CT in HU.* preprocess\.intensity zscore"):
        CachedVolumes([ct], PreprocessConfig(intensity="zscore"), (8, 8, 8), None)[0]
    # what CT takes: its window; a z-score over every voxel (no background assumed) is a choice, not a misreading
    CachedVolumes([ct], PreprocessConfig.from_preset("ct_abdomen"), (8, 8, 8), None)[0]
    CachedVolumes([ct], PreprocessConfig(intensity="zscore_volume"), (8, 8, 8), None)[0]


def test_a_z_score_takes_mr_and_pet_volumes_with_the_odd_negative_voxel(tmp_path):
    """What the z-score is for: MR (0 outside the head) and PET, with the few slightly negative voxels resampling or
    a scanner's reconstruction leaves, and a z-scored MR stored as it is (values of a few units either side of 0)."""
    mr = brain()
    mr[0, 0, :4] = -3.0
    pet = np.abs(brain()) / 100.0
    pet[1, 1, 1] = -0.2
    normalised = (brain() - brain().mean()) / brain().std()
    for name, array in (("mr", mr), ("pet", pet), ("normalised", normalised)):
        CachedVolumes([save(tmp_path / f"{name}.nii.gz", array)], PreprocessConfig(intensity="zscore"), (8, 8, 8),
                      None)[0]


def test_a_ct_with_little_air_is_not_taken_for_plainly_hu(tmp_path):
    """A CT cropped to the abdomen (fat at -100, no air) is not plainly HU to this check: a z-score is taken, as a
    user may choose it."""
    cropped = np.where(brain() > 0, brain() - 100, -100.0).astype(np.float32)
    CachedVolumes([save(tmp_path / "cropped.nii.gz", cropped)], PreprocessConfig(intensity="zscore"), (8, 8, 8),
                  None)[0]
