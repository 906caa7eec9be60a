"""Reading a NIfTI file whole and checked: the gzip stream to its end, the affine finite and non-degenerate
(nibabel and numpy only: the converters use it without torch or MONAI)."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

from .errors import DataError


def load_nifti(path: Path) -> nib.Nifti1Image | nib.Nifti2Image:
    """A NIfTI image, a ``.gz`` one decompressed whole first: nibabel alone reads a gzip stream only as far as the
    voxels go, so the trailer's CRC-32 and length, which tell a truncated or damaged file, would go unchecked.
    :class:`DataError` naming the file when its voxels are complex (``get_fdata`` would keep the real part only)."""
    if not Path(path).name.endswith(".gz"):
        img = nib.load(str(path))
    else:
        with gzip.open(path, "rb") as stream:
            raw = stream.read()  # to the end of the stream: gzip checks its CRC-32 and length there
        nifti2 = 540 in (int.from_bytes(raw[:4], "little"), int.from_bytes(raw[:4], "big"))  # sizeof_hdr
        img = (nib.Nifti2Image if nifti2 else nib.Nifti1Image).from_bytes(raw)
    if (dtype := img.get_data_dtype()).kind == "c":
        raise DataError(f"'{path}' holds complex values ({dtype}); expected a real-valued volume (e.g. save its "
                        "magnitude)")
    return img


def check_affine(path: Path, affine: np.ndarray) -> None:
    """Raise DataError naming ``path`` unless its voxel axes are finite and of non-zero length."""
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DataError(f"'{path}' has the affine {np.round(affine, 4).tolist()}; expected finite voxel axes of "
                        "non-zero length (the header's pixdim, qform or sform)")
