"""BTCV: Synapse's ``RawData/Training/img|label`` -> the common layout with SwinUNETR's split.

Official layout (``Abdomen/RawData.zip``, registry ``btcv``)::

    RawData/Training/img/img0001.nii.gz ...     RawData/Training/label/label0001.nii.gz ...

Split of SwinUNETR's ``dataset_0.json`` (the release's BTCV protocol): cases 1-10 and 21-34 for
training, 35-40 for validation.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..datalist import present_file
from ..registry import get
from ..errors import DataError
from .common import require_folder, require_on_grid, write_common

TRAINING_IDS = (*range(1, 11), *range(21, 35))
VALIDATION_IDS = tuple(range(35, 41))
def _files(folder: Path, prefix: str) -> dict[int, Path]:
    """{case number: its file} of ``folder``, files named ``<prefix>NNNN.nii[.gz]`` (``img``, ``label``);
    :class:`DataError` naming both files of a case found twice."""
    name = re.compile(rf"{prefix}(\d{{4}})\.nii(\.gz)?")
    files: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if (match := name.fullmatch(path.name)) and present_file(path):  # a broken link: named with its target
            if (i := int(match.group(1))) in files:
                raise DataError(f"'{files[i]}' and '{path}' are both the {prefix} file of case {i:04d}: keep one of them")
            files[i] = path
    return files


def convert(raw: Path, out_dir: Path) -> Path:
    """Check every listed case (image and label exist, NIfTI headers readable, same shape) and write the json."""
    spec = get("btcv")
    raw = Path(raw)
    require_folder(raw, spec, "RawData/Training/img")
    require_folder(raw, spec, "RawData/Training/label")
    images = _files(raw / "RawData/Training/img", "img")
    labels = _files(raw / "RawData/Training/label", "label")
    missing = [i for i in (*TRAINING_IDS, *VALIDATION_IDS) if i not in images]
    if missing:
        raise DataError(f"'{raw / 'RawData/Training/img'}' lacks " + ", ".join(f"img{i:04d}.nii.gz" for i in missing)
                        + " of SwinUNETR's BTCV split (cases 1-10 and 21-40)")

    def case(i: int) -> dict[str, Path]:
        image = images[i]
        label = labels.get(i)
        if label is None:
            raise DataError(f"label '{raw / 'RawData/Training/label' / f'label{i:04d}.nii.gz'}' (or .nii) of image "
                            f"'{image}' does not exist")
        require_on_grid(label, "label", image, "its image")
        return {"id": f"{i:04d}", "image": image, "label": label}

    return write_common(out_dir, spec, [case(i) for i in TRAINING_IDS], [case(i) for i in VALIDATION_IDS],
                        raw, "s2dc.data.sources.btcv")
