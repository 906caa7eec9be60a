"""What every converter shares: header checks of NIfTI files and the atomic write of the common layout.

The common layout of a prepared dataset is one MSD-style ``dataset.json`` in the output folder whose
paths point (relative to that folder) at the files of the user's official release, which are never
copied or modified: ``name``, ``task``, ``modality`` {"0": ...}, ``labels`` (segmentation),
``training`` and ``validation`` lists, and a ``source`` section saying what was converted from where.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import nibabel as nib

from ...files import atomic_write_text
from ..registry import DatasetSpec
from ..volumes import DataError


def nifti_shape(path: Path) -> tuple[int, ...]:
    """Spatial shape of a NIfTI file from its header only; :class:`DataError` naming it if unreadable."""
    try:
        img = nib.load(str(path))
        shape = tuple(int(s) for s in img.shape[:3])
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for a bad header
        raise DataError(f"'{path}' is not a readable NIfTI file: {exc}") from exc
    if len(shape) != 3 or min(shape) < 1:
        raise DataError(f"'{path}' is not a 3-D volume: shape {shape}")
    return shape


def require_folder(raw: Path, spec: DatasetSpec, what: str) -> None:
    """Stop with the registry's instructions when ``raw`` (the official release folder) lacks ``what``."""
    if not (raw / what).exists():
        raise DataError(f"'{raw / what}' does not exist. " + spec.instructions(str(raw)))


def relative(path: Path, out_dir: Path) -> str:
    """``path`` relative to the folder of the dataset.json (the form MSD-style lists use)."""
    return os.path.relpath(Path(path).resolve(), Path(out_dir).resolve())


def write_common(out_dir: Path, spec: DatasetSpec, training: list[dict[str, Any]],
                 validation: list[dict[str, Any]], raw: Path, converter: str) -> Path:
    """Write ``out_dir/dataset.json`` of ``spec`` atomically; returns its path.

    ``training`` / ``validation`` hold entries with absolute paths (``image``, ``label``, ...), which
    are stored relative to ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def rel(entry: dict[str, Any]) -> dict[str, Any]:
        return {k: relative(v, out_dir) if isinstance(v, Path) else v for k, v in entry.items()}

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
    doc["training"] = [rel(e) for e in training]
    if validation:
        doc["validation"] = [rel(e) for e in validation]
    doc["source"] = {"raw": str(Path(raw).resolve()), "converter": converter}
    path = out_dir / "dataset.json"
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    return path
