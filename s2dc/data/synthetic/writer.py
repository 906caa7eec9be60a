"""Writing a twin like the real release: NIfTI volumes and an MSD-style dataset.json, atomically."""

from __future__ import annotations

import json
import os
import re
import shutil
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ... import messages
from ...files import check_folder_path, file_sha256, remove_abandoned, replace_folder, work_sibling
from ..datalist import content_sha256, listed_files
from ..errors import DataError
from ..nifti import check_affine
from ..provenance import writer_of
from ..registry import get, names
from . import twins
from .checks import MAX_CASES, SynthParamError, check_seed, check_shape

KINDS = tuple(n for n in names() if n in twins.TWINS)  # registry order
GENERATOR_VERSION = 1


def case_seed(seed: int, kind: str, index: int) -> int:
    """Seed of case ``index`` of a ``kind`` dataset drawn with ``seed`` (distinct across kinds)."""
    ss = np.random.SeedSequence([check_seed(seed), zlib.crc32(kind.encode("utf-8")), int(index)])
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


#: The share of a downstream twin's cases listed for validation where none is given.
VAL_FRACTION = 0.25


def check_twin_params(kind: Any, cases: Any, seed: Any, shape: Any, spacing: Any, val_fraction: Any) -> float | None:
    """:class:`SynthParamError` naming the first parameter a twin of ``kind`` cannot be drawn with (also what the
    workflow checks each synthetic dataset of params.yaml with, when it is parsed); ``val_fraction`` ``None``: a
    pool's (it has no validation cases), a downstream twin's :data:`VAL_FRACTION`. Returns the fraction the twin is
    drawn with: ``None`` for a pool."""
    if kind not in KINDS:
        raise SynthParamError("kind", f"kind must be one of {list(KINDS)}, got {kind!r}")
    spec = get(kind)
    min_cases = 1 if spec.task == "pretraining" else max(2, len(spec.outputs) * 2 if spec.task == "classification" else 2)
    if isinstance(cases, bool) or not isinstance(cases, (int, np.integer)) or not min_cases <= cases <= MAX_CASES:
        raise SynthParamError("cases", f"cases must be an integer in {min_cases}..{MAX_CASES} for kind {kind!r}, "
                                       f"got {cases!r}")
    check_seed(seed)
    check_shape(shape)
    ok = isinstance(spacing, (list, tuple)) and len(spacing) == 3 and all(
        isinstance(s, (int, float, np.floating, np.integer)) and not isinstance(s, bool)
        and np.isfinite(s) and s > 0 for s in spacing
    )
    if not ok:
        raise SynthParamError("spacing", f"spacing must be 3 positive numbers (mm), got {spacing!r}")
    try:  # as the header stores it (float32) and as read_volume checks it: no inf, no degenerate voxel
        with np.errstate(over="ignore"):
            stored = np.diag([*spacing, 1.0]).astype(np.float32).astype(np.float64)
        check_affine(Path("spacing"), stored)
    except DataError:
        raise SynthParamError("spacing", "spacing must give voxels a NIfTI header holds (float32) and the reader "
                              f"accepts (finite, volume over 1e-12 mm^3), got {spacing!r}") from None
    if not spec.downstream:
        if val_fraction is not None:
            raise SynthParamError("val_fraction", f"val_fraction {val_fraction!r} is given, but a pretraining pool "
                                  "lists every case for pretraining (it has no validation cases): give none")
        return None
    if val_fraction is None:
        val_fraction = VAL_FRACTION
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise SynthParamError("val_fraction", f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
    least = len(spec.outputs) if spec.task == "classification" else 1  # case i of a classifier is of class i % K
    n_train = cases - validation_cases(cases, val_fraction)  # the first cases - n_val train
    if n_train < least:
        raise SynthParamError("val_fraction", f"val_fraction {val_fraction!r} of {cases} cases leaves {n_train} "
                              f"training case(s); a {spec.task} twin of kind {kind!r} needs at least {least}"
                              + (" (one of each class)" if spec.task == "classification" else ""))
    return val_fraction


def validation_cases(cases: int, val_fraction: float) -> int:
    """How many of a downstream twin's ``cases`` are its validation cases (at least one)."""
    return max(1, round(cases * val_fraction))


def save_nifti(path: Path, array: np.ndarray, affine: np.ndarray, dtype: type) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(array, dtype=dtype), affine)
    img.header.set_data_dtype(dtype)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))


def write_dataset(
    out_dir: str | Path,
    kind: str,
    cases: int,
    seed: int,
    shape: tuple[int, int, int] = (96, 96, 64),
    spacing: tuple[float, float, float] = (1.5, 1.5, 2.0),
    val_fraction: float | None = None,
    *,
    progress: bool | Callable[[Any], Any] = False,
) -> Path:
    """Write ``cases`` cases of the twin of registry dataset ``kind`` like its release; returns the json path.

    Parameters
    ----------
    out_dir : str or Path
        Output folder; written atomically (built in a hidden temporary sibling that is renamed to
        ``out_dir`` when complete; an existing ``out_dir`` is replaced only then, and only if it holds nothing but
        a synthetic dataset written here: a folder with other files is refused, :class:`SynthParamError`).
    kind : str
        A registry dataset with a twin (:data:`KINDS`). A pretraining pool lists every case under
        ``"training"``; a downstream twin lists its last ``max(1, round(cases * val_fraction))`` cases
        under ``"validation"`` (as BTCV's dataset_0.json). Files: ``imagesTr/case_XXXX.nii.gz`` (one
        channel) or ``imagesTr/case_XXXX_<channel>.nii.gz``, ``labelsTr/``, ``targetsTr/``; for a twin that
        draws an anatomy map, ``anatomyTr/`` too (role ``anatomy``, names under ``"anatomy_labels"``).
    cases : int
        Number of cases (>= 1 for a pool, >= 2 for a downstream twin, >= 2 per class for a classifier).
    seed : int
        Dataset seed; case ``i`` uses :func:`case_seed` ``(seed, kind, i)``, so two twins never share a
        case even with the same seed.
    shape, spacing : 3-tuples
        Grid in voxels and voxel size in mm (affine ``diag(spacing)``, RAS+).
    val_fraction : float or None
        Fraction of a downstream twin's cases used for validation, in (0, 1); ``None``: :data:`VAL_FRACTION`. A
        pool takes none.
    progress : bool or callable
        ``True``: tqdm progress bar over cases; a callable ``wrap(iterable)`` is used as is.

    Returns
    -------
    Path
        ``out_dir / "dataset.json"``: the common layout (roles per task) plus a ``"synthetic"`` section
        with the generator parameters and, for segmentation, the mean voxel count per label, and the
        ``"content_sha256"`` of the files it lists (:func:`s2dc.data.datalist.content_sha256`).

    Raises
    ------
    SynthParamError
        (a ``ValueError``) for an invalid parameter; ``.param`` names it.
    """
    val_fraction = check_twin_params(kind, cases, seed, shape, spacing, val_fraction)
    shape = check_shape(shape)
    spacing = tuple(float(s) for s in spacing)
    out_dir = Path(out_dir)
    here = Path.cwd().resolve()
    if out_dir.resolve() in (here, *here.parents):  # `--out .`: the twin replaces its whole folder
        raise SynthParamError("out_dir", f"output '{out_dir}' is the folder this command runs in, or holds it; the "
                                         "twin replaces its whole folder: give a folder of its own, e.g. --out twin")
    if out_dir.exists() and not out_dir.is_dir():
        raise SynthParamError("out_dir", f"output '{out_dir}' exists and is not a directory")
    try:
        check_folder_path(out_dir, "output")  # a file above it
    except ValueError as err:
        raise SynthParamError("out_dir", str(err)) from None
    link, out_dir = out_dir, out_dir.resolve() if out_dir.is_symlink() else out_dir  # a link: written through
    _check_replaceable(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*spacing, 1.0])
    spec, twin = get(kind), twins.TWINS[kind]
    label_values = sorted(spec.labels)

    remove_abandoned(out_dir.parent, mark=MARK)  # what a killed draw left (its staging, or the dataset it set aside)
    tmp = work_sibling(out_dir, "tmp")
    try:
        tmp.mkdir()
        (tmp / MARK).write_text(json.dumps({"note": MARK_NOTE}))  # the draw's staging folder (remove_abandoned)
        (tmp / "imagesTr").mkdir()
        indices: Any = range(int(cases))
        if progress is True:
            from tqdm.auto import tqdm

            indices = tqdm(indices, desc=f"synth {kind}", unit="case")
        elif callable(progress):
            indices = progress(indices)
        entries = []
        counts = np.zeros(max(label_values, default=0) + 1, np.int64)
        for i in indices:
            case = twin.make(case_seed(seed, kind, i), shape, i)
            entries.append(_write_case(tmp, f"case_{i:04d}", case, spec, affine))
            if case.label is not None:
                counts += np.bincount(case.label.ravel(), minlength=counts.size)[: counts.size]

        meta: dict[str, Any] = {
            "generator": f"s2dc.data.synthetic.twins.{kind}", "version": GENERATOR_VERSION,
            "kind": kind, "seed": int(seed), "cases": int(cases), "shape": list(shape), "spacing": list(spacing),
        }
        doc: dict[str, Any] = {
            "name": f"synthetic_{kind}",
            "description": twin.description,
            "reference": "s2dc synthetic benchmark",
            "licence": "CC0",
            "tensorImageSize": "3D",
            "modality": {str(c): name for c, name in enumerate(spec.channels)},
        }
        if spec.downstream:
            n_val = validation_cases(cases, val_fraction)
            meta["val_fraction"] = float(val_fraction)
            if spec.labels:
                meta["mean_voxels"] = {spec.labels[k]: round(float(counts[k]) / cases, 1) for k in label_values if k}
                doc["labels"] = {str(k): v for k, v in sorted(spec.labels.items())}
            if spec.regions:
                doc["regions"] = {name: list(values) for name, values in spec.regions.items()}
            if spec.task == "classification":
                doc["classes"] = list(spec.outputs)
            if twin.anatomy:
                doc["anatomy_labels"] = {str(k): v for k, v in sorted(twin.anatomy.items())}
            doc["numTraining"] = cases - n_val
            doc["numValidation"] = n_val
            doc["training"] = entries[: cases - n_val]
            doc["validation"] = entries[cases - n_val :]
        else:
            doc["numTraining"] = cases
            doc["training"] = entries
        doc["synthetic"] = meta
        doc["content_sha256"] = content_sha256(tmp, entries)
        (tmp / "dataset.json").write_text(json.dumps(doc, indent=2) + "\n")
        written = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file() and p.name != MARK)
        (tmp / MARK).write_text(json.dumps({"note": MARK_NOTE, "files": {rel: file_sha256(tmp / rel)
                                                                         for rel in written}}, indent=1) + "\n")
        replace_folder(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return link / "dataset.json"


#: The files :func:`write_dataset` puts in its folder beside dataset.json (paths relative to the folder).
OWN_FILE = re.compile(r"(imagesTr|labelsTr|targetsTr|anatomyTr)/case_\d{4,}(_\w+)?\.nii\.gz")
#: The mark :func:`write_dataset` leaves in its folder: a JSON manifest, the SHA-256 of each file it wrote there
#: (``"files"``). A mark of an older writer is a line of text: beside it, case files named as :data:`OWN_FILE` are
#: its own (nnU-Net-style conversions name theirs alike).
MARK = ".s2dc-synth"
MARK_NOTE = "Written by `s2dc synth`: this folder is replaced whenever its dataset is drawn again."


def _check_replaceable(out_dir: Path) -> None:
    """Refuse an existing ``out_dir`` that holds anything but a synthetic dataset written here, as it was written:
    its mark (:data:`MARK`) and the files whose SHA-256 the mark records (dataset.json may be missing: Snakemake
    deletes it before it reruns the job). A user's folder, a file a user added to a twin (listed in its dataset.json
    or not) or one a user changed is never replaced. A folder of an older writer, whose mark records no files: its
    dataset.json (one with the ``synthetic`` block of this writer) and the case files it lists, or without it those
    named as :data:`OWN_FILE`."""
    if not out_dir.is_dir():
        return
    found = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_symlink() or not p.is_dir())
    written = _manifest(out_dir / MARK)
    if written is not None:
        foreign = [f + (" (changed since s2dc synth wrote it)" if f in written else "") for f in found
                   if f != MARK and (f not in written or (out_dir / f).is_symlink()
                                     or file_sha256(out_dir / f) != written[f])]
        if foreign:
            raise SynthParamError("out_dir", f"output '{out_dir}' holds files that s2dc synth did not write "
                                             f"({messages.listed(foreign, 3)}); they are never replaced: give a new "
                                             f"or empty folder, or move them away")
        return
    own = OWN_FILE.fullmatch
    if "dataset.json" in found and writer_of(out_dir / "dataset.json") == "synth":
        listed = {os.path.normpath(rel) for _, rel in _listed(out_dir / "dataset.json")}
        own = listed.__contains__
    foreign = [f for f in found if f not in ("dataset.json", MARK) and not own(f)]
    if "dataset.json" in found and writer_of(out_dir / "dataset.json") != "synth":
        foreign.insert(0, "dataset.json (not one that s2dc synth wrote)")
    if not foreign and found and MARK not in found and "dataset.json" not in found:
        foreign = [f"{found[0]} (case files with neither a dataset.json nor the mark {MARK} of s2dc synth: an "
                   "older s2dc synth's folder may be deleted)"]
    if foreign:
        raise SynthParamError("out_dir", f"output '{out_dir}' holds files that s2dc synth did not write "
                                         f"({messages.listed(foreign, 3)}); they are never replaced: give a new "
                                         f"or empty folder, or move them away")


def _manifest(mark: Path) -> dict[str, str] | None:
    """The files a twin's mark records as written, ``{relative path: SHA-256}``; None where there is no mark or it is
    an older writer's (a line of text, no manifest)."""
    try:
        files = json.loads(mark.read_text()).get("files") if mark.is_file() and not mark.is_symlink() else None
    except (OSError, ValueError, AttributeError):
        return None
    return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else None


def _listed(path: Path) -> list[tuple[str, str]]:
    """(role, path) of the files a twin's dataset.json lists (none where it cannot be read)."""
    try:
        doc = json.loads(path.read_text())
        return listed_files([*doc.get("training", []), *doc.get("validation", [])])
    except (OSError, ValueError, TypeError, AttributeError):
        return []


def _write_case(folder: Path, name: str, case: twins.Case, spec, affine: np.ndarray) -> dict[str, Any]:
    """Write one case's files under ``folder``; returns its dataset.json entry (paths relative to it)."""
    if case.image.ndim != 4 or case.image.shape[0] != len(spec.channels):
        raise ValueError(f"twin {spec.name}: image must be (C={len(spec.channels)}, X, Y, Z), got {case.image.shape}")
    entry: dict[str, Any] = {}
    if len(spec.channels) == 1:
        save_nifti(folder / "imagesTr" / f"{name}.nii.gz", case.image[0], affine, np.float32)
        entry["image"] = f"./imagesTr/{name}.nii.gz"
    else:
        entry["image"] = []
        for channel, array in zip(spec.channels, case.image):
            save_nifti(folder / "imagesTr" / f"{name}_{channel}.nii.gz", array, affine, np.float32)
            entry["image"].append(f"./imagesTr/{name}_{channel}.nii.gz")
    if spec.task == "segmentation":
        (folder / "labelsTr").mkdir(exist_ok=True)
        save_nifti(folder / "labelsTr" / f"{name}.nii.gz", case.label, affine, np.uint8)
        entry["label"] = f"./labelsTr/{name}.nii.gz"
    elif spec.task == "classification":
        entry["class"] = int(case.klass)
    elif spec.task == "reconstruction":
        (folder / "targetsTr").mkdir(exist_ok=True)
        save_nifti(folder / "targetsTr" / f"{name}.nii.gz", case.target, affine, np.float32)
        entry["target"] = f"./targetsTr/{name}.nii.gz"
    if case.anatomy is not None:
        (folder / "anatomyTr").mkdir(exist_ok=True)
        save_nifti(folder / "anatomyTr" / f"{name}.nii.gz", case.anatomy, affine, np.uint8)
        entry["anatomy"] = f"./anatomyTr/{name}.nii.gz"
    return entry
