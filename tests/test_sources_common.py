"""The helpers every converter shares: the fixed split of releases that publish none."""

from __future__ import annotations

import math
import random

import pytest

from s2dc.data.sources.common import fixed_split
from s2dc.data.errors import DataError


def test_fixed_split_partitions_with_the_asked_fraction_and_ignores_order():
    ids = [f"case{i:03d}" for i in range(23)]
    train, val = fixed_split(ids, 0.2, where="'release'")
    assert len(val) == math.ceil(0.2 * 23) == 5
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(ids)
    assert train == sorted(train) and val == sorted(val)
    shuffled = ids[:]
    random.Random(0).shuffle(shuffled)
    assert fixed_split(shuffled, 0.2, where="'release'") == (train, val)
    # Independent computation: the 5 ids with the largest SHA-1 digests.
    import hashlib
    digests = sorted((hashlib.sha1(i.encode()).hexdigest(), i) for i in ids)
    assert val == sorted(i for _, i in digests[-5:])


def test_fixed_split_refuses_duplicates_and_too_few_cases():
    with pytest.raises(DataError, match="not unique in 'raw/x'.*'a'"):
        fixed_split(["a", "b", "a"], where="'raw/x'")
    with pytest.raises(DataError, match="'raw/x' holds 1 case.*at least 2 cases"):
        fixed_split(["a"], where="'raw/x'")
    assert fixed_split(["a", "b"], 0.2, where="x")[1] and fixed_split(["a", "b"], 0.9, where="x")[0]


@pytest.mark.parametrize("name", sorted(__import__("s2dc.data.registry", fromlist=["REGISTRY"]).REGISTRY))
def test_every_dataset_has_a_converter_and_a_missing_release_says_where_to_get_it(tmp_path, name):
    from s2dc.data.registry import get
    from s2dc.data.sources import prepare

    (tmp_path / "raw").mkdir()
    with pytest.raises(DataError) as err:
        prepare(name, tmp_path / "raw", tmp_path / "out")
    spec = get(name)
    message = str(err.value)
    assert spec.where in message and str(tmp_path / "raw") in message and spec.layout.strip().splitlines()[0] in message
    assert not (tmp_path / "out").exists()


def test_a_dataset_json_that_s2dc_did_not_write_is_never_replaced(tmp_path):
    """`s2dc prepare NAME RAW OUT` writes OUT/dataset.json; a dataset.json already there that s2dc did not write (here
    OUT is the MSD task folder, whose own dataset.json the converter reads) is refused, named, and left as it was,
    before anything is written; an earlier output of s2dc (prepare or synth) is replaced."""
    from test_sources_msd import make_task

    from s2dc.data.sources import prepare
    from s2dc.data.synthetic import write_dataset

    task = make_task(tmp_path / "raw", "msd_spleen")
    official = (task / "dataset.json").read_bytes()
    before = sorted(p.relative_to(task) for p in task.rglob("*"))
    with pytest.raises(DataError, match="dataset.json.*not written by s2dc"):
        prepare("msd_spleen", tmp_path / "raw", task)
    assert (task / "dataset.json").read_bytes() == official and sorted(p.relative_to(task) for p in task.rglob("*")) == before

    out = tmp_path / "out"
    first = prepare("msd_spleen", tmp_path / "raw", out).read_bytes()
    assert prepare("msd_spleen", tmp_path / "raw", out).read_bytes() == first
    twin = tmp_path / "twin"
    write_dataset(twin, "msd_spleen", 2, 0, shape=(32, 32, 16))
    assert prepare("msd_spleen", tmp_path / "raw", twin).read_bytes() == first  # same place beside raw/


@pytest.mark.parametrize("out", ["notes.txt", "notes.txt/prepared"])
def test_an_output_folder_that_is_a_file_is_refused_naming_it(tmp_path, out):
    """`s2dc prepare NAME --out OUT` where OUT (or a folder above it) is a user's file: a DataError naming it (the
    CLI's exit 2 and message), not an OSError traceback from mkdir, and the file is left as it was."""
    from test_sources_msd import make_task

    from s2dc.data.sources import prepare

    make_task(tmp_path / "raw", "msd_spleen")
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    with pytest.raises(DataError, match="notes.txt'.* is a file"):
        prepare("msd_spleen", tmp_path / "raw", tmp_path / out)
    assert notes.read_text() == "my notes"


def test_an_output_folder_that_is_a_dangling_link_is_refused_naming_its_target(tmp_path, capsys):
    """`s2dc prepare NAME --out OUT` where OUT is a link to nothing: refused naming the link and its target (it
    stopped with a bare "[Errno 17] File exists: 'OUT'"), nothing written, the link left as it was."""
    from test_sources_msd import make_task

    from s2dc.cli import main

    make_task(tmp_path / "raw", "msd_spleen")
    (tmp_path / "out").symlink_to(tmp_path / "nowhere")
    assert main(["prepare", "msd_spleen", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"'{tmp_path / 'out'}' is a link to '{tmp_path / 'nowhere'}', which does not exist" in err, err
    assert (tmp_path / "out").is_symlink() and not (tmp_path / "nowhere").exists()


def test_a_converter_refuses_a_volume_whose_affine_has_an_axis_of_no_length(tmp_path):
    """`s2dc prepare` reads each converted volume's header (nifti_shape): a degenerate sform is named there, at
    conversion, not later inside a resampler."""
    import nibabel as nib
    import numpy as np

    from s2dc.data.errors import DataError
    from s2dc.data.sources.common import nifti_shape

    header = nib.Nifti1Header()
    header.set_data_shape((8, 8, 8))
    header.set_qform(None, code=0)
    header.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=1)
    path = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), None, header), str(path))
    with pytest.raises(DataError, match="flat.nii.gz.*affine"):
        nifti_shape(path)
    good = tmp_path / "good.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), str(good))
    assert nifti_shape(good) == (8, 8, 8)


def test_btcv_refuses_two_image_files_of_one_case(tmp_path):
    """BTCV's images are found by name (img0001.nii.gz); a case present twice (also as an uncompressed img0001.nii,
    other voxels) is refused naming both files, not settled by the order in which the folder happens to be listed."""
    import nibabel as nib
    import numpy as np

    from s2dc.data.sources import btcv

    img, lab = tmp_path / "raw/RawData/Training/img", tmp_path / "raw/RawData/Training/label"
    img.mkdir(parents=True)
    lab.mkdir(parents=True)
    for i, suffix in [(i, ".nii.gz") for i in (*range(1, 11), *range(21, 41))] + [(1, ".nii")]:
        volume = nib.Nifti1Image(np.full((4, 4, 4), float(len(suffix)), np.float32), np.eye(4))
        nib.save(volume, str(img / f"img{i:04d}{suffix}"))
        nib.save(volume, str(lab / f"label{i:04d}{suffix}"))
    with pytest.raises(DataError, match=r"img0001\.nii(\.gz)?' and '.*img0001\.nii(\.gz)?'"):
        btcv.convert(tmp_path / "raw", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_pool_listing_one_volume_twice_is_refused_naming_both_entries(tmp_path):
    """A pool's own dataset.json (CT and PET pools) listing a volume twice ('a.nii.gz' and './sub/../a.nii.gz')
    was converted with it twice (double weight in pretraining, two equal ids); refused, naming both entries and
    the json; a pool of distinct volumes converts, each once."""
    import json

    import nibabel as nib
    import numpy as np

    from s2dc.data.sources import prepare

    raw = tmp_path / "raw"
    (raw / "sub").mkdir(parents=True)
    for name in ("a", "b"):
        nib.save(nib.Nifti1Image(np.full((8, 8, 8), 100.0, np.float32), np.eye(4)), str(raw / f"{name}.nii.gz"))
    (raw / "dataset.json").write_text(json.dumps({"training": ["a.nii.gz", "b.nii.gz", {"image": "./sub/../a.nii.gz"}]}))
    twice = r"entries 0 and 2 of section 'training' of dataset json '.*dataset.json' list the same image file"
    with pytest.raises(DataError, match=twice) as refused:
        prepare("ct_pool", raw, tmp_path / "out")
    assert "twice" in str(refused.value) and not (tmp_path / "out" / "dataset.json").exists()
    (raw / "dataset.json").write_text(json.dumps({"training": ["a.nii.gz", {"image": "b.nii.gz"}]}))
    doc = json.loads(prepare("ct_pool", raw, tmp_path / "out").read_text())
    assert [e["id"] for e in doc["training"]] == ["a.nii.gz", "b.nii.gz"]
