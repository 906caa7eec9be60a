"""The four downstream tasks, each a small object the engine drives: ``datasets``, ``augment``,
``build_model``, ``loss``, ``evaluate`` (and ``roles``, ``score_key``)."""

from __future__ import annotations

from pathlib import Path

from ...data.datalist import registry_spec
from ...data.errors import DataError
from .classification import Classification
from .reconstruction import Reconstruction
from .segmentation import Segmentation
from .translation import Translation

TASKS = {t.name: t for t in (Segmentation, Classification, Reconstruction, Translation)}


def task_of(doc: dict, source: Path) -> str:
    """The task of a dataset.json: its ``task`` key, else the registry dataset it names, else segmentation when
    it has ``labels``."""
    task = doc.get("task")
    if task is None and (spec := registry_spec(doc)) is not None:
        task = spec.task
    if task is None and "labels" in doc:
        task = "segmentation"
    if not isinstance(task, str) or task not in TASKS:  # a list or dict is no key of TASKS (nor hashable)
        raise DataError(f"dataset json '{source}': 'task' must be one of {sorted(TASKS)}, got {task!r}"
                        + (" (give the json a 'task' key)" if task is None else ""))
    return task
