"""Listing, checked loading, deterministic preprocessing and disk caching of 3-D volumes.

Pipeline (all deterministic, so its output can be cached on disk)::

    LoadVolumed -> Orientationd -> [Spacingd] -> [CropForegroundd] -> intensity -> SpatialPadd

Every volume comes out as a ``float32`` tensor of shape ``(1, X, Y, Z)`` whose spatial size is at
least ``min_size`` (volumes smaller than the training ROI are zero-padded, not rejected).

Bad input data raises :class:`DataError` whose message names the offending file (or dataset.json
and key) and says what was expected, also when the error happens inside MONAI transforms, a
:class:`monai.data.PersistentDataset` or a DataLoader worker.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import uuid
import warnings
from copy import deepcopy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import Dataset, MetaTensor, PersistentDataset
from monai.transforms import (
    Compose,
    CropForegroundd,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)
from monai.utils import convert_to_tensor

__all__ = [
    "CachedVolumes",
    "DataError",
    "LoadVolumed",
    "PreprocessConfig",
    "list_volumes",
    "preprocess_transforms",
]

# Bump when the preprocessing code changes in a way that alters its output: it is part of
# PreprocessConfig.cache_key(), so old on-disk caches are then no longer reused.
_PIPELINE_VERSION = 1
_NIFTI_SUFFIXES = (".nii", ".nii.gz")


class DataError(ValueError):
    """Bad input data; the message names the file/key and what was expected."""


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class PreprocessConfig:
    """Deterministic preprocessing parameters (the ``preprocess`` section of the config).

    Attributes
    ----------
    intensity : {"ct", "zscore"}
        ``"ct"``: window ``[a_min, a_max]`` (HU) linearly mapped to ``[0, 1]`` and clipped.
        ``"zscore"``: per-channel z-score over the nonzero voxels (MRI / PET); zeros stay 0.
    a_min, a_max : float
        CT window, ``a_min < a_max`` (ignored for ``"zscore"``).
    spacing : tuple of 3 float or None
        Target voxel spacing in mm (bilinear resampling); ``None`` keeps the native spacing.
    orientation : str
        Target axis codes, e.g. ``"RAS"``.
    crop_foreground : bool
        Crop to the bounding box of voxels above the volume minimum (before intensity scaling).
    """

    intensity: str = "ct"
    a_min: float = -1000.0
    a_max: float = 1000.0
    spacing: tuple[float, float, float] | None = None
    orientation: str = "RAS"
    crop_foreground: bool = True

    def __post_init__(self) -> None:
        if self.intensity not in ("ct", "zscore"):
            raise ValueError(f"preprocess.intensity must be 'ct' or 'zscore', got {self.intensity!r}")
        for name in ("a_min", "a_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"preprocess.{name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))  # -1000 and -1000.0 give the same cache key
        if not self.a_min < self.a_max:
            raise ValueError(f"preprocess.a_min must be < preprocess.a_max, got a_min={self.a_min}, a_max={self.a_max}")
        if self.spacing is not None:
            sp = self.spacing
            ok = isinstance(sp, (list, tuple)) and len(sp) == 3 and all(
                isinstance(s, numbers.Real) and not isinstance(s, bool) and math.isfinite(s) and s > 0 for s in sp
            )
            if not ok:
                raise ValueError(f"preprocess.spacing must be None or 3 positive numbers (mm), got {sp!r}")
            object.__setattr__(self, "spacing", tuple(float(s) for s in sp))
        codes = self.orientation.upper() if isinstance(self.orientation, str) else ""
        axes = sorted(next((i for i, pair in enumerate(("LR", "AP", "SI")) if c in pair), -1) for c in codes)
        if axes != [0, 1, 2]:
            raise ValueError(
                "preprocess.orientation must be 3 axis codes with one each of L/R, A/P, S/I (e.g. 'RAS'), "
                f"got {self.orientation!r}"
            )
        object.__setattr__(self, "orientation", codes)
        if not isinstance(self.crop_foreground, bool):
            raise ValueError(f"preprocess.crop_foreground must be true or false, got {self.crop_foreground!r}")

    def cache_key(self) -> str:
        """Short stable hash (12 hex chars) of all fields and the pipeline version."""
        payload = json.dumps({**asdict(self), "_pipeline": _PIPELINE_VERSION}, sort_keys=True)
        return hashlib.sha1(payload.encode("utf-8")).hexdigest()[:12]


# --------------------------------------------------------------------------- listing


def _is_nifti(path: Path) -> bool:
    return path.name.endswith(_NIFTI_SUFFIXES)


def list_volumes(source: str | Path, key: str = "training") -> list[Path]:
    """Image paths of a dataset.

    Parameters
    ----------
    source : str or Path
        Either an MSD-style ``dataset.json`` whose ``key`` section lists entries that are dicts
        with an ``"image"`` path or plain path strings (relative paths are resolved against the
        json's folder), or a folder: all ``*.nii`` / ``*.nii.gz`` files in it (non-recursive).
    key : str
        Section of the dataset.json to use (ignored for a folder).

    Returns
    -------
    list of Path
        Existing image files; sorted for a folder, in json order for a dataset.json.

    Raises
    ------
    DataError
        Nonexistent source, unparsable json, missing section (lists the available ones), an entry
        without an image, a listed file that does not exist (names it and the json), or no images.
    """
    source = Path(source)
    if not source.exists():
        raise DataError(f"dataset source '{source}' does not exist; expected a dataset.json or a folder of NIfTI files")
    if source.is_dir():
        paths = sorted(p for p in source.iterdir() if p.is_file() and _is_nifti(p))
        if not paths:
            raise DataError(f"folder '{source}' contains no .nii or .nii.gz files")
        return paths

    try:
        spec = json.loads(source.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"could not read dataset json '{source}': {exc}") from exc
    if not isinstance(spec, dict) or key not in spec:
        available = sorted(spec) if isinstance(spec, dict) else []
        raise DataError(f"dataset json '{source}' has no section '{key}'; available sections: {available}")
    entries = spec[key]
    if not isinstance(entries, list):
        raise DataError(f"section '{key}' of dataset json '{source}' must be a list, got {type(entries).__name__}")

    paths = []
    for i, entry in enumerate(entries):
        rel = entry.get("image") if isinstance(entry, dict) else entry
        if not isinstance(rel, str) or not rel:
            raise DataError(
                f"entry {i} of section '{key}' in dataset json '{source}' has no image path; "
                f"expected a path string or a dict with an 'image' path, got {entry!r}"
            )
        path = Path(rel) if Path(rel).is_absolute() else source.parent / rel
        path = Path(os.path.normpath(path))
        if not path.is_file():
            raise DataError(f"image '{path}' listed in section '{key}' of dataset json '{source}' does not exist")
        paths.append(path)
    if not paths:
        raise DataError(f"section '{key}' of dataset json '{source}' lists no images")
    return paths


# --------------------------------------------------------------------------- checked loading


class LoadVolumed(MapTransform):
    """Load NIfTI volumes with nibabel and check them.

    For each key, replaces the path ``data[key]`` with a :class:`monai.data.MetaTensor` of shape
    ``(1, X, Y, Z)`` (float32, channel added here) carrying the file's affine, so that
    ``Orientationd`` / ``Spacingd`` work on it.

    Raises
    ------
    DataError
        * the file cannot be read (missing, not NIfTI, truncated / corrupt gzip or data);
        * the image is not 3-D (a 4-D image with a trailing singleton axis is squeezed first);
        * an axis has fewer than 2 voxels, values are NaN/inf, or there is no foreground
          (all voxels equal).
    """

    def __init__(self, keys: KeysCollection = "image") -> None:
        super().__init__(keys)

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.load(d[key])
        return d

    @staticmethod
    def load(path: str | Path) -> MetaTensor:
        """Load and check one volume; returns a ``(1, X, Y, Z)`` float32 MetaTensor."""
        path = Path(path)
        try:
            img = nib.load(str(path))
            shape = tuple(int(s) for s in img.shape)
            while len(shape) > 3 and shape[-1] == 1:  # (X, Y, Z, 1) -> (X, Y, Z)
                shape = shape[:-1]
            if len(shape) != 3:
                raise DataError(f"'{path}' has shape {tuple(int(s) for s in img.shape)}; expected a 3-D volume")
            array = np.asarray(img.get_fdata(dtype=np.float32)).reshape(shape)
            affine = np.asarray(img.affine, dtype=np.float64)
        except DataError:
            raise
        except Exception as exc:  # nibabel, gzip, zlib, EOFError, OSError, ... anywhere in header or data
            raise DataError(
                f"could not read '{path}': {type(exc).__name__}: {exc}; "
                "expected a readable NIfTI volume (.nii or .nii.gz)"
            ) from exc

        if min(shape) < 2:
            raise DataError(
                f"'{path}' has shape {shape}; expected a 3-D volume with at least 2 voxels along every axis"
            )
        if not np.isfinite(array).all():
            raise DataError(f"'{path}' contains NaN or infinite values; expected finite intensities")
        if not array.max() > array.min():
            raise DataError(
                f"'{path}' has no foreground (all voxels equal {float(array.min())}); expected a non-constant volume"
            )
        meta = {"filename_or_obj": str(path), "space": "RAS", "original_channel_dim": "no_channel"}
        tensor = torch.from_numpy(np.ascontiguousarray(array))[None]  # (1, X, Y, Z)
        return MetaTensor(tensor, affine=torch.as_tensor(affine), meta=meta)


# --------------------------------------------------------------------------- preprocessing


def _above_min(x: torch.Tensor) -> torch.Tensor:
    """Foreground mask for cropping: voxels above the volume minimum (module level: picklable)."""
    return x > x.min()


def _check_min_size(min_size: Any) -> tuple[int, int, int]:
    ok = isinstance(min_size, (list, tuple)) and len(min_size) == 3 and all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in min_size
    )
    if not ok:
        raise ValueError(f"min_size must be 3 positive integers, got {min_size!r}")
    return tuple(int(s) for s in min_size)  # type: ignore[return-value]


def preprocess_transforms(cfg: PreprocessConfig, min_size: tuple[int, int, int]) -> Compose:
    """Deterministic MONAI dict transforms on key ``"image"``.

    Parameters
    ----------
    cfg : PreprocessConfig
    min_size : tuple of 3 int
        Minimum spatial size (normally the training ROI). Smaller volumes are **padded**
        (constant 0, i.e. background after intensity scaling) rather than rejected, so small
        scans still contribute; axes already large enough are left unchanged.

    Returns
    -------
    monai.transforms.Compose
        Maps ``{"image": path}`` to ``{"image": MetaTensor}`` of shape ``(1, X, Y, Z)``, float32,
        with ``X, Y, Z >= min_size``.

    Notes
    -----
    Foreground cropping runs *before* intensity scaling with ``x > x.min()``, which works for
    both CT (air / outside-FOV value is the minimum) and zero-background MRI / PET.
    """
    min_size = _check_min_size(min_size)
    keys = ["image"]
    transforms: list = [LoadVolumed(keys), Orientationd(keys, axcodes=cfg.orientation, labels=None)]
    if cfg.spacing is not None:
        transforms.append(Spacingd(keys, pixdim=cfg.spacing, mode="bilinear"))
    if cfg.crop_foreground:
        transforms.append(
            CropForegroundd(keys, source_key="image", select_fn=_above_min, start_coord_key=None, end_coord_key=None)
        )
    if cfg.intensity == "ct":
        transforms.append(ScaleIntensityRanged(keys, a_min=cfg.a_min, a_max=cfg.a_max, b_min=0.0, b_max=1.0, clip=True))
    else:
        transforms.append(NormalizeIntensityd(keys, nonzero=True, channel_wise=True))
    transforms.append(SpatialPadd(keys, spatial_size=min_size, mode="constant", value=0))
    return Compose(transforms)


# --------------------------------------------------------------------------- cached dataset


def _find_data_error(exc: BaseException) -> DataError | None:
    """First DataError in an exception's cause/context chain (MONAI wraps transform errors)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, DataError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


class _AtomicPersistentDataset(PersistentDataset):
    """PersistentDataset whose cache files are written atomically and self-heal when corrupt.

    MONAI 1.6.1 writes each cache file into a ``tempfile.TemporaryDirectory()`` and
    ``shutil.move``-s it into ``cache_dir``. That is only an atomic rename when the system temp
    dir is on the same filesystem as ``cache_dir``; otherwise it is a copy that a killed process
    can leave half-written, and a truncated ``.pt`` then fails forever with
    "PytorchStreamReader failed reading zip archive" (MONAI only recovers from pickle errors).
    Here the temp file lives in ``cache_dir`` itself and is renamed with ``os.replace`` (atomic
    on POSIX), and any cache file that fails to load is deleted and recomputed.
    """

    def _cachecheck(self, item_transformed):
        if self.cache_dir is None:
            return super()._cachecheck(item_transformed)
        name = self.hash_func(item_transformed).decode("utf-8") + self.transform_hash
        hashfile = self.cache_dir / f"{name}.pt"
        if hashfile.is_file():
            try:
                return torch.load(hashfile, weights_only=True)
            except Exception as exc:  # corrupt / truncated / incompatible entry: recompute it
                warnings.warn(f"unreadable cache file '{hashfile}' ({type(exc).__name__}); deleting and recomputing")
                hashfile.unlink(missing_ok=True)

        out = self._pre_transform(deepcopy(item_transformed))
        tmp = self.cache_dir / f".{name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
        try:
            obj = convert_to_tensor(out, convert_numeric=False, track_meta=self.track_meta)
            torch.save(obj, tmp, pickle_protocol=self.pickle_protocol)
            os.replace(tmp, hashfile)  # atomic; concurrent writers (DDP ranks) write identical content
        except OSError as exc:  # read-only / full disk: caching is best effort
            warnings.warn(f"could not write cache file '{hashfile}': {exc}")
        finally:
            tmp.unlink(missing_ok=True)
        return out


class CachedVolumes(torch.utils.data.Dataset):
    """Preprocessed volumes, optionally cached on disk.

    Parameters
    ----------
    paths : list of Path
        Image files, e.g. from :func:`list_volumes`.
    cfg : PreprocessConfig
    min_size : tuple of 3 int
        Minimum output spatial size (smaller volumes are zero-padded).
    cache_root : str, Path or None
        Cache root; files go to ``cache_root / cfg.cache_key()``, so any preprocessing change uses
        a fresh cache directory. Each cache entry is keyed by the path, ``min_size`` and the file's
        size and mtime, so a replaced file or another ROI is recomputed. ``None``: no cache.

    Notes
    -----
    ``dataset[i]`` returns a plain ``float32`` tensor of shape ``(1, X, Y, Z)``. Errors from bad
    files surface as :class:`DataError` (unwrapped from MONAI's ``RuntimeError("applying
    transform ...")``), also through DataLoader workers, which re-raise the worker's exception type.
    """

    def __init__(
        self,
        paths: list[Path],
        cfg: PreprocessConfig,
        min_size: tuple[int, int, int],
        cache_root: str | Path | None,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.cfg = cfg
        self.min_size = _check_min_size(min_size)
        transform = preprocess_transforms(cfg, self.min_size)
        items = [self._item(p) for p in self.paths]
        if cache_root is None:
            self.cache_dir = None
            self._ds: Dataset = Dataset(items, transform=transform)
        else:
            self.cache_dir = Path(cache_root) / cfg.cache_key()
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            self._ds = _AtomicPersistentDataset(items, transform=transform, cache_dir=self.cache_dir)

    def _item(self, path: Path) -> dict[str, Any]:
        item: dict[str, Any] = {"image": str(path), "min_size": list(self.min_size)}
        try:  # part of the cache hash: a rewritten file gets a new cache entry
            st = path.stat()
            item.update(file_size=st.st_size, file_mtime_ns=st.st_mtime_ns)
        except OSError:
            pass  # reported as a DataError by LoadVolumed when the item is read
        return item

    def __len__(self) -> int:
        return len(self._ds)

    def __getitem__(self, i: int) -> torch.Tensor:
        try:
            item = self._ds[i]
        except Exception as exc:
            err = _find_data_error(exc)
            if err is None:
                raise
        else:
            image = item["image"]
            image = image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)
            return image.to(torch.float32).contiguous()
        raise err  # outside the except block: keeps the DataError's own cause, no extra context


class _ErrorOf(torch.utils.data.Dataset):
    """Item ``i`` = ``""`` when ``dataset[i]`` loads, else its :class:`DataError` message (nothing else is sent back)."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> str:
        try:
            self.dataset[i]
        except Exception as exc:  # noqa: BLE001 - only DataErrors are turned into messages
            err = _find_data_error(exc)
            if err is None:
                raise
            return str(err)
        return ""


def check_all(dataset, workers: int, desc: str, progress: bool, indices=None) -> None:
    """Load (and so preprocess and cache) every item of ``dataset`` — or of ``indices`` — before training,
    with ``workers`` loader processes; raise one :class:`DataError` naming the bad file(s), never a worker
    traceback."""
    from tqdm import tqdm

    subset = _ErrorOf(dataset) if indices is None else torch.utils.data.Subset(_ErrorOf(dataset), list(indices))
    loader = torch.utils.data.DataLoader(subset, batch_size=None, num_workers=workers)
    errors = [e for e in tqdm(loader, total=len(subset), desc=desc, disable=not progress, leave=False) if e]
    if errors:
        more = f" (and {len(errors) - 1} more bad file(s))" if len(errors) > 1 else ""
        raise DataError(errors[0] + more)
