"""OASIS-3 (registry ``mri_pool``): the T1w scans fetched by ``download_oasis_scans.sh`` -> the common layout.

Layout written by NrgXnat/oasis-scripts ``download_scans/download_oasis_scans.sh`` (it unzips each
session and moves ``scans/<anatN-T1w>/resources/*/files/*`` to ``<session>/<anatN>/``)::

    <directory_name>/OAS30001_MR_d0129/anat1/sub-OAS30001_ses-d0129_run-01_T1w.nii.gz  (+ .json sidecar)

or, by its BIDS sibling ``download_scans/download_oasis_scans_bids.sh`` (same file names)::

    <directory_name>/sub-OAS30001/ses-d0129/anat/sub-OAS30001_ses-d0129_run-01_T1w.nii.gz  (+ .json sidecar)

``raw`` is that ``<directory_name>`` or the folder holding it as ``OASIS3/``. What a stopped run of the scripts
left of a session (its archive, or its unpacked ``scans/``) is refused naming it (:data:`LEFTOVERS`): the session's
scans would be missing from the pool without a word. Every T1w NIfTI becomes
one training entry ``{"id": file name without .nii.gz, "image": path}``; a pool has no validation.
"""

from __future__ import annotations

from pathlib import Path

from ..datalist import present_file
from ..registry import get
from ..errors import DataError
from .common import nifti_shape, nifti_stem, write_common

PATTERNS = ("OAS3*_MR_d*/anat*/*_T1w.nii.gz", "OAS3*_MR_d*/anat*/*_T1w.nii",
            "sub-OAS3*/ses-d*/anat/*_T1w.nii.gz", "sub-OAS3*/ses-d*/anat/*_T1w.nii")


#: What the download scripts leave of a session they were stopped in: its archive (``<session>.zip``, or ``.tar.gz``
#: by the BIDS script), or its unpacked ``scans/`` not yet moved into the session's anat folders; both are removed
#: once the session is done (NrgXnat/oasis-scripts ``download_oasis_scans.sh``: ``rm -r .../scans``, ``rm ....zip``).
LEFTOVERS = ("OAS3*_MR_d*/scans", "OAS3*_MR_d*.zip", "OAS3*_MR_d*.tar.gz")


def convert(raw: Path, out_dir: Path) -> Path:
    """Check every T1w volume (readable header, 3-D, unique name) and write the pool's json."""
    spec = get("mri_pool")
    raw = Path(raw)
    root = raw / "OASIS3" if (raw / "OASIS3").is_dir() else raw
    if left := sorted(p for pattern in LEFTOVERS for p in root.glob(pattern)):
        raise DataError(f"'{left[0]}' is what download_oasis_scans.sh leaves of a session it was stopped in (its "
                        "archive, or its scans/ not yet moved into the session's anat folders)"
                        + (f", and so are {len(left) - 1} more" if len(left) > 1 else "") + ": run the script again "
                        "for those sessions (or remove what is left of them to leave them out of the pool)")
    volumes = sorted(p for pattern in PATTERNS for p in root.glob(pattern) if present_file(p))
    if not volumes:
        raise DataError(f"'{root}' holds no T1w NIfTI at {PATTERNS[0]} (nor at {PATTERNS[2]}). "
                        + spec.instructions(str(raw)))
    seen: dict[str, Path] = {}
    for path in volumes:
        nifti_shape(path)  # readable, 3-D (a trailing axis of length 1 aside), a sound affine
        if (stem := nifti_stem(path)) in seen:
            raise DataError(f"'{path}' and '{seen[stem]}' have the same case id '{stem}'")
        seen[stem] = path
    return write_common(out_dir, spec, [{"id": s, "image": p} for s, p in seen.items()], [], raw,
                        "s2dc.data.sources.oasis3")
