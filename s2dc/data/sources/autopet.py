"""AutoPET (FDG-PET-CT-Lesions, NIfTI release) -> the common layout.

Official layout (registry ``autopet``)::

    FDG-PET-CT-Lesions/PETCT_<hash>/<study date folder>/SUV.nii.gz CTres.nii.gz CT.nii.gz PET.nii.gz SEG.nii.gz

``raw`` is the folder holding ``FDG-PET-CT-Lesions`` (or that folder itself). One entry per study:
image = SUV (the spec's one channel), label = SEG. The release publishes no split: patients
(``PETCT_<hash>``) are split with :func:`fixed_split`, so a patient's studies stay on one side.
"""

from __future__ import annotations

from pathlib import Path

from ..registry import get
from ..errors import DataError
from .common import fixed_split, require_folder, require_on_grid, write_common

RELEASE = "FDG-PET-CT-Lesions"


def _root(raw: Path) -> Path:
    """The FDG-PET-CT-Lesions folder: ``raw/FDG-PET-CT-Lesions``, or ``raw`` when it holds PETCT_* folders."""
    if (raw / RELEASE).is_dir():
        return raw / RELEASE
    if raw.is_dir() and any(p.is_dir() for p in raw.glob("PETCT_*")):
        return raw
    require_folder(raw, get("autopet"), RELEASE)
    raise DataError(f"'{raw / RELEASE}' is not a folder")


def convert(raw: Path, out_dir: Path) -> Path:
    """Check every study (SUV and SEG exist, NIfTI headers readable, same shape) and write the json."""
    spec = get("autopet")
    raw = Path(raw)
    root = _root(raw)
    studies: dict[str, list[dict[str, object]]] = {}
    for patient in sorted(p for p in root.glob("PETCT_*") if p.is_dir()):
        dates = sorted(p for p in patient.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not dates:
            raise DataError(f"patient folder '{patient}' holds no study (date) folder")
        for study in dates:
            suv, seg = study / "SUV.nii.gz", study / "SEG.nii.gz"
            for path in (suv, seg):
                if not path.is_file():
                    raise DataError(f"study '{study}' lacks '{path.name}' (expected SUV.nii.gz and SEG.nii.gz)")
            require_on_grid(seg, "label", suv, "its image")
            entry = {"id": f"{patient.name}/{study.name}", "image": suv, "label": seg}
            studies.setdefault(patient.name, []).append(entry)
    if not studies:
        raise DataError(f"'{root}' holds no PETCT_<hash> patient folders. " + spec.instructions(str(raw)))
    train, val = fixed_split(sorted(studies), 0.2)
    return write_common(out_dir, spec, [e for p in train for e in studies[p]], [e for p in val for e in studies[p]],
                        raw, "s2dc.data.sources.autopet")
