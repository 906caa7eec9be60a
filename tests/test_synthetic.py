"""Synthetic CT phantoms: determinism, anatomy, written datasets and the ``s2dc synth`` command."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from s2dc.data.synthetic import abdomen, twins
from s2dc.data.synthetic import BTCV_LABELS, ORGAN_HU, PRIORITY, case_seed, ct_phantom, write_dataset
from s2dc.data.datalist import list_volumes
from s2dc.data.preprocess import PreprocessConfig
from s2dc.data.volumes import CachedVolumes

DEFAULT = (96, 96, 64)
SMALL = (64, 64, 40)
MIN_VOXELS = 60


@pytest.fixture(scope="module")
def phantoms():
    """Five phantoms at the default shape (image, labels, body mask, cavity mask)."""
    out = []
    for seed in range(5):
        p = abdomen._build(seed, DEFAULT)
        out.append((p.image, p.labels, p.body, p.cavity))
    return out


# --------------------------------------------------------------------------- determinism


def test_same_seed_is_bit_identical_and_seeds_differ():
    a_img, a_lab = ct_phantom(7, SMALL)
    b_img, b_lab = ct_phantom(7, SMALL)
    assert a_img.dtype == np.float32 and a_lab.dtype == np.uint8
    assert a_img.shape == a_lab.shape == SMALL
    assert a_img.tobytes() == b_img.tobytes() and a_lab.tobytes() == b_lab.tobytes()
    c_img, c_lab = ct_phantom(8, SMALL)
    assert not np.array_equal(a_img, c_img) and not np.array_equal(a_lab, c_lab)


def test_pool_and_twin_never_share_a_phantom(tmp_path):
    pool = {case_seed(3, "ct_pool", i) for i in range(200)}
    twin = {case_seed(3, "btcv", i) for i in range(200)}
    assert len(pool) == len(twin) == 200 and not pool & twin
    pool_json = write_dataset(tmp_path / "pool", "ct_pool", 2, 3, shape=(32, 32, 24))
    twin_json = write_dataset(tmp_path / "twin", "btcv", 2, 3, shape=(32, 32, 24), val_fraction=0.5)
    pool_imgs = [nib.load(str(p)).get_fdata(dtype=np.float32) for p in list_volumes(pool_json)]
    twin_paths = list_volumes(twin_json, "training") + list_volumes(twin_json, "validation")
    twin_imgs = [nib.load(str(p)).get_fdata(dtype=np.float32) for p in twin_paths]
    assert all(not np.array_equal(a, b) for a in pool_imgs for b in twin_imgs)


def test_bad_arguments_raise_value_errors(tmp_path):
    with pytest.raises(ValueError, match="seed"):
        ct_phantom(-1)
    with pytest.raises(ValueError, match="shape"):
        ct_phantom(0, (96, 96))
    with pytest.raises(ValueError, match="shape"):
        ct_phantom(0, (8, 96, 64))
    for kwargs, name in [
        (dict(kind="mri", cases=2), "kind"),
        (dict(kind="ct_pool", cases=0), "cases"),
        (dict(kind="btcv", cases=1), "cases"),
        (dict(kind="btcv", cases=4, val_fraction=1.0), "val_fraction"),
        (dict(kind="ct_pool", cases=2, val_fraction=0.5), "val_fraction"),  # a pool has no validation cases
        (dict(kind="btcv", cases=4, spacing=(1.5, 0, 2)), "spacing"),
    ]:
        with pytest.raises(ValueError, match=name) as info:
            write_dataset(tmp_path / "x", seed=0, **kwargs)
        assert info.value.param == name
    assert not list(tmp_path.iterdir())  # nothing written


# --------------------------------------------------------------------------- anatomy


def test_every_organ_present_and_visible(phantoms):
    counts = np.array([np.bincount(lab.ravel(), minlength=14)[:14] for _, lab, _, _ in phantoms])
    assert counts.shape[1] == 14 and all(lab.max() <= 13 for _, lab, _, _ in phantoms)
    print("\nmean voxels per organ at 96x96x64 (5 phantoms):")
    for k in range(1, 14):
        print(f"  {k:2d} {BTCV_LABELS[k]:26s} {counts[:, k].mean():8.0f}  (min {counts[:, k].min()})")
    assert (counts[:, 1:] >= MIN_VOXELS).all(), counts
    # plausible proportions: liver the largest organ, adrenals among the smallest
    assert (counts[:, 6] == counts[:, 1:].max(axis=1)).all()
    assert (counts[:, 12] < counts[:, 2]).all() and (counts[:, 13] < counts[:, 3]).all()


def test_layout_is_anatomical(phantoms):
    """RAS voxel order: liver on the patient's right (large x), spleen left, spine posterior."""
    for img, lab, body, _ in phantoms:
        c = {k: np.argwhere(lab == k).mean(axis=0) for k in range(1, 14)}
        assert c[6][0] > c[1][0]  # liver right of the spleen
        assert c[2][0] > c[3][0]  # right kidney right of the left kidney
        assert c[9][0] > c[8][0]  # IVC right of the aorta
        assert c[7][1] > c[2][1] and c[7][1] > c[3][1]  # stomach anterior to the kidneys
        assert c[12][2] > c[2][2] and c[13][2] > c[3][2]  # adrenals above their kidneys
        assert c[5][2] > c[11][2]  # oesophagus above the pancreas
        bone = (img > 300) & body
        ys = np.argwhere(bone)[:, 1]
        assert np.median(ys) < c[8][1]  # spine (bulk of bone) posterior to the aorta


def test_position_and_size_vary_across_cases(phantoms):
    liver_c = np.array([np.argwhere(lab == 6).mean(axis=0) for _, lab, _, _ in phantoms])
    assert np.linalg.norm(liver_c.std(axis=0)) > 1.0
    assert (liver_c.std(axis=0) > 0.5).all()
    vols = np.array([[np.count_nonzero(lab == k) for k in range(1, 14)] for _, lab, _, _ in phantoms], float)
    cv = vols.std(axis=0) / vols.mean(axis=0)
    assert (cv > 0.05).all(), cv
    # shapes differ, not just positions: overlap of the same organ between two cases is partial
    a, b = phantoms[0][1] == 1, phantoms[1][1] == 1
    assert (a & b).sum() < 0.9 * min(a.sum(), b.sum())


def test_organ_intensities_match_the_table(phantoms):
    for img, lab, _, _ in phantoms:
        for k, (mean, sd) in ORGAN_HU.items():
            values = img[lab == k]
            assert abs(float(np.median(values)) - mean) <= 2 * sd + 5, (k, np.median(values), mean)
            if k != 7:  # the stomach holds gas
                assert values.std() < 3 * sd + 25
    # confusable pairs by intensity alone
    assert abs(ORGAN_HU[1][0] - ORGAN_HU[6][0]) < ORGAN_HU[6][1]
    assert abs(ORGAN_HU[11][0] - ORGAN_HU[12][0]) < ORGAN_HU[11][1]


def test_body_outline_air_outside_and_labels_inside(phantoms):
    for img, lab, body, cavity in phantoms:
        outside = img[~body]
        assert outside.mean() < -990 and outside.max() < -850
        assert img[0, 0, :].max() < -850 and img[-1, -1, :].max() < -850  # corners are air
        assert not (lab > 0)[~cavity].any() and not (cavity & ~body).any()
        inside = img[body]
        assert np.median(inside) > -200  # soft tissue, not air
        # independent check from the image alone: along every x row, organ voxels lie between
        # the first and the last non-air voxel of that row
        solid = img > -500
        xs = np.arange(img.shape[0])[:, None, None]
        first = np.where(solid.any(0), solid.argmax(0), img.shape[0])
        last = np.where(solid.any(0), img.shape[0] - 1 - solid[::-1].argmax(0), -1)
        organ = lab > 0
        assert not (organ & ((xs < first[None]) | (xs > last[None]))).any()


def test_priority_covers_every_organ_once():
    assert sorted(PRIORITY) == list(range(1, 14))


# --------------------------------------------------------------------------- written datasets


def test_write_btcv_twin_readable_by_the_real_data_path(tmp_path):
    out = tmp_path / "btcv"
    path = write_dataset(out, "btcv", 4, 11, shape=SMALL, spacing=(1.5, 1.5, 2.0), val_fraction=0.25)
    assert path == out / "dataset.json"
    spec = json.loads(path.read_text())
    assert spec["labels"] == {str(k): v for k, v in BTCV_LABELS.items()} and len(spec["labels"]) == 14
    assert spec["modality"] == {"0": "CT"}
    assert len(spec["training"]) == spec["numTraining"] == 3
    assert len(spec["validation"]) == spec["numValidation"] == 1
    assert all(set(e) == {"image", "label"} for e in spec["training"] + spec["validation"])
    assert set(spec["synthetic"]["mean_voxels"]) == {BTCV_LABELS[k] for k in range(1, 14)}

    train, val = list_volumes(path, "training"), list_volumes(path, "validation")
    assert len(train) == 3 and len(val) == 1 and not set(train) & set(val)
    assert sorted(p.name for p in train + val) == [f"case_{i:04d}.nii.gz" for i in range(4)]

    ds = CachedVolumes(train[:1], PreprocessConfig(a_min=-175, a_max=250), (64, 64, 32), None)
    x = ds[0]
    assert x.dtype == torch_float32() and x.shape[0] == 1
    assert all(s >= m for s, m in zip(x.shape[1:], (64, 64, 32)))
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.std()) > 0.05

    for entry in spec["training"] + spec["validation"]:
        img = nib.load(str(out / entry["image"]))
        lab = nib.load(str(out / entry["label"]))
        assert img.get_data_dtype() == np.float32 and lab.get_data_dtype() == np.uint8
        assert img.shape == lab.shape == SMALL
        np.testing.assert_allclose(img.affine, np.diag([1.5, 1.5, 2.0, 1.0]))
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        ids = np.unique(np.asarray(lab.dataobj))
        assert ids.dtype.kind == "u" and ids.max() <= 13  # unsigned: never below 0
    # the written case equals the generator's output
    first = spec["training"][0]
    image, labels = ct_phantom(case_seed(11, "btcv", 0), SMALL)
    np.testing.assert_array_equal(nib.load(str(out / first["image"])).get_fdata(dtype=np.float32), image)
    np.testing.assert_array_equal(np.asarray(nib.load(str(out / first["label"])).dataobj), labels)
    assert [p.name for p in tmp_path.iterdir()] == ["btcv"]  # no temp dir left


def torch_float32():
    import torch

    return torch.float32


def test_write_pool_and_atomic_replacement(tmp_path, monkeypatch):
    out = tmp_path / "pool"
    path = write_dataset(out, "ct_pool", 3, 0, shape=(32, 32, 24))
    spec = json.loads(path.read_text())
    assert spec["numTraining"] == 3 and "validation" not in spec and "labels" not in spec
    assert all(set(e) == {"image"} for e in spec["training"])
    assert not (out / "labelsTr").exists() and len(list_volumes(path)) == 3

    # rewriting replaces the folder (stale files gone)
    write_dataset(out, "ct_pool", 2, 0, shape=(32, 32, 24))
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == ["case_0000.nii.gz", "case_0001.nii.gz"]
    before = {p.name: p.read_bytes() for p in (out / "imagesTr").iterdir()}

    # a failure half-way leaves the previous dataset untouched and no temp dir
    real = twins.TWINS["ct_pool"]
    calls = []

    def failing(seed, shape, index):
        calls.append(seed)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real.make(seed, shape, index)

    monkeypatch.setitem(twins.TWINS, "ct_pool", twins.Twin(failing, real.description))
    with pytest.raises(KeyboardInterrupt):
        write_dataset(out, "ct_pool", 4, 5, shape=(32, 32, 24))
    assert {p.name: p.read_bytes() for p in (out / "imagesTr").iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["pool"]


def test_val_split_rounding(tmp_path):
    spec = json.loads(write_dataset(tmp_path / "a", "btcv", 2, 0, shape=(32, 32, 24), val_fraction=0.1).read_text())
    assert spec["numValidation"] == 1 and spec["numTraining"] == 1  # at least one validation case
    spec = json.loads(write_dataset(tmp_path / "b", "btcv", 5, 0, shape=(32, 32, 24), val_fraction=0.4).read_text())
    assert spec["numValidation"] == 2 and spec["numTraining"] == 3
    assert [e["image"] for e in spec["validation"]] == ["./imagesTr/case_0003.nii.gz", "./imagesTr/case_0004.nii.gz"]
    # no fraction given: a quarter (8 cases: 2 validation), as check_twin_params resolves it and the json records
    spec = json.loads(write_dataset(tmp_path / "c", "btcv", 8, 0, shape=(32, 32, 24)).read_text())
    assert spec["numValidation"] == 2 and spec["numTraining"] == 6 and spec["synthetic"]["val_fraction"] == 0.25
    from s2dc.data.synthetic.writer import check_twin_params

    assert check_twin_params("btcv", 8, 0, (32, 32, 24), (1.0, 1.0, 1.0), None) == 0.25
    assert check_twin_params("btcv", 8, 0, (32, 32, 24), (1.0, 1.0, 1.0), 0.5) == 0.5
    assert check_twin_params("ct_pool", 8, 0, (32, 32, 24), (1.0, 1.0, 1.0), None) is None


# --------------------------------------------------------------------------- CLI


def test_cli_synth(tmp_path, capsys):
    from s2dc.cli import main

    out = tmp_path / "twin"
    rc = main(["synth", "--kind", "btcv", "--out", str(out), "--cases", "2", "--seed", "4",
               "--shape", "48", "48", "32", "--spacing", "2", "2", "3", "--val-fraction", "0.5"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert str(out / "dataset.json") in printed and "liver" in printed and "2 cases" in printed
    spec = json.loads((out / "dataset.json").read_text())
    assert spec["numTraining"] == 1 and spec["numValidation"] == 1
    img = nib.load(str(out / spec["training"][0]["image"]))
    assert img.shape == (48, 48, 32)
    np.testing.assert_allclose(np.diag(img.affine)[:3], (2, 2, 3))

    rc = main(["synth", "--kind", "ct_pool", "--out", str(tmp_path / "pool"), "--cases", "0", "--seed", "1"])
    assert rc == 2
    assert "--cases" in capsys.readouterr().err
    rc = main(["synth", "--kind", "ct_pool", "--out", str(tmp_path / "pool"), "--cases", "1", "--seed", "1",
               "--shape", "4", "48", "32"])
    assert rc == 2
    assert "--shape" in capsys.readouterr().err
    assert not (tmp_path / "pool").exists()


@pytest.mark.parametrize("spacing", [("1e39", "1e39", "1e39"), ("1e-5", "1e-5", "1e-5")], ids=["huge", "tiny"])
def test_cli_synth_refuses_a_spacing_its_volumes_cannot_be_read_with(tmp_path, capsys, spacing):
    """1e39 mm overflows the header's float32 pixdim (inf), 1e-5 mm makes voxels the reader refuses as degenerate:
    both were written with exit 0, then refused by read_volume."""
    from s2dc.cli import main

    rc = main(["synth", "--kind", "ct_pool", "--out", str(tmp_path / "pool"), "--cases", "1", "--seed", "0",
               "--shape", "16", "16", "16", "--spacing", *spacing])
    assert rc == 2
    assert "--spacing" in capsys.readouterr().err
    assert not (tmp_path / "pool").exists()


def test_a_third_of_the_ct_pool_is_chest_ct():
    """The CT pool mixes abdominal phantoms with chest scans (the release pools BTCV and TCIA-COVID19): case i % 3 == 2
    is a chest, told by its lungs (parenchyma at -900..-700 HU fills a tenth of the volume; the abdomen has no lung)."""
    shape = (48, 48, 32)

    def lung_fraction(index):
        image = twins.TWINS["ct_pool"].make(case_seed(0, "ct_pool", index), shape, index).image[0]
        return float(((image > -900) & (image < -700)).mean())

    fractions = [lung_fraction(i) for i in range(6)]
    assert [f > 0.1 for f in fractions] == [False, False, True, False, False, True], fractions


def test_the_json_changes_with_the_images_and_only_with_them(tmp_path, monkeypatch):
    """The same twin written twice gives the same dataset.json bytes (no needless rerun downstream); other images
    under the same names give another json, whose content_sha256 is the hash of the listed files' hashes."""
    import hashlib

    first = write_dataset(tmp_path / "a", "ct_pool", 2, 0, shape=(32, 32, 24)).read_bytes()
    assert write_dataset(tmp_path / "b", "ct_pool", 2, 0, shape=(32, 32, 24)).read_bytes() == first
    real = twins.TWINS["ct_pool"]

    def brighter(seed, shape, index):
        case = real.make(seed, shape, index)
        case.image = case.image + 1.0
        return case

    monkeypatch.setitem(twins.TWINS, "ct_pool", twins.Twin(brighter, real.description))
    changed = write_dataset(tmp_path / "c", "ct_pool", 2, 0, shape=(32, 32, 24))
    doc, old = json.loads(changed.read_text()), json.loads(first)
    assert doc["training"] == old["training"] and doc["content_sha256"] != old["content_sha256"]
    lines = "".join(f"image:{e['image']}:{hashlib.sha256((changed.parent / e['image']).read_bytes()).hexdigest()}\n"
                    for e in doc["training"])
    assert doc["content_sha256"] == hashlib.sha256(lines.encode()).hexdigest()


def test_the_command_leaves_the_twins_defaults_to_the_writer(tmp_path, monkeypatch):
    """`s2dc synth` without --shape, --spacing or --val-fraction takes the writer's own defaults (which the workflow's
    code hash of the twins covers), not a second copy of them in the command line; given ones are passed on."""
    import s2dc.data.synthetic as synthetic
    from s2dc.cli import main

    calls = []

    def recording(out, kind, cases, seed, **options):
        calls.append(options)
        return write_dataset(out, kind, cases, seed, **options)

    monkeypatch.setattr(synthetic, "write_dataset", recording)
    assert main(["synth", "--kind", "ct_pool", "--out", str(tmp_path / "a"), "--cases", "1", "--seed", "0"]) == 0
    assert main(["synth", "--kind", "ct_pool", "--out", str(tmp_path / "b"), "--cases", "1", "--seed", "0",
                 "--shape", "32", "32", "16", "--spacing", "1", "1", "1"]) == 0
    assert [set(c) - {"progress"} for c in calls] == [set(), {"shape", "spacing"}]
    assert calls[1]["shape"] == (32, 32, 16) and calls[1]["spacing"] == (1.0, 1.0, 1.0)


def test_a_signal_between_the_two_renames_puts_the_earlier_dataset_back(tmp_path, monkeypatch):
    """The new folder replaces the old one by two renames (old aside, new in); a SIGTERM or Ctrl-C between them
    must leave the earlier dataset where it was, never no dataset at all."""
    import os

    out = tmp_path / "pool"
    write_dataset(out, "ct_pool", 2, 0, shape=(32, 32, 24))
    before = (out / "dataset.json").read_text()
    real, calls = os.replace, []

    def interrupted_after_the_first(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the signal's handler runs as the second rename begins
        return real(src, dst)

    monkeypatch.setattr(os, "replace", interrupted_after_the_first)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(out, "ct_pool", 3, 1, shape=(32, 32, 24))
    monkeypatch.undo()
    assert (out / "dataset.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["pool"]


def test_what_a_killed_synth_left_is_cleaned_up_or_put_back(tmp_path):
    """SIGKILL runs no clean-up: the next `s2dc synth` into the same folder removes the staging folder of a process
    that is gone and the earlier dataset it had renamed aside, and leaves a running process's alone (that the
    earlier dataset is put back when nothing replaced it: tests/test_trust.py)."""
    import socket
    import subprocess
    import sys

    host = socket.gethostname()
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    out = tmp_path / "pool"
    write_dataset(out, "ct_pool", 2, 0, shape=(32, 32, 24))
    before = (out / "dataset.json").read_text()
    out.rename(tmp_path / f".pool.{host}.{dead}.old")  # killed between the two renames
    staging = tmp_path / f".pool.{host}.{dead}.tmp"
    (staging / "imagesTr").mkdir(parents=True)
    (staging / ".s2dc-synth").write_text("x")
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        running = tmp_path / f".pool.{host}.{alive.pid}.tmp"
        running.mkdir()
        (running / ".s2dc-synth").write_text("x")
        assert write_dataset(out, "ct_pool", 2, 0, shape=(32, 32, 24)).read_text() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["pool", running.name])
    finally:
        alive.kill()
        alive.wait()


def test_a_twin_reads_its_own_registry_entry_only(monkeypatch):
    """A twin's job carries its own entry's digest only (workflow: entry=...), so a twin drawn from another dataset's
    entry would not be drawn again when that entry changes: the CT pool drew its pneumonias by CC-CCII's class names
    (found by review). Every twin's cases read no other entry when they are drawn (and twins.py keeps no entry in a
    module constant, which this could not see)."""
    import ast
    import inspect

    from s2dc.data.synthetic import twins

    read = []
    real_get = twins.get

    def recording_get(name):
        read.append(name)
        return real_get(name)

    monkeypatch.setattr(twins, "get", recording_get)
    for name, twin in twins.TWINS.items():
        read.clear()
        for index in range(3):
            twin.make(case_seed(0, name, index), (64, 64, 32), index)
        assert set(read) <= {name}, (name, read)
    module = ast.parse(inspect.getsource(twins))
    constants = [node for node in module.body if isinstance(node, (ast.Assign, ast.AnnAssign))]
    assert not any(isinstance(call, ast.Call) and getattr(call.func, "id", None) == "get"
                   for node in constants for call in ast.walk(node)), "an entry read into a module constant"
