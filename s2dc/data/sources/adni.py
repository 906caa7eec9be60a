"""ADNI PET (LONI IDA download in NIfTI) + ADNIMERGE.csv -> the common layout (AD vs CN).

Official layout (registry ``adni``)::

    ADNI/<subject e.g. 002_S_0295>/<description>/<date e.g. 2006-04-18_08_20_30.0>/I<image id>/*.nii[.gz]
    ADNIMERGE.csv      (or one ADNIMERGE_<date>.csv) with columns PTID, VISCODE, DX_bl

Class from the baseline row (``VISCODE == "bl"``) of each subject: DX_bl CN -> 0, AD -> 1; subjects
with another baseline diagnosis (SMC, EMCI, LMCI, none) are skipped. One volume per subject: its
earliest acquisition (any description; several volumes of that acquisition, e.g. two processing stages, are refused
naming them). The subjects read must hold one tracer: a download whose description folders name two (FDG and
florbetapir, as ``Coreg,_Avg,...`` beside ``AV45_Coreg,_Avg,...``) is refused naming them, as each subject's
earliest scan would be one tracer for some and another for others (:func:`tracer`); so is an MRI in the download
(IDA names its files ``..._MR_...``), and a date folder without its image folder (a later scan would stand in for
the earliest). Only NIfTI is read: an image
folder holding DICOM only is refused (download the NIfTI collection from IDA, or convert with dcm2niix). Subjects
are split with :func:`fixed_split`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..datalist import present_file
from ..registry import get
from ..errors import DataError
from .common import fixed_split, nifti_shape, require_folder, write_common

COLUMNS = ("PTID", "VISCODE", "DX_bl")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}_\d{2}_\d{2}_\d{2}(\.\d+)?")


#: The PET tracers of ADNI, by the words of a series description that name them (compared without case, punctuation
#: or spaces: "AV-45" names florbetapir). A description naming none is ADNI's processed FDG (its stage-4 series is
#: ``Coreg, Avg, Std Img and Vox Siz, Uniform Resolution``; florbetapir's is the same prefixed ``AV45``).
TRACERS = {"florbetapir (AV45)": ("av45", "florbetapir"), "flortaucipir (AV1451)": ("av1451", "flortaucipir"),
           "florbetaben (FBB)": ("fbb", "florbetaben"), "PiB": ("pib",), "MK-6240": ("mk6240",),
           "NAV4694": ("nav4694",), "PI-2620": ("pi2620",), "FDG": ("fdg",),
           # a description naming a kind of tracer only (checked after the tracers, which may name their kind too)
           "a tau tracer (named 'tau' only)": ("tau",), "an amyloid tracer (named 'amyloid' only)": ("amyloid",)}


def tracer(description: str) -> str | None:
    """The tracer a series description (its download folder's name) names (a key of :data:`TRACERS`), or None."""
    words = [w for w in re.split(r"[^a-z0-9]+", description.lower()) if w]
    joined = words + [a + b for a, b in zip(words, words[1:])]  # "av-45" is "av45"
    return next((name for name, keys in TRACERS.items() if any(key in joined for key in keys)), None)


def check_one_tracer(volumes: dict[str, list[tuple[str, str, Path]]], where: Path) -> None:
    """:class:`DataError` when the description folders of ``volumes`` (subject -> :func:`subject_volumes`) name more
    than one tracer (one naming none counts as FDG), naming each tracer, its folders and how many subjects hold it."""
    held: dict[str, set[str]] = {}
    folders: dict[str, set[str]] = {}
    for subject, found in volumes.items():
        for description, _, _ in found:
            name = tracer(description) or "FDG"
            held.setdefault(name, set()).add(subject)
            folders.setdefault(name, set()).add(description)
    if len(held) > 1:
        raise DataError(
            f"'{where}' holds PET of {'two' if len(held) == 2 else len(held)} tracers, told apart by their series "
            "descriptions (one naming no tracer is ADNI's processed FDG): "
            + "; ".join(f"{name}: {len(held[name])} subject{'s' * (len(held[name]) > 1)} ("
                        + ", ".join(f"'{f}'" for f in sorted(folders[name])) + ")" for name in sorted(held))
            + ": each subject's earliest scan would be one tracer for some subjects and another for others; keep "
            "one tracer's description folders in the download (move the others out of ADNI/)")


def _dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def baseline_diagnosis(raw: Path) -> tuple[Path, dict[str, str]]:
    """(csv path, PTID -> DX_bl of its baseline row) from ADNIMERGE.csv (or the one ADNIMERGE_*.csv)."""
    path = raw / "ADNIMERGE.csv"
    if not path.is_file():
        dated = sorted(raw.glob("ADNIMERGE_*.csv"))
        if len(dated) != 1:
            raise DataError(f"'{path}' does not exist" + (f" and several dated copies do: {[p.name for p in dated]}"
                            if dated else "") + ": download ADNIMERGE.csv from https://ida.loni.usc.edu "
                            "(Study Data) into the folder that holds ADNI/")
        path = dated[0]
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas raises many types for a bad csv
        raise DataError(f"'{path}' is not a readable csv: {exc}") from exc
    for column in COLUMNS:
        if column not in table.columns:
            raise DataError(f"'{path}' has no column '{column}' (expected {', '.join(COLUMNS)})")
    base = table[table["VISCODE"].str.strip() == "bl"]
    diagnoses: dict[str, set[str]] = {}
    for row in base.itertuples(index=False):
        diagnoses.setdefault(row.PTID.strip(), set()).add(row.DX_bl.strip())
    for subject, found in diagnoses.items():
        if len(found) > 1:
            raise DataError(f"subject '{subject}' has baseline rows (VISCODE bl) with different DX_bl {sorted(found)} "
                            f"in '{path}', expected one diagnosis")
    return path, {subject: found.pop() for subject, found in diagnoses.items()}


def _nifti(image: Path) -> Path:
    """The one NIfTI file of an image-id folder; :class:`DataError` naming the folder when it holds none."""
    files = [p for p in image.iterdir() if not p.name.startswith(".") and present_file(p)]
    nifti = sorted(p for p in files if p.name.endswith((".nii", ".nii.gz")))
    if len(nifti) > 1:
        raise DataError(f"image folder '{image}' holds {len(nifti)} NIfTI files, expected one: "
                        f"{[p.name for p in nifti]}")
    if not nifti and any(p.suffix.lower() == ".dcm" for p in files):
        raise DataError(f"image folder '{image}' holds DICOM (*.dcm) only: download the image collection in "
                        "NIfTI format from https://ida.loni.usc.edu, or convert the folder with dcm2niix")
    if not nifti:  # an incomplete download: a later scan must not stand in for the subject's earliest
        raise DataError(f"image folder '{image}' holds no NIfTI file (*.nii, *.nii.gz; found {[p.name for p in files]}), "
                        "expected one: complete the download from https://ida.loni.usc.edu or remove the folder")
    return nifti[0]


#: The modality IDA writes into each file name after the subject (``ADNI_002_S_0295_MR_MPRAGE_..._I45108.nii``); PET
#: is ``PT``. A file not named so (renamed by hand) is not judged by its name.
_IDA_NAME = re.compile(r"ADNI_\d+_S_\d+_([A-Za-z]+)_")


def subject_volumes(subject: Path) -> list[tuple[str, str, Path]]:
    """(description, acquisition date, NIfTI) of every image of a subject folder; :class:`DataError` naming a folder
    that is not a date, a date folder without its image folder, or a volume whose name says it is not PET."""
    found = []
    for description in _dirs(subject):
        for date in _dirs(description):
            if not _DATE.fullmatch(date.name):
                raise DataError(f"'{date}' is not an acquisition-date folder (expected e.g. 2006-04-18_08_20_30.0)")
            if not (images := _dirs(date)):  # a later scan must not stand in for the subject's earliest
                raise DataError(f"'{date}' holds no image folder (I<image id>/ with the scan's NIfTI): complete the "
                                "download from https://ida.loni.usc.edu (every zip part extracted) or remove the folder")
            for image in images:
                volume = _nifti(image)
                if (match := _IDA_NAME.match(volume.name)) and match.group(1) != "PT":
                    kind = {"MR": "an MRI", "CT": "a CT"}.get(match.group(1), f"a {match.group(1)} image")
                    raise DataError(f"'{volume}' is {kind} (its name says {match.group(1)}): ADNI/ holds the PET "
                                    "collection only (files named ADNI_<subject>_PT_...); move the other series out of "
                                    "ADNI/")
                found.append((description.name, date.name, volume))
    if not found:
        raise DataError(f"subject folder '{subject}' holds no <description>/<date>/<image id>/*.nii[.gz] volume")
    return found


def earliest_volume(subject: Path, found: list[tuple[str, str, Path]]) -> Path:
    """The NIfTI of a subject's earliest acquisition (date folder name) among its volumes ``found``
    (:func:`subject_volumes`), over all their descriptions; :class:`DataError` naming them when that acquisition has
    several (processing stages or tracers of one date)."""
    first = min(date for _, date, _ in found)
    if len(earliest := sorted(str(p) for _, date, p in found if date == first)) > 1:
        raise DataError(f"subject '{subject.name}' has {len(earliest)} volumes of its earliest acquisition ({first}): "
                        + ", ".join(f"'{p}'" for p in earliest) + ": keep one kind of image in the download (one "
                        "tracer, one processing stage), so that every subject is read alike")
    return next(p for _, date, p in found if date == first)


def convert(raw: Path, out_dir: Path) -> Path:
    """Label CN/AD subjects from their baseline diagnosis, list their PET volumes, check they hold one tracer, pick
    each one's earliest PET, write the json."""
    spec = get("adni")
    raw = Path(raw)
    require_folder(raw, spec, "ADNI")
    csv, diagnosis = baseline_diagnosis(raw)
    subjects = []
    for subject in _dirs(raw / "ADNI"):
        if subject.name not in diagnosis:
            raise DataError(f"subject '{subject.name}' ('{subject}') has no baseline row (VISCODE bl) in '{csv}'")
        if diagnosis[subject.name] in spec.outputs:
            subjects.append(subject)
    volumes = {subject.name: subject_volumes(subject) for subject in subjects}
    check_one_tracer(volumes, raw / "ADNI")
    entries = {}
    for subject in subjects:
        volume = earliest_volume(subject, volumes[subject.name])
        nifti_shape(volume)
        entries[subject.name] = {"id": subject.name, "image": volume,
                                 "class": spec.outputs.index(diagnosis[subject.name])}
    train, val = fixed_split(sorted(entries), 0.2, where=f"'{raw / 'ADNI'}'")
    return write_common(out_dir, spec, [entries[s] for s in train], [entries[s] for s in val],
                        raw, "s2dc.data.sources.adni")
