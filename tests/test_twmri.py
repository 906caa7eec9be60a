"""MRI twins (mri_pool, brats21, brats23): determinism, roles, anatomy, variation, context, written datasets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from s2dc.data.datalist import list_cases
from s2dc.data.preprocess import PreprocessConfig
from s2dc.data.registry import get
from s2dc.data.synthetic import write_dataset
from s2dc.data.synthetic.brain import CSF, DEEP, EDEMA, ENHANCING, GM, NECROSIS, NORMAL_TISSUES, VESSEL, WM
from s2dc.data.synthetic.render_mri import mri_case
from s2dc.data.synthetic.twins import TWINS
from s2dc.data.volumes import CachedVolumes, LabelledCases
from s2dc.downstream.tasks import TASKS

MRI = ("mri_pool", "brats21", "brats23")
SHAPE = (64, 64, 32)
BRATS21 = get("brats21").channels


@pytest.fixture(scope="module")
def brats():
    """Eight brats21-like cases at 64 x 64 x 32: (image (4, X, Y, Z), Brain)."""
    return [mri_case(seed, SHAPE, BRATS21) for seed in range(8)]


# --------------------------------------------------------------------------- determinism, roles


@pytest.mark.parametrize("name", MRI)
def test_same_seed_identical_other_seed_differs(name):
    make = TWINS[name].make
    a, b, c = make(11, (48, 48, 32), 0), make(11, (48, 48, 32), 0), make(12, (48, 48, 32), 0)
    assert a.image.tobytes() == b.image.tobytes()
    assert not np.array_equal(a.image, c.image)
    if a.label is not None:
        assert a.label.tobytes() == b.label.tobytes() and not np.array_equal(a.label, c.label)


@pytest.mark.parametrize("name", MRI)
def test_roles_shapes_and_values_follow_the_registry(name):
    spec = get(name)
    for seed in range(3):
        case = TWINS[name].make(seed, SHAPE, seed)
        assert case.image.dtype == np.float32 and case.image.shape == (len(spec.channels), *SHAPE)
        assert case.klass is None and case.target is None
        inside = case.image[0] > 0
        # skull-stripped: zero outside one brain mask shared by every channel, positive inside
        assert all(np.array_equal(ch > 0, inside) for ch in case.image)
        assert (case.image >= 0).all() and np.isfinite(case.image).all()
        assert 0.15 < inside.mean() < 0.6
        if spec.task == "segmentation":
            assert case.label.dtype == np.uint8 and case.label.shape == SHAPE
            values = set(np.unique(case.label).tolist())
            assert values == set(spec.labels) == {0, 1, 2, 4}  # every BraTS case has all three sub-regions
            assert not (case.label[~inside]).any()
        else:
            assert case.label is None


def test_any_grid_from_16_voxels():
    for shape in ((16, 16, 16), (17, 23, 19), (40, 32, 16)):
        image, brain = mri_case(3, shape, BRATS21)
        assert image.shape == (4, *shape) and brain.label.shape == shape and (image[:, brain.mask] > 0).all()


# --------------------------------------------------------------------------- anatomy and contrasts


def _mean(image, mask):
    return float(image[mask].mean())


def test_sequence_contrasts_follow_the_tissue_tables(brats):
    for image, brain in brats:
        t1, t1ce, t2, flair = image
        tis = brain.tissue
        m = {code: tis == code for code in (CSF, GM, WM, NECROSIS, EDEMA, ENHANCING, VESSEL)}
        assert _mean(t1, m[WM]) > _mean(t1, m[GM]) > _mean(t1, m[CSF])
        assert _mean(t1, m[NECROSIS]) < _mean(t1, m[GM])  # necrosis dark on T1
        assert _mean(t2, m[CSF]) > _mean(t2, m[GM]) > _mean(t2, m[WM])
        assert _mean(t2, m[EDEMA]) > _mean(t2, m[WM])
        assert _mean(flair, m[CSF]) < _mean(flair, m[WM]) < _mean(flair, m[EDEMA])  # CSF suppressed
        # the rim enhances: relative to white matter it is brighter on T1ce than on T1, like the vessels
        for code in (ENHANCING, VESSEL):
            assert _mean(t1ce, m[code]) / _mean(t1ce, m[WM]) > 1.1 * _mean(t1, m[code]) / _mean(t1, m[WM])
        # BraTS labels are the tumour tissues
        assert np.array_equal(brain.label == 1, m[NECROSIS]) and np.array_equal(brain.label == 4, m[ENHANCING])
        assert np.array_equal(brain.label == 2, m[EDEMA])


def test_brain_anatomy_has_its_parts(brats):
    deep = []
    for _, brain in brats:
        counts = np.bincount(brain.tissue.ravel(), minlength=10)
        n = counts[1:].sum()
        assert counts[WM] > 0.2 * n and counts[GM] > 0.15 * n and counts[CSF] > 0.03 * n and counts[VESSEL] > 100
        deep.append(counts[DEEP])
        # the cortex is outside: grey matter touches the brain's border far more than white matter
        mask = brain.mask
        border = mask & ~(np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1))
        assert (brain.tissue[border] == GM).sum() + (brain.tissue[border] == CSF).sum() > 3 * (brain.tissue[border] == WM).sum()
    assert sorted(deep)[2] > 100  # deep grey nuclei (a large edema may swallow them)
    pool = [mri_case(seed, (32, 32, 16), ("T1w",), 0.25)[1].tumour for seed in range(24)]
    assert 2 <= sum(pool) <= 12  # mri_pool: mostly healthy brains, some with a tumour


# --------------------------------------------------------------------------- inter-case variation


def _centroid(mask):
    return np.array([c.mean() for c in np.nonzero(mask)])


def test_cases_vary_in_position_size_orientation_and_intensity(brats):
    brain_c = np.array([_centroid(b.mask) for _, b in brats])
    brain_v = np.array([b.mask.sum() for _, b in brats])
    tumour_c = np.array([_centroid(b.label > 0) for _, b in brats])
    tumour_v = np.array([(b.label > 0).sum() for _, b in brats])
    core_v = np.array([np.isin(b.label, (1, 4)).sum() for _, b in brats])
    vent_v = np.array([(b.tissue == CSF).sum() for _, b in brats])
    assert brain_c.std(axis=0).max() > 0.7  # brain position moves
    assert brain_v.std() / brain_v.mean() > 0.05
    assert np.linalg.norm(tumour_c - tumour_c.mean(axis=0), axis=1).mean() > 6  # tumour anywhere
    assert tumour_v.max() > 2.5 * tumour_v.min() and core_v.max() > 2.5 * core_v.min()
    assert vent_v.max() > 1.2 * vent_v.min()
    # tumours in both hemispheres (x relative to the brain's centre)
    side = np.sign(tumour_c[:, 0] - brain_c[:, 0])
    assert (side > 0).any() and (side < 0).any()
    # orientation: the in-plane principal axis of the brain mask turns from case to case
    angles = []
    for _, b in brats:
        x, y, _ = np.nonzero(b.mask)
        cov = np.cov(np.stack([x, y]).astype(float))
        vals, vecs = np.linalg.eigh(cov)
        v = vecs[:, -1] * np.sign(vecs[1, -1])
        angles.append(np.degrees(np.arctan2(v[0], v[1])))
    assert np.ptp(angles) > 6
    # intensity scale and contrast per case: white matter T1 level and the GM/WM ratio vary
    wm = np.array([_mean(im[0], b.tissue == WM) for im, b in brats])
    ratio = np.array([_mean(im[0], b.tissue == GM) / _mean(im[0], b.tissue == WM) for im, b in brats])
    assert wm.max() > 2 * wm.min() and np.ptp(ratio) > 0.03


# --------------------------------------------------------------------------- the context rule


def test_tumour_subregions_share_intensity_with_normal_tissue(brats):
    """For at least half of the labelled sub-regions (in every case, and 2 of 3 over all cases), some
    channel puts the region's mean within one within-region sd of a normal tissue's mean."""
    shared_all = []
    for image, brain in brats:
        shared = []
        for value in (1, 2, 4):
            region = brain.label == value
            ok = False
            for ch in image:
                mu, sd = ch[region].mean(), ch[region].std()
                means = [ch[brain.tissue == t].mean() for t in NORMAL_TISSUES if (brain.tissue == t).sum() >= 20]
                ok |= min(abs(mu - m) for m in means) < sd
            shared.append(ok)
        assert sum(shared) >= 2
        shared_all += shared
    assert np.mean(shared_all) >= 0.66


def _best_threshold_dice(x, y):
    """Best Dice of ``x > t`` or ``x < t`` against ``y`` over the percentiles of ``x``."""
    best = 0.0
    for t in np.percentile(x, np.arange(1, 100)):
        for pred in (x > t, x < t):
            best = max(best, 2 * float((pred & y).sum()) / (pred.sum() + y.sum()))
    return best


def test_no_label_is_a_threshold_of_one_channel(brats):
    dice = []
    for image, brain in brats[:5]:
        for value in (1, 2, 4):
            y = (brain.label == value)[brain.mask]
            dice += [_best_threshold_dice(ch[brain.mask], y) for ch in image]
    assert max(dice) < 0.9  # measured max about 0.82 (edema on FLAIR); a trivial twin gives ~1
    assert np.median(dice) < 0.3


# --------------------------------------------------------------------------- written datasets


@pytest.mark.parametrize("name", MRI)
def test_written_dataset_loads_with_the_preset(tmp_path, name):
    spec = get(name)
    path = write_dataset(tmp_path / name, name, 2, 5, shape=(48, 48, 32),
                         **({"val_fraction": 0.5} if spec.downstream else {}))  # a pool has no validation cases
    doc = json.loads(path.read_text())
    assert doc["modality"] == {str(i): c for i, c in enumerate(spec.channels)}
    cases = list_cases(path, "training", TASKS[spec.task].roles if spec.downstream else ("image",))
    cfg = PreprocessConfig.from_preset(spec.preset, crop_foreground=False)
    if spec.task == "segmentation":
        assert doc["labels"] == {"0": "background", "1": spec.labels[1], "2": spec.labels[2], "4": spec.labels[4]}
        item = LabelledCases(cases, cfg, (48, 48, 32), max(spec.labels) + 1, None)[0]
        image, label = np.asarray(item["image"]), np.asarray(item["label"])
        assert image.shape == (4, 48, 48, 32) and label.shape == (1, 48, 48, 32)
        assert set(np.unique(label).tolist()) == {0, 1, 2, 4}
    elif spec.task == "translation":
        assert "label" not in doc["training"][0] and not (tmp_path / name / "labelsTr").exists()
        assert [p.name for p in cases[0]["image"]] == [f"case_0000_{c}.nii.gz" for c in spec.channels]
        image = np.stack([np.asarray(CachedVolumes([p], cfg, (48, 48, 32), None)[0])[0] for p in cases[0]["image"]])
    else:
        assert "validation" not in doc and len(cases) == 2
        image = np.asarray(CachedVolumes([cases[0]["image"]], cfg, (48, 48, 32), None)[0])
    # z-scored inside the brain per channel, zero outside
    for ch in image:
        inside = ch[ch != 0]
        assert abs(inside.mean()) < 0.05 and abs(inside.std() - 1) < 0.05 and 0.15 < inside.size / ch.size < 0.6


def test_brats21_twin_writes_its_tissue_map_beside_the_labels(tmp_path):
    """The BraTS 2021 twin also writes each case's tissue map (role `anatomy`, names in `anatomy_labels`) for the
    structure figures: the tumour labels are exactly its necrosis / edema / enhancing voxels, and it is zero exactly
    outside the brain (where every sequence is zero); the other MRI twins write none."""
    import nibabel as nib

    path = write_dataset(tmp_path / "b21", "brats21", 2, 5, shape=(48, 48, 32), val_fraction=0.5)
    doc = json.loads(path.read_text())
    assert doc["anatomy_labels"]["3"] == "white matter" and doc["anatomy_labels"][str(EDEMA)] == "edema"
    for case in list_cases(path, "training", ("image", "label", "anatomy")):
        anatomy = np.asarray(nib.load(str(case["anatomy"])).dataobj)
        label = np.asarray(nib.load(str(case["label"])).dataobj)
        image = np.stack([np.asarray(nib.load(str(p)).dataobj) for p in case["image"]])
        for value, tissue in ((1, NECROSIS), (2, EDEMA), (4, ENHANCING)):
            assert np.array_equal(label == value, anatomy == tissue), value
        assert np.array_equal(anatomy == 0, (image == 0).all(0))
        assert (anatomy == WM).sum() > (anatomy == GM).sum() > 0
    other = write_dataset(tmp_path / "b23", "brats23", 2, 5, shape=(48, 48, 32), val_fraction=0.5)
    assert "anatomy_labels" not in json.loads(other.read_text()) and not (tmp_path / "b23" / "anatomyTr").exists()
