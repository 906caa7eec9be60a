"""The CT twins msd_spleen, msd_liver, msd_lung and cc_ccii: determinism, roles, variation, context."""

from __future__ import annotations

import numpy as np
import pytest

from s2dc.data.datalist import list_cases
from s2dc.data.preprocess import PreprocessConfig
from s2dc.data.registry import get
from s2dc.data.synthetic import chest, lesions
from s2dc.data.synthetic.abdomen import ct_phantom
from s2dc.data.synthetic.twins import TWINS, cc_ccii_case
from s2dc.data.synthetic.writer import write_dataset
from s2dc.data.volumes import CachedVolumes, LabelledCases
from s2dc.downstream.tasks import TASKS

NAMES = ("msd_spleen", "msd_liver", "msd_lung", "cc_ccii")
SHAPE = (48, 48, 32)


def centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0)


def _erode(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    for axis in range(3):
        for shift in (1, -1):
            out &= np.roll(mask, shift, axis=axis)
    return out


def erosion_depth(mask: np.ndarray) -> np.ndarray:
    """Number of 6-neighbour erosions each voxel survives (1 on the edge): a distance to the edge."""
    depth, m = np.zeros(mask.shape, np.int32), mask.copy()
    while m.any():
        depth += m
        m = _erode(m)
    return depth


def components(mask: np.ndarray) -> int:
    """Number of 6-connected components, by propagating the largest voxel id to convergence."""
    ids = np.where(mask, np.arange(1, mask.size + 1).reshape(mask.shape), 0)
    while True:
        new = ids.copy()
        for axis in range(3):
            for shift in (1, -1):
                new = np.maximum(new, np.roll(ids, shift, axis=axis))
        new = np.where(mask, new, 0)
        if np.array_equal(new, ids):
            return len(np.unique(ids[mask]))
        ids = new


def threshold_accuracy(a, b) -> float:
    """Best accuracy of one threshold on a scalar separating groups ``a`` and ``b`` (either direction)."""
    values = np.concatenate([a, b])
    is_a = np.concatenate([np.ones(len(a), bool), np.zeros(len(b), bool)])
    best = 0.0
    for thr in np.concatenate([values, [np.inf]]):
        acc = float(((values < thr) == is_a).mean())
        best = max(best, acc, 1 - acc)
    return best


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_identical_other_seed_differs_and_roles_fit_the_registry(name):
    spec, make = get(name), TWINS[name].make
    a, b, c = make(11, (40, 36, 24), 4), make(11, (40, 36, 24), 4), make(12, (40, 36, 24), 4)
    assert a.image.dtype == np.float32 and a.image.shape == (len(spec.channels), 40, 36, 24)
    assert np.array_equal(a.image, b.image) and not np.array_equal(a.image, c.image)
    assert np.array_equal(a.image, np.rint(a.image))  # integer HU / 8-bit values
    if spec.task == "segmentation":
        assert a.label.dtype == np.uint8 and a.label.shape == (40, 36, 24)
        assert np.array_equal(a.label, b.label)
        assert set(np.unique(a.label)) == set(spec.labels)  # every label drawn
        assert -1024 <= a.image.min() < -900 and a.image.max() <= 3071  # HU with air
    else:
        assert a.klass == 4 % 3 and a.label is None
        assert a.image.min() >= 0 and a.image.max() <= 255


def test_spleen_is_the_abdominal_phantom_s_spleen_varies_and_shares_the_liver_s_intensity():
    cents, vols, close = [], [], 0
    for seed in range(5):
        case = TWINS["msd_spleen"].make(seed, SHAPE, 0)
        image, btcv = ct_phantom(seed, SHAPE)
        assert np.array_equal(case.image[0], image) and np.array_equal(case.label, (btcv == 1).astype(np.uint8))
        img = case.image[0]
        spleen, liver = img[btcv == 1], img[btcv == 6]
        # context: the spleen's mean lies within its sd of an unlabelled neighbour's mean, within 2 sd of the liver's
        neighbours = (liver, img[btcv == 11], img[(btcv == 12) | (btcv == 13)], img[(btcv == 7) & (img > -500)])
        close += any(abs(spleen.mean() - n.mean()) <= spleen.std() for n in neighbours if n.size)
        assert abs(spleen.mean() - liver.mean()) <= 2 * spleen.std()
        cents.append(centroid(case.label == 1))
        vols.append(int(case.label.sum()))
    assert close == 5
    assert np.ptp(np.array(cents), axis=0).max() > 2 and max(vols) / min(vols) > 1.3


def test_liver_tumours_are_in_the_liver_vary_and_have_the_hu_of_other_tissues():
    cents, vols, counts, context = [], [], [], []
    for seed in range(6):
        case = TWINS["msd_liver"].make(seed, SHAPE, 0)
        image, btcv = ct_phantom(seed, SHAPE)
        tumour, liver = case.label == 2, case.label == 1
        assert tumour.any() and np.array_equal(tumour | liver, btcv == 6)  # label 1 = liver without tumour
        assert np.array_equal(case.image[0][~tumour], image[~tumour])  # outside: the phantom unchanged
        img = case.image[0]
        t, lv = img[tumour], img[liver]
        assert t.mean() < lv.mean() - 10  # hypo-dense
        # context: each structure's mean lies within its own sd of an unlabelled neighbour's mean
        neighbours = {"spleen": img[btcv == 1], "stomach wall": img[(btcv == 7) & (img > -500)],
                      "pancreas": img[btcv == 11], "adrenals": img[(btcv == 12) | (btcv == 13)]}
        near = [any(abs(v.mean() - n.mean()) <= v.std() for n in neighbours.values() if n.size) for v in (lv, t)]
        assert near[1] and abs(lv.mean() - neighbours["spleen"].mean()) <= 2 * lv.std()
        context.append(np.mean(near))
        counts.append(components(tumour))
        cents.append(centroid(tumour))
        vols.append(int(tumour.sum()))
    assert min(context) >= 0.5, context  # at least half of the structures, in every case
    assert 1 <= min(counts) and max(counts) <= 3 and len(set(counts)) > 1
    assert np.ptp(np.array(cents), axis=0).max() > 5 and max(vols) / min(vols) > 2


def test_lung_nodule_sits_in_a_lung_varies_and_has_the_density_of_vessels_and_heart():
    cents, vols, close = [], [], 0
    for seed in range(6):
        case = TWINS["msd_lung"].make(seed, SHAPE, 0)
        anatomy = chest.chest_anatomy(np.random.default_rng(seed), SHAPE)  # the same case's tissue map
        nodule = case.label == 1
        assert np.array_equal(nodule, lesions.lung_nodule(anatomy))
        assert (anatomy.side[nodule] > 0).all()
        img = case.image[0]
        values = img[nodule]
        lung = img[anatomy.tissue == chest.LUNG]
        assert lung.mean() < -750 and values.mean() > lung.mean() + 600
        near = [img[anatomy.tissue == k] for k in (chest.VESSEL, chest.HEART)]
        close += any(abs(values.mean() - n.mean()) <= max(values.std(), 1.0) for n in near)
        cents.append(centroid(nodule))
        vols.append(int(nodule.sum()))
    assert close >= 5
    assert np.ptp(np.array(cents), axis=0).max() > 5 and max(vols) / min(vols) > 2


def test_cc_ccii_global_statistics_overlap_while_the_pattern_separates_cp_from_ncp():
    stats: dict[int, list[dict]] = {0: [], 1: [], 2: []}
    for i in range(54):
        case, anatomy, opacity = cc_ccii_case(1000 + i, (40, 40, 24), i)
        img = case.image[0]
        lung = anatomy.side > 0
        s = {"mean": float(img.mean()), "lung mean": float(img[lung].mean()), "fraction": opacity.sum() / lung.sum()}
        if case.klass:
            right, left = (opacity & (anatomy.side == 1)).sum(), (opacity & (anatomy.side == 2)).sum()
            dist = erosion_depth(lung)  # independent depth: voxels to the lung's edge
            parenchyma = img[anatomy.tissue == chest.LUNG]  # the lung parenchyma left clear (no vessels, airways)
            s.update(laterality=min(right, left) / max(right, left), depth=float(dist[opacity].mean()),
                     density=float(img[opacity].mean()),
                     # the lung's mean 8-bit increase: opacified fraction x (opacity - clear parenchyma)
                     excess=s["fraction"] * (float(img[opacity].mean()) - float(parenchyma.mean())))
        stats[case.klass].append(s)
    cp, ncp = stats[1], stats[2]

    def col(group, key):
        return np.array([s[key] for s in group])

    # CP and NCP add the same excess density: neither the lungs' nor the image's mean separates them ...
    for key in ("mean", "lung mean"):
        assert threshold_accuracy(col(cp, key), col(ncp, key)) <= 0.7, key
    excess = col(cp, "excess"), col(ncp, "excess")
    assert max(e.min() for e in excess) < min(e.max() for e in excess)  # overlapping distributions
    assert abs(excess[0].mean() - excess[1].mean()) <= 0.25 * max(e.mean() for e in excess)
    # ... so the faint ground glass opacifies more of the lung than the dense consolidation
    assert col(ncp, "fraction").mean() > 1.5 * col(cp, "fraction").mean()
    # nor does the image's mean separate Normal from either pneumonia
    for a, b in ((0, 1), (0, 2)):
        assert threshold_accuracy(col(stats[a], "mean"), col(stats[b], "mean")) <= 0.85
    # the pattern does: laterality, density of the opacity, its distance from the pleura
    assert col(cp, "laterality").max() < 0.3 < 0.5 < col(ncp, "laterality").min()
    assert col(cp, "density").min() > col(ncp, "density").max() + 30
    assert threshold_accuracy(col(cp, "depth"), col(ncp, "depth")) == 1.0
    assert col(cp, "depth").mean() > col(ncp, "depth").mean()


@pytest.mark.parametrize("name", NAMES)
def test_written_twin_loads_with_its_preset(tmp_path, name):
    spec = get(name)
    js = write_dataset(tmp_path / name, name, 6, seed=3, shape=(48, 48, 32))
    cases = list_cases(js, "training", TASKS[spec.task].roles if spec.downstream else ("image",))
    cfg = PreprocessConfig.from_preset(spec.preset, crop_foreground=False)
    if spec.task == "segmentation":
        item = LabelledCases(cases[:1], cfg, (32, 32, 16), len(spec.labels), None)[0]
        assert tuple(item["label"].shape[1:]) == tuple(item["image"].shape[1:])
        assert set(np.unique(item["label"].numpy()).astype(int)) <= set(spec.labels)
        image = item["image"]
    else:
        assert [c["class"] for c in cases] == [i % 3 for i in range(len(cases))]
        image = CachedVolumes([cases[0]["image"]], cfg, (32, 32, 16), None)[0]
    assert 0 <= float(image.min()) and float(image.max()) <= 1 and float(image.std()) > 0.05
