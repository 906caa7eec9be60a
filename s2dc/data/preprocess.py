"""Checked loading and the one deterministic preprocessing chain of every stage.

Pipeline (deterministic, so its output can be cached on disk)::

    load + check -> intensity fits the preset? -> Orientationd -> [Spacingd] -> [CropForegroundd]
    -> intensity (CT window or z-score) -> PadRecordingExtentd [-> label cast]

(``zscore_volume``: the statistics of the whole volume are recorded before the crop, applied after the pad.)

Images come out as ``float32`` tensors of shape ``(C, X, Y, Z)`` (C channels: one per listed path)
whose spatial size is at least ``min_size`` (smaller volumes are zero-padded, not rejected; ``extent`` records
where the volume's own voxels lie, which is what a prediction is scored on: :func:`own_voxels`); with
``num_classes`` a ``label`` follows the image through every spatial step. The intensity settings
come from a modality preset of the registry (:meth:`PreprocessConfig.from_preset`), and a preset
that plainly does not fit the data (a HU window on volumes that are not HU) is reported as a
:class:`DataError`, not applied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    CastToTyped,
    Compose,
    CropForegroundd,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)

from .errors import DataError
from .grids import check_on_grid
from .nifti import affine_mm, load_nifti
from .preprocess_config import PreprocessConfig

# --------------------------------------------------------------------------- checked loading


class LoadVolumed(MapTransform):
    """Load NIfTI images with nibabel and check them (and, given ``cfg``, that its intensity window fits them).

    For each key, replaces ``data[key]`` -- one path, or a list of paths (one per channel, all on one
    grid) -- with a :class:`monai.data.MetaTensor` of shape ``(C, X, Y, Z)`` (float32) carrying the first
    file's affine, so that ``Orientationd`` / ``Spacingd`` work on it.

    Raises
    ------
    DataError
        * the file cannot be read (missing, not NIfTI, truncated / corrupt gzip or data);
        * the image is not 3-D (a 4-D image with a trailing singleton axis is squeezed first);
        * no sform and a zero or negative voxel size in pixdim (:func:`.nifti.affine_mm`, which also gives every
          affine in mm: a header in metres or microns is scaled);
        * an axis has fewer than 2 voxels, values are NaN/inf, or there is no foreground
          (all voxels equal); channels on differing voxel grids (:func:`.grids.check_on_grid`; a header's
          rounding warns);
        * ``cfg``'s window plainly does not fit (:meth:`PreprocessConfig.check_fits`).
    """

    def __init__(self, keys: KeysCollection = "image", cfg: PreprocessConfig | None = None) -> None:
        super().__init__(keys)
        self.cfg = cfg

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.load(d[key], self.cfg)
        return d

    @staticmethod
    def load(path: str | Path | list, cfg: PreprocessConfig | None = None) -> MetaTensor:
        """Load and check one image (a path or a list of channel paths); returns a ``(C, X, Y, Z)`` MetaTensor."""
        paths = [Path(p) for p in path] if isinstance(path, (list, tuple)) else [Path(path)]
        arrays, affine = [], None
        for p in paths:
            array, aff = read_volume(p)
            if arrays:
                check_on_grid(p, array.shape, aff, "channel", paths[0], arrays[0].shape, affine, "channel")
            if cfg is not None:
                cfg.check_fits(array, p)
            arrays.append(array)
            affine = aff if affine is None else affine
        meta = {"filename_or_obj": str(paths[0]), "space": "RAS", "original_channel_dim": "no_channel"}
        tensor = torch.from_numpy(np.ascontiguousarray(np.stack(arrays)))  # (C, X, Y, Z)
        return MetaTensor(tensor, affine=torch.as_tensor(affine), meta=meta)


def read_volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(array (X, Y, Z) float32, affine (4, 4))`` of a checked 3-D NIfTI file (see :class:`LoadVolumed`)."""
    try:
        img = load_nifti(path)
        shape = tuple(int(s) for s in img.shape)
        while len(shape) > 3 and shape[-1] == 1:  # (X, Y, Z, 1) -> (X, Y, Z)
            shape = shape[:-1]
        if len(shape) != 3:
            raise DataError(f"'{path}' has shape {tuple(int(s) for s in img.shape)}; expected a 3-D volume")
        affine = affine_mm(path, img)
        array = np.asarray(img.get_fdata(dtype=np.float32)).reshape(shape)
    except DataError:
        raise
    except Exception as exc:  # nibabel, gzip, zlib, EOFError, OSError, ... anywhere in header or data
        raise DataError(
            f"could not read '{path}': {type(exc).__name__}: {exc}; "
            "expected a readable NIfTI volume (.nii or .nii.gz)"
        ) from exc
    if min(shape) < 2:
        raise DataError(f"'{path}' has shape {shape}; expected a 3-D volume with at least 2 voxels along every axis")
    if not np.isfinite(array).all():
        if np.isfinite(np.asarray(img.dataobj, dtype=np.float64)).all():
            raise DataError(f"'{path}' holds values beyond float32's range (|x| > 3.4e38), which the network reads; "
                            "expected intensities of that range")
        raise DataError(f"'{path}' contains NaN or infinite values; expected finite intensities")
    if not array.max() > array.min():
        raise DataError(f"'{path}' has no foreground (all voxels equal {float(array.min())}); expected a non-constant volume")
    return array, affine


class LoadOnImageGridd(MapTransform):
    """Load ``data[key]`` (one NIfTI path, a role read voxel by voxel against the image: a reconstruction target) as
    :func:`read_volume` checks it, on the grid of the already loaded ``data["image"]`` (:func:`.grids.check_on_grid`);
    it comes out a float32 ``(1, X, Y, Z)`` MetaTensor carrying the *image's* affine, so that every spatial
    transform treats both alike."""

    def __init__(self, key: str, role: str) -> None:
        super().__init__(key)
        self.key, self.role = key, role

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        image, path = d["image"], Path(d[self.key])
        array, affine = read_volume(path)
        image_path = Path(image.meta["filename_or_obj"])
        check_on_grid(path, array.shape, affine, self.role, image_path, image.shape[1:], image.affine.numpy(), "its image")
        meta = {"filename_or_obj": str(path), "space": "RAS", "original_channel_dim": "no_channel"}
        d[self.key] = MetaTensor(torch.from_numpy(np.ascontiguousarray(array))[None], affine=image.affine.clone(), meta=meta)
        return d


class LoadLabeld(MapTransform):
    """Load ``data["label"]`` and check it against the already loaded ``data["image"]``.

    The label comes out as a float32 ``(1, X, Y, Z)`` MetaTensor carrying the *image's* affine, so that
    every spatial transform treats both alike (an affine differing by a header's rounding only warns). Raises
    :class:`DataError` naming the label and its image when the label cannot be read, is not 3-D, has
    another shape or grid than the image (:func:`.grids.check_on_grid`), or holds values other than the integers ``0 .. data["num_classes"]-1`` (or, where
    the item has them, ``data["label_values"]``: a dataset.json's ``labels`` that skip a value, as BraTS's {0, 1, 2, 4}).
    """

    def __init__(self) -> None:
        super().__init__("label")

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        image = d["image"]
        d["label"] = self.load_label(Path(d["label"]), Path(image.meta["filename_or_obj"]), image, int(d["num_classes"]),
                                     d.get("label_values"))
        return d

    @staticmethod
    def load_label(path: Path, image_path: Path, image: MetaTensor, num_classes: int, values=None) -> MetaTensor:
        try:
            img = load_nifti(path)
            shape = tuple(int(s) for s in img.shape)
            while len(shape) > 3 and shape[-1] == 1:
                shape = shape[:-1]
            affine = affine_mm(path, img)
            array = np.asarray(img.get_fdata(dtype=np.float32)).reshape(shape)
        except DataError:
            raise
        except Exception as exc:  # nibabel, gzip, zlib, EOFError, OSError, ...
            raise DataError(f"could not read label '{path}' of image '{image_path}': {type(exc).__name__}: {exc}; "
                            "expected a readable NIfTI volume (.nii or .nii.gz)") from exc
        image_affine = image.affine.numpy()
        check_on_grid(path, shape, affine, "label", image_path, image.shape[1:], image_affine, "its image")
        allowed = np.arange(num_classes) if values is None else np.asarray(sorted(values))
        if not np.isin(array, allowed).all():
            finite = array[np.isfinite(array)]
            bad = np.unique(finite[~np.isin(finite, allowed)])
            shown = [int(v) if v == round(v) else float(v) for v in bad[:10]] + (["..."] if len(bad) > 10 else [])
            nonfinite = int(array.size - finite.size)
            expected = f"0..{num_classes - 1}" if values is None else str(allowed.tolist())
            raise DataError(f"label '{path}' of image '{image_path}' must hold the integers {expected} "
                            f"its dataset json names; it holds {len(bad)} other value(s): {shown}"
                            + (f" and {nonfinite} NaN/Inf voxel(s)" if nonfinite else ""))
        meta = {"filename_or_obj": str(path), "space": "RAS", "original_channel_dim": "no_channel"}
        return MetaTensor(torch.from_numpy(np.ascontiguousarray(array))[None], affine=torch.as_tensor(image_affine), meta=meta)


# --------------------------------------------------------------------------- preprocessing


class RecordVolumeStatsd(MapTransform):
    """Record the mean and standard deviation (population, float64) of every voxel of each channel of
    ``d["image"]`` ``(C, X, Y, Z)``, before it is cropped: ``d[VOLUME_STATS]`` = ``(2, C)``."""

    def __init__(self) -> None:
        super().__init__("image")

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        image = torch.as_tensor(data["image"]).double().flatten(1)
        return {**data, VOLUME_STATS: torch.stack([image.mean(1), image.std(1, correction=0)])}


class ApplyVolumeZScored(MapTransform):
    """``d["image"]`` ``(C, X, Y, Z)`` minus each channel's mean over the whole volume, divided by its standard
    deviation, as :class:`RecordVolumeStatsd` recorded them (the release's BraTS 2023 ``NormalizeIntensityd`` of each
    whole sequence); the record is removed."""

    def __init__(self) -> None:
        super().__init__("image")

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        mean, std = d.pop(VOLUME_STATS).reshape(2, -1, 1, 1, 1)
        d["image"] = ((d["image"] - mean) / std).float()  # std > 0: loading refuses a constant volume
        return d


#: The key under which :class:`RecordVolumeStatsd` keeps the statistics for :class:`ApplyVolumeZScored`.
VOLUME_STATS = "image_volume_stats"


#: The key under which :class:`PadRecordingExtentd` keeps where a volume's own voxels lie in the padded one.
EXTENT = "extent"


class PadRecordingExtentd(MapTransform):
    """Zero-pad ``keys`` ``(C, X, Y, Z)`` to at least ``spatial_size`` (MONAI ``SpatialPadd``, ``method`` symmetric or
    end; an axis already large enough is left as it is) and keep where the volume's own voxels lie in the padded one:
    ``d[EXTENT]`` = ``(2, 3)`` int64, the first index and one past the last along X, Y, Z (:func:`own_voxels`). The
    padding is no part of the image: a prediction is scored on the extent alone."""

    def __init__(self, keys: KeysCollection, spatial_size: tuple[int, int, int], method: str = "symmetric") -> None:
        super().__init__(keys)
        self.pad = SpatialPadd(keys, spatial_size=spatial_size, method=method, mode="constant", value=0)

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        shape = tuple(data[self.keys[0]].shape[1:])
        before = torch.tensor([b for b, _ in self.pad.padder.compute_pad_width(shape)[1:]])  # MONAI's own widths
        return {**self.pad(data), EXTENT: torch.stack([before, before + torch.tensor(shape)])}


def own_voxels(x: torch.Tensor, extent: torch.Tensor) -> torch.Tensor:
    """``x`` ``(..., X, Y, Z)``, padded as :class:`PadRecordingExtentd` recorded in ``extent`` ``(2, 3)``, cut back to
    the volume's own voxels ``(..., X', Y', Z')`` (a view; the whole of ``x`` where nothing was padded)."""
    (x0, y0, z0), (x1, y1, z1) = torch.as_tensor(extent).tolist()
    return x[..., x0:x1, y0:y1, z0:z1]


def _above_min(x: torch.Tensor) -> torch.Tensor:
    """Foreground mask for cropping: voxels above the volume minimum (module level: picklable)."""
    return x > x.min()


def check_min_size(min_size: Any) -> tuple[int, int, int]:
    ok = isinstance(min_size, (list, tuple)) and len(min_size) == 3 and all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in min_size
    )
    if not ok:
        raise ValueError(f"min_size must be 3 positive integers, got {min_size!r}")
    return tuple(int(s) for s in min_size)  # type: ignore[return-value]


def preprocess_transforms(cfg: PreprocessConfig, min_size: tuple[int, int, int], num_classes: int | None = None) -> Compose:
    """The deterministic MONAI dict transforms of every stage.

    Parameters
    ----------
    cfg : PreprocessConfig
    min_size : tuple of 3 int
        Minimum spatial size (normally the training ROI). Smaller volumes are **padded**
        (constant 0, i.e. background after intensity scaling; with ``zscore_volume`` before it, 0 being
        the zero-background volume's background then) rather than rejected, so small scans still
        contribute; axes already large enough are left unchanged.
    num_classes : int or None
        Given: the items also carry a ``"label"`` path (and ``"num_classes"``), checked against the
        image and carried through every spatial step (nearest neighbour), cast to integers at the end.

    Returns
    -------
    monai.transforms.Compose
        Maps ``{"image": path(s)[, "label": path]}`` to ``{"image": MetaTensor (C, X, Y, Z) float32
        [, "label": (1, X, Y, Z) integers], "extent": (2, 3) int64}`` with ``X, Y, Z >= min_size``; ``extent``: where
        the volume's own voxels lie (:class:`PadRecordingExtentd`).

    Notes
    -----
    Foreground cropping runs *before* intensity scaling with ``x > x.min()``, which works for
    both CT (air / outside-FOV value is the minimum) and zero-background MRI / PET.
    """
    min_size = check_min_size(min_size)
    labelled = num_classes is not None
    keys = ["image", "label"] if labelled else ["image"]
    transforms: list = [LoadVolumed("image", cfg), *([LoadLabeld()] if labelled else []),
                        Orientationd(keys, axcodes=cfg.orientation, labels=None)]
    if cfg.spacing is not None:
        transforms.append(Spacingd(keys, pixdim=cfg.spacing, mode=("bilinear", "nearest")[:len(keys)]))
    if cfg.intensity == "zscore_volume":  # the statistics of the whole volume, applied once cropped and padded
        transforms.append(RecordVolumeStatsd())
    if cfg.crop_foreground:
        transforms.append(
            CropForegroundd(keys, source_key="image", select_fn=_above_min, start_coord_key=None, end_coord_key=None)
        )
    pad = PadRecordingExtentd(keys, min_size)
    if cfg.intensity == "ct":
        transforms += [ScaleIntensityRanged("image", a_min=cfg.a_min, a_max=cfg.a_max, b_min=0.0, b_max=1.0, clip=True),
                       pad]
    elif cfg.intensity == "zscore":
        transforms += [NormalizeIntensityd("image", nonzero=True, channel_wise=True), pad]
    else:  # padded with the raw background (0) first, which the z-score then maps as the rest of the background
        transforms += [pad, ApplyVolumeZScored()]
    if labelled:
        transforms.append(CastToTyped("label", dtype=torch.uint8 if num_classes <= 256 else torch.int16))
    return Compose(transforms)
