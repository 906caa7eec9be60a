"""Converters of CC-CCII, AutoPET, ADNI and UDPET: tiny fixtures in each official layout."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from s2dc.data.sources import adni, autopet, cc_ccii, udpet
from s2dc.data.errors import DataError


def nifti(path: Path, shape=(6, 6, 6), value: float = 1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.full(shape, value, np.float32), np.eye(4)), str(path))
    return path


def load(json_path: Path) -> tuple[dict, dict[str, dict]]:
    doc = json.loads(json_path.read_text())
    entries = {e["id"]: e for e in doc["training"] + doc.get("validation", [])}
    assert len(entries) == doc["numTraining"] + doc["numValidation"]
    return doc, entries


def resolved(json_path: Path, rel: str) -> Path:
    assert not os.path.isabs(rel)
    return (json_path.parent / rel).resolve()


def sides(doc: dict, group) -> tuple[set, set]:
    return ({group(e["id"]) for e in doc["training"]}, {group(e["id"]) for e in doc.get("validation", [])})


# ---------------------------------------------------------------- CC-CCII

def png(path: Path, array: np.ndarray, fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


def cc_ccii_release(root: Path) -> dict[str, tuple[int, list[np.ndarray]]]:
    """Classes x patients x scans of 8x8 slices named 1, 2, 10 (natural order); returns id -> (class, slices)."""
    rng = np.random.default_rng(0)
    cases = {}
    for cls, patients in (("Normal", ("11", "12")), ("CP", ("21", "22")), ("NCP", ("31", "32", "33"))):
        for patient in patients:
            for scan in ("100", "101"):
                slices = [rng.integers(0, 256, (8, 8), dtype=np.uint8) for _ in range(3)]
                for name, arr in zip(("1", "2", "10"), slices):
                    png(root / cls / patient / scan / f"{name}.png", arr)
                cases[f"{cls}/{patient}/{scan}"] = ({"Normal": 0, "CP": 1, "NCP": 2}[cls], slices)
    return cases


def test_cc_ccii_writes_volumes_in_numeric_slice_order_and_splits_by_patient(tmp_path):
    raw = tmp_path / "CC-CCII"
    cases = cc_ccii_release(raw)
    (raw / "unzip_filenames.csv").write_text("zip_file,label,patient_id,scan_id,n_slice\n")
    out = tmp_path / "prepared"
    path = cc_ccii.convert(raw, out)
    doc, entries = load(path)
    assert doc["task"] == "classification" and doc["classes"] == ["Normal", "CP", "NCP"]
    assert set(entries) == set(cases)
    for case_id, (cls, slices) in cases.items():
        entry = entries[case_id]
        assert entry["class"] == cls
        file = resolved(path, entry["image"])
        assert file == (out / "volumes" / (case_id.replace("/", "_") + ".nii.gz")).resolve()
        img = nib.load(str(file))
        data = np.asanyarray(img.dataobj)
        assert data.dtype == np.uint8 and data.shape == (8, 8, 3)
        for k, arr in enumerate(slices):  # 1.png, 2.png, 10.png
            np.testing.assert_array_equal(data[:, :, k], arr)
        np.testing.assert_allclose(img.header.get_zooms(), (1, 1, 1))
    train, val = sides(doc, lambda i: i.rsplit("/", 1)[0])
    assert train and val and not train & val
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_cc_ccii_shows_its_progress_over_the_scans_on_a_terminal(tmp_path, monkeypatch, capsys):
    """Stacking the release's ~4,000 scans takes long: on a terminal a bar counts them (a job's log gets none)."""
    raw = tmp_path / "CC-CCII"
    cases = cc_ccii_release(raw)
    cc_ccii.convert(raw, tmp_path / "quiet")
    assert "CC-CCII scans stacked" not in capsys.readouterr().err
    monkeypatch.setattr(cc_ccii, "_progress", lambda: True)
    cc_ccii.convert(raw, tmp_path / "out")
    assert f"CC-CCII scans stacked: 100%|" in (err := capsys.readouterr().err) and f"{len(cases)}/{len(cases)}" in err


def test_cc_ccii_accepts_a_class_folder_nested_once_more(tmp_path):
    raw = tmp_path / "CC-CCII"
    cases = cc_ccii_release(tmp_path / "flat")
    for cls in ("Normal", "CP", "NCP"):
        (raw / cls).mkdir(parents=True)
        os.replace(tmp_path / "flat" / cls, raw / cls / cls)
    _, entries = load(cc_ccii.convert(raw, tmp_path / "out"))
    assert set(entries) == set(cases)



def test_cc_ccii_reads_the_layout_the_release_reads_normal_under_nc(tmp_path):
    """Ashespt/S2DC Downstream/CC-CCII/prc_data.py reads CC-CCII/NCP/NCP, CC-CCII/CP/CP and CC-CCII/NC/Normal."""
    raw = tmp_path / "CC-CCII"
    cases = cc_ccii_release(tmp_path / "flat")
    for cls, folder in (("Normal", "NC"), ("CP", "CP"), ("NCP", "NCP")):
        (raw / folder).mkdir(parents=True)
        os.replace(tmp_path / "flat" / cls, raw / folder / cls)
    _, entries = load(cc_ccii.convert(raw, tmp_path / "out"))
    assert set(entries) == set(cases)
    assert {e["class"] for i, e in entries.items() if i.startswith("Normal/")} == {0}

def test_cc_ccii_refuses_patients_beside_a_nested_class_folder_or_two_normal_folders(tmp_path):
    """A class's patients in one folder only: patient folders beside a nested ``NCP/NCP`` (two unzips, one nested
    and one not), or ``Normal/`` beside ``NC/Normal``, are named, not left out of the dataset without a word."""
    raw = tmp_path / "CC-CCII"
    cc_ccii_release(raw)
    png(raw / "NCP" / "NCP" / "34" / "100" / "1.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match=r"'.*NCP/NCP' .* '.*NCP/31', '.*NCP/32', '.*NCP/33'.*one of the two"):
        cc_ccii.convert(raw, tmp_path / "out")
    shutil.rmtree(raw / "NCP" / "NCP")
    png(raw / "NC" / "Normal" / "13" / "100" / "1.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match=r"'.*NC/Normal' and '.*CC-CCII/Normal'.*one of the two"):
        cc_ccii.convert(raw, tmp_path / "out")
    # both nested forms the release reads: Normal/Normal beside NC/Normal (half the class was left out, exit 0)
    os.replace(raw / "Normal", tmp_path / "flat_normal")
    (raw / "Normal").mkdir()
    os.replace(tmp_path / "flat_normal", raw / "Normal" / "Normal")
    with pytest.raises(DataError, match=r"'.*CC-CCII/Normal/Normal' and '.*CC-CCII/NC/Normal' both hold Normal patient "
                                        r"folders.*one of the two"):
        cc_ccii.convert(raw, tmp_path / "out")
    assert not (tmp_path / "out" / "dataset.json").exists()


def test_cc_ccii_refuses_scans_its_unzip_filenames_csv_lists_otherwise(tmp_path):
    """The release's ``unzip_filenames.csv`` (zip_file,label,patient_id,scan_id,n_slice) lists every scan with its
    slice count; a scan an interrupted unzip left short, or a zip never extracted, was converted as it was (a
    truncated volume, a patient fewer, exit 0). Each scan it lists must be there with its n_slice slices, the
    differences named with their zip files (third-party pipelines check the download the same way); removing a zip's
    rows leaves its scans out on purpose."""
    raw = tmp_path / "CC-CCII"
    cc_ccii_release(raw)  # 3 slices a scan
    rows = [f"{cls}-1.zip,{cls},{patient},{scan},3" for cls, patients in
            (("Normal", ("11", "12")), ("CP", ("21", "22")), ("NCP", ("31", "32", "33"))) for patient in patients
            for scan in ("100", "101")]
    listing = raw / "unzip_filenames.csv"
    listing.write_text("zip_file, label, patient_id, scan_id, n_slice\n" + "\n".join(rows).replace(",3\n", ",3.0\n", 1)
                       + "\n,,,,\n")  # spaces after the commas, 3.0 for 3, a blank row: as a spreadsheet may save it
    assert cc_ccii.convert(raw, tmp_path / "out").is_file()  # as listed
    listing.write_text("zip_file,label,patient_id,scan_id,n_slice\n" + "\n".join(rows) + "\n")
    (raw / "NCP" / "31" / "101" / "10.png").unlink()  # an unzip stopped midway
    shutil.rmtree(raw / "NCP" / "33")  # NCP-2.zip never extracted
    listing.write_text(listing.read_text().replace("NCP-1.zip,NCP,33", "NCP-2.zip,NCP,33"))
    with pytest.raises(DataError, match=r"unzip_filenames\.csv' lists 3 scans that are not as it says: 'NCP/31/101' "
                                        r"\(NCP-1\.zip\) holds 2 slices, it says 3; 'NCP/33/100' \(NCP-2\.zip\) is "
                                        r"missing; 'NCP/33/101' \(NCP-2\.zip\) is missing.*remove their rows"):
        cc_ccii.convert(raw, tmp_path / "out2")
    assert not (tmp_path / "out2" / "dataset.json").exists()
    kept = [row for row in listing.read_text().splitlines() if "NCP-2.zip" not in row and ",31,101," not in row]
    listing.write_text("\n".join(kept) + "\n")
    _, entries = load(cc_ccii.convert(raw, tmp_path / "out2"))
    assert "NCP/33/100" not in entries and "NCP/31/101" in entries  # unlisted: converted as before
    listing.write_text("zip_file,label,patient,scan_id,n_slice\n")
    with pytest.raises(DataError, match=r"unzip_filenames\.csv' has no column 'patient_id'"):
        cc_ccii.convert(raw, tmp_path / "out3")
    listing.write_text("zip_file,label,patient_id,scan_id,n_slice\nNCP-1.zip,NCP,31,100\n")  # a row cut short
    with pytest.raises(DataError, match=r"unzip_filenames\.csv' row 2 has n_slice None, expected a whole number"):
        cc_ccii.convert(raw, tmp_path / "out3")
    listing.write_text("zip_file,label,patient_id,scan_id,n_slice\nX-1.zip,Covid,1,1,3\n")
    with pytest.raises(DataError, match=r"unzip_filenames\.csv' row 2 has label 'Covid', expected one of Normal, CP, "
                                        r"NCP"):
        cc_ccii.convert(raw, tmp_path / "out3")


def test_cc_ccii_refusals_name_the_folder_or_file(tmp_path):
    raw = tmp_path / "CC-CCII"
    cc_ccii_release(raw)
    os.replace(raw / "CP", tmp_path / "CP")
    with pytest.raises(DataError, match=r"CC-CCII/CP' does not exist.*ncov-ai\.big\.ac\.cn"):
        cc_ccii.convert(raw, tmp_path / "out")
    os.replace(tmp_path / "CP", raw / "CP")

    odd = raw / "NCP" / "31" / "100" / "2.png"
    png(odd, np.zeros((8, 9), np.uint8))
    with pytest.raises(DataError, match=r"NCP/31/100/2\.png' is 9x8 pixels.*first slice .*1\.png' is 8x8"):
        cc_ccii.convert(raw, tmp_path / "out")
    png(odd, np.zeros((8, 8), np.uint8))

    bad = raw / "CP" / "22" / "101" / "10.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"CP/22/101/10\.png' is not a readable image"):
        cc_ccii.convert(raw, tmp_path / "out")
    bad.unlink()

    (raw / "Normal" / "12" / "102").mkdir()
    with pytest.raises(DataError, match=r"Normal/12/102' holds no slice images"):
        cc_ccii.convert(raw, tmp_path / "out")
    assert not (tmp_path / "out" / "dataset.json").exists() and not (tmp_path / "out" / "volumes").exists()
    assert not [p for p in (tmp_path / "out").iterdir()]  # staging removed after a failure


def test_cc_ccii_refuses_a_slice_that_is_a_broken_link(tmp_path):
    """A slice that is a symbolic link to nothing (never pulled) is named, not left out of a volume one slice short."""
    raw = tmp_path / "CC-CCII"
    cc_ccii_release(raw)
    link = raw / "NCP" / "31" / "100" / "2.png"
    link.unlink()
    link.symlink_to(tmp_path / "cache" / "ef56")
    with pytest.raises(DataError, match=r"NCP/31/100/2\.png' is a broken symbolic link") as err:
        cc_ccii.convert(raw, tmp_path / "out")
    assert str(tmp_path / "cache" / "ef56") in str(err.value)
    assert not (tmp_path / "out" / "dataset.json").exists() and not (tmp_path / "out" / "volumes").exists()


def test_cc_ccii_refuses_a_patient_folder_without_scan_folders(tmp_path):
    """A patient whose slices lie in the patient folder itself (no <scan_id>/ level, as a flattened unzip leaves
    it) is named, not silently left out of the dataset."""
    raw = tmp_path / "CC-CCII"
    cc_ccii_release(raw)
    patient = raw / "NCP" / "33"
    shutil.rmtree(patient / "101")
    for path in (patient / "100").iterdir():
        path.rename(patient / path.name)
    (patient / "100").rmdir()
    with pytest.raises(DataError, match=r"patient folder '.*NCP/33' holds no <scan_id>/ folder"):
        cc_ccii.convert(raw, tmp_path / "out")
    assert not (tmp_path / "out" / "dataset.json").exists()


def test_cc_ccii_reconversion_replaces_the_volumes(tmp_path):
    raw = tmp_path / "CC-CCII"
    cc_ccii_release(raw)
    out = tmp_path / "out"
    cc_ccii.convert(raw, out)
    (out / "volumes" / "stale.nii.gz").write_text("old")
    _, entries = load(cc_ccii.convert(raw, out))
    assert sorted(p.name for p in (out / "volumes").iterdir() if p.name != cc_ccii.MADE_HERE) == sorted(
        i.replace("/", "_") + ".nii.gz" for i in entries)


def test_an_interrupted_cc_ccii_reconversion_leaves_no_dataset_json_that_lists_other_volumes(tmp_path, monkeypatch):
    """The volumes and the dataset.json that lists them (with their content hash) change together: a reconversion
    stopped between the two (here while the json's hash is computed) leaves no dataset.json, never the old one
    beside the new volumes (Snakemake would see an unchanged output and rerun nothing downstream)."""
    from s2dc.data.sources import common

    raw = tmp_path / "CC-CCII"
    cc_ccii_release(raw)
    out = tmp_path / "out"
    first = cc_ccii.convert(raw, out)
    assert first.exists()
    png(raw / "CP" / "21" / "100" / "1.png", np.zeros((8, 8), np.uint8))  # one slice of one scan changed

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(common, "content_sha256", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cc_ccii.convert(raw, out)
    assert not first.exists()


def test_cc_ccii_never_replaces_a_volumes_folder_it_did_not_make(tmp_path):
    """OUT/volumes/ is replaced only if this converter made it (its mark inside, which the listing skips): a user's
    own folder of that name is refused before any slice is read, named, and left as it was; the volumes of an
    interrupted conversion (no dataset.json yet) are replaced."""
    raw = tmp_path / "CC-CCII"
    cc_ccii_release(raw)
    out = tmp_path / "out"
    mine = out / "volumes" / "my_scan.nii.gz"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"a scan of mine")
    with pytest.raises(DataError, match="volumes.*not made by"):
        cc_ccii.convert(raw, out)
    assert mine.read_bytes() == b"a scan of mine" and [p.name for p in out.iterdir()] == ["volumes"]
    assert [p.name for p in mine.parent.iterdir()] == ["my_scan.nii.gz"]
    mine.unlink()
    mine.parent.rmdir()
    first = cc_ccii.convert(raw, out).read_bytes()
    (out / "dataset.json").unlink()  # as if killed between the volumes and the json
    assert cc_ccii.convert(raw, out).read_bytes() == first


# ---------------------------------------------------------------- AutoPET

def autopet_release(raw: Path) -> dict[str, str]:
    """Three patients, one with two studies; returns study id -> patient."""
    studies = {}
    for patient, dates in (("PETCT_0011f3deaf", ("03-23-2003-NA-PET-CT Ganzkoerper-10445",)),
                           ("PETCT_01140d52d8", ("08-13-2005-NA-PET-CT-1", "11-02-2006-NA-PET-CT-2")),
                           ("PETCT_0223010e46", ("01-01-2010-NA-PET-CT-3",)),
                           ("PETCT_0af7ffe12a", ("05-05-2012-NA-PET-CT-4",))):
        for date in dates:
            folder = raw / "FDG-PET-CT-Lesions" / patient / date
            for name in ("SUV", "CTres", "CT", "PET", "SEG"):
                nifti(folder / f"{name}.nii.gz")
            studies[f"{patient}/{date}"] = patient
    (raw / "FDG-PET-CT-Lesions" / "fdg_metadata.csv").write_text("Subject ID,Study UID\n")
    return studies


def test_autopet_lists_suv_and_seg_and_keeps_a_patients_studies_together(tmp_path):
    raw = tmp_path / "autopet"
    studies = autopet_release(raw)
    for source in (raw, raw / "FDG-PET-CT-Lesions"):
        path = autopet.convert(source, tmp_path / "out")
        doc, entries = load(path)
        assert doc["modality"] == {"0": "SUV"} and doc["labels"] == {"0": "background", "1": "lesion"}
        assert set(entries) == set(studies)
        for study_id, entry in entries.items():
            folder = (raw / "FDG-PET-CT-Lesions" / study_id).resolve()
            assert resolved(path, entry["image"]) == folder / "SUV.nii.gz"
            assert resolved(path, entry["label"]) == folder / "SEG.nii.gz"
        train, val = sides(doc, lambda i: studies[i])
        assert train and val and not train & val


def test_autopet_refusals(tmp_path):
    with pytest.raises(DataError, match=r"FDG-PET-CT-Lesions' does not exist.*fdat\.uni-tuebingen\.de"):
        autopet.convert(tmp_path / "empty", tmp_path / "out")
    raw = tmp_path / "autopet"
    autopet_release(raw)
    seg = raw / "FDG-PET-CT-Lesions" / "PETCT_0223010e46" / "01-01-2010-NA-PET-CT-3" / "SEG.nii.gz"
    seg.unlink()
    with pytest.raises(DataError, match=r"01-01-2010-NA-PET-CT-3' lacks 'SEG\.nii\.gz'"):
        autopet.convert(raw, tmp_path / "out")
    nifti(seg, shape=(6, 6, 5))
    with pytest.raises(DataError, match=r"SEG\.nii\.gz' has shape \(6, 6, 5\).*SUV\.nii\.gz' \(6, 6, 6\)"):
        autopet.convert(raw, tmp_path / "out")
    seg.write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"SEG\.nii\.gz' is not a readable NIfTI"):
        autopet.convert(raw, tmp_path / "out")


def autopet3_release(raw: Path) -> dict[str, str]:
    """autoPET III's nnU-Net layout: FDG studies of three patients (one with two) and a PSMA study; returns the FDG
    study ids -> patient."""
    studies = {}
    for case in ("fdg_0011f3deaf_03-23-2003-NA-PET-CT Ganzkoerper  primaer mit KM-10445",
                 "fdg_01140d52d8_08-13-2005-NA-PET-CT-1", "fdg_01140d52d8_11-02-2006-NA-PET-CT-2",
                 "fdg_0223010e46_01-01-2010-NA-PET-CT-3", "psma_00bfa3e7eb4a1fbd_2012-04-11"):
        nifti(raw / "imagesTr" / f"{case}_0000.nii.gz")  # CT
        nifti(raw / "imagesTr" / f"{case}_0001.nii.gz")  # SUV
        nifti(raw / "labelsTr" / f"{case}.nii.gz")
        if case.startswith("fdg_"):
            studies[case] = "_".join(case.split("_")[:2])
    (raw / "dataset.json").write_text('{"channel_names": {"0": "CT", "1": "PET"}}')
    return studies


def test_autopet_reads_autopet3s_nnunet_layout_fdg_studies_only(tmp_path):
    """autoPET III (and IV) ship nnU-Net's layout: imagesTr/<case>_0000 (CT) and _0001 (SUV), labelsTr/<case>; the
    SUV and the label of each FDG study are listed (PSMA is another tracer), a patient's studies on one side."""
    raw = tmp_path / "autopet3"
    studies = autopet3_release(raw)
    path = autopet.convert(raw, tmp_path / "out")
    doc, entries = load(path)
    assert set(entries) == set(studies)
    for case, entry in entries.items():
        assert resolved(path, entry["image"]) == (raw / "imagesTr" / f"{case}_0001.nii.gz").resolve()
        assert resolved(path, entry["label"]) == (raw / "labelsTr" / f"{case}.nii.gz").resolve()
    train, val = sides(doc, lambda i: studies[i])
    assert train and val and not train & val


def test_autopet3_refusals(tmp_path):
    raw = tmp_path / "autopet3"
    autopet3_release(raw)
    case = "fdg_0223010e46_01-01-2010-NA-PET-CT-3"
    suv = raw / "imagesTr" / f"{case}_0001.nii.gz"
    suv.unlink()
    with pytest.raises(DataError, match=rf"'{case}_0001\.nii\.gz'.*SUV"):
        autopet.convert(raw, tmp_path / "out")
    nifti(suv, shape=(6, 6, 5))
    with pytest.raises(DataError, match=r"has shape \(6, 6, 6\).*\(6, 6, 5\)"):
        autopet.convert(raw, tmp_path / "out")
    for path in [*(raw / "labelsTr").glob("fdg_*"), *(raw / "imagesTr").glob("fdg_*")]:  # a PSMA-only release
        path.unlink()
    with pytest.raises(DataError, match=r"no FDG study.*psma"):
        autopet.convert(raw, tmp_path / "out")


# ---------------------------------------------------------------- ADNI

ADNIMERGE = [  # PTID, VISCODE, DX_bl
    ("002_S_0295", "bl", "CN"), ("002_S_0295", "m06", "CN"),
    ("005_S_0221", "bl", "AD"), ("005_S_0221", "m12", "AD"),
    ("011_S_0002", "bl", "CN"), ("022_S_0543", "bl", "AD"),
    ("033_S_0734", "bl", "LMCI"), ("941_S_1311", "bl", "EMCI"), ("123_S_0094", "bl", "SMC"),
]


def adni_release(raw: Path) -> dict[str, tuple[int, Path]]:
    """Subjects with one or two descriptions / dates; returns subject -> (class, expected volume)."""
    raw.mkdir(parents=True)
    table = pd.DataFrame(ADNIMERGE, columns=["PTID", "VISCODE", "DX_bl"]).assign(RID=1, DX="CN")
    table.to_csv(raw / "ADNIMERGE.csv", index=False)
    coreg = "Coreg,_Avg,_Standardized_Image_and_Voxel_Size"
    expected = {}
    for subject, cls in (("002_S_0295", 0), ("005_S_0221", 1), ("011_S_0002", 0), ("022_S_0543", 1),
                         ("033_S_0734", None), ("941_S_1311", None), ("123_S_0094", None)):
        early = nifti(raw / "ADNI" / subject / f"AV45_{coreg}" / "2006-04-18_08_20_30.0" / "I26325" /
                      f"ADNI_{subject}_PT_AV45_I26325.nii")
        nifti(raw / "ADNI" / subject / f"AV45_{UNIFORM}" / "2008-05-02_10_00_00.0" / "I110000" /
              f"ADNI_{subject}_PT_AV45_I110000.nii")  # a later acquisition, another processing stage
        if cls is not None:
            expected[subject] = (cls, early)
    # a subject whose later acquisition comes first in name order of the description folders
    nifti(raw / "ADNI" / "011_S_0002" / "AV45_AAA_first_name" / "2010-01-01_00_00_00.0" / "I9" / "late.nii.gz")
    # a subject the converter skips (LMCI) may hold another tracer: it is not read
    nifti(raw / "ADNI" / "033_S_0734" / UNIFORM / "2009-01-01_00_00_00.0" / "I7" / "fdg.nii")
    return expected


#: ADNI's series description of its fully processed PET (stage 4), as the download names the folder: FDG's names no
#: tracer, florbetapir's starts with AV45 (docs/datasets.md, section 7).
UNIFORM = "Coreg,_Avg,_Std_Img_and_Vox_Siz,_Uniform_Resolution"


def test_adni_labels_cn_and_ad_from_baseline_and_takes_the_earliest_scan(tmp_path):
    raw = tmp_path / "adni"
    expected = adni_release(raw)
    path = adni.convert(raw, tmp_path / "out")
    doc, entries = load(path)
    assert doc["classes"] == ["CN", "AD"] and doc["task"] == "classification"
    assert set(entries) == set(expected)  # LMCI, EMCI, SMC skipped
    for subject, (cls, volume) in expected.items():
        assert entries[subject]["class"] == cls
        assert resolved(path, entries[subject]["image"]) == volume.resolve()
    train, val = sides(doc, lambda i: i)
    assert train and val and not train & val


def test_adni_refusals(tmp_path):
    raw = tmp_path / "adni"
    adni_release(raw)
    dicom = raw / "ADNI" / "022_S_0543"
    for nii in dicom.rglob("*.nii"):
        (nii.parent / "ADNI_022_S_0543_PT_Br_1_S19643_I26325.dcm").write_bytes(b"\0" * 132 + b"DICM")
        nii.unlink()
    with pytest.raises(DataError, match=r"022_S_0543/.*' holds DICOM.*NIfTI.*ida\.loni\.usc\.edu.*dcm2niix"):
        adni.convert(raw, tmp_path / "out")

    table = pd.read_csv(raw / "ADNIMERGE.csv")
    table.drop(columns="DX_bl").to_csv(raw / "ADNIMERGE.csv", index=False)
    with pytest.raises(DataError, match=r"ADNIMERGE\.csv' has no column 'DX_bl'"):
        adni.convert(raw, tmp_path / "out")
    (raw / "ADNIMERGE.csv").unlink()
    with pytest.raises(DataError, match=r"ADNIMERGE\.csv' does not exist"):
        adni.convert(raw, tmp_path / "out")
    with pytest.raises(DataError, match=r"nothing/ADNI' does not exist.*ida\.loni\.usc\.edu"):
        adni.convert(tmp_path / "nothing", tmp_path / "out")


def test_adni_refuses_two_volumes_of_one_earliest_acquisition_naming_them(tmp_path):
    """Two processing stages (or tracers) of one subject's earliest acquisition: which one a classifier should read
    is the user's choice, not the order of the description folders' names."""
    raw = tmp_path / "adni"
    adni_release(raw)
    date = "2006-04-18_08_20_30.0"
    nifti(raw / "ADNI" / "005_S_0221" / "AV45_Co-registered,_Averaged" / date / "I26300" / "averaged.nii")
    with pytest.raises(DataError, match=r"005_S_0221.*2006-04-18_08_20_30\.0(?=.*ADNI_005_S_0221_PT_AV45)"
                                        r"(?=.*averaged\.nii).*one kind of image"):
        adni.convert(raw, tmp_path / "out")
    shutil.rmtree(raw / "ADNI" / "005_S_0221" / "AV45_Co-registered,_Averaged")
    assert adni.convert(raw, tmp_path / "out").is_file()


@pytest.mark.parametrize("description, tracer", [
    ("AV45_Coreg,_Avg,_Standardized_Image_and_Voxel_Size", "florbetapir (AV45)"),
    ("ADNI_Brain_PET__Raw_AV-45", "florbetapir (AV45)"), ("Florbetapir_PET", "florbetapir (AV45)"),
    ("AV1451_Coreg,_Avg,_Std_Img_and_Vox_Siz,_Uniform_Resolution", "flortaucipir (AV1451)"),
    ("ADNI3-Tau_PET_(Flortaucipir)", "flortaucipir (AV1451)"), ("FBB_Coreg,_Avg", "florbetaben (FBB)"),
    ("PIB_Co-registered,_Averaged", "PiB"), ("ADNI_Brain_PET__Raw_FDG", "FDG"),
    ("Coreg,_Avg,_Std_Img_and_Vox_Siz,_Uniform_Resolution", None), ("Co-registered_Dynamic", None),
    # tracers ADNI 3 and 4 add, and descriptions that name only the kind (they were counted as FDG)
    ("MK6240_Coreg,_Avg,_Std_Img_and_Vox_Siz,_Uniform_Resolution", "MK-6240"), ("NAV4694_Coreg,_Avg", "NAV4694"),
    ("PI2620_Coreg,_Avg", "PI-2620"), ("AV1451_(Tau)", "flortaucipir (AV1451)"),
    ("ADNI3_Tau", "a tau tracer (named 'tau' only)"), ("ADNI3_Amyloid_PET", "an amyloid tracer (named 'amyloid' only)"),
])
def test_adni_reads_the_tracer_a_series_description_names(description, tracer):
    assert adni.tracer(description) == tracer


def test_adni_refuses_a_download_of_two_tracers_naming_them(tmp_path):
    """FDG and florbetapir (AV45) in one download: each subject's earliest scan would be FDG for some subjects and
    AV45 for others (one classifier fitted on two tracers' images, exit 0); refused, naming the tracers, their
    description folders and how many subjects hold each. A description naming no tracer is ADNI's processed FDG; raw
    FDG beside it (two processing stages of one tracer) is left to the user, as before."""
    raw = tmp_path / "adni"
    adni_release(raw)
    for subject, date in (("005_S_0221", "2005-01-01_00_00_00.0"), ("022_S_0543", "2009-01-01_00_00_00.0")):
        nifti(raw / "ADNI" / subject / UNIFORM / date / "I5" / "fdg.nii")
    with pytest.raises(DataError, match=rf"ADNI' holds PET of two tracers.*: FDG: 2 subjects \('{UNIFORM}'\); "
                                        r"florbetapir \(AV45\): 4 subjects \('AV45_AAA_first_name', 'AV45_Coreg"
                                        r".*keep one tracer") as err:
        adni.convert(raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert "033_S_0734" not in str(err.value)  # skipped (LMCI): its FDG is not read
    for subject in ("005_S_0221", "022_S_0543"):
        shutil.rmtree(raw / "ADNI" / subject / UNIFORM)
    assert adni.convert(raw, tmp_path / "out").is_file()


def test_adni_refuses_an_mri_in_the_download_naming_it(tmp_path):
    """An IDA collection holding a subject's MRI beside its PET: a screening MRI, usually earlier than the baseline
    PET, was that subject's "earliest PET" (a PET classifier fitted partly on T1 images, exit 0); ADNI names each
    file with its modality (``_MR_`` / ``_PT_``), and an MRI is refused naming it, not counted as a tracer."""
    raw = tmp_path / "adni"
    adni_release(raw)
    mri = nifti(raw / "ADNI" / "002_S_0295" / "MPRAGE" / "2005-12-01_09_00_00.0" / "I45108" /
                "ADNI_002_S_0295_MR_MPRAGE_br_raw_20070101_S9000_I45108.nii")
    with pytest.raises(DataError, match=rf"'{re.escape(str(mri))}' is an MRI \(its name says MR\).*PET collection only"):
        adni.convert(raw, tmp_path / "out")
    shutil.rmtree(mri.parents[2])
    # a PET whose description names CT (attenuation by CT) is PET: IDA's modality is the token after the subject
    nifti(raw / "ADNI" / "002_S_0295" / "AV45_PET_CT_Brain" / "2011-01-01_00_00_00.0" / "I7" /
          "ADNI_002_S_0295_PT_AV45_PET_CT_Brain_Br_1_S7_I7.nii")
    assert adni.convert(raw, tmp_path / "out").is_file()


def test_adni_refuses_an_acquisition_folder_without_its_image_naming_it(tmp_path):
    """A date folder extracted without its image folder (one zip part of the IDA download not unpacked): the
    subject's later scan stood in for its earliest, exit 0; refused naming the folder."""
    raw = tmp_path / "adni"
    adni_release(raw)
    empty = raw / "ADNI" / "005_S_0221" / "AV45_AAA_first_name" / "2005-01-01_00_00_00.0"
    empty.mkdir(parents=True)
    with pytest.raises(DataError, match=rf"'{re.escape(str(empty))}' holds no image folder"):
        adni.convert(raw, tmp_path / "out")
    empty.rmdir()
    assert adni.convert(raw, tmp_path / "out").is_file()


def test_adni_refuses_an_earliest_scan_that_is_a_broken_link(tmp_path):
    """The earliest PET as a symbolic link to nothing (never pulled) is named; a later scan never takes its place."""
    raw = tmp_path / "adni"
    expected = adni_release(raw)
    early = expected["005_S_0221"][1]
    early.unlink()
    early.symlink_to(tmp_path / "annex" / "objects" / "xx")
    with pytest.raises(DataError, match=r"ADNI_005_S_0221_PT_AV45_I26325\.nii' is a broken symbolic link") as err:
        adni.convert(raw, tmp_path / "out")
    assert str(tmp_path / "annex" / "objects" / "xx") in str(err.value)


# ---------------------------------------------------------------- UDPET

def udpet_release(raw: Path) -> dict[str, str]:
    """Two scanners, subject folders of one or two exams, NIfTI per dose folder; returns id -> group."""
    ids = {}
    for scanner, subject, exams in (("SiemensVisionQuadra", "Subject_1-6", ("30122021_5_20211230_170836", "e2")),
                                    ("SiemensVisionQuadra", "Subject_7-12", ("e3",)),
                                    ("uExplorer", "Subject_1-6", ("e4",)),
                                    ("uExplorer", "Subject_13-18", ("e5", "e6"))):
        for exam in exams:
            folder = raw / scanner / subject / exam
            for dose in ("Full_dose", "1-4 dose", "1-10 dose"):
                nifti(folder / dose / f"{dose.replace(' ', '_')}.nii.gz")
            ids[f"{scanner}/{subject}/{exam}"] = f"{scanner}/{subject}"
    return ids


def test_udpet_pairs_low_and_full_dose_and_splits_by_subject_folder(tmp_path):
    raw = tmp_path / "udpet"
    ids = udpet_release(raw)
    for dose in (udpet.DEFAULT_DOSE, "1-10 dose"):
        path = udpet.convert(raw, tmp_path / "out", **({} if dose == udpet.DEFAULT_DOSE else {"dose": dose}))
        doc, entries = load(path)
        assert doc["task"] == "reconstruction" and set(entries) == set(ids)
        for case_id, entry in entries.items():
            folder = (raw / case_id).resolve()
            assert resolved(path, entry["image"]) == folder / dose / f"{dose.replace(' ', '_')}.nii.gz"
            assert resolved(path, entry["target"]) == folder / "Full_dose" / "Full_dose.nii.gz"
        train, val = sides(doc, lambda i: ids[i])
        assert train and val and not train & val


def test_udpet_reads_the_dose_folders_of_the_uexplorer_release(tmp_path):
    """The uEXPLORER exams (about 1,060 of the 1,447 training subjects) name their dose folders by reconstruction,
    under a download part: ``uExplorer/uExplorerPART10/Anonymous_ANO_.../2.886 x 600 WB NORMAL`` (full dose) beside
    ``... WB D4`` or ``... WB DRF_4`` (public loaders: mayalevital/LDPT, junqiangchen's 2022 challenge code,
    wo-niubi/2023UDPET, KUL-recon-lab/2025_ud_pet_kul); they were refused as lacking Full_dose. Read as the same
    doses, beside the Siemens exams; a dose named both ways in one exam is refused naming both."""
    raw = tmp_path / "udpet"
    ids = udpet_release(raw)
    part = raw / "uExplorer" / "uExplorerPART10"
    for exam, low in (("Anonymous_ANO_20220224_1744219_121048", "D4"), ("Anonymous_ANO_20220224_1711567_102845", "DRF_4")):
        for dose in ("NORMAL" if low == "D4" else "normal", low, "D2", "D10" if low == "D4" else "DRF_10"):
            nifti(part / exam / f"2.886 x 600 WB {dose}" / f"{dose}.nii.gz")
        ids[f"uExplorer/uExplorerPART10/{exam}"] = "uExplorer/uExplorerPART10"
    flat = part / "Anonymous_ANO_20220301_0900000_000001"  # each dose folder converted to a file beside the others
    for dose in ("NORMAL", "DRF_4", "DRF_10"):
        nifti(flat / f"{dose}.nii.gz")
    ids[f"uExplorer/uExplorerPART10/{flat.name}"] = "uExplorer/uExplorerPART10"
    for dose, low_name in ((udpet.DEFAULT_DOSE, {"D4": "D4", "DRF_4": "DRF_4"}), ("1-10 dose", {"D4": "D10", "DRF_4": "DRF_10"})):
        path = udpet.convert(raw, tmp_path / "out", dose=dose)
        _, entries = load(path)
        assert set(entries) == set(ids)
        for exam, low in (("Anonymous_ANO_20220224_1744219_121048", "D4"), ("Anonymous_ANO_20220224_1711567_102845", "DRF_4")):
            entry, folder = entries[f"uExplorer/uExplorerPART10/{exam}"], (part / exam).resolve()
            full = "NORMAL" if low == "D4" else "normal"
            assert resolved(path, entry["image"]) == folder / f"2.886 x 600 WB {low_name[low]}" / f"{low_name[low]}.nii.gz"
            assert resolved(path, entry["target"]) == folder / f"2.886 x 600 WB {full}" / f"{full}.nii.gz"
        entry = entries[f"uExplorer/uExplorerPART10/{flat.name}"]
        assert resolved(path, entry["image"]) == flat.resolve() / f"{low_name['DRF_4']}.nii.gz"
        assert resolved(path, entry["target"]) == flat.resolve() / "NORMAL.nii.gz"
    exam = part / "Anonymous_ANO_20220224_1744219_121048"
    nifti(exam / "Full_dose" / "full.nii.gz")
    with pytest.raises(DataError, match=r"'.*2\.886 x 600 WB NORMAL' and '.*Full_dose' are both the full dose of exam"):
        udpet.convert(raw, tmp_path / "out2")


def test_udpet_refusals(tmp_path):
    with pytest.raises(DataError, match=r"holds no <scanner>/.../<exam>/ folder .*udpet-challenge\.github\.io"):
        udpet.convert(tmp_path / "empty", tmp_path / "out")
    raw = tmp_path / "udpet"
    udpet_release(raw)
    low = raw / "uExplorer" / "Subject_13-18" / "e6" / "1-4 dose"
    for f in low.iterdir():
        f.unlink()
    (low / "1.2.840.113619.IMA").write_bytes(b"\0" * 132 + b"DICM")
    with pytest.raises(DataError, match=r"e6/1-4 dose' holds no NIfTI.*dcm2niix"):
        udpet.convert(raw, tmp_path / "out")
    (low / "1.2.840.113619.IMA").unlink()
    nifti(low / "low.nii.gz", shape=(6, 6, 4))
    with pytest.raises(DataError, match=r"low\.nii\.gz' has shape \(6, 6, 4\).*Full_dose\.nii\.gz' \(6, 6, 6\)"):
        udpet.convert(raw, tmp_path / "out")
    with pytest.raises(DataError, match=r"Subject_1-6/30122021_5_20211230_170836' lacks the dose folder '1-100 dose'"):
        udpet.convert(raw, tmp_path / "out", dose="1-100 dose")


def test_adni_refuses_a_subject_with_two_different_baseline_diagnoses(tmp_path):
    """Two baseline rows of one subject that disagree (CN and AD) are refused naming the subject and the csv, not
    settled by whichever row comes last; a repeated row that agrees is accepted."""
    raw = tmp_path / "adni"
    expected = adni_release(raw)
    with open(raw / "ADNIMERGE.csv", "a") as f:
        f.write("002_S_0295,bl,CN,1,CN\n")
    _, entries = load(adni.convert(raw, tmp_path / "out"))
    assert entries["002_S_0295"]["class"] == expected["002_S_0295"][0] == 0
    with open(raw / "ADNIMERGE.csv", "a") as f:
        f.write("002_S_0295,bl,AD,1,AD\n")
    with pytest.raises(DataError, match=r"'002_S_0295' has baseline rows .*AD.*CN.* in '.*ADNIMERGE\.csv'"):
        adni.convert(raw, tmp_path / "out")


def test_adni_reads_a_dated_adnimerge_and_refuses_a_subject_it_does_not_list(tmp_path):
    raw = tmp_path / "adni"
    expected = adni_release(raw)
    os.replace(raw / "ADNIMERGE.csv", raw / "ADNIMERGE_27Mar2025.csv")
    _, entries = load(adni.convert(raw, tmp_path / "out"))
    assert set(entries) == set(expected)
    nifti(raw / "ADNI" / "099_S_9999" / "FDG" / "2011-01-01_00_00_00.0" / "I1" / "x.nii")
    with pytest.raises(DataError, match=r"'099_S_9999' .*no baseline row .*ADNIMERGE_27Mar2025\.csv"):
        adni.convert(raw, tmp_path / "out")


def test_udpet_accepts_one_nifti_file_per_dose_next_to_each_other(tmp_path):
    raw = tmp_path / "udpet"
    ids = {}
    for subject, exam in (("Subject_1-6", "1"), ("Subject_7-12", "2"), ("Subject_13-18", "3")):
        for dose in ("Full_dose", "1-4 dose"):
            nifti(raw / "uExplorer" / subject / exam / f"{dose}.nii.gz")
        ids[f"uExplorer/{subject}/{exam}"] = raw / "uExplorer" / subject / exam
    path = udpet.convert(raw, tmp_path / "out")
    _, entries = load(path)
    assert set(entries) == set(ids)
    for case_id, folder in ids.items():
        assert resolved(path, entries[case_id]["image"]) == (folder / "1-4 dose.nii.gz").resolve()
        assert resolved(path, entries[case_id]["target"]) == (folder / "Full_dose.nii.gz").resolve()


@pytest.mark.parametrize("in_folder", [True, False])
def test_udpet_refuses_a_dose_volume_that_is_a_broken_link(tmp_path, in_folder):
    """A dose NIfTI that is a symbolic link to nothing (never pulled) is named, not called a missing folder or DICOM."""
    raw = tmp_path / "udpet"
    udpet_release(raw)
    exam = raw / "uExplorer" / "Subject_13-18" / "e5"
    if in_folder:
        link = exam / "1-4 dose" / "1-4_dose.nii.gz"
        link.unlink()
    else:
        shutil.rmtree(exam / "1-4 dose")
        link = exam / "1-4 dose.nii.gz"
    link.symlink_to(tmp_path / "cache" / "77")
    with pytest.raises(DataError, match=r"e5/1-4.dose.*\.nii\.gz' is a broken symbolic link") as err:
        udpet.convert(raw, tmp_path / "out")
    assert str(tmp_path / "cache" / "77") in str(err.value)


def test_cc_ccii_removes_the_staging_folders_of_a_killed_conversion_not_a_running_ones(tmp_path):
    """A conversion killed with SIGKILL leaves its staging folders (named by host and process id): the next
    conversion on this host removes those whose process is gone, and keeps one whose process still runs (and a
    folder without the converter's mark)."""
    import socket
    import subprocess
    import sys

    raw = tmp_path / "CC-CCII"
    cc_ccii_release(raw)
    out = tmp_path / "out"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead = int(gone.stdout)
    host = socket.gethostname()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        folders = {}
        for key, name in {"dead_tmp": f".volumes.{host}.{dead}.tmp", "dead_old": f".volumes.{host}.{dead}.old",
                          "alive": f".volumes.{host}.{alive.pid}.tmp", "other_host": f".volumes.elsewhere.{dead}.tmp",
                          "unmarked": f".volumes.{host}.{dead + 1 if dead + 1 != alive.pid else dead + 2}.tmp"}.items():
            folders[key] = out / name
            folders[key].mkdir(parents=True)
            (folders[key] / "scan.nii.gz").write_bytes(b"x" * 1000)
            if key != "unmarked":
                (folders[key] / cc_ccii.MADE_HERE).write_text("made here\n")
        cc_ccii.convert(raw, out)
        left = {key for key, folder in folders.items() if folder.exists()}
        assert left == {"alive", "other_host", "unmarked"}
    finally:
        alive.kill()
        alive.wait()


def udpet_exam(folder: Path, doses=("NORMAL", "D4")) -> Path:
    """A uEXPLORER exam (``... WB NORMAL`` / ``... WB D4`` dose folders, ``Full_dose`` / ``1-4 dose`` for a Siemens
    one), one NIfTI each; returns the exam folder."""
    for dose in doses:
        name = dose if dose in ("Full_dose", "1-4 dose") else f"2.886 x 600 WB {dose}"
        nifti(folder / name / f"{dose.replace(' ', '_')}.nii.gz")
    return folder


def test_udpet_finds_exams_at_any_depth_under_the_scanner_folder(tmp_path):
    """How many folders lie between a scanner's (or hospital's) folder and its exams depends on how each download
    part was unzipped: none (junqiangchen's 2022 code, wo-niubi/2023UDPET, the 2025 release as KUL-recon-lab converted
    it, `Shanghai-Ruijin-Hospital-2023/<exam>`), one (mayalevital/LDPT, `uExplorer/uExplorerPART10/<exam>`) or two
    (yqx7150/RED, `uExplorer/PART1/PART1/<exam>`). Each exam is found by its dose folders, its id its path."""
    raw = tmp_path / "udpet"
    exams = {
        "Shanghai-Ruijin-Hospital-2023/Anonymous_ANO_20230522_1652543_114008": ("NORMAL", "D4"),
        "uExplorer/PART1/PART1/Anonymous_ANO_20230505_1758162_120417": ("NORMAL", "D4"),
        "uExplorer/uExplorerPART10/Anonymous_ANO_20220224_1744219_121048": ("NORMAL", "D4"),
        "SiemensVisionQuadra/Subject_115-117/30122021_5_20211230_170836": ("Full_dose", "1-4 dose"),
        "Bern-Inselspital-2022/01122021_1_20211201_164050": ("Full_dose", "1-4 dose"),
    }
    for exam, doses in exams.items():
        udpet_exam(raw / exam, doses)
    path = udpet.convert(raw, tmp_path / "out")
    _, entries = load(path)
    assert set(entries) == set(exams)
    for exam, (full, low) in exams.items():
        folder = (raw / exam).resolve()
        image, target = resolved(path, entries[exam]["image"]), resolved(path, entries[exam]["target"])
        assert image.parent.parent == target.parent.parent == folder
        assert (image.name, target.name) == (f"{low.replace(' ', '_')}.nii.gz", f"{full}.nii.gz")


def test_udpet_refuses_a_folder_that_holds_no_exam_at_any_level(tmp_path):
    """A download part left unextracted (an empty folder), or an exam whose dose folders are named otherwise, beside
    the exams that are read: refused naming it, not left out in silence; so is an exam nested deeper than four
    folders under the release."""
    raw = tmp_path / "udpet"
    udpet_exam(raw / "uExplorer" / "uExplorerPART10" / "Anonymous_ANO_20220224_1744219_121048")
    udpet_exam(raw / "uExplorer" / "uExplorerPART10" / "Anonymous_ANO_20220224_1711567_102845")
    (raw / "uExplorer" / "uExplorerPART11").mkdir()
    with pytest.raises(DataError, match=r"'.*uExplorer/uExplorerPART11' holds no exam"):
        udpet.convert(raw, tmp_path / "out")
    (raw / "uExplorer" / "uExplorerPART11").rmdir()
    odd = raw / "uExplorer" / "uExplorerPART10" / "Anonymous_ANO_20220301_0900000_000001"
    nifti(odd / "PET WB 25%" / "x.nii.gz")
    nifti(odd / "PET WB 100%" / "x.nii.gz")
    with pytest.raises(DataError, match=r"'.*Anonymous_ANO_20220301_0900000_000001' holds no exam.*WB NORMAL"):
        udpet.convert(raw, tmp_path / "out")
    shutil.rmtree(odd)
    udpet_exam(raw / "a" / "b" / "c" / "d" / "Anonymous_ANO_20220224_1744219_999999")
    with pytest.raises(DataError, match=r"'.*udpet/a' holds no exam \(found \['b'\]\).* at most 4 folders below"):
        udpet.convert(raw, tmp_path / "out")


def test_udpet_refuses_the_2025_test_sets_flat_files_naming_what_they_lack(tmp_path):
    """The 2025 test set comes as flat `Anonymous-NN_DRF-<k>.nii.gz` files (KUL-recon-lab/2025_ud_pet_kul README;
    248 files, no full dose): nothing to pair, said as such, not as a missing exam folder."""
    raw = tmp_path / "udpet"
    for subject in (1, 2):
        for drf in (4, 10, 100):
            nifti(raw / "test" / f"Anonymous-{subject:02d}_DRF-{drf}.nii.gz")
    with pytest.raises(DataError, match=r"'.*udpet/test' holds 6 files of the 2025 test set \(Anonymous-01_DRF-10"
                                        r"\.nii\.gz, .*\): low doses without their full dose"):
        udpet.convert(raw, tmp_path / "out")
    udpet_exam(raw / "uExplorer" / "Anonymous_ANO_20220224_1744219_121048")
    udpet_exam(raw / "uExplorer" / "Anonymous_ANO_20220224_1711567_102845")
    with pytest.raises(DataError, match=r"holds 6 files of the 2025 test set"):
        udpet.convert(raw, tmp_path / "out")


def test_udpet_keeps_the_copies_of_one_acquisition_on_one_side_of_the_split(tmp_path):
    """The 2025 training set holds one acquisition under two exam ids (KUL-recon-lab/2025_ud_pet_kul's
    data_stats.csv: equal weight, height, activity, scan time and noise at every dose), in two download parts or
    subject folders: a uEXPLORER export's trailing number (`Anonymous_ANO_20230222_1002305_123921` and
    `Anonymous_ANO_20230304_1955519_123921`) and a Quadra exam's acquisition date (`17012022_1_20220118_084710` and
    `..._085104`, `20220704_1_20220705_172845` and `20220705_1_20220705_173107`) keep them on one side."""
    raw = tmp_path / "udpet"
    pairs = []
    for i in range(12):
        number = f"{120000 + 97 * i:06d}"
        first = f"uExplorer/uExplorerPART{i}/Anonymous_ANO_202302{10 + i}_1002305_{number}"
        second = f"uExplorer/uExplorerPART{i + 20}/Anonymous_ANO_202303{10 + i}_1955519_{number}"
        day = f"202201{10 + i}"
        third = f"SiemensVisionQuadra/Subject_{i}-{i}/{day[6:]}012022_1_{day}_084710"
        fourth = f"SiemensVisionQuadra/Subject_{i + 20}-{i + 20}/{day}_1_{day}_173107"
        for exam in (first, second):
            udpet_exam(raw / exam)
        for exam in (third, fourth):
            udpet_exam(raw / exam, ("Full_dose", "1-4 dose"))
        pairs += [(first, second), (third, fourth)]
    doc, entries = load(udpet.convert(raw, tmp_path / "out"))
    assert len(entries) == 48
    validation = {e["id"] for e in doc["validation"]}
    assert validation and all((a in validation) == (b in validation) for a, b in pairs), validation


def test_udpet_refuses_an_exam_found_twice(tmp_path):
    """A download part unzipped twice (``PART1/<exam>`` beside ``PART1/PART1/<exam>``) is read at both depths: one
    exam, two cases. Refused naming both folders (a review of the change that reads exams at any depth found it)."""
    raw = tmp_path / "udpet"
    part = raw / "uExplorer" / "PART1"
    for exam in ("Anonymous_ANO_20220224_1744219_121048", "Anonymous_ANO_20220224_1711567_102845",
                 "Anonymous_ANO_20220224_1709580_104139"):
        udpet_exam(part / exam)
    assert len(load(udpet.convert(raw, tmp_path / "out"))[1]) == 3
    udpet_exam(part / "PART1" / "Anonymous_ANO_20220224_1744219_121048")
    with pytest.raises(DataError, match=r"exam 'Anonymous_ANO_20220224_1744219_121048' is found twice under .*"
                                        r"PART1/Anonymous_ANO_20220224_1744219_121048' and '.*PART1/PART1/Anon"):
        udpet.convert(raw, tmp_path / "out")


def test_udpet_says_so_when_its_split_groups_join_every_exam(tmp_path):
    """Two subject folders whose Quadra exams share acquisition days are one group of the split: said with the count
    of exams and the rule, not as '1 case(s)' naming one exam."""
    raw = tmp_path / "udpet"
    for subject, exams in (("Subject_1-3", ("01122021_1_20211201_164050", "01122021_2_20211201_164139")),
                           ("Subject_4-6", ("01122021_4_20211201_164237", "02052022_1_20220502_131116"))):
        for exam in exams:
            udpet_exam(raw / "SiemensVisionQuadra" / subject / exam, ("Full_dose", "1-4 dose"))
    with pytest.raises(DataError, match=r"holds 4 exams, all one group of the split .*acquisition date") as err:
        udpet.convert(raw, tmp_path / "out")
    assert "case(s)" not in str(err.value)


def test_udpet_names_an_exam_directly_under_the_release(tmp_path):
    """An exam beside the scanner folders (one folder too shallow) was dropped in silence before exams were found at
    any depth, then called a folder that 'holds no exam'; it is named as an exam out of place."""
    raw = tmp_path / "udpet"
    for subject in ("Subject_1-3", "Subject_4-6"):
        udpet_exam(raw / "Q" / subject / f"e{subject[-1]}", ("Full_dose", "1-4 dose"))
    udpet_exam(raw / "Anonymous_ANO_20220224_1744219_121048")
    with pytest.raises(DataError, match=r"'.*udpet/Anonymous_ANO_20220224_1744219_121048' is an exam directly under "
                                        r"the release .*<scanner>/Anonymous_ANO"):
        udpet.convert(raw, tmp_path / "out")
