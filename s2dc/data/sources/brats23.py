"""BraTS 2023 GLI (sequence translation): ``<case>/<case>-{t1n,t1c,t2w,t2f}.nii.gz`` -> the common layout.

Official layout (``ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData.zip``, registry ``brats23``)::

    ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData/BraTS-GLI-00000-000/BraTS-GLI-00000-000-t1n.nii.gz
                                                     ...-t1c, -t2w, -t2f, -seg

Entry: ``{"id": "BraTS-GLI-00000-000", "image": [t1n, t1c, t2w, t2f]}`` (the spec's channel order; the
task picks the input sequence). The seg is not needed and not required. Split: :func:`fixed_split`
(20 % validation) of the patients ``BraTS-GLI-XXXXX`` (a case id's ``-YYY`` is its time point), so a patient's
time points stay on one side; the release's ``BRATS23_GLI.json`` split is not public.
"""

from __future__ import annotations

from pathlib import Path

from ..registry import get
from .brats21 import GLI_CASE, gli_patient, read_cases, release_root
from .common import fixed_split, write_common

RELEASE = "ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData"


def convert(raw: Path, out_dir: Path) -> Path:
    """Check every case (four sequences present, headers readable, one shape) and write the json."""
    spec = get("brats23")
    raw = Path(raw)
    root = release_root(raw, spec.name, (RELEASE,), beside=GLI_CASE)
    cases = read_cases(root, GLI_CASE, "-", spec.channels, optional=("seg",))
    train_patients = set(fixed_split(sorted({gli_patient(i) for i in cases}), 0.2, where=f"'{root}'")[0])
    training = [i for i in sorted(cases) if gli_patient(i) in train_patients]
    validation = [i for i in sorted(cases) if gli_patient(i) not in train_patients]
    return write_common(out_dir, spec, [{"id": i, "image": cases[i]} for i in training],
                        [{"id": i, "image": cases[i]} for i in validation], raw, "s2dc.data.sources.brats23")
