"""Release files that the converters must refuse by name: broken links, a file held twice, a study without its
label, names that are not UTF-8, too few or repeated cases; and the release's fingerprint on links back into it."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from s2dc.data import download
from s2dc.data.errors import DataError
from s2dc.data.sources import prepare
from test_sources_petcc import nifti

#: Where a git-annex link points before its content is fetched.
TARGET = "../../.git/annex/objects/Xx/yY/SHA256E-s123--abc.nii.gz"


def dangle(path: Path) -> None:
    path.unlink()
    os.symlink(TARGET, path)


def msd_spleen(raw: Path, ids=(2, 3, 5)) -> Path:
    task = raw / "Task09_Spleen"
    for i in set(ids):
        nifti(task / "imagesTr" / f"spleen_{i}.nii.gz")
        nifti(task / "labelsTr" / f"spleen_{i}.nii.gz")
    (task / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "spleen"}, "training": [
        {"image": f"./imagesTr/spleen_{i}.nii.gz", "label": f"./labelsTr/spleen_{i}.nii.gz"} for i in ids]}))
    return task


def autopet_tcia(raw: Path) -> Path:
    root = raw / "FDG-PET-CT-Lesions"
    for patient in ("PETCT_aa", "PETCT_bb", "PETCT_cc"):
        for name in ("SUV", "SEG"):
            nifti(root / patient / "01-01-2000-NA" / f"{name}.nii.gz")
    return root


def autopet_nnunet(raw: Path, cases=("fdg_aa_1", "fdg_bb_1", "fdg_cc_1")) -> Path:
    for case in cases:
        nifti(raw / "imagesTr" / f"{case}_0000.nii.gz")
        nifti(raw / "imagesTr" / f"{case}_0001.nii.gz")
        nifti(raw / "labelsTr" / f"{case}.nii.gz")
    return raw


def ct_pool(raw: Path) -> Path:
    for i in range(3):
        nifti(raw / "vols" / f"v{i}.nii.gz")
    (raw / "dataset.json").write_text(json.dumps({"training": [{"image": f"vols/v{i}.nii.gz"} for i in range(3)]}))
    return raw


def btcv(raw: Path) -> Path:
    folder = raw / "RawData" / "Training"
    for i in (*range(1, 11), *range(21, 41)):
        nifti(folder / "img" / f"img{i:04d}.nii.gz", shape=(4, 4, 4))
        nifti(folder / "label" / f"label{i:04d}.nii.gz", shape=(4, 4, 4))
    return raw


def brats21(raw: Path, cases=(0, 1, 2)) -> Path:
    root = raw / "BraTS2021_Training_Data"
    for i in cases:
        case = f"BraTS2021_{i:05d}"
        for sequence in ("flair", "t1", "t1ce", "t2", "seg"):
            nifti(root / case / f"{case}_{sequence}.nii.gz")
    return root


def udpet(raw: Path) -> Path:
    for subject in ("Subject_1-6", "Subject_7-12", "Subject_13-18"):
        for dose in ("Full_dose", "1-4 dose"):
            nifti(raw / "uExplorer" / subject / f"exam_{subject}" / dose / "pet.nii.gz")  # exam names are unique
    return raw


BROKEN = {  # dataset, release builder, the release file made a broken link
    "msd_spleen": (msd_spleen, "Task09_Spleen/labelsTr/spleen_3.nii.gz"),
    "autopet (TCIA)": (autopet_tcia, "FDG-PET-CT-Lesions/PETCT_bb/01-01-2000-NA/SEG.nii.gz"),
    "autopet (nnU-Net)": (autopet_nnunet, "imagesTr/fdg_bb_1_0001.nii.gz"),
    "autopet (nnU-Net label)": (autopet_nnunet, "labelsTr/fdg_bb_1.nii.gz"),
    "ct_pool": (ct_pool, "vols/v1.nii.gz"),
    "btcv": (btcv, "RawData/Training/label/label0007.nii.gz"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_every_converter_names_a_broken_links_missing_target(tmp_path, case):
    """A release file that is a symbolic link to nothing (git-annex or DVC content never fetched) is refused naming
    the link and its missing target (README, *Real data*), not called absent or unreadable, and nothing is written."""
    build, rel = BROKEN[case]
    raw = tmp_path / "raw"
    build(raw)
    dangle(raw / rel)
    with pytest.raises(DataError, match="is a broken symbolic link") as err:
        prepare(case.split()[0], raw, tmp_path / "out")
    assert str(raw / rel) in str(err.value) and TARGET in str(err.value)
    assert not (tmp_path / "out" / "dataset.json").exists()


def test_an_fdg_image_without_its_label_is_refused_not_left_out(tmp_path):
    """autoPET III/IV (nnU-Net's layout): an FDG study whose label file is missing (an incomplete download) is named,
    as the TCIA layout names a study without SEG.nii.gz; a PSMA study without a label is not the paper's and is
    passed over."""
    raw = autopet_nnunet(tmp_path / "raw", cases=("fdg_aa_1", "fdg_bb_1", "fdg_cc_1", "psma_dd_1"))
    (raw / "labelsTr" / "psma_dd_1.nii.gz").unlink()
    assert prepare("autopet", raw, tmp_path / "ok").is_file()
    (raw / "labelsTr" / "fdg_cc_1.nii.gz").unlink()
    with pytest.raises(DataError, match=r"fdg_cc_1_0001\.nii\.gz' has no label .*labelsTr/fdg_cc_1\.nii\.gz'"):
        prepare("autopet", raw, tmp_path / "out")
    assert not (tmp_path / "out" / "dataset.json").exists()


def test_a_brats_sequence_held_twice_is_refused_naming_both_files(tmp_path):
    """A case folder with ``_t1.nii.gz`` and ``_t1.nii`` (one of them left from a decompression) is refused naming
    both, as BTCV refuses an image held twice: which one is the release's is the user's to say."""
    root = brats21(tmp_path / "raw")
    gz = root / "BraTS2021_00002" / "BraTS2021_00002_t1.nii.gz"
    plain = nifti(gz.with_name("BraTS2021_00002_t1.nii"))
    with pytest.raises(DataError, match="keep one of them") as err:
        prepare("brats21", tmp_path / "raw", tmp_path / "out")
    assert str(gz) in str(err.value) and str(plain) in str(err.value)
    assert not (tmp_path / "out" / "dataset.json").exists()


@pytest.mark.parametrize("second", ["Full_dose.nii.gz", "Full_dose.nii"])
def test_a_udpet_dose_held_twice_is_refused_naming_both(tmp_path, second):
    """An exam with its full dose both as a folder and as a file beside it (or as .nii.gz and .nii) is refused,
    naming both, as a dose folder with two NIfTI files is."""
    raw = udpet(tmp_path / "raw")
    exam = raw / "uExplorer" / "Subject_7-12" / "exam_Subject_7-12"
    if second.endswith(".nii"):  # the file form twice: .nii.gz and .nii, no folder
        for path in (exam / "Full_dose").iterdir():
            path.unlink()
        (exam / "Full_dose").rmdir()
        nifti(exam / "Full_dose.nii.gz")
    other = nifti(exam / second)
    first = exam / "Full_dose" if not second.endswith(".nii") else exam / "Full_dose.nii.gz"
    with pytest.raises(DataError, match="keep one of them") as err:
        prepare("udpet", raw, tmp_path / "out")
    assert str(first) in str(err.value) and str(other) in str(err.value)
    assert not (tmp_path / "out" / "dataset.json").exists()


def test_a_name_that_is_not_utf8_is_refused_naming_where_it_is(tmp_path):
    """A folder whose name is not valid UTF-8 (a zip unpacked with latin-1 or GBK names) is named, with its bytes
    escaped, and what to do; not a bare codec error."""
    raw = udpet(tmp_path / "raw")
    os.rename(bytes(raw / "uExplorer" / "Subject_1-6"), bytes(raw / "uExplorer") + b"/Subject_\xe9")
    with pytest.raises(DataError, match=r"not valid UTF-8.*rename") as err:
        prepare("udpet", raw, tmp_path / "out")
    assert "Subject_\\udce9" in str(err.value) and str(raw) in str(err.value)
    assert not (tmp_path / "out" / "dataset.json").exists()


def test_repeated_or_too_few_cases_name_the_release(tmp_path):
    """A case listed twice (MSD's dataset.json) or a release of fewer than two cases is refused naming the release's
    list or folder, not with the bare ids."""
    task = msd_spleen(tmp_path / "msd", ids=(2, 3, 2))
    with pytest.raises(DataError, match=r"not unique.*'spleen_2'") as err:
        prepare("msd_spleen", tmp_path / "msd", tmp_path / "out")
    assert str(task / "dataset.json") in str(err.value)
    root = brats21(tmp_path / "brats", cases=(0,))
    with pytest.raises(DataError, match=r"1 case.*at least 2") as err:
        prepare("brats21", tmp_path / "brats", tmp_path / "out")
    assert str(root) in str(err.value)
    assert not (tmp_path / "out" / "dataset.json").exists()


def test_the_release_fingerprint_finishes_on_links_back_into_the_release(tmp_path):
    """Links to a folder of the release itself (``current -> .``) are walked once: the fingerprint is the one the
    release has without them (every file once), not a walk of 2^depth paths that never ends."""
    raw = btcv(tmp_path / "raw")
    plain = download.release_fingerprint(raw)
    os.symlink(".", raw / "current")
    os.symlink(".", raw / "latest")
    os.symlink("..", raw / "RawData" / "Training" / "up")
    result = []
    walker = threading.Thread(target=lambda: result.append(download.release_fingerprint(raw)), daemon=True)
    walker.start()
    walker.join(30)
    assert result == [plain]
    outside = tmp_path / "elsewhere"  # a link to a folder outside the release is part of it, as before
    nifti(outside / "extra.nii.gz", shape=(2, 2, 2))
    os.symlink(outside, raw / "more")
    assert download.release_fingerprint(raw) != plain


def _stray_latin1_file(folder: Path) -> None:
    """An empty file named 'caf\\xe9.nii.gz' in latin-1 (a zip unpacked with another encoding) in ``folder``."""
    os.close(os.open(bytes(folder) + b"/caf\xe9.nii.gz", os.O_CREAT | os.O_WRONLY))


def test_a_name_that_is_not_utf8_in_a_release_fails_its_own_job_not_the_parse(tmp_path):
    """The release's fingerprint (a parameter of its conversion job, computed when Snakemake builds the job graph)
    encoded each name as strict UTF-8: one latin-1 name anywhere in a release stopped even `snakemake -n` with a bare
    'surrogates not allowed', naming no file. The fingerprint counts it; the conversion then refuses it by name."""
    from conftest import snakemake
    from s2dc.data import download

    raw = btcv(tmp_path / "data" / "raw" / "btcv")
    plain = download.release_fingerprint(raw)
    _stray_latin1_file(raw / "RawData" / "Training" / "img")
    assert download.release_fingerprint(raw) not in ("", "absent", plain)
    run = snakemake(tmp_path, "-n", "--config", "scale=paper", "only=btcv", "methods=scratch")
    assert run.returncode == 0 and "UnicodeEncodeError" not in run.stdout + run.stderr, run.stderr[-1500:]
