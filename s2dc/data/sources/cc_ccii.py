"""CC-CCII: per-slice PNG/JPG scans -> one NIfTI volume per scan and the common layout.

Official layout (registry ``cc_ccii``)::

    NCP/<patient_id>/<scan_id>/<slice>.png|jpg     CP/...     Normal/...

(a class folder nested once more, ``NCP/NCP/<patient_id>/...``, as some unzips leave it, is accepted, and so is
``NC/Normal/...``: the release's ``Downstream/CC-CCII/prc_data.py`` reads ``NCP/NCP``, ``CP/CP`` and ``NC/Normal``).
Each scan's slices, in natural numeric order of their names ("2.png" before "10.png"), are read as
8-bit grey and stacked along the last axis: ``volume[:, :, k]`` is slice k as (rows, columns), unit
spacing, no resizing. Volumes go to ``out_dir/volumes/<class>_<patient>_<scan>.nii.gz``. Class index
= position in the spec's outputs (Normal=0, CP=1, NCP=2). The release's ``unzip_filenames.csv`` beside the class
folders lists every scan with its slice count: a listed scan missing or holding another count is refused, with
its zip file (:func:`check_listing`). The release publishes no split we use here:
patients (``class/patient``) are split with :func:`fixed_split`, so no patient is on both sides.
"""

from __future__ import annotations

import csv
import re
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from ...files import remove_abandoned, replace_folder, work_sibling
from ..datalist import present_file
from ..registry import get
from ..errors import DataError
from .common import fixed_split, require_folder, write_common

SLICE_SUFFIXES = (".png", ".jpg", ".jpeg")
_GREY_MODES = ("1", "L", "LA", "P", "RGB", "RGBA")


def _natural_key(stem: str) -> tuple:
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", stem) if t)


def _dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scans(patient: Path) -> list[Path]:
    """The scan folders of a patient folder; :class:`DataError` naming it when it holds none."""
    if not (scans := _dirs(patient)):
        raise DataError(f"patient folder '{patient}' holds no <scan_id>/ folder (expected "
                        f"{patient}/<scan_id>/<slice>.png|jpg)")
    return scans


#: Other parent folders of a class folder: the release's prc_data.py reads Normal from ``NC/Normal``.
_PARENTS = {"Normal": ("NC",)}


def _class_root(raw: Path, name: str) -> Path:
    """The folder holding a class's patient folders: ``raw/<class>``, ``raw/<class>/<class>`` or (Normal)
    ``raw/NC/Normal``. :class:`DataError` naming both when the class's patients would be in two of them: patient
    folders beside a nested ``<class>/<class>``, ``raw/Normal`` beside ``raw/NC/Normal``, or ``raw/Normal/Normal``
    beside ``raw/NC/Normal`` (one would be left out)."""
    nested = [raw / parent / name for parent in (name, *_PARENTS.get(name, ())) if (raw / parent / name).is_dir()]
    if len(nested) > 1:
        raise DataError(f"'{nested[0]}' and '{nested[1]}' both hold {name} patient folders: keep them in one of the two")
    if not nested:
        return raw / name
    if nested[0].parent == raw / name:
        beside = [p for p in _dirs(raw / name) if p != nested[0]]
        if beside:
            raise DataError(f"'{nested[0]}' holds {name} patient folders and so do "
                            + ", ".join(f"'{p}'" for p in beside[:5]) + (" ..." if len(beside) > 5 else "")
                            + f" beside it (two unzips, one nested once more?): keep the patients in one of the "
                            f"two folders, '{nested[0]}' or '{raw / name}'")
    elif (raw / name).is_dir():
        raise DataError(f"'{nested[0]}' and '{raw / name}' both hold {name} patient folders: keep them in one "
                        "of the two")
    return nested[0]


def _progress() -> bool:
    """Whether to draw a progress bar over the scans (a terminal on stderr; a job's log gets none)."""
    return sys.stderr.isatty()


#: The release's list of its scans (zip_file,label,patient_id,scan_id,n_slice), beside the class folders.
LISTING = "unzip_filenames.csv"
LISTING_COLUMNS = ("zip_file", "label", "patient_id", "scan_id", "n_slice")


def _slices(scan: Path) -> list[Path]:
    return [p for p in scan.iterdir() if p.suffix.lower() in SLICE_SUFFIXES and not p.name.startswith(".")
            and present_file(p)]


def check_listing(raw: Path, classes: tuple[str, ...]) -> None:
    """:class:`DataError` naming the scans ``raw/unzip_filenames.csv`` lists that are missing or hold another number
    of slices than its ``n_slice`` (an unzip stopped midway, a zip never extracted), with their zip files; a note on
    stderr when there is no such list. Scans it does not list are not checked (removing a zip's rows leaves it out)."""
    listing = raw / LISTING
    if not listing.is_file():
        print(f"note: no '{listing}' (the release's list of its scans): the scans found are converted unchecked; "
              "a scan left short by an interrupted unzip would go unnoticed", file=sys.stderr)
        return
    try:
        with listing.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows = [{(key or "").strip(): value for key, value in row.items()} for row in reader
                    if any((value or "").strip() for value in row.values())]  # a blank row (",,,,") lists nothing
            columns = [(name or "").strip() for name in reader.fieldnames or []]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"'{listing}' is not a readable csv: {exc}") from exc
    for column in LISTING_COLUMNS:
        if column not in columns:
            raise DataError(f"'{listing}' has no column '{column}' (expected {', '.join(LISTING_COLUMNS)})")
    problems, roots = [], {name: _class_root(raw, name) for name in classes}
    for number, row in enumerate(rows, start=2):
        label, patient, scan = ((row.get(key) or "").strip() for key in ("label", "patient_id", "scan_id"))
        if label not in classes:
            raise DataError(f"'{listing}' row {number} has label '{label}', expected one of {', '.join(classes)}")
        try:
            count = float(row.get("n_slice") or "")  # "3" or "3.0", as a spreadsheet may write it
            if not count.is_integer():
                raise ValueError
            expected = int(count)
        except ValueError:
            raise DataError(f"'{listing}' row {number} has n_slice {row.get('n_slice')!r}, expected a whole number") \
                from None
        folder, where = roots[label] / patient / scan, f"'{label}/{patient}/{scan}' ({row['zip_file']})"
        if not folder.is_dir():
            problems.append(f"{where} is missing")
        elif (found := len(_slices(folder))) != expected:
            problems.append(f"{where} holds {found} slices, it says {expected}")
    if problems:
        raise DataError(f"'{listing}' lists {len(problems)} scan{'s' * (len(problems) > 1)} that are not as it says: "
                        + "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
                        + ": extract those zip files again (a download or unzip stopped midway?), or remove their rows "
                        "from it to leave those scans out (or move it away to convert the scans found unchecked)")


def read_scan(scan: Path) -> np.ndarray:
    """The slices of one scan folder stacked to a (rows, columns, slices) uint8 array."""
    from PIL import Image

    slices = _slices(scan)
    if not slices:
        raise DataError(f"scan folder '{scan}' holds no slice images ({'/'.join(SLICE_SUFFIXES)})")
    keys = [_natural_key(p.stem) for p in slices]
    if len(set(keys)) != len(keys):
        raise DataError(f"scan folder '{scan}' has two slices with the same number: "
                        + ", ".join(sorted(p.name for p, k in zip(slices, keys) if keys.count(k) > 1)))
    arrays: list[np.ndarray] = []
    ordered = [p for _, p in sorted(zip(keys, slices))]
    for path in ordered:
        try:
            with Image.open(path) as img:
                if img.mode not in _GREY_MODES:
                    raise DataError(f"slice '{path}' has image mode {img.mode}, expected an 8-bit image")
                arr = np.asarray(img.convert("L"), dtype=np.uint8)
        except DataError:
            raise
        except Exception as exc:  # Pillow raises many types for a bad file
            raise DataError(f"slice '{path}' is not a readable image: {exc}") from exc
        if arrays and arr.shape != arrays[0].shape:
            raise DataError(f"slice '{path}' is {arr.shape[1]}x{arr.shape[0]} pixels, the scan's first slice "
                            f"'{ordered[0]}' is {arrays[0].shape[1]}x{arrays[0].shape[0]}")
        arrays.append(arr)
    return np.stack(arrays, axis=-1)


#: The mark of a volumes/ folder this converter made (inside it): only such a folder is ever replaced.
MADE_HERE = ".made-by-s2dc-cc_ccii"


def convert(raw: Path, out_dir: Path) -> Path:
    """Stack every scan into a NIfTI volume (staged, then renamed into place) and write the json. An existing
    ``out_dir/volumes/`` is replaced only if this converter made it (:data:`MADE_HERE` inside)."""
    spec = get("cc_ccii")
    raw, out_dir = Path(raw), Path(out_dir)
    final = out_dir / "volumes"
    if final.exists() and not (final / MADE_HERE).is_file():
        raise DataError(f"'{final}' exists and was not made by s2dc's CC-CCII converter (no {MADE_HERE} in it): it is "
                        f"never replaced; move it away or give another output folder")
    for name in spec.outputs:
        if not _class_root(raw, name).is_dir():
            require_folder(raw, spec, name)
    check_listing(raw, spec.outputs)
    scans = []  # (class index, class, patient, scan folder)
    for index, name in enumerate(spec.outputs):
        root = _class_root(raw, name)
        found = [(index, name, patient.name, scan) for patient in _dirs(root) for scan in _scans(patient)]
        if not found:
            raise DataError(f"class folder '{root}' holds no <patient_id>/<scan_id>/ scan folders")
        scans.extend(found)
    train_patients = set(fixed_split(sorted({f"{name}/{patient}" for _, name, patient, _ in scans}), 0.2,
                                     where=f"'{raw}'")[0])

    out_dir.mkdir(parents=True, exist_ok=True)
    remove_abandoned(out_dir, mark=MADE_HERE)  # what a killed conversion on this host left
    staging = work_sibling(final, "tmp")
    staging.mkdir()
    (staging / MADE_HERE).write_text("CT volumes stacked from CC-CCII's slice images by s2dc.data.sources.cc_ccii\n")
    training, validation = [], []
    try:
        bar = tqdm(scans, desc="CC-CCII scans stacked", unit="scan", disable=not _progress())
        for index, name, patient, scan in bar:
            file = f"{name}_{patient}_{scan.name}.nii.gz"
            if (staging / file).exists():
                raise DataError(f"scan '{scan}' would be written as '{file}', which another scan already is")
            nib.save(nib.Nifti1Image(read_scan(scan), np.eye(4)), str(staging / file))
            entry = {"id": f"{name}/{patient}/{scan.name}", "image": final / file, "class": index}
            (training if f"{name}/{patient}" in train_patients else validation).append(entry)
        # The old dataset.json goes before its volumes do: stopped before the new one is written, the folder holds
        # no json at all, never one that lists (and hashes) other volumes.
        (out_dir / "dataset.json").unlink(missing_ok=True)
        replace_folder(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    return write_common(out_dir, spec, training, validation, raw, "s2dc.data.sources.cc_ccii")
