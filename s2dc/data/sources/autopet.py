"""AutoPET (FDG-PET-CT-Lesions) -> the common layout, from either official release.

Official layouts (registry ``autopet``)::

    FDG-PET-CT-Lesions/PETCT_<hash>/<study date folder>/SUV.nii.gz CTres.nii.gz CT.nii.gz PET.nii.gz SEG.nii.gz
    imagesTr/<tracer>_<hash>_<study>_0000.nii.gz (CT) _0001.nii.gz (SUV), labelsTr/<tracer>_<hash>_<study>.nii.gz

The first is the NIfTI release of the TCIA collection (autoPET I/II); the second nnU-Net's, in which autoPET III
and IV ship FDG (``fdg_``) and PSMA (``psma_``) studies. ``raw`` is the folder holding ``FDG-PET-CT-Lesions`` (or
that folder itself), or the one holding ``imagesTr`` and ``labelsTr``. One entry per FDG study (the paper's
AutoPET; PSMA is another tracer and is left out): image = SUV (the spec's one channel), label = SEG. The releases
publish no split: patients (``PETCT_<hash>``, ``fdg_<hash>``) are split with :func:`fixed_split`, so a patient's
studies stay on one side.
"""

from __future__ import annotations

from pathlib import Path

from ..datalist import present_file
from ..registry import get
from ..errors import DataError
from .common import fixed_split, require_folder, require_on_grid, write_common

RELEASE = "FDG-PET-CT-Lesions"
#: nnU-Net's channel suffix of the SUV image (``_0000`` is the CT resampled to it).
SUV_CHANNEL = "_0001"


def _root(raw: Path) -> Path:
    """The FDG-PET-CT-Lesions folder: ``raw/FDG-PET-CT-Lesions``, or ``raw`` when it holds PETCT_* folders."""
    if (raw / RELEASE).is_dir():
        return raw / RELEASE
    if raw.is_dir() and any(p.is_dir() for p in raw.glob("PETCT_*")):
        return raw
    require_folder(raw, get("autopet"), RELEASE)
    raise DataError(f"'{raw / RELEASE}' is not a folder")


def _tcia_studies(raw: Path) -> dict[str, list[dict[str, object]]]:
    """patient -> its studies' entries, from the NIfTI release's PETCT_<hash>/<study>/ folders."""
    root = _root(raw)
    studies: dict[str, list[dict[str, object]]] = {}
    for patient in sorted(p for p in root.glob("PETCT_*") if p.is_dir()):
        dates = sorted(p for p in patient.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not dates:
            raise DataError(f"patient folder '{patient}' holds no study (date) folder")
        for study in dates:
            suv, seg = study / "SUV.nii.gz", study / "SEG.nii.gz"
            for path in (suv, seg):
                if not present_file(path):
                    raise DataError(f"study '{study}' lacks '{path.name}' (expected SUV.nii.gz and SEG.nii.gz)")
            require_on_grid(seg, "label", suv, "its image")
            studies.setdefault(patient.name, []).append({"id": f"{patient.name}/{study.name}", "image": suv,
                                                         "label": seg})
    if not studies:
        raise DataError(f"'{root}' holds no PETCT_<hash> patient folders. " + get("autopet").instructions(str(raw)))
    return studies


def _nnunet_studies(raw: Path) -> dict[str, list[dict[str, object]]]:
    """patient -> its FDG studies' entries, from autoPET III/IV's imagesTr/ and labelsTr/ (nnU-Net's layout)."""
    labels = sorted((raw / "labelsTr").glob("*.nii.gz"))
    for suv in sorted((raw / "imagesTr").glob(f"*{SUV_CHANNEL}.nii.gz")):  # an FDG study's label left out of a copy
        case = suv.name[: -len(f"{SUV_CHANNEL}.nii.gz")]
        if case.lower().startswith("fdg_") and not (seg := raw / "labelsTr" / f"{case}.nii.gz").is_symlink() \
                and not seg.exists():
            raise DataError(f"'{suv}' has no label '{seg}' (expected labelsTr/<case>.nii.gz for every FDG study's "
                            "imagesTr/<case>_0001.nii.gz: an incomplete download or copy?)")
    studies: dict[str, list[dict[str, object]]] = {}
    for seg in labels:
        case = seg.name[: -len(".nii.gz")]
        if not case.lower().startswith("fdg_"):
            continue
        present_file(seg)  # a broken link is named with its target
        suv = raw / "imagesTr" / f"{case}{SUV_CHANNEL}.nii.gz"
        if not present_file(suv):
            raise DataError(f"'{seg}' has no image '{suv.name}' in '{raw / 'imagesTr'}' (expected the SUV as "
                            f"<case>{SUV_CHANNEL}.nii.gz, nnU-Net's second channel)")
        require_on_grid(seg, "label", suv, "its image")
        patient = "_".join(case.split("_")[:2])
        studies.setdefault(patient, []).append({"id": case, "image": suv, "label": seg})
    if not studies:
        others = sorted({p.name.split("_")[0] for p in labels})
        raise DataError(f"'{raw / 'labelsTr'}' holds no FDG study (fdg_<hash>_<study>.nii.gz; found the prefixes "
                        f"{others or 'none'}): the paper's AutoPET is FDG-PET/CT")
    return studies


def convert(raw: Path, out_dir: Path) -> Path:
    """Check every study (SUV and SEG exist, NIfTI headers readable, same grid) and write the json."""
    raw = Path(raw)
    nnunet = (raw / "imagesTr").is_dir() and (raw / "labelsTr").is_dir()
    studies = _nnunet_studies(raw) if nnunet else _tcia_studies(raw)
    train, val = fixed_split(sorted(studies), 0.2, where=f"'{raw}'")
    return write_common(out_dir, get("autopet"), [e for p in train for e in studies[p]],
                        [e for p in val for e in studies[p]], raw, "s2dc.data.sources.autopet")
