"""UDPET (ultra-low-dose PET) in NIfTI -> the common layout (low dose -> full dose).

Official layout (registry ``udpet``; folder names from third-party loaders)::

    <scanner e.g. SiemensVisionQuadra>/<subject e.g. Subject_115-117>/<exam>/Full_dose/  1-4 dose/  ...
    uExplorer/<part e.g. uExplorerPART10>/<exam e.g. Anonymous_ANO_...>/2.886 x 600 WB NORMAL/  ... WB D4/  ...

(the uEXPLORER exams name a dose by its reconstruction: ``... NORMAL`` or ``normal`` is the full dose, ``... D4`` or
``... DRF_4`` the dose ``1-4 dose`` names; :func:`_names_dose`).

Each dose folder must hold one NIfTI file (the release ships DICOM series: convert each dose folder
with dcm2niix first); ``<exam>/Full_dose.nii.gz`` next to ``<exam>/1-4 dose.nii.gz`` is accepted too.
Entry: image = the ``dose`` volume (default :data:`DEFAULT_DOSE`), target = the full-dose one, same
shape. The release publishes no split: ``<scanner>/<subject>`` folders are split with
:func:`fixed_split`, so one subject folder's exams stay on one side.
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


def _names_dose(name: str, dose: str) -> bool:
    """Whether a dose folder (or NIfTI file stem) ``name`` holds ``dose`` (``Full_dose`` or ``1-<k> dose``): the
    Siemens exams name it so; the uEXPLORER ones by reconstruction, ``2.886 x 600 WB NORMAL`` (or ``normal``) for the
    full dose and ``... WB D4`` or ``... WB DRF_4`` for a dose reduced 4 times (mayalevital/LDPT, junqiangchen's
    challenge code, wo-niubi/2023UDPET, KUL-recon-lab/2025_ud_pet_kul)."""
    if name == dose:
        return True
    last = name.lower().rsplit(" ", 1)[-1]  # "2.886 x 600 WB D4" -> "d4"; "DRF_4" (a file converted flat) -> "drf_4"
    if dose == FULL_DOSE:
        return last == "normal"
    factor = _REDUCTION.fullmatch(dose)
    return factor is not None and last in (f"d{factor.group(1)}", f"drf_{factor.group(1)}")


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
    groups: dict[str, list[dict[str, object]]] = {}
    exams = [e for s in (_dirs(raw) if raw.is_dir() else []) for g in _dirs(s) for e in _dirs(g)]
    skipped = []
    for exam in exams:
        if not (_dose_paths(exam, FULL_DOSE) or _dose_paths(exam, dose)):
            skipped.append(exam)
            continue
        low, full = dose_volume(exam, dose), dose_volume(exam, FULL_DOSE)
        require_on_grid(low, "low-dose image", full, "its full dose")
        scanner, subject = exam.parent.parent.name, exam.parent.name
        groups.setdefault(f"{scanner}/{subject}", []).append(
            {"id": f"{scanner}/{subject}/{exam.name}", "image": low, "target": full})
    if not groups:
        raise DataError(f"'{raw}' holds no <scanner>/<subject>/<exam>/ folder with '{FULL_DOSE}' or '{dose}'. "
                        + spec.instructions(str(raw)))
    if skipped:  # beside exams that have their doses: an exam of the release left incomplete, never dropped in silence
        raise DataError(f"exam '{skipped[0]}' lacks both '{FULL_DOSE}' and '{dose}' (found "
                        f"{sorted(p.name for p in skipped[0].iterdir())}), expected each as a folder with one NIfTI file "
                        f"or as <dose>.nii[.gz]" + (f"; so do {len(skipped) - 1} other exam folder(s)" if len(skipped) > 1
                                                   else ""))
    train, val = fixed_split(sorted(groups), 0.2, where=f"'{raw}'")
    return write_common(out_dir, spec, [e for g in train for e in groups[g]], [e for g in val for e in groups[g]],
                        raw, f"s2dc.data.sources.udpet (dose {dose!r})")
