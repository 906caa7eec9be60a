"""The views' geometry and augmentation ranges (:class:`ViewConfig`): plain values, checked, with no torch import
(the workflow validates them at start); :mod:`.views` draws the views from them."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import MAX_AXIS

Shape3 = tuple[int, int, int]


@dataclass(frozen=True)
class ViewConfig:
    """Geometry and augmentation ranges of the three views (release values by default).

    Attributes
    ----------
    roi_size : (X, Y, Z) of the large ROI; X and Y split into ``grid`` crops each.
    grid : P, crops per in-plane axis (P × P sub-crops of size (X/P, Y/P, Z)).
    token_stride : voxels per token along each axis (encoder stride at the matching stage).
    rotation_deg : patch branch, rotation about the depth axis ~ U(±rotation_deg).
    scale_range : patch branch, isotropic scale ~ U(scale_range).
    translation_frac : patch branch, in-plane shift ~ U(±translation_frac · crop size).
    crop_rotation_deg : global branch, rotation about each axis ~ U(±crop_rotation_deg).
    crop_scale_jitter : global branch, per-axis scale ~ 1 + U(±crop_scale_jitter)
        (the release passes (0.95, 1.05) to MONAI's ``scale_range``, i.e. 1 ± ~1; ±5 % is intended).
    crop_translation_frac : global branch, in-plane shift ~ U(±frac · crop size).
    intensity_shift : global branch, additive intensity offset ~ U(±intensity_shift) per crop.
    """

    roi_size: Shape3 = (384, 384, 96)
    grid: int = 4
    token_stride: int = 32
    rotation_deg: float = 30.0
    scale_range: tuple[float, float] = (0.9, 1.2)
    translation_frac: float = 0.25
    crop_rotation_deg: float = 20.0
    crop_scale_jitter: float = 0.05
    crop_translation_frac: float = 0.25
    intensity_shift: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "roi_size", tuple(int(s) for s in self.roi_size))
        object.__setattr__(self, "scale_range", tuple(float(s) for s in self.scale_range))
        if len(self.roi_size) != 3 or len(self.scale_range) != 2:
            raise ValueError(f"views.roi_size needs 3 values and views.scale_range 2, got {self.roi_size}, {self.scale_range}")
        if min(self.roi_size) < 1:
            raise ValueError(f"views.roi_size must be 3 sizes >= 1 (voxels), got {self.roi_size}")
        if max(self.roi_size) > MAX_AXIS:
            raise ValueError(f"views.roi_size must be at most {MAX_AXIS} voxels along each axis, got {self.roi_size}")
        if self.token_stride < 1:
            raise ValueError(f"views.token_stride must be >= 1, got {self.token_stride}")
        x, y, _ = self.roi_size
        if self.grid < 1 or x % self.grid or y % self.grid:
            raise ValueError(f"views.roi_size {self.roi_size} must have X and Y divisible by views.grid={self.grid}")
        for size, name in zip(self.crop_size, "XYZ"):
            if size % self.token_stride:
                raise ValueError(
                    f"crop size {self.crop_size} (views.roi_size / views.grid) along {name} is not a multiple "
                    f"of views.token_stride={self.token_stride}"
                )
        lo, hi = self.scale_range
        if not 0 < lo <= hi < math.inf:
            raise ValueError(f"views.scale_range must satisfy 0 < low <= high, got {self.scale_range}")
        if not 0 <= self.crop_scale_jitter < 1:
            raise ValueError(f"views.crop_scale_jitter must be in [0, 1), got {self.crop_scale_jitter}")
        for name, top in (("rotation_deg", 180), ("crop_rotation_deg", 180), ("translation_frac", 1),
                          ("crop_translation_frac", 1), ("intensity_shift", math.inf)):
            value = getattr(self, name)
            if not 0 <= value <= top or math.isinf(value):  # NaN fails the comparison
                raise ValueError(f"views.{name} must be a finite number in [0, {top}], got {value!r}")

    @property
    def crop_size(self) -> Shape3:
        x, y, z = self.roi_size
        return (x // self.grid, y // self.grid, z)

    @property
    def token_grid(self) -> Shape3:
        """(X_t, Y_t, Z_t) tokens over the whole ROI."""
        return tuple(s // self.token_stride for s in self.roi_size)

    @property
    def num_tokens(self) -> int:
        return math.prod(self.token_grid)
