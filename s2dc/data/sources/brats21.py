"""BraTS 2021: ``BraTS2021_Training_Data/<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz`` -> the common layout.

Official layout (``BraTS2021_Training_Data.tar``, registry ``brats21``)::

    <raw>/BraTS2021_00000/BraTS2021_00000_t1.nii.gz   ..._t1ce, _t2, _flair, _seg

The tar holds the case folders at its top, so ``raw`` is the folder it was extracted into (SwinUNETR's README calls
it ``TrainingData/``; icerain-alt/brats-unet extracts it into ``data/``); a ``raw/BraTS2021_Training_Data/`` that
holds them, as a copy named after the archive may, is read too, and so is the folder of Synapse's training zip,
``raw/RSNA_ASNR_MICCAI_BraTS2021_TrainingData_16July2021/``.

Entry: ``{"id": "BraTS2021_00000", "image": [t1, t1ce, t2, flair], "label": seg}`` (image in the spec's
channel order). Split: :func:`fixed_split` (20 % validation) of the patients. BraTS 2021's training cases are BraTS
2023 GLI's, renamed, and only GLI's ids (``BraTS-GLI-XXXXX-YYY``, ``YYY`` the time point) tell which cases are one
patient's scans: with BraTS 2023's mapping file (``BraTS2023_2017_GLI_Mapping.xlsx``, published beside its GLI
training data; or a ``.csv`` of it) in ``raw``, a patient's cases stay on one side; without it each case is its own
patient, and the conversion says so. SwinUNETR's BraTS21 protocol uses the 5 folds of ``brats21_folds.json``, which
we do not ship; its fold 0 could be honoured later.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ..datalist import present_file
from ..registry import get
from ..errors import DataError
from .common import fixed_split, nifti_shape, require_folder, require_on_grid, write_common

#: The release folder's names: Kaggle's copy, and the folder of Synapse's training zip.
RELEASES = ("BraTS2021_Training_Data", "RSNA_ASNR_MICCAI_BraTS2021_TrainingData_16July2021")
_CASE = re.compile(r"BraTS2021_\d{5}")
#: BraTS 2023's table of its GLI cases' ids in earlier editions (columns ``BraTS2023``, ``BraTS2021``, ...).
GLI_MAPPING = "BraTS2023_2017_GLI_Mapping"
GLI_CASE = re.compile(r"BraTS-GLI-\d{5}-\d{3}")  # a BraTS 2023 GLI case id


def gli_patient(case: str) -> str:
    """``BraTS-GLI-XXXXX-YYY`` -> ``BraTS-GLI-XXXXX`` (the patient; ``YYY`` is the time point)."""
    return case.rsplit("-", 1)[0]


def patients(raw: Path, cases: list[str]) -> dict[str, str]:
    """{case: its patient} for BraTS 2021 ``cases``: the GLI patient of the case's row in ``raw``'s BraTS 2023
    mapping (``.xlsx``, or a ``.csv`` of it); each case its own patient without the file (said on stderr) and for a
    case the file has no row of. :class:`DataError` naming the file if it lacks a column or names none of ``cases``."""
    import pandas as pd

    found = [path for path in (raw / f"{GLI_MAPPING}.xlsx", raw / f"{GLI_MAPPING}.csv") if present_file(path)]
    if len(found) > 1:
        raise DataError(f"'{raw}' holds both '{found[0].name}' and '{found[1].name}': keep one of them")
    if not found:
        print(f"BraTS 2021: no {GLI_MAPPING}.xlsx in '{raw}', so each case is split as its own patient: a patient's "
              "two time points (two BraTS2021 ids) may fall on both sides. BraTS 2023 publishes the file beside its "
              "GLI training data; put it there to split by patient.", file=sys.stderr)
        return {case: case for case in cases}
    path = found[0]
    try:
        table = pd.read_excel(path, dtype=str) if path.suffix == ".xlsx" else pd.read_csv(
            path, sep=None, engine="python", dtype=str)
    except Exception as exc:  # openpyxl and pandas raise many types for a bad file
        raise DataError(f"'{path}' is not a readable table: {exc}") from exc
    for column in ("BraTS2021", "BraTS2023"):
        if column not in table.columns:
            raise DataError(f"'{path}' has no column '{column}' (columns: {', '.join(map(str, table.columns))}): "
                            f"expected BraTS 2023's {GLI_MAPPING}.xlsx")
    gli = {a.strip(): b.strip() for a, b in zip(table["BraTS2021"], table["BraTS2023"])
           if isinstance(a, str) and isinstance(b, str) and GLI_CASE.fullmatch(b.strip())}
    mapped = {case: gli_patient(gli[case]) for case in cases if case in gli}
    if not mapped:
        raise DataError(f"'{path}' names none of the {len(cases)} cases of the release (e.g. '{cases[0]}') in its "
                        "'BraTS2021' column beside a GLI id in 'BraTS2023': expected BraTS 2023's "
                        f"{GLI_MAPPING}.xlsx")
    print(f"BraTS 2021: split by patient, from '{path}' ({len(set(mapped.values()))} patients of {len(mapped)} cases; "
          f"{len(cases) - len(mapped)} cases without a row, each its own patient)", file=sys.stderr)
    return {case: mapped.get(case, case) for case in cases}


def release_root(raw: Path, name: str, releases: tuple[str, ...], case: re.Pattern[str] | None = None, *,
                 beside: re.Pattern[str] | None = None) -> Path:
    """``raw/<release>`` for the one of ``releases`` (the release folder's names) that ``raw`` holds, or ``raw``
    itself when it is such a folder or (given ``case``) when it holds case folders named like ``case`` and none of
    them; :class:`DataError` naming both when it holds two, or case folders (named like ``case``, or ``beside`` for a
    release whose cases are never read from ``raw`` itself) beside a release folder, the spec's instructions when
    none of these."""
    present = [release for release in releases if (raw / release).exists()]
    if len(present) > 1:
        raise DataError(f"'{raw}' holds both '{present[0]}' and '{present[1]}': keep one copy of the release")
    named = beside or case
    if present and named is not None and (cases := sorted(p.name for p in raw.iterdir()
                                                          if p.is_dir() and named.fullmatch(p.name))):
        raise DataError(f"'{raw}' holds case folders (" + ", ".join(f"'{c}'" for c in cases[:5])
                        + (f" and {len(cases) - 5} more" if len(cases) > 5 else "") + f") beside '{present[0]}', "
                        "which holds the release: the cases beside it would be left out; keep the cases in one of "
                        "the two")
    if raw.is_dir() and not present and (
            raw.name in releases or (case is not None and any(p.is_dir() and case.fullmatch(p.name)
                                                              for p in raw.iterdir()))):
        return raw
    if case is not None and not present:
        raise DataError(f"'{raw}' holds no case folder named like '{case.pattern}' (nor a "
                        + " or ".join(f"'{release}'" for release in releases) + " folder that does). "
                        + get(name).instructions(str(raw)))
    release = present[0] if present else releases[0]
    require_folder(raw, get(name), release)
    return raw / release


def sequence(folder: Path, stem: str) -> Path:
    """``folder/stem.nii.gz`` (or an uncompressed ``.nii``); :class:`DataError` naming the file if absent, or both
    if both are there."""
    names = [stem + suffix for suffix in (".nii.gz", ".nii")]
    found = [folder / name for name in names if present_file(folder / name)]
    if len(found) > 1:
        raise DataError(f"'{found[0]}' and '{found[1]}' are both the {stem} file of case '{folder.name}': keep one "
                        "of them")
    if found:
        return found[0]
    by_lower = {other.name.lower(): other for other in folder.iterdir()}
    for name in names:
        if (other := by_lower.get(name.lower())) is not None:
            raise DataError(f"'{other}' is named in other letter case than the release's: rename it to '{name}'")
    raise DataError(f"'{folder / names[0]}' does not exist: every case folder needs this file")


def read_cases(root: Path, case: re.Pattern[str], sep: str, names: tuple[str, ...],
               optional: tuple[str, ...] = ()) -> dict[str, list[Path]]:
    """{case id: [its file of each of ``names``]} for every case folder of ``root``, all files on one grid; a NIfTI
    file in a case folder that is none of ``names`` nor ``optional`` (e.g. another case's sequence) is refused."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and case.fullmatch(p.name))
    if not folders:
        raise DataError(f"'{root}' holds no case folder named like '{case.pattern}'")
    cases = {}
    for folder in folders:
        files = [sequence(folder, f"{folder.name}{sep}{n}") for n in names]
        known = {f"{folder.name}{sep}{n}{x}" for n in (*names, *optional) for x in (".nii.gz", ".nii")}
        for other in sorted(folder.iterdir()):
            if other.name.endswith((".nii", ".nii.gz")) and not other.name.startswith(".") and other.name not in known:
                raise DataError(f"'{other}' is none of the sequences of case '{folder.name}': expected only "
                                + ", ".join(f"{folder.name}{sep}{n}.nii.gz" for n in (*names, *optional))
                                + " (a file of another case, or a second copy?)")
        first = nifti_shape(files[0])
        for path in files[1:]:
            if (shape := nifti_shape(path)) != first:
                raise DataError(f"'{path}' has shape {shape}, expected {first} as '{files[0].name}' of its case")
            require_on_grid(path, "sequence", files[0], "the first of its case")
        cases[folder.name] = files
    return cases


def convert(raw: Path, out_dir: Path) -> Path:
    """Check every case (four sequences and seg present, headers readable, one shape) and write the json."""
    spec = get("brats21")
    raw = Path(raw)
    root = release_root(raw, spec.name, RELEASES, _CASE)
    cases = read_cases(root, _CASE, "_", (*spec.channels, "seg"))

    def entry(i: str) -> dict:
        return {"id": i, "image": cases[i][:-1], "label": cases[i][-1]}

    patient = patients(raw, sorted(cases))
    train_patients = set(fixed_split(sorted(set(patient.values())), 0.2, where=f"'{root}'")[0])
    training = [i for i in sorted(cases) if patient[i] in train_patients]
    validation = [i for i in sorted(cases) if patient[i] not in train_patients]
    return write_common(out_dir, spec, [entry(i) for i in training], [entry(i) for i in validation],
                        raw, "s2dc.data.sources.brats21")
