"""MSD converter on a tiny fixture in the official layout (Task folder, MSD's dataset.json, imagesTr/labelsTr).
Expected entries and the split are written out here (SHA-1 via hashlib), not taken from the converter."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import nibabel as nib
import numpy as np
import pytest

from s2dc.data.sources import msd
from s2dc.data.errors import DataError

CASES = (2, 3, 5, 7, 8)
#: registry name -> (task folder, file prefix, labels as MSD's dataset.json writes them)
TASKS = {
    "msd_spleen": ("Task09_Spleen", "spleen", {"0": "background", "1": "spleen"}),
    "msd_liver": ("Task03_Liver", "liver", {"0": "background", "1": "liver", "2": "cancer"}),
    "msd_lung": ("Task06_Lung", "lung", {"0": "background", "1": "cancer"}),
}


def nifti(path, shape=(6, 6, 6), dtype=np.float32):
    nib.save(nib.Nifti1Image(np.zeros(shape, dtype), np.eye(4)), str(path))


def make_task(raw, name, labels=None):
    """``raw/<Task>/`` with MSD's dataset.json, CASES in imagesTr/labelsTr, test images and a macOS '._' file."""
    task, prefix, msd_labels = TASKS[name]
    folder = raw / task
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (folder / sub).mkdir(parents=True)
    for i in CASES:
        nifti(folder / "imagesTr" / f"{prefix}_{i}.nii.gz")
        nifti(folder / "labelsTr" / f"{prefix}_{i}.nii.gz", dtype=np.uint8)
    nifti(folder / "imagesTs" / f"{prefix}_1.nii.gz")
    (folder / "imagesTr" / f"._{prefix}_2.nii.gz").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    doc = {"name": task, "labels": labels or msd_labels, "numTraining": len(CASES), "test": [f"./imagesTs/{prefix}_1.nii.gz"],
           "training": [{"image": f"./imagesTr/{prefix}_{i}.nii.gz", "label": f"./labelsTr/{prefix}_{i}.nii.gz"}
                        for i in CASES]}
    (folder / "dataset.json").write_text(json.dumps(doc))
    return folder


@pytest.fixture
def spleen(tmp_path):
    return make_task(tmp_path / "raw", "msd_spleen")


@pytest.mark.parametrize("name", sorted(TASKS))
def test_convert_writes_the_listed_pairs_with_a_fixed_split(tmp_path, name):
    task, prefix, _ = TASKS[name]
    make_task(tmp_path / "raw", name)
    path = msd.convert(name, tmp_path / "raw", tmp_path / "out")
    assert path == tmp_path / "out" / "dataset.json"
    doc = json.loads(path.read_text())
    ids = [f"{prefix}_{i}" for i in CASES]
    val = max(ids, key=lambda i: hashlib.sha1(i.encode()).hexdigest())  # ceil(0.2 * 5) = 1 case

    def entry(i):
        return {"id": i, "image": f"../raw/{task}/imagesTr/{i}.nii.gz", "label": f"../raw/{task}/labelsTr/{i}.nii.gz"}

    assert doc["training"] == [entry(i) for i in sorted(ids) if i != val]
    assert doc["validation"] == [entry(val)]
    assert doc["labels"] == TASKS[name][2] and doc["task"] == "segmentation" and doc["name"] == name
    assert doc["source"]["converter"] == "s2dc.data.sources.msd"
    for e in doc["training"] + doc["validation"]:
        for role, sub in (("image", "imagesTr"), ("label", "labelsTr")):
            resolved = (tmp_path / "out" / e[role]).resolve()
            assert resolved == (tmp_path / "raw" / task / sub / f"{e['id']}.nii.gz").resolve() and resolved.is_file()


def test_the_json_changes_when_a_release_file_does(spleen, tmp_path):
    """A release file replaced under the same name (a corrected label) changes the converted json, so every job that
    reads it reruns: its content_sha256 hashes the bytes of the files it lists."""
    first = json.loads(msd.convert("msd_spleen", tmp_path / "raw", tmp_path / "out").read_text())
    label = spleen / "labelsTr" / "spleen_3.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((6, 6, 6), np.uint8), np.eye(4)), str(label))
    second = json.loads(msd.convert("msd_spleen", tmp_path / "raw", tmp_path / "out").read_text())
    assert second["training"] == first["training"] and second["content_sha256"] != first["content_sha256"]
    lines = "".join(f"{role}:{e[role]}:{hashlib.sha256((tmp_path / 'out' / e[role]).read_bytes()).hexdigest()}\n"
                    for e in second["training"] + second["validation"] for role in ("image", "label"))
    assert second["content_sha256"] == hashlib.sha256(lines.encode()).hexdigest()


def test_release_files_that_are_symlinks_are_listed_by_their_release_path(spleen, tmp_path):
    """A release whose files are symbolic links (a DVC or annex cache: blobs named by hash, with no .nii.gz) is listed
    by the release's own paths, which keep the NIfTI suffix that readers go by, not by where the links point."""
    cache = tmp_path / "cache"
    cache.mkdir()
    for sub in ("imagesTr", "labelsTr"):
        for path in (spleen / sub).glob("spleen_*.nii.gz"):
            blob = cache / hashlib.md5(f"{sub}/{path.name}".encode()).hexdigest()
            path.rename(blob)
            path.symlink_to(blob)
    out = tmp_path / "out"
    doc = json.loads(msd.convert("msd_spleen", tmp_path / "raw", out).read_text())
    for e in doc["training"] + doc["validation"]:
        for role, sub in (("image", "imagesTr"), ("label", "labelsTr")):
            assert e[role] == f"../raw/Task09_Spleen/{sub}/{e['id']}.nii.gz"
            assert nib.load(str(out / e[role])).shape == (6, 6, 6)


def test_labels_are_compared_case_insensitively(tmp_path):
    make_task(tmp_path / "raw", "msd_spleen", labels={"0": "Background", "1": "Spleen"})
    assert msd.convert("msd_spleen", tmp_path / "raw", tmp_path / "out").is_file()


def test_missing_task_folder_says_where_to_get_it(tmp_path):
    (tmp_path / "raw").mkdir()
    with pytest.raises(DataError) as err:
        msd.convert("msd_spleen", tmp_path / "raw", tmp_path / "out")
    message = str(err.value)
    assert str(tmp_path / "raw" / "Task09_Spleen") in message and "http://medicaldecathlon.com/" in message
    assert not (tmp_path / "out").exists()


def test_missing_label_is_named(spleen, tmp_path):
    label = spleen / "labelsTr" / "spleen_5.nii.gz"
    label.unlink()
    with pytest.raises(DataError, match=f"label '{label}'.*does not exist"):
        msd.convert("msd_spleen", tmp_path / "raw", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_shape_mismatch_names_both_files(spleen, tmp_path):
    nifti(spleen / "labelsTr" / "spleen_7.nii.gz", shape=(6, 6, 5), dtype=np.uint8)
    with pytest.raises(DataError) as err:
        msd.convert("msd_spleen", tmp_path / "raw", tmp_path / "out")
    message = str(err.value)
    assert str(spleen / "labelsTr" / "spleen_7.nii.gz") in message and str(spleen / "imagesTr" / "spleen_7.nii.gz") in message
    assert "(6, 6, 5)" in message and "(6, 6, 6)" in message


def test_corrupt_nifti_is_named(spleen, tmp_path):
    image = spleen / "imagesTr" / "spleen_3.nii.gz"
    image.write_bytes(b"not a NIfTI file at all")
    with pytest.raises(DataError, match=f"'{image}' is not a readable NIfTI"):
        msd.convert("msd_spleen", tmp_path / "raw", tmp_path / "out")


@pytest.mark.parametrize("labels", [{"0": "background", "1": "liver"},
                                    {"0": "background", "1": "spleen", "2": "cancer"},
                                    {"0": "background"}])
def test_labels_disagreeing_with_the_registry_are_refused(tmp_path, labels):
    folder = make_task(tmp_path / "raw", "msd_spleen", labels=labels)
    with pytest.raises(DataError, match=f"'{folder / 'dataset.json'}' has labels"):
        msd.convert("msd_spleen", tmp_path / "raw", tmp_path / "out")


def test_unreadable_msd_json_is_named(spleen, tmp_path):
    (spleen / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match=f"'{spleen / 'dataset.json'}' is not MSD's dataset.json"):
        msd.convert("msd_spleen", tmp_path / "raw", tmp_path / "out")


def test_a_dataset_that_is_not_msd_is_refused(tmp_path):
    with pytest.raises(ValueError, match="btcv"):
        msd.convert("btcv", tmp_path, tmp_path / "out")


def test_a_label_on_another_voxel_grid_is_refused_at_conversion(spleen, tmp_path):
    """Same shape, another grid (3 mm voxels, shifted origin): `s2dc prepare` refuses it naming both files, as
    training would only much later."""
    label = spleen / "labelsTr" / "spleen_5.nii.gz"
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = 50.0
    nib.save(nib.Nifti1Image(np.zeros((6, 6, 6), np.uint8), affine), str(label))
    with pytest.raises(DataError, match=rf"'{label}' lies on another voxel grid than its image "
                                        rf"'{spleen / 'imagesTr' / 'spleen_5.nii.gz'}'"):
        msd.convert("msd_spleen", tmp_path / "raw", tmp_path / "out")


@pytest.mark.parametrize("shape, refused", [((6, 6, 6, 2), True), ((6, 6, 6, 1), False)])
def test_a_volume_of_four_axes_is_refused_at_conversion_unless_the_fourth_is_one(spleen, tmp_path, shape, refused):
    image = spleen / "imagesTr" / "spleen_8.nii.gz"
    nifti(image, shape=shape)
    nifti(spleen / "labelsTr" / "spleen_8.nii.gz", shape=shape, dtype=np.uint8)
    if refused:
        with pytest.raises(DataError, match=r"spleen_8.nii.gz' is not a 3-D volume: shape \(6, 6, 6, 2\)"):
            msd.convert("msd_spleen", tmp_path / "raw", tmp_path / "out")
    else:
        msd.convert("msd_spleen", tmp_path / "raw", tmp_path / "out")


def test_an_msd_task_added_to_the_registry_alone_is_converted(tmp_path, monkeypatch):
    """The registry is the only place a dataset is named: a further Decathlon task (Task07 Pancreas, MONAI's MD5),
    added there as one ``_msd`` entry and nowhere else, is converted by ``prepare`` as the other MSD tasks are, and
    listed among the datasets that have a converter."""
    from types import MappingProxyType

    from s2dc.data import datasets, registry, sources

    spec = datasets._msd("msd_pancreas", "Task07_Pancreas", "4f7080cfca169fa8066d17ce6eb061e4", ("pancreas", "cancer"),
                         "ct_abdomen", "test fixture")
    monkeypatch.setattr(registry, "REGISTRY", MappingProxyType({**registry.REGISTRY, spec.name: spec}))
    monkeypatch.setitem(TASKS, "msd_pancreas",
                        ("Task07_Pancreas", "pancreas", {"0": "background", "1": "pancreas", "2": "cancer"}))
    make_task(tmp_path / "raw", "msd_pancreas")
    doc = json.loads(sources.prepare("msd_pancreas", tmp_path / "raw", tmp_path / "out").read_text())
    assert doc["name"] == "msd_pancreas" and doc["task"] == "segmentation"
    assert len(doc["training"]) + len(doc["validation"]) == len(CASES)
    assert "msd_pancreas" in sources.converter_names()
    assert set(sources.converter_names()) >= {"msd_liver", "msd_lung", "msd_spleen", "btcv", "ct_pool"}


def test_a_registry_dataset_without_a_converter_is_refused_naming_those_with_one(tmp_path, monkeypatch):
    from types import MappingProxyType

    from s2dc.data import registry, sources

    spec = dataclasses.replace(registry.get("btcv"), name="other_ct", archives=())
    monkeypatch.setattr(registry, "REGISTRY", MappingProxyType({**registry.REGISTRY, spec.name: spec}))
    with pytest.raises(DataError, match=r"no converter for BTCV \(other_ct\) yet; converters exist for \[.*'msd_spleen'"):
        sources.prepare("other_ct", tmp_path / "raw", tmp_path / "out")


def test_a_downloaded_task_folder_deleted_beside_its_extraction_record_says_how_to_download_it_again(spleen, tmp_path):
    """The workflow's download job leaves `.Task09_Spleen.extracted.json` beside what it extracted, its output: with
    the task folder deleted and the record left, Snakemake runs no download, and the conversion asked for the release
    by hand ('... is an open download ... Put it in ...'). It names the record and the two ways to download again."""
    import shutil

    raw = tmp_path / "raw"
    (raw / ".Task09_Spleen.extracted.json").write_text('{"files": {}}')
    shutil.rmtree(raw / "Task09_Spleen")
    with pytest.raises(DataError, match=r"'.*Task09_Spleen' is gone, but '.*\.Task09_Spleen\.extracted\.json', the "
                                        r"record of its download, is there: delete the record .*--forcerun "
                                        r"download_archive"):
        msd.convert("msd_spleen", raw, tmp_path / "out")


def test_a_task_folder_linked_to_a_disk_not_mounted_is_named_as_a_link_not_as_gone(tmp_path):
    """Task09_Spleen a link to another disk (the download records a complete task behind a link), that disk not
    mounted: the conversion said the folder 'is gone' and to delete the record to download it again, which the
    download then refuses for the link; removing the link downloads the task anew while it is intact on the disk.
    The link and its missing target are named, and the record said valid."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "Task09_Spleen").symlink_to(tmp_path / "unmounted" / "Task09_Spleen")
    (raw / ".Task09_Spleen.extracted.json").write_text('{"files": {}}')
    with pytest.raises(DataError, match=r"'.*Task09_Spleen' is a link to '.*unmounted/Task09_Spleen', which is not "
                                        r"there \(a disk not mounted\?\).*stays valid"):
        msd.convert("msd_spleen", raw, tmp_path / "out")
