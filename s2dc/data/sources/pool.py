"""Pretraining pools: a user-assembled list (the release's own format) -> the common layout.

The release reads each pool from MSD-style jsons whose ``training`` section lists the volumes
(``{"image": path}`` or a plain path, relative to the json). A pool's official layout is therefore
``<raw>/dataset.json`` plus the volumes it lists; every listed file must exist, be a readable 3-D NIfTI and be
listed once.
"""

from __future__ import annotations

from pathlib import Path

from ..registry import get
from ..datalist import list_volumes
from .common import nifti_shape, relative, require_folder, write_common


def convert(name: str, raw: Path, out_dir: Path) -> Path:
    """Check every volume the pool lists and write the common json of pool ``name``."""
    spec = get(name)
    raw = Path(raw)
    require_folder(raw, spec, "dataset.json")
    volumes = list_volumes(raw / "dataset.json", "training")  # a volume listed twice is refused there
    for path in volumes:
        nifti_shape(path)
    return write_common(out_dir, spec, [{"id": relative(p, raw), "image": p} for p in volumes], [], raw, "s2dc.data.sources.pool")
