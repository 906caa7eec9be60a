"""Reading a NIfTI file whole and checked: the gzip stream to its end, the affine in millimetres, finite and
non-degenerate (nibabel and numpy only: the converters use it without torch or MONAI)."""

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


#: Millimetres per spatial unit of a header's ``xyzt_units`` (its low 3 bits): 0 unknown (read as mm), 1 metre, 2 mm,
#: 3 micron; 4-7 are not defined by NIfTI and read as unknown.
_MM_PER_UNIT = {1: 1000.0, 3: 0.001}


def affine_mm(path: Path, img: nib.Nifti1Image | nib.Nifti2Image) -> np.ndarray:
    """The 4x4 affine of ``img`` (read from ``path``) in millimetres, checked by :func:`check_affine`.

    nibabel's ``img.affine`` is in the units the header's ``xyzt_units`` names (NIfTI allows metres and microns), so
    it is scaled to mm. A file without an sform takes its voxel sizes from pixdim, where nibabel reads a zero as 1 mm
    and a negative size as its absolute value (nifti1_io, which ITK reads with, takes both as 1 mm), logging a line that
    names no file: :class:`DataError` naming the file instead."""
    header = img.header
    if int(header["sform_code"]) == 0:
        with (gzip.open if Path(path).name.endswith(".gz") else open)(path, "rb") as stream:
            raw = type(header).from_fileobj(stream, check=False)  # as stored (nibabel "fixes" it on loading)
        sizes = np.asarray(raw["pixdim"][1:4], np.float64)
        if (sizes <= 0).any():  # NaN: check_affine refuses the affine of NaNs it gives
            shown = [round(float(v), 4) for v in sizes]
            raise DataError(f"'{path}' has the voxel sizes (pixdim) {shown} and no sform; expected positive voxel "
                            "sizes in mm (readers disagree on what a zero or negative one means: rewrite the header "
                            "with the scan's voxel sizes)")
    affine = np.asarray(img.affine, dtype=np.float64).copy()
    affine[:3, :] *= _MM_PER_UNIT.get(int(header["xyzt_units"]) & 7, 1.0)
    check_affine(path, affine)
    return affine
