"""The ``preprocess`` options (:class:`PreprocessConfig`): plain values, checked, with no torch or MONAI import, so
that the workflow validates parameters quickly; :mod:`.preprocess` applies them."""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError
from .registry import PRESETS


#: The intensity normalisations ``preprocess.intensity`` names (see :class:`PreprocessConfig`).
INTENSITIES = ("ct", "zscore", "zscore_volume")


#: HU at or below which a voxel is fat, lung or air (water is 0, soft tissue above), and the share of such voxels below
#: which a volume is not CT in HU: a CT holds them, cropped to the body (its fat) or clipped to a window (its floor);
#: an MR or PET volume holds at most the odd negative voxel that resampling leaves.
BELOW_WATER_HU, BELOW_WATER_SHARE = -50.0, 0.001

#: HU at or below which a voxel is air or lung (-1000 and about -800): a volume with :data:`BELOW_WATER_SHARE` of its
#: voxels there is plainly CT in HU (no MR, PET or z-scored volume reaches it).
AIR_HU = -500.0


@dataclass(frozen=True)
class PreprocessConfig:
    """Deterministic preprocessing parameters (the ``preprocess`` section of the config).

    Attributes
    ----------
    intensity : {"ct", "zscore", "zscore_volume"}
        ``"ct"``: window ``[a_min, a_max]`` (HU) linearly mapped to ``[0, 1]`` and clipped.
        ``"zscore"``: per-channel z-score over the nonzero voxels (MRI / PET); zeros stay 0.
        ``"zscore_volume"``: per-channel z-score over every voxel of the (cropped and padded) volume, the
        background's too (the release's BraTS 2023, ``NormalizeIntensityd`` over each whole sequence): the
        background is no longer 0, so nothing downstream may read the non-zero voxels as the body or brain.
    a_min, a_max : float
        CT window, ``a_min < a_max`` (with a z-score, only their defaults: no window applies).
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
        if self.intensity not in INTENSITIES:
            raise ValueError(f"preprocess.intensity must be one of {', '.join(map(repr, INTENSITIES))}, got "
                             f"{self.intensity!r}")
        for name in ("a_min", "a_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"preprocess.{name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))  # -1000 and -1000.0 give the same cache key
        if not self.a_min < self.a_max:
            raise ValueError(f"preprocess.a_min must be < preprocess.a_max, got a_min={self.a_min}, a_max={self.a_max}")
        window = {name: getattr(self, name) for name in ("a_min", "a_max")
                  if getattr(self, name) != self.__dataclass_fields__[name].default}
        if self.intensity != "ct" and window:  # no window applies: ignored, yet it named another cache and run
            name = next(iter(window))
            raise ValueError(f"preprocess.{name} ({window[name]:g}) sets a CT window, but preprocess.intensity is "
                             f"{self.intensity!r}, which has none: leave preprocess.a_min and a_max out, or give "
                             "preprocess.intensity ct")
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

    @classmethod
    def from_preset(cls, name: str, **geometry: Any) -> "PreprocessConfig":
        """The intensity settings of registry preset ``name`` (``s2dc datasets`` lists them) with ``geometry``
        (``spacing``, ``orientation``, ``crop_foreground``). A ``scale`` preset (8-bit / 255) is the window
        ``[0, a_max]``."""
        if name not in PRESETS:
            raise ValueError(f"unknown intensity preset {name!r}; presets: {sorted(PRESETS)}")
        preset = PRESETS[name]
        if preset.kind == "zscore":
            return cls(intensity="zscore", **geometry)
        a_min = 0.0 if preset.kind == "scale" else preset.a_min
        return cls(intensity="ct", a_min=a_min, a_max=preset.a_max, **geometry)

    def intensity_fields(self) -> dict[str, Any]:
        """The intensity options that define this normalisation, as ``preprocess.*`` fields: ``intensity``, and
        the window ``a_min`` / ``a_max`` unless z-scoring (what the workflow passes for a registry preset)."""
        if self.intensity != "ct":
            return {"intensity": self.intensity}
        return {"intensity": self.intensity, "a_min": self.a_min, "a_max": self.a_max}

    def check_fits(self, array: np.ndarray, path: Path) -> None:
        """Raise :class:`DataError` when the window plainly does not fit the volume's intensities.

        A window reaching below 0 (a HU window) needs a volume with a share of fat, lung or air (at most
        :data:`BELOW_WATER_HU` or the window's floor, on at least :data:`BELOW_WATER_SHARE` of its voxels): a volume
        without is not HU (MR, PET, 8-bit or raw-stored CT; one negative voxel left by resampling does not make it CT). A window from 0 up (8-bit images)
        needs no negative value. Any window needs some voxel inside it (else all is clipped to a constant).
        z-scoring (over the non-zero voxels) needs two values among them: one value would become all 0 (over the
        whole volume, two values anywhere, which loading checks of every volume); and a volume that is not plainly CT
        in HU (air, at most :data:`AIR_HU`, on :data:`BELOW_WATER_SHARE` of its voxels), whose non-zero voxels would
        take the air for the body and water (0 HU) for the background.
        """
        if self.intensity == "zscore_volume":
            return
        lo, hi = float(array.min()), float(array.max())
        if self.intensity != "ct":
            inside = array[array != 0]
            if inside.size and inside.min() == inside.max():
                raise DataError(f"'{path}' has one value ({float(inside[0]):g}) on every non-zero voxel: z-scoring "
                                "over them would make it all 0 (nothing for the network to see)")
            air = float(np.count_nonzero(array <= AIR_HU)) / array.size
            if air >= BELOW_WATER_SHARE:
                raise DataError(f"'{path}' has intensities in [{lo:g}, {hi:g}], {air:.2%} of its voxels at or below "
                                f"{AIR_HU:g} HU (air, lung): it is CT in HU, but preprocess.intensity zscore normalises "
                                "over the non-zero voxels, taking the air for the body and water (0 HU) for the "
                                "background; choose the dataset's preset (`s2dc datasets NAME` shows it), "
                                "preprocess.intensity ct with a HU window, or zscore_volume (over every voxel)")
            return
        window = f"the window [{self.a_min:g}, {self.a_max:g}]"
        fix = ("; choose the dataset's preset (`s2dc datasets NAME` shows it) or preprocess.intensity: zscore "
               "for data that is not in the window's units")
        floor = max(BELOW_WATER_HU, self.a_min)  # a CT clipped to the window: its floor counts
        share = float(np.count_nonzero(array <= floor)) / array.size
        if self.a_min < 0 and share < BELOW_WATER_SHARE:
            raise DataError(f"'{path}' has intensities in [{lo:g}, {hi:g}], {share:.2%} of its voxels at or below "
                            f"{floor:g} (fat, lung, air; a CT holds at least {BELOW_WATER_SHARE:.1%}): it is not CT in "
                            f"HU, but {window} is a HU window" + fix)
        if self.a_min >= 0 > lo:
            raise DataError(f"'{path}' has intensities in [{lo:g}, {hi:g}], with negative values, but {window} "
                            f"expects non-negative intensities (e.g. 8-bit images)" + fix)
        if hi < self.a_min or lo > self.a_max:
            raise DataError(f"'{path}' has intensities in [{lo:g}, {hi:g}], all outside {window}: it would "
                            "become a constant image" + fix)

    def cache_key(self) -> str:
        """Short stable hash (12 hex chars) of all fields (the code that applies them names the cache folders too:
        :func:`s2dc.data.volumes.transform_code`)."""
        payload = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha1(payload.encode("utf-8")).hexdigest()[:12]
