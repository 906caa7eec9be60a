"""The MRI converters (BraTS 2021, BraTS 2023 GLI, OASIS-3) on tiny fixtures in each official layout."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from s2dc.data.sources import brats21, brats23, oasis3
from s2dc.data.errors import DataError

B21 = ["BraTS2021_00000", "BraTS2021_00002", "BraTS2021_00003", "BraTS2021_01146"]
B23 = ["BraTS-GLI-00000-000", "BraTS-GLI-00000-001", "BraTS-GLI-00002-000", "BraTS-GLI-00003-000", "BraTS-GLI-00003-001",
       "BraTS-GLI-01666-000"]  # 00003: split case by case, its time points would fall on both sides
OASIS = {"OAS30001_MR_d0129": ["anat1/sub-OAS30001_ses-d0129_run-01_T1w.nii.gz",
                               "anat2/sub-OAS30001_ses-d0129_run-02_T1w.nii.gz",
                               "anat4/sub-OAS30001_ses-d0129_T2w.nii.gz"],
         "OAS30002_MR_d0371": ["anat3/sub-OAS30002_ses-d0371_T1w.nii.gz"]}


def nii(path: Path, shape=(6, 6, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), str(path))
    return path


def brats21_release(root: Path) -> Path:
    for case in B21:
        for s in ("t1", "t1ce", "t2", "flair", "seg"):
            nii(root / "BraTS2021_Training_Data" / case / f"{case}_{s}.nii.gz")
    (root / "BraTS2021_Training_Data" / "README.txt").write_text("not a case")
    return root


def brats23_release(root: Path, seg: bool = True) -> Path:
    for case in B23:
        for s in ("t1n", "t1c", "t2w", "t2f") + (("seg",) if seg else ()):
            nii(root / "ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData" / case / f"{case}-{s}.nii.gz")
    return root


def oasis_release(root: Path) -> Path:
    for session, files in OASIS.items():
        for f in files:
            nii(root / session / f)
            (root / session / f.replace(".nii.gz", ".json")).parent.mkdir(parents=True, exist_ok=True)
            (root / session / f.replace(".nii.gz", ".json")).write_text("{}")
    return root


def expected_validation(ids: list[str]) -> list[str]:
    """Written independently of fixed_split: the ceil(20 %) ids with the largest SHA-1."""
    n = math.ceil(0.2 * len(ids))
    return sorted(sorted(ids, key=lambda i: hashlib.sha1(i.encode()).hexdigest())[-n:])


def load(path: Path) -> dict:
    assert path.name == "dataset.json"
    return json.loads(path.read_text())


def resolve(out: Path, rel: str) -> Path:
    assert not Path(rel).is_absolute()
    return (out / rel).resolve()


def test_brats21_lists_every_case_in_channel_order_with_its_seg(tmp_path):
    raw, out = brats21_release(tmp_path / "raw"), tmp_path / "out"
    doc = load(brats21.convert(raw, out))
    assert doc["task"] == "segmentation" and doc["modality"] == {"0": "t1", "1": "t1ce", "2": "t2", "3": "flair"}
    assert doc["labels"] == {"0": "background", "1": "necrotic tumour core", "2": "peritumoral edema",
                             "4": "enhancing tumour"}
    entries = doc["training"] + doc["validation"]
    assert sorted(e["id"] for e in entries) == B21
    assert sorted(e["id"] for e in doc["validation"]) == expected_validation(B21)
    assert (doc["numTraining"], doc["numValidation"]) == (3, 1)
    for e in entries:
        case = raw.resolve() / "BraTS2021_Training_Data" / e["id"]
        want = [case / f"{e['id']}_{s}.nii.gz" for s in ("t1", "t1ce", "t2", "flair")]
        assert [resolve(out, p) for p in e["image"]] == want
        assert resolve(out, e["label"]) == case / f"{e['id']}_seg.nii.gz"
    # raw may also be the release folder itself: same entries.
    again = load(brats21.convert(raw / "BraTS2021_Training_Data", tmp_path / "out2"))
    assert [e["id"] for e in again["training"]] == [e["id"] for e in doc["training"]]


#: The BraTS 2023 GLI mapping's rows for the fixture (columns as the release's BraTS2023_2017_GLI_Mapping.xlsx names
#: them): BraTS2021_00000 and _00003 are one patient's two time points, which a case-by-case split puts on both sides.
GLI_ROWS = [("BraTS-GLI-00000-000", "BraTS2021_00000"), ("BraTS-GLI-00000-001", "BraTS2021_00003"),
            ("BraTS-GLI-00002-000", "BraTS2021_00002"), ("BraTS-GLI-01666-000", "BraTS2021_01146"),
            ("BraTS-GLI-00009-000", None)]  # a row of a case that is not in BraTS 2021's training data


def write_gli_mapping(path: Path, rows=GLI_ROWS, columns=("BraTS2023", "BraTS2021")) -> Path:
    import pandas as pd

    table = pd.DataFrame([{columns[0]: a, columns[1]: b, "Site No (represents the originating institution)": 1}
                          for a, b in rows])
    if path.suffix == ".xlsx":
        table.to_excel(path, index=False)
    else:
        table.to_csv(path, index=False, sep=";")
    return path


@pytest.mark.parametrize("form", ["xlsx", "csv"])
def test_brats21_splits_by_patient_with_the_brats23_gli_mapping(tmp_path, capsys, form):
    """BraTS 2021's training cases are BraTS 2023 GLI's, and GLI's ids say which cases are one patient's time points
    (``BraTS-GLI-XXXXX-YYY``); with the release's mapping file beside the data, a patient's cases stay on one side."""
    raw = brats21_release(tmp_path / "raw")
    assert expected_validation(B21) == ["BraTS2021_00003"]  # case by case, the patient's two cases would part
    write_gli_mapping(raw / f"BraTS2023_2017_GLI_Mapping.{form}")
    doc = load(brats21.convert(raw, tmp_path / "out"))
    patient = {b: a.rsplit("-", 1)[0] for a, b in GLI_ROWS if b}
    held_out = set(expected_validation(sorted(set(patient.values()))))
    assert sorted(e["id"] for e in doc["validation"]) == sorted(c for c in B21 if patient[c] in held_out)
    assert sorted(e["id"] for e in doc["training"]) == sorted(c for c in B21 if patient[c] not in held_out)
    sides = {e["id"]: role for role in ("training", "validation") for e in doc[role]}
    assert sides["BraTS2021_00000"] == sides["BraTS2021_00003"]
    assert "split by patient" in capsys.readouterr().err


def test_brats21_without_the_gli_mapping_splits_case_by_case_and_says_so(tmp_path, capsys):
    raw = brats21_release(tmp_path / "raw")
    doc = load(brats21.convert(raw, tmp_path / "out"))
    assert sorted(e["id"] for e in doc["validation"]) == expected_validation(B21)
    err = capsys.readouterr().err
    assert "BraTS2023_2017_GLI_Mapping.xlsx" in err and str(raw) in err and "both sides" in err, err


def test_brats21_names_a_gli_mapping_it_cannot_use(tmp_path):
    raw = brats21_release(tmp_path / "raw")
    mapping = write_gli_mapping(raw / "BraTS2023_2017_GLI_Mapping.csv", columns=("BraTS2023", "BraTS2020"))
    with pytest.raises(DataError, match=r"BraTS2023_2017_GLI_Mapping.csv.* no column 'BraTS2021'"):
        brats21.convert(raw, tmp_path / "out")
    write_gli_mapping(mapping, rows=[("BraTS-GLI-00100-000", "BraTS2021_00100")])
    with pytest.raises(DataError, match=r"BraTS2023_2017_GLI_Mapping.csv.* names none of the .* cases"):
        brats21.convert(raw, tmp_path / "out")
    write_gli_mapping(raw / "BraTS2023_2017_GLI_Mapping.xlsx")
    with pytest.raises(DataError, match=r"both .*BraTS2023_2017_GLI_Mapping.xlsx.* and .*BraTS2023_2017_GLI_Mapping.csv"):
        brats21.convert(raw, tmp_path / "out")
    assert not (tmp_path / "out" / "dataset.json").exists()


def test_brats23_lists_the_four_sequences_and_needs_no_seg(tmp_path):
    """Every case with its four sequences; the split is by patient (``BraTS-GLI-XXXXX``; ``-YYY`` is the time
    point): a patient's two time points stay on one side (they were split as two cases, so a patient's scan could be
    validated against a model trained on its other one)."""
    raw, out = brats23_release(tmp_path / "raw", seg=False), tmp_path / "out"
    doc = load(brats23.convert(raw, out))
    assert doc["task"] == "translation" and doc["modality"] == {"0": "t1n", "1": "t1c", "2": "t2w", "3": "t2f"}
    entries = doc["training"] + doc["validation"]
    assert sorted(e["id"] for e in entries) == B23
    patient = lambda i: i.rsplit("-", 1)[0]  # noqa: E731
    held_out = expected_validation(sorted({patient(i) for i in B23}))
    assert sorted(e["id"] for e in doc["validation"]) == [i for i in B23 if patient(i) in held_out]
    assert not {patient(e["id"]) for e in doc["training"]} & {patient(e["id"]) for e in doc["validation"]}
    for e in entries:
        assert set(e) == {"id", "image"}
        case = raw.resolve() / "ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData" / e["id"]
        want = [case / f"{e['id']}-{s}.nii.gz" for s in ("t1n", "t1c", "t2w", "t2f")]
        assert [resolve(out, p) for p in e["image"]] == want


@pytest.mark.parametrize("nested", [False, True])
def test_oasis3_takes_every_t1w_for_training(tmp_path, nested):
    raw = tmp_path / "raw"
    oasis_release(raw / "OASIS3" if nested else raw)
    out = tmp_path / "out"
    doc = load(oasis3.convert(raw, out))
    assert doc["name"] == "mri_pool" and doc["task"] == "pretraining" and doc["modality"] == {"0": "T1w"}
    assert "validation" not in doc and doc["numValidation"] == 0
    base = (raw / "OASIS3" if nested else raw).resolve()
    expected = {
        "sub-OAS30001_ses-d0129_run-01_T1w": base / "OAS30001_MR_d0129/anat1/sub-OAS30001_ses-d0129_run-01_T1w.nii.gz",
        "sub-OAS30001_ses-d0129_run-02_T1w": base / "OAS30001_MR_d0129/anat2/sub-OAS30001_ses-d0129_run-02_T1w.nii.gz",
        "sub-OAS30002_ses-d0371_T1w": base / "OAS30002_MR_d0371/anat3/sub-OAS30002_ses-d0371_T1w.nii.gz",
    }
    assert {e["id"]: resolve(out, e["image"]) for e in doc["training"]} == expected


# ---------------------------------------------------------------- refusals

@pytest.mark.parametrize("module, where, layout", [
    (brats21, "syn27046444", "BraTS2021_00000_t1ce.nii.gz"),
    (brats23, "syn51156910", "BraTS-GLI-00000-000-t2f.nii.gz"),
    (oasis3, "oasis-brains.org", "sub-OAS30001_ses-d0129_run-01_T1w.nii.gz"),
])
def test_a_missing_release_says_where_to_get_it_and_its_layout(tmp_path, module, where, layout):
    (tmp_path / "raw").mkdir()
    with pytest.raises(DataError) as err:
        module.convert(tmp_path / "raw", tmp_path / "out")
    assert where in str(err.value) and layout in str(err.value) and str(tmp_path / "raw") in str(err.value)
    assert not (tmp_path / "out" / "dataset.json").exists()


def test_brats_refuses_a_missing_sequence_naming_the_file(tmp_path):
    raw = brats21_release(tmp_path / "raw")
    gone = raw / "BraTS2021_Training_Data/BraTS2021_00003/BraTS2021_00003_t1ce.nii.gz"
    gone.unlink()
    with pytest.raises(DataError, match="BraTS2021_00003_t1ce.nii.gz' does not exist"):
        brats21.convert(raw, tmp_path / "out")
    raw = brats23_release(tmp_path / "raw23")
    case = raw / "ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData/BraTS-GLI-00002-000"
    (case / "BraTS-GLI-00002-000-t2w.nii.gz").unlink()
    with pytest.raises(DataError, match="BraTS-GLI-00002-000-t2w.nii.gz' does not exist"):
        brats23.convert(raw, tmp_path / "out")


def test_a_sequence_whose_name_differs_only_in_case_is_named_not_called_missing(tmp_path):
    """`BraTS2021_00003_T1CE.NII.GZ` beside a missing `..._t1ce.nii.gz`: the error names the file that is there."""
    raw = brats21_release(tmp_path / "raw")
    case = raw / "BraTS2021_Training_Data/BraTS2021_00003"
    (case / "BraTS2021_00003_t1ce.nii.gz").rename(case / "BraTS2021_00003_T1CE.NII.GZ")
    with pytest.raises(DataError, match=r"BraTS2021_00003_T1CE.NII.GZ' .*rename it to 'BraTS2021_00003_t1ce.nii.gz'"):
        brats21.convert(raw, tmp_path / "out")


def test_brats_refuses_a_shape_mismatch_naming_the_file(tmp_path):
    raw = brats21_release(tmp_path / "raw")
    nii(raw / "BraTS2021_Training_Data/BraTS2021_00002/BraTS2021_00002_seg.nii.gz", (6, 6, 5))
    with pytest.raises(DataError, match=r"BraTS2021_00002_seg.nii.gz' has shape \(6, 6, 5\), expected \(6, 6, 6\)"):
        brats21.convert(raw, tmp_path / "out")
    raw = brats23_release(tmp_path / "raw23")
    case = raw / "ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData/BraTS-GLI-00000-001"
    nii(case / "BraTS-GLI-00000-001-t1c.nii.gz", (5, 6, 6))
    with pytest.raises(DataError, match=r"BraTS-GLI-00000-001-t1c.nii.gz' has shape \(5, 6, 6\)"):
        brats23.convert(raw, tmp_path / "out")


def test_corrupt_nifti_is_named(tmp_path):
    raw = brats21_release(tmp_path / "raw")
    (raw / "BraTS2021_Training_Data/BraTS2021_01146/BraTS2021_01146_flair.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(DataError, match="BraTS2021_01146_flair.nii.gz' is not a readable NIfTI"):
        brats21.convert(raw, tmp_path / "out")
    raw = oasis_release(tmp_path / "oasis")
    (raw / "OAS30002_MR_d0371" / OASIS["OAS30002_MR_d0371"][0]).write_bytes(b"\x1f\x8b broken")
    with pytest.raises(DataError, match="sub-OAS30002_ses-d0371_T1w.nii.gz' is not a readable NIfTI"):
        oasis3.convert(raw, tmp_path / "out")


def test_oasis3_refuses_a_volume_that_is_not_3d(tmp_path):
    raw = oasis_release(tmp_path / "raw")
    nii(raw / "OAS30001_MR_d0129" / OASIS["OAS30001_MR_d0129"][1], (6, 6, 6, 2))
    with pytest.raises(DataError, match=r"run-02_T1w.nii.gz' is not a 3-D volume: shape \(6, 6, 6, 2\)"):
        oasis3.convert(raw, tmp_path / "out")


def test_a_release_file_that_is_a_broken_link_is_named(tmp_path):
    """A sequence or T1w that is a symbolic link to nothing (content never pulled) is named with its missing target:
    not called a letter-case problem (BraTS), not silently left out (OASIS-3)."""
    raw = brats21_release(tmp_path / "raw")
    link = raw / "BraTS2021_Training_Data/BraTS2021_00002/BraTS2021_00002_t2.nii.gz"
    link.unlink()
    link.symlink_to(tmp_path / "cache" / "0099")
    with pytest.raises(DataError, match=r"BraTS2021_00002_t2\.nii\.gz' is a broken symbolic link") as err:
        brats21.convert(raw, tmp_path / "out")
    assert str(tmp_path / "cache" / "0099") in str(err.value)
    raw = oasis_release(tmp_path / "oasis")
    link = raw / "OAS30002_MR_d0371" / OASIS["OAS30002_MR_d0371"][0]
    link.unlink()
    link.symlink_to(tmp_path / "cache" / "cd34")
    with pytest.raises(DataError, match=r"sub-OAS30002_ses-d0371_T1w\.nii\.gz' is a broken symbolic link") as err:
        oasis3.convert(raw, tmp_path / "out")
    assert str(tmp_path / "cache" / "cd34") in str(err.value)
    assert not (tmp_path / "out" / "dataset.json").exists()


def test_oasis3_accepts_a_t1w_with_a_trailing_axis_of_one(tmp_path):
    """(X, Y, Z, 1) is 3-D to every other converter and to training; OASIS-3 refused it."""
    raw = oasis_release(tmp_path / "raw")
    nii(raw / "OAS30001_MR_d0129" / OASIS["OAS30001_MR_d0129"][1], (6, 6, 6, 1))
    doc = load(oasis3.convert(raw, tmp_path / "out"))
    assert "sub-OAS30001_ses-d0129_run-02_T1w" in {e["id"] for e in doc["training"]}


# ---------------------------------------------------------------- layouts of the public releases, as extracted

def test_brats21_reads_the_case_folders_that_the_training_tar_extracts_into_raw(tmp_path):
    """``BraTS2021_Training_Data.tar`` holds the case folders at its top (no ``BraTS2021_Training_Data/`` folder):
    ``tar -xf BraTS2021_Training_Data.tar`` in ``data/`` gives ``data/BraTS2021_00000/...`` (icerain-alt/brats-unet
    data_process/tar.py + process.py); SwinUNETR's README puts them in ``TrainingData/BraTS2021_01146/...``."""
    raw, out = tmp_path / "TrainingData", tmp_path / "out"
    for case in B21:
        for s in ("t1", "t1ce", "t2", "flair", "seg"):
            nii(raw / case / f"{case}_{s}.nii.gz")
    (raw / "BraTS2021_Training_Data.tar").write_bytes(b"the archive, kept beside what it extracted")
    doc = load(brats21.convert(raw, out))
    entries = doc["training"] + doc["validation"]
    assert sorted(e["id"] for e in entries) == B21
    for e in entries:
        case = raw.resolve() / e["id"]
        assert [resolve(out, p) for p in e["image"]] == [case / f"{e['id']}_{s}.nii.gz"
                                                         for s in ("t1", "t1ce", "t2", "flair")]
        assert resolve(out, e["label"]) == case / f"{e['id']}_seg.nii.gz"


def test_brats21_reads_the_folder_of_synapses_training_zip_and_refuses_two_copies(tmp_path):
    """Synapse's BraTS 2021 training zip unpacks into ``RSNA_ASNR_MICCAI_BraTS2021_TrainingData_16July2021/`` (the
    folder many public scripts read); beside Kaggle's ``BraTS2021_Training_Data/`` it would be a second copy."""
    raw, synapse = tmp_path / "raw", "RSNA_ASNR_MICCAI_BraTS2021_TrainingData_16July2021"
    brats21_release(tmp_path / "kaggle")
    raw.mkdir()
    os.replace(tmp_path / "kaggle" / "BraTS2021_Training_Data", raw / synapse)
    doc = load(brats21.convert(raw, tmp_path / "out"))
    entries = doc["training"] + doc["validation"]
    assert sorted(e["id"] for e in entries) == B21
    assert all(resolve(tmp_path / "out", e["label"]).parent.parent == (raw / synapse).resolve() for e in entries)
    (raw / "BraTS2021_Training_Data").mkdir()
    with pytest.raises(DataError, match=rf"holds both 'BraTS2021_Training_Data' and '{synapse}'"):
        brats21.convert(raw, tmp_path / "out2")


def test_brats21_refuses_case_folders_beside_the_release_folder_naming_them(tmp_path):
    """Cases extracted at the top of raw (the training tar's own layout) beside a ``BraTS2021_Training_Data/`` that
    holds the others (Kaggle's extra ``BraTS2021_00495.tar``, or two extractions): the release folder was read and
    the cases beside it left out, exit 0; refused naming both."""
    raw = brats21_release(tmp_path / "raw")
    os.replace(raw / "BraTS2021_Training_Data" / B21[0], raw / B21[0])
    with pytest.raises(DataError, match=rf"'{raw}' holds case folders \('{B21[0]}'\) beside 'BraTS2021_Training_Data'"
                                        r".*one of the two"):
        brats21.convert(raw, tmp_path / "out")
    os.replace(raw / B21[0], raw / "BraTS2021_Training_Data" / B21[0])
    assert brats21.convert(raw, tmp_path / "out").is_file()


def test_oasis3_reads_the_bids_layout_of_download_oasis_scans_bids(tmp_path):
    """NrgXnat/oasis-scripts ``download_scans/download_oasis_scans_bids.sh`` writes
    ``<directory_name>/sub-OAS30001/ses-d0129/anat/sub-OAS30001_ses-d0129_run-01_T1w.nii.gz`` (+ .json)."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    t1w = [raw / "sub-OAS30001/ses-d0129/anat/sub-OAS30001_ses-d0129_run-01_T1w.nii.gz",
           raw / "sub-OAS30001/ses-d0129/anat/sub-OAS30001_ses-d0129_run-02_T1w.nii.gz",
           raw / "sub-OAS30002/ses-d0371/anat/sub-OAS30002_ses-d0371_T1w.nii.gz"]
    for path in t1w:
        nii(path)
        path.with_name(path.name.replace(".nii.gz", ".json")).write_text("{}")
    nii(raw / "sub-OAS30001/ses-d0129/anat/sub-OAS30001_ses-d0129_T2w.nii.gz")
    nii(raw / "sub-OAS30001/ses-d0129/func/sub-OAS30001_ses-d0129_task-rest_run-01_bold.nii.gz")
    (raw / "sub-OAS30001/ses-d0129/dataset_description.json").write_text("{}")
    doc = load(oasis3.convert(raw, out))
    assert {e["id"]: resolve(out, e["image"]) for e in doc["training"]} == {
        p.name.removesuffix(".nii.gz"): p.resolve() for p in t1w}


@pytest.mark.parametrize("left", ["OAS30003_MR_d0558/scans/anat5-T1w/resources/NIFTI/files/x_T1w.nii.gz",
                                  "OAS30004_MR_d1000.zip", "OAS30006_MR_d0200.tar.gz"],
                         ids=["scans-not-moved", "zip", "tar-gz"])
def test_oasis3_refuses_what_a_stopped_download_script_left_naming_it(tmp_path, left):
    """download_oasis_scans.sh (and its BIDS sibling) downloads a session's archive, unpacks it, moves its
    scans/<anatN-T1w>/resources/*/files/* into the session's anatN/ and removes scans/ and the archive
    (NrgXnat/oasis-scripts): stopped midway, the session's scans were left out of the pool without a word."""
    raw = oasis_release(tmp_path / "oasis")
    path = raw / left
    if left.endswith(".nii.gz"):
        nii(path)
    else:
        path.write_bytes(b"a download stopped midway")
    named = raw / left.split("/scans/")[0] / "scans" if "/scans/" in left else path
    with pytest.raises(DataError, match=rf"'{re.escape(str(named))}' is what download_oasis_scans\.sh leaves of a "
                                        r"session it was stopped in.*run the script again"):
        oasis3.convert(raw, tmp_path / "out")


def test_brats23_refuses_case_folders_beside_its_release_folder_naming_them(tmp_path):
    """A case extracted at the top of raw beside ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData/ was left out,
    exit 0; refused naming it, as for BraTS 2021."""
    raw = brats23_release(tmp_path / "raw")
    for s in ("t1n", "t1c", "t2w", "t2f", "seg"):
        nii(raw / "BraTS-GLI-09999-000" / f"BraTS-GLI-09999-000-{s}.nii.gz")
    with pytest.raises(DataError, match=rf"'{raw}' holds case folders \('BraTS-GLI-09999-000'\) beside "
                                        r"'ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData'.*one of the two"):
        brats23.convert(raw, tmp_path / "out")
