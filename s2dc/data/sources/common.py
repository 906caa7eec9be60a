"""What every converter shares: header checks of NIfTI files, a fixed split and the atomic write of the common layout.

The common layout of a prepared dataset is one MSD-style ``dataset.json`` in the output folder whose
paths point (relative to that folder) at the files of the user's official release, which are never
copied or modified (a converter that must make new files, e.g. volumes from CC-CCII's slices, writes
them under the output folder). Its keys: ``name``, ``description``, ``task``, ``modality``
{"0": channel, ...}, ``labels`` (segmentation: {"0": "background", ...} with the values of the
release's label files), ``classes`` (classification: the names of class 0..K-1), ``training`` and
``validation`` lists of entries, ``regions`` (segmentation into overlapping regions, e.g. BraTS:
{"whole tumour": [1, 2, 4], ...}), a ``source`` section saying what was converted from where, and
``content_sha256``, a hash of the bytes of every listed file (so the json, which the workflow's jobs read,
changes whenever the data does; conversion reads each file once to compute it).

One entry is one case; its roles by task:

================  ==============================================================================
``id``            every task: the case's identifier in the release (a string)
``image``         every task: one path, or a list of paths in the order of the spec's ``channels``
``label``         segmentation: the label volume (same grid as the image)
``class``         classification: an int in 0..K-1, indexing the spec's ``outputs``
``target``        reconstruction: the volume to predict (e.g. the full-dose PET)
================  ==============================================================================

Translation (BraTS 2023) lists every sequence as ``image`` channels; the task picks the input one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ...files import atomic_write_text
from ..datalist import content_sha256, listed_files
from ..registry import DatasetSpec
from ..errors import DataError
from ..grids import check_on_grid
from ..nifti import affine_mm


def nifti_grid(path: Path) -> tuple[tuple[int, int, int], np.ndarray]:
    """(spatial shape, affine) of a NIfTI file from its header only; :class:`DataError` naming it if unreadable, if
    it is not 3-D (a trailing axis of length 1 aside, as training reads it) or if its affine is degenerate; the affine
    in mm, as training reads it (:func:`s2dc.data.nifti.affine_mm`)."""
    try:
        img = nib.load(str(path))
        shape = tuple(int(s) for s in img.shape)
        affine = affine_mm(path, img)  # in mm; DataError naming the file for pixdim of no size
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for a bad header
        raise DataError(f"'{path}' is not a readable NIfTI file: {exc}") from exc
    spatial = shape
    while len(spatial) > 3 and spatial[-1] == 1:  # (X, Y, Z, 1) -> (X, Y, Z)
        spatial = spatial[:-1]
    if len(spatial) != 3 or min(spatial) < 1:
        raise DataError(f"'{path}' is not a 3-D volume: shape {shape}")
    return spatial, affine


def nifti_stem(path: Path) -> str:
    """A NIfTI file's name without ``.nii.gz`` or ``.nii``."""
    return path.name.removesuffix(".gz").removesuffix(".nii")


def nifti_shape(path: Path) -> tuple[int, int, int]:
    """Spatial shape of a NIfTI file, checked as by :func:`nifti_grid`."""
    return nifti_grid(path)[0]


def require_on_grid(path: Path, role: str, ref_path: Path, ref_role: str) -> None:
    """:class:`DataError` naming both files unless the NIfTI ``path`` (the case's ``role``, e.g. "label") lies on the
    voxel grid of ``ref_path`` (its ``ref_role``, e.g. "its image"): shape and affine, from their headers
    (:func:`s2dc.data.grids.check_on_grid`, as training checks them)."""
    check_on_grid(path, *nifti_grid(path), role, ref_path, *nifti_grid(ref_path), ref_role)


def require_folder(raw: Path, spec: DatasetSpec, what: str) -> None:
    """Stop with the registry's instructions when ``raw`` (the official release folder) lacks ``what``."""
    if not (raw / what).exists():
        raise DataError(f"'{raw / what}' does not exist. " + spec.instructions(str(raw)))


def require_utf8(name: str, what: str) -> None:
    """:class:`DataError` naming ``what`` unless ``name`` (a file or folder name, or a path) is valid UTF-8: Python
    reads undecodable bytes of a name as surrogates (``\\udce9`` for latin-1's 'é'), which no json can hold."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"{what} {name!r} is not valid UTF-8 (its undecodable bytes shown as \\udcXX: e.g. an "
                        "archive unpacked with latin-1 or GBK names); rename it in UTF-8") from None


def fixed_split(ids: list[str], val_fraction: float = 0.2, *, where: str) -> tuple[list[str], list[str]]:
    """(training, validation) ids for a release that publishes no split: the ``ceil(val_fraction * n)`` ids
    whose SHA-1 is largest go to validation, so the split depends on the set of ids, not on their order
    (nor on the file system's listing order). Both lists come back sorted. ``where``: the release's folder or list
    the ids come from, as its errors name it (e.g. ``"'raw/Task09_Spleen/dataset.json'"``)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    for i in ids:
        require_utf8(i, f"{where} holds a case named")
    if len(set(ids)) != len(ids):
        raise DataError(f"case ids are not unique in {where}: {sorted({i for i in ids if ids.count(i) > 1})}; "
                        "expected each case once")
    if len(ids) < 2:
        raise DataError(f"{where} holds {len(ids)} case(s) {ids}: a split needs at least 2 cases")
    order = sorted(ids, key=lambda i: hashlib.sha1(i.encode("utf-8")).hexdigest())
    n_val = min(len(ids) - 1, max(1, math.ceil(val_fraction * len(ids))))
    return sorted(order[:-n_val]), sorted(order[-n_val:])


def relative(path: Path, out_dir: Path) -> str:
    """``path`` relative to the folder of the dataset.json (the form MSD-style lists use). Its folders are resolved
    but not the file itself: a release file that is a symbolic link (e.g. into a DVC cache, whose blobs have no
    ``.nii.gz``) is listed by its name in the release."""
    path = Path(path)
    return os.path.relpath(path.parent.resolve() / path.name, Path(out_dir).resolve())


def write_common(out_dir: Path, spec: DatasetSpec, training: list[dict[str, Any]],
                 validation: list[dict[str, Any]], raw: Path, converter: str) -> Path:
    """Write ``out_dir/dataset.json`` of ``spec`` atomically; returns its path.

    ``training`` / ``validation`` hold entries (roles in the module docstring) whose :class:`Path` values
    (alone or in a list) are stored relative to ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def rel1(v: Any) -> Any:
        return relative(v, out_dir) if isinstance(v, Path) else v

    def rel(entry: dict[str, Any]) -> dict[str, Any]:
        return {k: [rel1(x) for x in v] if isinstance(v, list) else rel1(v) for k, v in entry.items()}

    doc: dict[str, Any] = {
        "name": spec.name,
        "description": spec.title,
        "task": spec.task,
        "modality": {str(i): c for i, c in enumerate(spec.channels)},
        "licence": spec.licence,
        "numTraining": len(training),
        "numValidation": len(validation),
    }
    if spec.labels:
        doc["labels"] = {str(k): v for k, v in sorted(spec.labels.items())}
    if spec.regions:
        doc["regions"] = {name: list(values) for name, values in spec.regions.items()}
    if spec.task == "classification":
        doc["classes"] = list(spec.outputs)
    doc["training"] = [rel(e) for e in training]
    if validation:
        doc["validation"] = [rel(e) for e in validation]
    doc["source"] = {"raw": str(Path(raw).resolve()), "converter": converter}
    require_utf8(doc["source"]["raw"], "the release folder")
    for role, rel in listed_files(doc["training"] + doc.get("validation", [])):
        require_utf8(rel, f"the {role} path (relative to '{out_dir}')")
    doc["content_sha256"] = content_sha256(out_dir, doc["training"] + doc.get("validation", []))
    path = out_dir / "dataset.json"
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    return path
