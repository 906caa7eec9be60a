"""UDPET (ultra-low-dose PET) in NIfTI -> the common layout (low dose -> full dose).

Official layout (registry ``udpet``; folder names from third-party loaders)::

    <scanner e.g. SiemensVisionQuadra>/<subject e.g. Subject_115-117>/<exam>/Full_dose/  1-4 dose/  ...
    uExplorer/<part e.g. uExplorerPART10>/<exam e.g. Anonymous_ANO_...>/2.886 x 600 WB NORMAL/  ... WB D4/  ...

(the uEXPLORER exams name a dose by its reconstruction: ``... NORMAL`` or ``normal`` is the full dose, ``... D4`` or
``... DRF_4`` the dose ``1-4 dose`` names; :func:`_names_dose`). How many folders lie between the scanner's (or
hospital's, e.g. ``Shanghai-Ruijin-Hospital-2023``) folder and its exams depends on how the download parts were
unzipped (none to two, :func:`find_exams`): an exam is the folder that holds the dose folders.

Each dose folder must hold one NIfTI file (the release ships DICOM series: convert each dose folder
with dcm2niix first); ``<exam>/Full_dose.nii.gz`` next to ``<exam>/1-4 dose.nii.gz`` is accepted too.
Entry: image = the ``dose`` volume (default :data:`DEFAULT_DOSE`), target = the full-dose one, same
shape. The release publishes no split: :func:`fixed_split` splits groups of exams that may hold one patient
(:func:`split_groups`), so they stay on one side.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..datalist import present_file
from ..registry import get
from ..errors import DataError
from .common import fixed_split, nifti_stem, require_on_grid, write_common

DEFAULT_DOSE = "1-4 dose"
FULL_DOSE = "Full_dose"
_SUFFIXES = (".nii.gz", ".nii")
_REDUCTION = re.compile(r"1-(\d+) dose")
#: How many folders under the release an exam may lie: scanner, two download levels (``PART1/PART1``), the exam.
MAX_DEPTH = 4
#: The 2025 test set's flat files (low doses only): ``Anonymous-01_DRF-4.nii.gz``.
_TEST_FILE = re.compile(r"Anonymous-\d+_DRF-\d+\.nii(\.gz)?")
#: What in an exam's name ties it to one acquisition exported twice (:func:`split_groups`): a uEXPLORER export's
#: trailing number, a Quadra exam's acquisition date.
_UEXPLORER_EXAM = re.compile(r"Anonymous_ANO_\d+_\d+_(\d+)")
_QUADRA_EXAM = re.compile(r"\d+_\d+(?:_\d+)?_(\d{8})_\d{6}")
_SUBJECT_FOLDER = re.compile(r"Subject_\d+-\d+")


def _dose_of(name: str) -> str | None:
    """The dose a dose folder (or NIfTI file stem) ``name`` holds, as the Siemens exams name it (``Full_dose``,
    ``1-<k> dose``), or None: the uEXPLORER ones name it by reconstruction, ``2.886 x 600 WB NORMAL`` (or ``normal``)
    for the full dose and ``... WB D4`` or ``... WB DRF_4`` for a dose reduced 4 times (mayalevital/LDPT,
    junqiangchen's challenge code, wo-niubi/2023UDPET, KUL-recon-lab/2025_ud_pet_kul)."""
    last = name.lower().rsplit(" ", 1)[-1]  # "2.886 x 600 WB D4" -> "d4"; "DRF_4" (a file converted flat) -> "drf_4"
    if name == FULL_DOSE or last == "normal":
        return FULL_DOSE
    if _REDUCTION.fullmatch(name):
        return name
    factor = re.fullmatch(r"d(\d+)|drf_(\d+)", last)
    return f"1-{factor.group(1) or factor.group(2)} dose" if factor else None


def _names_dose(name: str, dose: str) -> bool:
    """Whether a dose folder (or NIfTI file stem) ``name`` holds ``dose`` (:func:`_dose_of`)."""
    return name == dose or _dose_of(name) == dose


def _dose_named(path: Path) -> str | None:
    """``"full"`` or ``"reduced"`` where ``path`` (a folder or NIfTI file in an exam) is named as a dose of that kind
    (:func:`_dose_of`); else None."""
    if not (path.is_dir() or path.name.endswith(_SUFFIXES)):
        return None
    dose = _dose_of(nifti_stem(path) if path.name.endswith(_SUFFIXES) else path.name)
    return None if dose is None else "full" if dose == FULL_DOSE else "reduced"


def _is_exam(folder: Path) -> bool:
    """Whether ``folder`` holds a full dose and a reduced one (:func:`_dose_named`), as every exam of the release
    does (a dose folder that holds ``Full_dose.nii.gz`` is not an exam)."""
    return {"full", "reduced"} <= {_dose_named(p) for p in folder.iterdir() if not p.name.startswith(".")}


def find_exams(raw: Path) -> list[Path]:
    """The exam folders under ``raw`` (those holding a full and a reduced dose, :func:`_is_exam`), at most
    :data:`MAX_DEPTH` levels down and at least two (``<scanner>/<exam>``), sorted. :class:`DataError` naming a folder
    that holds no exam at any level (a download part never extracted, dose folders named otherwise) and the 2025 test
    set's flat files; none at all is an empty list."""
    exams: list[Path] = []
    empty: list[Path] = []

    def walk(folder: Path, depth: int) -> bool:
        tests = sorted(p.name for p in folder.iterdir() if _TEST_FILE.fullmatch(p.name))
        if tests:
            raise DataError(f"'{folder}' holds {len(tests)} files of the 2025 test set ({', '.join(tests[:3])}"
                            f"{', ...' if len(tests) > 3 else ''}): low doses without their full dose, which cannot be "
                            "paired; keep the training set's exams only")
        if depth >= 2 and _is_exam(folder):
            exams.append(folder)
            return True
        if depth == 1 and _is_exam(folder):
            raise DataError(f"'{folder}' is an exam directly under the release '{raw}': an exam lies in a scanner's "
                            f"(or hospital's) folder, '{raw}/<scanner>/{folder.name}'; move it into one")
        if depth == MAX_DEPTH:
            empty.append(folder)
            return False
        found = [walk(sub, depth + 1) for sub in _dirs(folder)]
        if depth >= 1 and not any(found):
            empty.append(folder)
        return any(found)

    if raw.is_dir():
        walk(raw, 0)
    if exams and empty:  # beside exams that are read: a part of the release left incomplete, never dropped in silence
        top = [p for p in empty if p.parent not in empty]
        raise DataError(f"'{top[0]}' holds no exam (found {sorted(p.name for p in top[0].iterdir())[:6]}): an exam is "
                        f"a folder of dose folders, the full dose and reduced ones, each with one NIfTI file "
                        f"('{FULL_DOSE}' and '{DEFAULT_DOSE}' as the Quadra exams name them, '... WB NORMAL' and "
                        f"'... WB D4' or '... WB DRF_4' as uEXPLORER's do), or of such NIfTI files, at most "
                        f"{MAX_DEPTH} folders below '{raw}'"
                        + (f"; so do {len(top) - 1} other folder(s)" if len(top) > 1 else ""))
    return sorted(exams)


def split_groups(raw: Path, exams: list[Path]) -> dict[str, list[Path]]:
    """The exams grouped for the split, {group name: exams}: exams that share a ``Subject_a-b`` folder (a batch of
    patients), a uEXPLORER export's trailing number or a Quadra exam's acquisition date (in any folder: one release
    unzipped twice, or two releases side by side, hold the same exams) are one group, named by its first exam's path.
    The 2025 training set holds single acquisitions under two exam ids in two parts or subject folders
    (KUL-recon-lab/2025_ud_pet_kul's data_stats.csv: 16 uEXPLORER pairs that share the trailing number, Quadra pairs
    that share the date); grouping by these keeps each copy with the other (and lumps a day's Quadra patients
    together, which only coarsens the split)."""
    parent = {exam: exam for exam in exams}

    def root(exam: Path) -> Path:
        while parent[exam] != exam:
            exam = parent[exam]
        return exam

    first: dict[tuple[str, str], Path] = {}
    for exam in exams:
        rel = exam.relative_to(raw).parts
        keys = [("subject", "/".join(rel[: i + 1])) for i, part in enumerate(rel[:-1])
                if _SUBJECT_FOLDER.fullmatch(part)]
        for pattern in (_UEXPLORER_EXAM, _QUADRA_EXAM):
            if match := pattern.fullmatch(exam.name):
                keys.append((pattern.pattern, match.group(1)))
        for key in keys:
            if key in first:
                a, b = root(first[key]), root(exam)
                parent[max(a, b)] = min(a, b)
            else:
                first[key] = exam
    groups: dict[str, list[Path]] = {}
    for exam in exams:
        groups.setdefault(root(exam).relative_to(raw).as_posix(), []).append(exam)
    return groups


def _dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _dose_paths(exam: Path, dose: str) -> list[Path]:
    """The folders and NIfTI files of ``exam`` that hold ``dose`` (:func:`_names_dose`)."""
    return sorted(p for p in exam.iterdir() if not p.name.startswith(".")
                  and ((p.is_dir() and _names_dose(p.name, dose))
                       or (p.name.endswith(_SUFFIXES) and present_file(p) and _names_dose(nifti_stem(p), dose))))


def dose_volume(exam: Path, dose: str) -> Path:
    """The NIfTI of one dose of an exam: the one file in its dose folder (``exam/<dose>/``, or as uEXPLORER names
    it), or ``exam/<dose>.nii[.gz]``; :class:`DataError` naming both where the exam holds the dose twice."""
    found = _dose_paths(exam, dose)
    what = "full dose" if dose == FULL_DOSE else repr(dose)
    if len(found) > 1:
        raise DataError(f"'{found[0]}' and '{found[1]}' are both the {what} of exam '{exam}': keep one of them")
    if not found:
        raise DataError(f"exam '{exam}' lacks the dose folder '{dose}' (expected '{exam / dose}/' with one NIfTI file, "
                        "or a folder named as uEXPLORER names it, '... WB NORMAL' for the full dose, '... WB D4' or "
                        "'... WB DRF_4' for 1-4 dose)")
    if not found[0].is_dir():
        return found[0]
    folder = found[0]
    files = [p for p in folder.iterdir() if not p.name.startswith(".") and present_file(p)]
    nifti = sorted(p for p in files if p.name.endswith(_SUFFIXES))
    if len(nifti) == 1:
        return nifti[0]
    if nifti:
        raise DataError(f"dose folder '{folder}' holds {len(nifti)} NIfTI files, expected one: "
                        f"{[p.name for p in nifti]}")
    raise DataError(f"dose folder '{folder}' holds no NIfTI file ({len(files)} other files, e.g. DICOM): "
                    f"convert it with dcm2niix (dcm2niix -z y -o '{folder}' '{folder}')")


def convert(raw: Path, out_dir: Path, dose: str = DEFAULT_DOSE) -> Path:
    """Pair every exam's ``dose`` volume with its full dose (same shape) and write the json."""
    spec = get("udpet")
    raw = Path(raw)
    if dose == FULL_DOSE:
        raise DataError(f"the low dose must differ from {FULL_DOSE!r}, e.g. {DEFAULT_DOSE!r}")
    exams = find_exams(raw)
    if not exams:
        raise DataError(f"'{raw}' holds no <scanner>/.../<exam>/ folder with dose folders ('{FULL_DOSE}' and '{dose}', "
                        "or as uEXPLORER names them). " + spec.instructions(str(raw)))
    seen: dict[str, Path] = {}
    for exam in exams:
        if (other := seen.setdefault(exam.name, exam)) != exam:
            raise DataError(f"exam '{exam.name}' is found twice under '{raw}': '{other}' and '{exam}' (a download part "
                            "extracted twice?); keep one of them")
    entries = {}
    for exam in exams:
        low, full = dose_volume(exam, dose), dose_volume(exam, FULL_DOSE)
        require_on_grid(low, "low-dose image", full, "its full dose")
        entries[exam] = {"id": exam.relative_to(raw).as_posix(), "image": low, "target": full}
    groups = {name: [entries[e] for e in members] for name, members in split_groups(raw, exams).items()}
    if len(exams) > 1 and len(groups) < 2:
        raise DataError(f"'{raw}' holds {len(exams)} exams, all one group of the split (exams that share a Subject "
                        "folder, a uEXPLORER export's trailing number or a Quadra exam's acquisition date stay on one "
                        "side): a split needs exams of at least 2 groups; add exams of another subject folder or day")
    train, val = fixed_split(sorted(groups), 0.2, where=f"'{raw}'")
    return write_common(out_dir, spec, [e for g in train for e in groups[g]], [e for g in val for e in groups[g]],
                        raw, f"s2dc.data.sources.udpet (dose {dose!r})")
