"""One reader of dataset lists: an MSD-style ``dataset.json`` (or a folder of NIfTI files) -> cases.

A case is a dict of roles (the common layout of :mod:`s2dc.data.sources.common`): ``image`` (a
path, or a list of paths, one per channel), ``label`` / ``target`` (paths), ``class`` (an int) and
``id``. Relative paths are resolved against the json's folder; every listed file must exist.
Pretraining, the four downstream tasks and the probe all read their data through this module.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from ..config import load_json
from ..files import file_sha256, is_plain_name
from .errors import DataError
from .registry import REGISTRY, DatasetSpec

_PATH_ROLES = ("image", "label", "target", "anatomy")  # anatomy: a per-voxel tissue map beside the labels
_NIFTI_SUFFIXES = (".nii", ".nii.gz")


def present_file(path: str | Path) -> bool:
    """Whether ``path`` is a file (or a link to one), as :meth:`Path.is_file` says; :class:`DataError` naming it and
    its missing target where it is a broken symbolic link (e.g. a DVC or git-annex link whose content was never
    pulled), which ``is_file`` passes over in silence. A listing of release files filters with this."""
    path = Path(path)
    if path.is_file():
        return True
    if path.is_symlink() and not path.exists():
        raise DataError(f"'{path}' is a broken symbolic link: its target '{os.readlink(path)}' does not exist; "
                        "expected a file (fetch its content, e.g. `dvc pull` or `git annex get`)")
    return False


def read_datalist(source: str | Path) -> dict:
    """Parse a dataset.json; returns the dict. Raises :class:`DataError` naming the file."""
    source = Path(source)
    if not source.is_file():
        raise DataError(f"dataset source '{source}' is not a file; expected an MSD-style dataset.json")
    try:
        doc = load_json(source.read_text())
    except (OSError, ValueError) as exc:  # not UTF-8, not JSON, a key given twice
        raise DataError(f"could not read dataset json '{source}': {exc}") from exc
    if not isinstance(doc, dict):
        raise DataError(f"dataset json '{source}' must hold a JSON object")
    return doc


def dataset_name(doc: dict, source: str | Path) -> str:
    """The name a dataset's results go under (a fine-tuning's metrics, the figures' ``per_class/<name>.png``): its
    dataset.json's ``name``, else its folder's. :class:`DataError` naming the json where it is no plain name (a
    ``/``, ``..``: the figures would be written outside their folder)."""
    name = doc.get("name") or Path(source).resolve().parent.name
    if not is_plain_name(name):
        raise DataError(f"'name' of dataset json '{source}' is {name!r}; expected a plain name, one a file can be "
                        "named after (not empty, no '/' or '\\', not '.' or '..'), e.g. \"Spleen\"")
    return name


def registry_spec(doc: dict) -> DatasetSpec | None:
    """The registry dataset a dataset.json stands for (its ``name``; a synthetic twin's ``synthetic_<name>``
    too), or None for a dataset the registry does not know."""
    name = str(doc.get("name", "")).lower().removeprefix("synthetic_")
    return REGISTRY.get(name)


def class_names(doc: dict, source: str | Path) -> list[str]:
    """Names of classes 0..C-1 from the json's ``labels`` dict (``{"0": "background", "1": "spleen", ...}``)."""
    labels = doc.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise DataError(f"dataset json '{source}' has no 'labels' dict (e.g. {{\"0\": \"background\", \"1\": \"organ\"}})")
    try:
        by_index = {int(k): str(v) for k, v in labels.items()}
    except (TypeError, ValueError):
        raise DataError(f"'labels' of dataset json '{source}' must have integer keys, got {sorted(labels)}") from None
    if len(by_index) < len(labels):
        index = next(i for i in by_index if sum(int(k) == i for k in labels) > 1)
        keys = [repr(k) for k in labels if int(k) == index]
        raise DataError(f"'labels' of dataset json '{source}' name class {index} twice ({', '.join(keys)}); "
                        "expected one key per class")
    if sorted(by_index) != list(range(len(by_index))) or len(by_index) < 2:
        raise DataError(f"'labels' of dataset json '{source}' must number the classes 0..C-1 (C >= 2, 0 = background), "
                        f"got {sorted(by_index)}")
    names = [by_index[i] for i in range(len(by_index))]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise DataError(f"'labels' of dataset json '{source}' name {', '.join(map(repr, twice))} twice; expected one "
                        "name per class (metrics.json keys each class's Dice by its name)")
    return names


def _resolve(rel: Any, role: str, i: int, listed: str, source: Path) -> Path:
    if not isinstance(rel, str) or not rel:
        raise DataError(f"entry {i} of {listed} has no {role} path; expected a path string, got {rel!r}")
    joined = Path(rel) if Path(rel).is_absolute() else source.parent / rel  # what the file system opens
    try:
        path = Path(os.path.normpath(joined))  # the same file without '..', unless a '..' climbs out of a link:
        folder = joined.parent.resolve()  # then its real folder (the file keeps its name: it may be a link itself)
        if path.parent.resolve() != folder:
            path = folder / joined.name
        present = present_file(path)
    except OSError as err:  # a name too long, a folder that cannot be read, ...
        raise DataError(f"{role} '{rel}' of entry {i} listed in {listed} cannot be looked up: {err.strerror or err}"
                        ) from None
    if not present:
        raise DataError(f"{role} '{path}' of entry {i} listed in {listed} does not exist")
    return path


def case_files(case: dict) -> tuple[tuple[int, int], ...]:
    """The files of a case's ``image`` (a path, or one per channel) as ``(device, inode)``: one file whatever the
    path that reaches it (a symbolic or hard link, ``..``)."""
    images = case["image"] if isinstance(case["image"], list) else [case["image"]]
    return tuple((st.st_dev, st.st_ino) for st in (os.stat(i) for i in images))


def list_cases(source: str | Path, key: str, roles: tuple[str, ...] = ("image",), doc: dict | None = None) -> list[dict]:
    """The cases of section ``key`` in json order, each with ``roles`` and ``id`` (other roles are left out).

    An entry is a dict of roles, or (when only ``image`` is asked for) a plain path string. Raises
    :class:`DataError` for a missing section (listing the available ones), an entry without a role
    asked for, a ``class`` that is not an integer, or a file that does not exist (naming it, its role and
    the json).
    """
    source = Path(source)
    doc = read_datalist(source) if doc is None else doc
    if key not in doc:
        raise DataError(f"dataset json '{source}' has no section '{key}'; available sections: {sorted(doc)}")
    entries = doc[key]
    if not isinstance(entries, list):
        raise DataError(f"section '{key}' of dataset json '{source}' must be a list, got {type(entries).__name__}")
    cases, seen = [], {}
    for i, entry in enumerate(entries):
        listed = f"section '{key}' of dataset json '{source}'"
        where = f"entry {i} of {listed}"
        if isinstance(entry, str) and roles == ("image",):
            entry = {"image": entry}
        if not isinstance(entry, dict) or any(role not in entry for role in roles):
            raise DataError(f"{where} must be a dict with {', '.join(map(repr, roles))}, got {entry!r}")
        case: dict[str, Any] = {}
        for role in roles:
            value = entry[role]
            if role in _PATH_ROLES:
                if isinstance(value, list) and role == "image" and value:
                    case[role] = [_resolve(v, f"{role} channel {c}", i, listed, source) for c, v in enumerate(value)]
                else:
                    case[role] = _resolve(value, role, i, listed, source)
            elif role == "class":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise DataError(f"{where}: 'class' must be a class index (an int >= 0), got {value!r}")
                case[role] = value
            else:
                case[role] = value
        image = case["image"][0] if isinstance(case.get("image"), list) else case.get("image")
        case["id"] = str(entry["id"]) if "id" in entry else image.name if isinstance(image, Path) else str(i)
        if "image" in case:
            same = seen.setdefault(case_files(case), i)
            if same != i:  # it counted twice: in the label ratio's subset, the case count, the pretraining's draws
                raise DataError(f"entries {same} and {i} of {listed} list the same image file(s) twice (e.g. "
                                f"'{image}'); expected each case once")
        cases.append(case)
    if not cases:
        raise DataError(f"section '{key}' of dataset json '{source}' lists no images")
    return cases


def listed_files(entries: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """``(role, path)`` of every file that ``entries`` (dataset.json entries) list, in listing order: each
    ``image`` (or image channel), ``label``, ``target`` and ``anatomy`` given as a string."""
    return [(role, value) for entry in entries for role in _PATH_ROLES
            for value in (entry[role] if isinstance(entry.get(role), list) else [entry.get(role)])
            if isinstance(value, str)]


def content_sha256(folder: str | Path, entries: list[dict[str, Any]]) -> str:
    """SHA-256 over the bytes of every file that ``entries`` (dataset.json entries, paths relative to ``folder``)
    list, in listing order: a dataset.json that records it changes whenever a listed file does, so a job that
    reads the json (Snakemake compares its checksum) reruns when the data changes under the same names."""
    digest = hashlib.sha256()
    for role, rel in listed_files(entries):
        digest.update(f"{role}:{rel}:{file_sha256(Path(folder) / rel)}\n".encode())
    return digest.hexdigest()


def list_volumes(source: str | Path, key: str = "training") -> list[Path]:
    """Image paths of a one-channel dataset: the ``image`` of each case of section ``key`` of a dataset.json
    (json order), or every ``*.nii`` / ``*.nii.gz`` in a folder (sorted, not recursive)."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"dataset source '{source}' does not exist; expected a dataset.json or a folder of NIfTI files")
    if source.is_dir():
        paths = sorted(p for p in source.iterdir() if p.name.endswith(_NIFTI_SUFFIXES) and present_file(p))
        if not paths:
            raise DataError(f"folder '{source}' contains no .nii or .nii.gz files")
        return paths
    paths = []
    for case in list_cases(source, key):
        if isinstance(case["image"], list):
            raise DataError(f"case '{case['id']}' of section '{key}' of dataset json '{source}' has "
                            f"{len(case['image'])} channels; expected one image per case")
        paths.append(case["image"])
    return paths
