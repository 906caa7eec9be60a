"""Medical Segmentation Decathlon (every registry task whose archive is ``TaskNN_Name.tar``) -> the common layout.

Official layout (``<Task>.tar`` extracted into ``raw``, e.g. by ``s2dc download``)::

    raw/Task09_Spleen/dataset.json        labels, "training": [{"image": "./imagesTr/spleen_2.nii.gz",
    raw/Task09_Spleen/imagesTr/...                              "label": "./labelsTr/spleen_2.nii.gz"}, ...]
    raw/Task09_Spleen/labelsTr/...

Only the pairs that MSD's dataset.json lists are used (stray files such as macOS ``._*`` are ignored).
MSD publishes no validation split: :func:`fixed_split` of the case ids (``spleen_2``) gives 20 %.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..datalist import present_file
from ..download import EXTRACTED
from ..registry import DatasetSpec, get
from ..errors import DataError
from .common import fixed_split, require_folder, require_on_grid, write_common

_TASK = re.compile(r"(Task\d\d_[A-Za-z]+)\.tar")
_NIFTI = re.compile(r"\.nii(\.gz)?$")


def task_folder(spec: DatasetSpec) -> str:
    """The MSD task of a registry spec (``Task09_Spleen``), from its archive's file name."""
    match = _TASK.fullmatch(spec.archives[0].url.rsplit("/", 1)[-1]) if spec.archives else None
    if match is None:
        raise ValueError(f"dataset '{spec.name}' is not a Medical Segmentation Decathlon task (archives {spec.archives})")
    return match.group(1)


def is_task(spec: DatasetSpec) -> bool:
    """Whether a registry spec is a Medical Segmentation Decathlon task (its archive is ``TaskNN_Name.tar``)."""
    try:
        task_folder(spec)
    except ValueError:
        return False
    return True


def _read(path: Path, spec: DatasetSpec) -> list[dict]:
    """The training list of MSD's dataset.json, after checking its labels against the registry's."""
    try:
        doc = json.loads(path.read_text())
        labels = {int(k): str(v).lower() for k, v in doc["labels"].items()}
        training = list(doc["training"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"'{path}' is not MSD's dataset.json with 'labels' and 'training': {exc}") from exc
    expected = {k: v.lower() for k, v in spec.labels.items()}
    if labels != expected:
        raise DataError(f"'{path}' has labels {labels}, the registry expects {expected} for {spec.title}")
    if not all(isinstance(e, dict) and isinstance(e.get("image"), str) and isinstance(e.get("label"), str)
               for e in training):
        raise DataError(f"'{path}': every 'training' entry needs an 'image' and a 'label' path")
    return training


def convert(name: str, raw: Path, out_dir: Path) -> Path:
    """Check every listed pair (files exist, NIfTI headers readable, same shape) and write the common json."""
    spec = get(name)
    task = task_folder(spec)
    raw = Path(raw)
    record = raw / f".{task}{EXTRACTED}"
    if not (raw / task).exists() and record.is_file():  # the download job's output stands: Snakemake reruns nothing
        if (raw / task).is_symlink():  # download_msd records a complete task behind a link: the release may be intact
            raise DataError(f"'{raw / task}' is a link to '{os.readlink(raw / task)}', which is not there (a disk not "
                            "mounted?): mount it or point the link at the task again; the record of its download "
                            f"'{record}' stays valid")
        raise DataError(f"'{raw / task}' is gone, but '{record}', the record of its download, is there: delete the "
                        "record to have the workflow download and extract the task again (or rerun with `--forcerun "
                        "download_archive`)")
    require_folder(raw, spec, task)
    require_folder(raw, spec, f"{task}/dataset.json")
    folder = raw / task
    source = folder / "dataset.json"

    def case(entry: dict) -> dict:
        image, label = folder / entry["image"], folder / entry["label"]
        for role, path in (("image", image), ("label", label)):
            if not present_file(path):
                raise DataError(f"{role} '{path}' listed in '{source}' does not exist")
        require_on_grid(label, "label", image, "its image")
        return {"id": _NIFTI.sub("", image.name), "image": image, "label": label}

    cases = [case(e) for e in _read(source, spec)]
    train, val = fixed_split([c["id"] for c in cases], 0.2, where=f"'{source}'")
    by_id = {c["id"]: c for c in cases}
    return write_common(out_dir, spec, [by_id[i] for i in train], [by_id[i] for i in val], raw,
                        "s2dc.data.sources.msd")
