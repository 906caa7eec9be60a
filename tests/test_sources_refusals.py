"""The real-data converters refuse an incomplete or mixed-up release instead of converting it with exit 0: an
ADNI image folder without its volume, a UDPET exam without either dose, a BraTS case folder holding a file of another
case (found by an audit of the trust rules, 2026-12-05; each test reproduces one finding)."""

from __future__ import annotations

import pytest

from s2dc.data.errors import DataError
from s2dc.data.sources import adni, brats21, udpet
from test_sources_mri import brats21_release, nii
from test_sources_petcc import adni_release, udpet_release


def test_adni_refuses_an_image_folder_without_a_volume_rather_than_take_a_later_scan(tmp_path):
    """An emptied earliest image folder (an incomplete download) must not make a later scan the subject's baseline."""
    raw = tmp_path / "raw"
    adni_release(raw)
    image = (raw / "ADNI" / "002_S_0295" / "AV45_Coreg,_Avg,_Standardized_Image_and_Voxel_Size" /
             "2006-04-18_08_20_30.0" / "I26325")
    for f in image.iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"I26325' holds no NIfTI"):
        adni.convert(raw, tmp_path / "out")
    assert not (tmp_path / "out" / "dataset.json").exists()


def test_udpet_refuses_an_exam_folder_with_neither_dose_rather_than_drop_it(tmp_path):
    raw = tmp_path / "raw"
    udpet_release(raw)
    exam = sorted(p for p in raw.glob("*/*/*") if p.is_dir())[0]
    for f in list(exam.iterdir()):
        f.rename(exam / f"x{f.name}")
    with pytest.raises(DataError, match=rf"'{exam}' holds no exam \(found \['x1-10 dose', 'x1-4 dose', "
                                        r"'xFull_dose'\]\): an exam is a folder of dose folders"):
        udpet.convert(raw, tmp_path / "out")
    assert not (tmp_path / "out" / "dataset.json").exists()


def test_brats_refuses_a_nifti_in_a_case_folder_that_is_none_of_its_sequences(tmp_path):
    """Another case's sequence in a case folder (a mix-up of a copy) is named, not ignored."""
    raw = brats21_release(tmp_path / "raw")
    stray = nii(raw / "BraTS2021_Training_Data" / "BraTS2021_00000" / "BraTS2021_00002_t1.nii.gz")
    with pytest.raises(DataError, match=rf"'{stray}' .*expected only .*BraTS2021_00000_t1.nii.gz"):
        brats21.convert(raw, tmp_path / "out")
    assert not (tmp_path / "out" / "dataset.json").exists()
