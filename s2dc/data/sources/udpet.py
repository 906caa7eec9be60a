"""UDPET (ultra-low-dose PET) in NIfTI -> the common layout (low dose -> full dose).

Official layout (registry ``udpet``; folder names from third-party loaders)::

    <scanner e.g. SiemensVisionQuadra>/<subject e.g. Subject_115-117>/<exam>/Full_dose/  1-4 dose/  ...

Each dose folder must hold one NIfTI file (the release ships DICOM series: convert each dose folder
with dcm2niix first); ``<exam>/Full_dose.nii.gz`` next to ``<exam>/1-4 dose.nii.gz`` is accepted too.
Entry: image = the ``dose`` volume (default :data:`DEFAULT_DOSE`), target = the full-dose one, same
shape. The release publishes no split: ``<scanner>/<subject>`` folders are split with
:func:`fixed_split`, so one subject folder's exams stay on one side.
"""

from __future__ import annotations

from pathlib import Path

from ..datalist import present_file
from ..registry import get
from ..errors import DataError
from .common import fixed_split, require_on_grid, write_common

DEFAULT_DOSE = "1-4 dose"
FULL_DOSE = "Full_dose"
_SUFFIXES = (".nii.gz", ".nii")


def _dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _present(exam: Path, dose: str) -> bool:
    return (exam / dose).is_dir() or any(present_file(exam / (dose + s)) for s in _SUFFIXES)


def dose_volume(exam: Path, dose: str) -> Path:
    """The NIfTI of one dose of an exam: the one file in ``exam/<dose>/``, or ``exam/<dose>.nii[.gz]``;
    :class:`DataError` naming both where the exam holds the dose twice."""
    folder = exam / dose
    files = [exam / (dose + suffix) for suffix in _SUFFIXES if present_file(exam / (dose + suffix))]
    if len(files) + folder.is_dir() > 1:
        both = [*files, *([folder] if folder.is_dir() else [])]
        raise DataError(f"'{both[0]}' and '{both[1]}' are both the {dose!r} of exam '{exam}': keep one of them")
    if files:
        return files[0]
    if not folder.is_dir():
        raise DataError(f"exam '{exam}' lacks the dose folder '{dose}' (expected '{folder}/' with one NIfTI file)")
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
        if not (_present(exam, FULL_DOSE) or _present(exam, dose)):
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
