"""One rule for "on the same voxel grid", for every pair of volumes that are read voxel by voxel together: a label
and its image, a reconstruction target and its image, the channels (sequences) of one image.

Two volumes share a grid when their shapes agree and their affines put every voxel in the same place, up to a
header's rounding: voxel sizes within 1 %, axes within ~0.06°, origins within half the smallest voxel. Such
rounding (two programs writing one scan) warns; anything more is another part of the body and is refused.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import DataError
from .nifti import check_affine


def other_grid(a: np.ndarray, b: np.ndarray) -> bool:
    """Do the 4x4 affines ``a`` and ``b`` put voxels elsewhere: voxel sizes differing by over 1 %, axes turned by
    over ~0.06°, or origins over half the smallest voxel apart (less is a header's rounding)?"""
    size_a, size_b = np.linalg.norm(a[:3, :3], axis=0), np.linalg.norm(b[:3, :3], axis=0)
    turned = np.abs(a[:3, :3] / size_a - b[:3, :3] / size_b).max() > 1e-3
    moved = np.linalg.norm(a[:3, 3] - b[:3, 3]) > 0.5 * min(size_a.min(), size_b.min())
    return bool(turned or moved or (np.abs(size_a - size_b) > 0.01 * size_b).any())


def describe_grid(affine: np.ndarray) -> str:
    """``"voxel sizes [x, y, z] mm, origin [x, y, z] mm, axes RAS"`` of a 4x4 affine, for messages (the axes tell
    an LPS header from a RAS one of the same sizes and origin)."""
    import nibabel as nib

    sizes = [round(float(v), 3) for v in np.linalg.norm(affine[:3, :3], axis=0)]
    axes = "".join(nib.aff2axcodes(affine))
    return f"voxel sizes {sizes} mm, origin {[round(float(v), 2) for v in affine[:3, 3]]} mm, axes {axes}"


def check_on_grid(path: Path, shape: Sequence[int], affine: np.ndarray, role: str,
                  ref_path: Path, ref_shape: Sequence[int], ref_affine: np.ndarray, ref_role: str) -> None:
    """Raise :class:`DataError` naming both files unless the volume at ``path`` (the case's ``role``: "label",
    "target", "channel") lies on the voxel grid of the one at ``ref_path`` (its ``ref_role``: "its image",
    "channel"); warn when their affines differ by a header's rounding only (the caller then uses the reference's).
    An affine that is not finite or has an axis of no length is refused first (it compares equal to nothing)."""
    check_affine(path, np.asarray(affine, np.float64))
    check_affine(ref_path, np.asarray(ref_affine, np.float64))
    shape, ref_shape = tuple(int(s) for s in shape), tuple(int(s) for s in ref_shape)
    if shape != ref_shape:
        raise DataError(f"{role} '{path}' has shape {shape}, {ref_role} '{ref_path}' {ref_shape}; a {role} must lie "
                        f"on the voxel grid of {ref_role}")
    affine, ref_affine = np.asarray(affine, np.float64), np.asarray(ref_affine, np.float64)
    if np.allclose(affine, ref_affine, atol=1e-3):
        return
    if other_grid(affine, ref_affine):
        raise DataError(f"{role} '{path}' lies on another voxel grid than {ref_role} '{ref_path}': "
                        f"{describe_grid(affine)} against {describe_grid(ref_affine)}; a {role} must lie on the voxel "
                        f"grid of {ref_role} (resample it onto that grid)")
    warnings.warn(f"{role} '{path}' has another affine than {ref_role} '{ref_path}' (by a header's rounding: "
                  f"{describe_grid(affine)} against {describe_grid(ref_affine)}); using that of {ref_role}")
