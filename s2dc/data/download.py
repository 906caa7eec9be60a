"""Real-data downloads: Medical Segmentation Decathlon tasks from the URLs and MD5s that MONAI records."""

from __future__ import annotations

import shutil
from pathlib import Path

from monai.apps import DecathlonDataset
from monai.apps.utils import download_and_extract

from .volumes import DataError


def msd_resource(task: str) -> tuple[str, str]:
    """(url, md5) of an MSD task, e.g. ``"Task09_Spleen"``."""
    if task not in DecathlonDataset.resource:
        raise ValueError(f"unknown MSD task {task!r}; expected one of {sorted(DecathlonDataset.resource)}")
    return DecathlonDataset.resource[task], DecathlonDataset.md5[task]


def download_msd(task: str, root: str | Path) -> Path:
    """Download ``<task>.tar`` into ``root``, check its MD5 and extract ``root/<task>/``; returns its dataset.json.

    An existing, complete ``root/<task>/dataset.json`` is kept. The archive is extracted into a temporary
    folder first and moved into place only when complete, so an interrupted run leaves no partial task.
    """
    root = Path(root)
    target = root / task
    if (target / "dataset.json").is_file():
        return target / "dataset.json"
    url, md5 = msd_resource(task)
    root.mkdir(parents=True, exist_ok=True)
    archive = root / f"{task}.tar"
    staging = root / f".{task}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        download_and_extract(url, filepath=archive, output_dir=staging, hash_val=md5, hash_type="md5")
    except Exception as err:  # noqa: BLE001 - MONAI raises bare Exception for URL errors; re-raised with context
        shutil.rmtree(staging, ignore_errors=True)
        archive.unlink(missing_ok=True)  # a retry downloads afresh
        raise DataError(f"could not download or check {task} from {url} (md5 {md5}) into '{archive}': {err}") from err
    extracted = staging / task
    if not (extracted / "dataset.json").is_file():
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(f"archive '{archive}' did not contain {task}/dataset.json")
    shutil.rmtree(target, ignore_errors=True)
    extracted.rename(target)
    shutil.rmtree(staging, ignore_errors=True)
    return target / "dataset.json"
