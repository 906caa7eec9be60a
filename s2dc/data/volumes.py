"""Preprocessed datasets, cached on disk: what every stage iterates over.

:class:`CachedVolumes` (image-only, pretraining) and :class:`LabelledCases` (image + label) run the
one chain of :mod:`s2dc.data.preprocess` and keep its output in an atomic on-disk cache keyed by the
preprocessing settings and by the code that computes them (:func:`transform_code`). Bad input data raises :class:`DataError` naming the offending file, also when
the error happens inside MONAI transforms, a :class:`monai.data.PersistentDataset` or a DataLoader
worker; :func:`check_all` loads everything once before training.
"""

from __future__ import annotations

import contextlib
import warnings
from copy import deepcopy
from pathlib import Path
from typing import Any

import torch
from monai.data import Dataset, MetaTensor, PersistentDataset
from monai.utils import convert_to_tensor

from ..files import check_folder_path, file_stamp, remove_abandoned, rename_durably, work_sibling
from ..fingerprint import code_fingerprint, digest, libraries
from .errors import DataError
from .preprocess import PreprocessConfig, check_min_size, preprocess_transforms

__all__ = ["CachedVolumes", "DataError", "LabelledCases", "check_all"]

#: The modules every cached transform's code is counted with (:func:`transform_code`): the preprocessing chain and
#: the cache itself.
PREPROCESSING_MODULES = ("s2dc.data.preprocess", "s2dc.data.volumes")


def _each_transform(transform):
    """``transform`` and, for a Compose, every transform it runs (nested)."""
    yield transform
    for inner in getattr(transform, "transforms", ()) or ():
        yield from _each_transform(inner)


def make_cache_dir(folder: Path) -> Path:
    """Make the preprocessing cache ``folder``; ValueError naming it and the option (``data.cache_dir``) where it
    cannot be made (a read-only place: a bare PermissionError named neither)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"preprocessing cache folder '{folder}' cannot be made ({err.strerror or err}); give "
                         "data.cache_dir a folder this user can write") from None
    return folder


def transform_code(transform, built_by: str | None = None) -> str:
    """12 hex of the code ``transform`` runs: the s2dc modules of :data:`PREPROCESSING_MODULES`, of its transforms'
    classes (a Compose's, nested) and ``built_by`` (the module that set the parameters of a library transform in it),
    with what they import (:func:`s2dc.fingerprint.code_fingerprint`), and the torch and MONAI versions. Part of each
    cache folder's name: entries written by other preprocessing code, or another MONAI, are never read."""
    modules = {*PREPROCESSING_MODULES, *([built_by] if built_by else [])}
    modules |= {type(t).__module__ for t in _each_transform(transform) if type(t).__module__.startswith("s2dc.")}
    return digest([code_fingerprint(*sorted(modules)), libraries()])[:12]


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
    Here the temp file lives in ``cache_dir`` itself and is renamed in durably
    (:func:`s2dc.files.rename_durably`), and any cache file that fails to load is deleted and recomputed.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.cache_dir is not None:
            remove_abandoned(self.cache_dir)  # what a killed process was writing

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
        tmp = work_sibling(hashfile, "tmp")
        try:
            obj = convert_to_tensor(out, convert_numeric=False, track_meta=self.track_meta)
            torch.save(obj, tmp, pickle_protocol=self.pickle_protocol)
            rename_durably(tmp, hashfile)  # atomic; concurrent writers (DDP ranks) write identical content
        except (OSError, RuntimeError) as exc:  # read-only, full disk, folder gone (torch.save raises RuntimeError)
            warnings.warn(f"could not write cache file '{hashfile}': {type(exc).__name__}: {exc}")
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
        Cache root; files go to ``cache_root / <cfg.cache_key()>-<transform_code>``, so any change of the
        preprocessing options, code or libraries uses a fresh cache directory. Each cache entry is keyed by the path, ``min_size`` and the file's
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
        self.min_size = check_min_size(min_size)
        transform = preprocess_transforms(cfg, self.min_size)
        items = [self._item(p) for p in self.paths]
        if cache_root is None:
            self.cache_dir = None
            self._ds: Dataset = Dataset(items, transform=transform)
        else:
            check_folder_path(Path(cache_root), "preprocessing cache folder")
            self.cache_dir = make_cache_dir(Path(cache_root) / f"{cfg.cache_key()}-{transform_code(transform)}")
            self._ds = _AtomicPersistentDataset(items, transform=transform, cache_dir=self.cache_dir)

    def _item(self, path: Path) -> dict[str, Any]:
        item: dict[str, Any] = {"image": str(path), "min_size": list(self.min_size)}
        try:  # part of the cache hash: a rewritten file gets a new cache entry
            item.update(file_stamp(path))
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



def plain(x) -> torch.Tensor:
    """A batch value as a plain tensor (MetaTensor's metadata dropped)."""
    return x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)


class _Checked(torch.utils.data.Dataset):
    """Index into a MONAI dataset, re-raising a :class:`DataError` unwrapped from MONAI's transform errors."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        try:
            return self.dataset[i]
        except Exception as exc:
            err = _find_data_error(exc)
            if err is None:
                raise
        raise err


class TransformedCases(_Checked):
    """Cases (dicts of roles: paths, lists of channel paths, class indices) run through ``transform``, cached on
    disk under ``cache_root/<cache_name>-<transform_code>`` (``cache_root`` None: no cache; ``built_by``: the module
    that built ``transform``, :func:`transform_code`).

    Each cache entry is keyed by the case's values plus the size and mtime of each of its files, so replaced
    files are recomputed; ``cache_name`` must change with any option that changes the output (the code does by
    itself).
    """

    def __init__(self, cases: list[dict[str, Any]], transform, cache_root: str | Path | None, cache_name: str,
                 extra: dict[str, Any] | None = None, built_by: str | None = None) -> None:
        items = [self._item(c, extra or {}) for c in cases]
        if cache_root is None:
            self.cache_dir = None
            dataset = Dataset(items, transform=transform)
        else:
            check_folder_path(Path(cache_root), "preprocessing cache folder")
            self.cache_dir = make_cache_dir(Path(cache_root) / f"{cache_name}-{transform_code(transform, built_by)}")
            dataset = _AtomicPersistentDataset(items, transform=transform, cache_dir=self.cache_dir)
        super().__init__(dataset)

    @staticmethod
    def _item(case: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        item: dict[str, Any] = {}
        for role, value in case.items():
            if role == "id":
                continue
            paths = value if isinstance(value, list) else [value]
            if not all(isinstance(v, Path) for v in paths):
                item[role] = value
                continue
            item[role] = [str(p) for p in paths] if isinstance(value, list) else str(value)
            for c, path in enumerate(paths):
                suffix = f"{role}{c}" if c else role
                with contextlib.suppress(OSError):  # a vanished file is reported by the loader
                    # "stamp_" first: MONAI's spatial transforms take any "<role>_..." key for that role's metadata
                    item.update({f"stamp_{suffix}_{k}": v for k, v in file_stamp(path).items()})
        item.update(extra)
        return item


class LabelledCases(TransformedCases):
    """Preprocessed ``{"image", "label"}`` cases, cached on disk under ``cache_root/seg<v>-<hash>``.

    Each cache entry is keyed by both paths, their sizes and mtimes, ``min_size`` and the class count,
    so replaced files, another ROI or another class list are recomputed. ``values``: the label values allowed where
    they are not all of ``0..num_classes-1`` (a dataset.json's ``labels`` {0, 1, 2, 4}).
    """

    def __init__(self, cases: list[dict[str, Any]], cfg: PreprocessConfig, min_size, num_classes: int,
                 cache_root: str | Path | None, values: list[int] | None = None) -> None:
        pairs = [{"image": c["image"], "label": c["label"]} for c in cases]
        extra = {"min_size": [int(s) for s in min_size], "num_classes": int(num_classes)}
        if values is not None:
            extra["label_values"] = sorted(int(v) for v in values)
        super().__init__(pairs, preprocess_transforms(cfg, tuple(min_size), num_classes), cache_root,
                         f"seg-{cfg.cache_key()}", extra)
