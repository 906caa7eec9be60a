"""Writing a twin like the real release: NIfTI volumes and an MSD-style dataset.json, atomically."""

from __future__ import annotations

import json
import os
import shutil
import uuid
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .abdomen import BTCV_LABELS, ct_phantom
from .checks import SynthParamError, check_seed, check_shape

KINDS = ("ct_pool", "btcv")
GENERATOR_VERSION = 1


def case_seed(seed: int, kind: str, index: int) -> int:
    """Seed of case ``index`` of a ``kind`` dataset drawn with ``seed`` (distinct across kinds)."""
    ss = np.random.SeedSequence([check_seed(seed), zlib.crc32(kind.encode("utf-8")), int(index)])
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def _check_params(kind: Any, cases: Any, seed: Any, shape: Any, spacing: Any, val_fraction: Any) -> None:
    if kind not in KINDS:
        raise SynthParamError("kind", f"kind must be one of {list(KINDS)}, got {kind!r}")
    min_cases = 2 if kind == "btcv" else 1
    if isinstance(cases, bool) or not isinstance(cases, (int, np.integer)) or cases < min_cases:
        raise SynthParamError("cases", f"cases must be an integer >= {min_cases} for kind {kind!r}, got {cases!r}")
    check_seed(seed)
    check_shape(shape)
    ok = isinstance(spacing, (list, tuple)) and len(spacing) == 3 and all(
        isinstance(s, (int, float, np.floating, np.integer)) and not isinstance(s, bool)
        and np.isfinite(s) and s > 0 for s in spacing
    )
    if not ok:
        raise SynthParamError("spacing", f"spacing must be 3 positive numbers (mm), got {spacing!r}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise SynthParamError("val_fraction", f"val_fraction must be a number in (0, 1), got {val_fraction!r}")


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
    val_fraction: float = 0.25,
    *,
    progress: bool | Callable[[Any], Any] = False,
) -> Path:
    """Write ``cases`` phantoms and an MSD-style ``dataset.json``; returns the json path.

    Parameters
    ----------
    out_dir : str or Path
        Output folder; written atomically (built in a hidden temporary sibling that is renamed to
        ``out_dir`` when complete; an existing ``out_dir`` is replaced only then).
    kind : {"ct_pool", "btcv"}
        ``"ct_pool"``: unlabelled pretraining pool, ``imagesTr/case_XXXX.nii.gz`` listed under
        ``"training"``. ``"btcv"``: labelled 13-organ twin of BTCV, images plus
        ``labelsTr/case_XXXX.nii.gz``; the last ``max(1, round(cases * val_fraction))`` cases are
        listed under ``"validation"``, the others under ``"training"`` (as BTCV's dataset_0.json).
    cases : int
        Number of volumes (>= 1; >= 2 for ``"btcv"``).
    seed : int
        Dataset seed; case ``i`` uses :func:`case_seed` ``(seed, kind, i)``, so a pool and a twin
        never share a phantom even with the same seed.
    shape, spacing : 3-tuples
        Grid in voxels and voxel size in mm (affine ``diag(spacing)``, RAS+).
    val_fraction : float
        Fraction of ``"btcv"`` cases used for validation, in (0, 1).
    progress : bool or callable
        ``True``: tqdm progress bar over cases; a callable ``wrap(iterable)`` is used as is.

    Returns
    -------
    Path
        ``out_dir / "dataset.json"``. Besides the MSD keys the json has a ``"synthetic"`` section
        with the generator parameters and, for ``"btcv"``, the mean voxel count per organ.

    Raises
    ------
    SynthParamError
        (a ``ValueError``) for an invalid parameter; ``.param`` names it.
    """
    _check_params(kind, cases, seed, shape, spacing, val_fraction)
    shape = check_shape(shape)
    spacing = tuple(float(s) for s in spacing)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SynthParamError("out_dir", f"output '{out_dir}' exists and is not a directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*spacing, 1.0])
    labelled = kind == "btcv"

    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        (tmp / "imagesTr").mkdir(parents=True)
        if labelled:
            (tmp / "labelsTr").mkdir()
        indices: Any = range(int(cases))
        if progress is True:
            from tqdm.auto import tqdm

            indices = tqdm(indices, desc=f"synth {kind}", unit="case")
        elif callable(progress):
            indices = progress(indices)
        entries = []
        counts = np.zeros(14, np.int64)
        for i in indices:
            image, labels = ct_phantom(case_seed(seed, kind, i), shape)
            name = f"case_{i:04d}.nii.gz"
            save_nifti(tmp / "imagesTr" / name, image, affine, np.float32)
            entry = {"image": f"./imagesTr/{name}"}
            if labelled:
                save_nifti(tmp / "labelsTr" / name, labels, affine, np.uint8)
                entry["label"] = f"./labelsTr/{name}"
                counts += np.bincount(labels.ravel(), minlength=14)[:14]
            entries.append(entry)

        meta: dict[str, Any] = {
            "generator": "s2dc.data.synthetic.ct_phantom", "version": GENERATOR_VERSION,
            "kind": kind, "seed": int(seed), "cases": int(cases), "shape": list(shape), "spacing": list(spacing),
        }
        spec: dict[str, Any] = {
            "name": f"synthetic_{kind}",
            "description": (
                "Synthetic abdominal CT phantoms (unlabelled pretraining pool)" if not labelled
                else "Synthetic abdominal CT phantoms with 13 BTCV organ labels (BTCV twin)"
            ),
            "reference": "s2dc synthetic benchmark",
            "licence": "CC0",
            "tensorImageSize": "3D",
            "modality": {"0": "CT"},
        }
        if labelled:
            n_val = max(1, round(cases * val_fraction))
            n_val = min(n_val, cases - 1)
            meta["val_fraction"] = float(val_fraction)
            meta["mean_voxels"] = {BTCV_LABELS[k]: round(float(counts[k]) / cases, 1) for k in range(1, 14)}
            spec["labels"] = {str(k): v for k, v in BTCV_LABELS.items()}
            spec["numTraining"] = cases - n_val
            spec["numValidation"] = n_val
            spec["training"] = entries[: cases - n_val]
            spec["validation"] = entries[cases - n_val :]
        else:
            spec["numTraining"] = cases
            spec["training"] = entries
        spec["synthetic"] = meta
        (tmp / "dataset.json").write_text(json.dumps(spec, indent=2) + "\n")

        old = None
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir / "dataset.json"
