"""Real data: each dataset's official release layout -> the common layout (``dataset.json``), once.

``prepare(name, raw, out_dir)`` runs the converter of a registry dataset on the folder that holds
its official release; a missing folder or file stops with the registry's instructions (where to get
the data, where to put it). Open archives are downloaded by :mod:`s2dc.data.download`.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from ...files import check_folder_path
from ..errors import DataError
from ..provenance import writer_of
from .. import registry
from ..registry import get
from . import adni, autopet, brats21, brats23, btcv, cc_ccii, msd, oasis3, pool, udpet

#: Registry name -> converter(raw, out_dir) of its official release layout, for the layouts of one dataset each.
#: A Medical Segmentation Decathlon task is not listed: every registry entry whose archive is an MSD task tar gets
#: :func:`.msd.convert` (:func:`converter_of`), so that a further task is added in the registry alone.
CONVERTERS = {
    "ct_pool": partial(pool.convert, "ct_pool"),
    "mri_pool": oasis3.convert,
    "pet_pool": partial(pool.convert, "pet_pool"),
    "btcv": btcv.convert,
    "cc_ccii": cc_ccii.convert,
    "brats21": brats21.convert,
    "brats23": brats23.convert,
    "autopet": autopet.convert,
    "adni": adni.convert,
    "udpet": udpet.convert,
}


def converter_of(name: str):
    """The converter(raw, out_dir) of registry dataset ``name``, None when it has none yet."""
    if name in CONVERTERS:
        return CONVERTERS[name]
    return partial(msd.convert, name) if msd.is_task(get(name)) else None


def converter_names() -> list[str]:
    """Registry names that have a converter, sorted."""
    return sorted(n for n in registry.REGISTRY if converter_of(n) is not None)


def check_output_folder(out_dir: Path) -> None:
    """:class:`DataError` naming the file in the way when ``out_dir``, or the nearest existing path above it, is not
    a folder (a file, or a link to nothing)."""
    try:
        check_folder_path(out_dir, "output folder")
    except ValueError as err:
        raise DataError(str(err)) from None


def prepare(name: str, raw: str | Path, out_dir: str | Path) -> Path:
    """Convert dataset ``name`` from ``raw`` (its official layout) into ``out_dir/dataset.json``. A dataset.json
    already in ``out_dir`` is replaced only if s2dc wrote it (this function or ``s2dc synth``)."""
    spec = get(name)
    converter = converter_of(name)
    if converter is None:
        raise DataError(f"no converter for {spec.title} ({name}) yet; converters exist for {converter_names()}")
    check_output_folder(Path(out_dir))
    existing = Path(out_dir) / "dataset.json"
    if existing.exists() and writer_of(existing) is None:
        raise DataError(f"'{existing}' exists and was not written by s2dc (prepare or synth): it is never replaced; "
                        f"give an output folder of its own (not the one that holds the release's files)")
    return converter(Path(raw), Path(out_dir))
