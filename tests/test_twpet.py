"""PET twins (pet_pool, autopet, adni, udpet): determinism, roles, variation, context and the real data path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from s2dc.data.datalist import list_cases
from s2dc.data.preprocess import PreprocessConfig
from s2dc.data.registry import get
from s2dc.data.synthetic import twins
from s2dc.data.synthetic.brain_pet import brain_pet
from s2dc.data.synthetic.fields import blur
from s2dc.data.synthetic.render_pet import acquire, thin
from s2dc.data.synthetic.torso_pet import torso_pet
from s2dc.data.synthetic.writer import write_dataset
from s2dc.data.volumes import CachedVolumes, LabelledCases
from s2dc.downstream.tasks import TASKS

PET = ("pet_pool", "autopet", "adni", "udpet")
SMALL = (48, 48, 32)
MID = (64, 64, 40)


@pytest.mark.parametrize("name", PET)
def test_same_seed_identical_other_seed_differs(name):
    make = twins.TWINS[name].make
    a, b, c = make(7, SMALL, 3), make(7, SMALL, 3), make(8, SMALL, 3)
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.array_equal(a.image, c.image)
    for role in ("label", "target"):
        if getattr(a, role) is not None:
            np.testing.assert_array_equal(getattr(a, role), getattr(b, role))
    assert a.klass == b.klass


@pytest.mark.parametrize("name", PET)
def test_roles_shapes_dtypes_per_registry_spec(name):
    spec = get(name)
    for index in range(4):
        case = twins.TWINS[name].make(100 + index, SMALL, index)
        assert case.image.dtype == np.float32 and case.image.shape == (len(spec.channels), *SMALL)
        assert float(case.image.min()) >= 0 and np.isfinite(case.image).all()
        # zero-ish air: the grid's corners hold (almost) no counts
        corner = case.image[0, :4, :4, :]
        assert float(corner.mean()) < 0.02 * float(case.image.max())
        assert (case.label is not None) == (spec.task == "segmentation")
        assert (case.klass is not None) == (spec.task == "classification")
        assert (case.target is not None) == (spec.task == "reconstruction")
        if spec.task == "segmentation":
            assert case.label.dtype == np.uint8 and case.label.shape == SMALL
            assert set(np.unique(case.label)) == set(spec.labels)  # {0, 1}: every case has a lesion
        if spec.task == "classification":
            assert case.klass == index % 2 and spec.outputs[case.klass] == ("CN", "AD")[index % 2]
        if spec.task == "reconstruction":
            assert case.target.dtype == np.float32 and case.target.shape == SMALL and case.target.min() >= 0


def test_pool_mixes_torso_and_brain():
    make = twins.TWINS["pet_pool"].make
    brain, torso = make(5, SMALL, 3).image[0], make(5, SMALL, 0).image[0]
    np.testing.assert_array_equal(brain, brain_pet(5, SMALL).scan.image)
    np.testing.assert_array_equal(torso, torso_pet(5, SMALL, lesions=(0, 3)).scans[0].image)
    # a skull-stripped brain is compact (no signal in the lowest slices), a torso slab fills z
    assert float(brain[:, :, :2].sum()) < 1e-3 * float(brain.sum())
    assert float(torso[:, :, :2].sum()) > 0.02 * float(torso.sum())


def test_renderer_poisson_counts_and_dose_thinning():
    rng = np.random.default_rng(0)
    activity = np.zeros((24, 24, 24), np.float32)
    activity[4:20, 4:20, 4:20] = 2.0
    full = acquire(rng, activity, 30.0, 1.0)
    low = thin(rng, full, 0.25)
    expected = blur(activity, 1.0) * 30.0  # independent: expected counts
    inner = (slice(8, 16),) * 3
    lam = expected[inner]
    c = full.counts[inner].astype(float)
    assert abs(c.mean() / lam.mean() - 1) < 0.02 and abs(c.var() / lam.mean() - 1) < 0.1  # Poisson: var = mean
    assert abs(low.counts.sum() / full.counts.sum() - 0.25) < 0.01
    assert (low.counts <= full.counts).all()
    np.testing.assert_allclose(full.image, full.counts / 30.0, rtol=1e-6)
    np.testing.assert_allclose(low.image, low.counts / 7.5, rtol=1e-6)
    # same mean, 4 x the variance at a quarter of the counts
    assert abs(low.image[inner].mean() / full.image[inner].mean() - 1) < 0.03
    assert 3.4 < low.image[inner].var() / full.image[inner].var() < 4.6
    assert float(full.image[0].max()) == 0.0  # air far from the activity stays zero
    # the blur, by hand (the block checks above sit 4 voxels inside the cube, where no blur at all reads the same): one
    # hot voxel spreads as the sampled Gaussian of sd 1 voxel, radius 3, normalised, and keeps its mass
    point = np.zeros((25, 25, 25), np.float32)
    point[12, 12, 12] = 1000.0
    g = np.exp(-0.5 * np.arange(-3, 4) ** 2)
    g /= g.sum()  # g[3] ~ 0.3991 at the centre, g[4] ~ 0.2420 one voxel off
    spot = acquire(np.random.default_rng(1), point, 1.0, 1.0).mean
    assert spot[12, 12, 12] == pytest.approx(1000 * g[3] ** 3, rel=1e-5)  # ~63.5
    assert spot[13, 12, 12] == pytest.approx(1000 * g[4] * g[3] ** 2, rel=1e-5)  # ~38.5; 0 unblurred
    assert float(spot.sum()) == pytest.approx(1000.0, rel=1e-5)


def test_udpet_low_dose_is_a_noisier_quarter_of_the_target():
    for seed in (1, 2):
        case = twins.TWINS["udpet"].make(seed, MID, 0)
        pet = torso_pet(seed, MID, lesions=(0, 2), dose_fractions=(0.25, 1.0))
        low, full = case.image[0], case.target
        np.testing.assert_array_equal(low, pet.scans[0].image)
        liver = pet.organs == 6
        lam = pet.scans[1].mean[liver]
        assert abs(low[liver].mean() / full[liver].mean() - 1) < 0.05  # same activity
        ratio = np.var(low[liver] - lam) / np.var(full[liver] - lam)
        assert 3.0 < ratio < 5.0, ratio
        assert abs(pet.scans[0].counts.sum() / pet.scans[1].counts.sum() - 0.25) < 0.005


def _centroid(mask):
    return np.array([c.mean() for c in np.nonzero(mask)])


def test_autopet_lesions_vary_in_position_size_and_number():
    cents, vols, counts = [], [], []
    for seed in range(10):
        label = twins.TWINS["autopet"].make(seed, SMALL, seed).label
        cents.append(_centroid(label == 1))
        vols.append(int(label.sum()))
        pet = torso_pet(seed, SMALL, lesions=(1, 4))
        counts.append(len(pet.lesion_suv))
    cents = np.array(cents)
    assert np.linalg.norm(cents.std(axis=0)) > 5  # lesions in different places (voxels)
    assert np.std(vols) / np.mean(vols) > 0.3
    assert len(set(counts)) >= 3 and min(counts) >= 1 and max(counts) <= 4


def test_torso_anatomy_and_uptake_vary_per_case():
    livers, kidneys, body = [], [], []
    for seed in range(6):
        pet = torso_pet(seed, SMALL)
        img = pet.scans[0].image
        livers.append(_centroid(pet.organs == 6))
        kidneys.append(float(img[(pet.organs == 2) | (pet.organs == 3)].mean()))
        body.append(float(img[pet.body].mean()))
        # physiological order of uptake: kidneys > liver > muscle > fat; blood pool between
        liver = float(img[pet.organs == 6].mean())
        fat, muscle = float(img[pet.tissue == 1].mean()), float(img[pet.tissue == 2].mean())
        assert kidneys[-1] > liver > muscle > fat and 0.15 < fat < 0.7 and 1.7 < liver < 3.5
    assert np.linalg.norm(np.std(livers, axis=0)) > 1.0
    assert np.std(kidneys) / np.mean(kidneys) > 0.08 and np.std(body) / np.mean(body) > 0.04


def test_autopet_lesions_share_intensity_with_physiological_uptake():
    """Context rule: the lesion's mean SUV lies within one sd of a physiological high-uptake tissue
    (kidneys, stomach, hot bowel) in at least half the cases, so intensity alone does not find lesions."""
    hits, shares = 0, []
    n = 10
    for seed in range(n):
        case = twins.TWINS["autopet"].make(seed, MID, seed)
        pet = torso_pet(seed, MID, lesions=(1, 4))
        img, lesion = case.image[0], case.label == 1
        les = float(img[lesion].mean())
        bowel = pet.tissue == 3
        hot_bowel = bowel & (img > np.quantile(img[bowel], 0.9))
        tissues = [(pet.organs == 2) | (pet.organs == 3), pet.organs == 7, hot_bowel]
        if any(abs(les - img[m].mean()) <= img[m].std() for m in tissues if m.sum() > 10):
            hits += 1
        # of the voxels at least as bright as the lesion median, the share that is lesion
        bright = img >= np.median(img[lesion])
        shares.append(float((bright & lesion).sum() / bright.sum()))
    assert hits >= n / 2, hits
    assert np.median(shares) < 0.6, shares


def _best_accuracy(values, labels):
    """The best accuracy of one threshold (either direction) on ``values`` for boolean ``labels``."""
    values, labels = np.asarray(values), np.asarray(labels, bool)
    return max(float(np.mean((s * (values - t) >= 0) == labels)) for t in values for s in (1, -1))


def _zones(b, shape):
    """The temporo-parietal and sensorimotor zones in the brain's own axes (pose of the cerebrum: u right,
    v anterior, w superior, in semi-axes)."""
    x, y, z = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")
    d = np.stack([x - b.centre[0], y - b.centre[1], z - b.centre[2]], -1)
    u, v, w = np.moveaxis(d @ b.rot / b.semi, -1, 0)
    tp = (np.abs(u) > 0.6) & (v > -0.7) & (v < 0.05) & (w > -0.3) & (w < 0.5)
    sm = (w > 0.55) & (np.abs(v) < 0.3) & (np.abs(u) < 0.5)
    return tp, sm


def test_adni_texture_separates_classes_regional_and_global_means_do_not():
    """Partial-volume confound: CN focal atrophy lowers the temporo-parietal mean as much as AD hypometabolism,
    so neither a block's mean nor the brain's tells the classes; the uptake per unit cortex and the block's
    contrast do, and the focal atrophy really thins the cortex."""
    means, blocks, per_cortex, contrast, cortex_share, labels = [], [], [], [], [], []
    # 48 cases: with two classes drawn alike, one threshold reaches 0.75 by chance in ~4 % of 32-case samples
    # but ~0.5 % of 48-case ones
    for i in range(48):
        case = twins.TWINS["adni"].make(500 + i, SMALL, i)
        b = brain_pet(500 + i, SMALL, ad=bool(case.klass))
        img = case.image[0]
        np.testing.assert_array_equal(img, b.scan.image)
        tp, sm = _zones(b, SMALL)
        brain, cortex = b.regions > 0, b.regions == 1
        tp_block, sm_block = tp & brain, sm & brain  # every brain voxel of the zone, whatever its tissue
        assert (tp & cortex).sum() > 50 and (sm & cortex).sum() > 50
        means.append(float(img[img > 0].mean()))
        blocks.append(float(img[tp_block].mean() / img[sm_block].mean()))
        per_cortex.append(float(img[tp & cortex].mean() / img[sm & cortex].mean()))
        cv_tp, cv_sm = (float(img[m].std() / img[m].mean()) for m in (tp_block, sm_block))
        contrast.append(cv_tp / cv_sm)
        cortex_share.append(float(cortex[tp_block].mean()))
        labels.append(case.klass == 1)
    ad = np.array(labels)
    m, blk, pc, con, share = (np.array(a) for a in (means, blocks, per_cortex, contrast, cortex_share))
    # the per-class distributions of the global mean overlap ...
    assert max(m[ad].min(), m[~ad].min()) < min(m[ad].max(), m[~ad].max())
    assert _best_accuracy(m, ad) <= 0.8
    # ... and so do those of the temporo-parietal block's mean relative to the sensorimotor block's
    assert max(blk[ad].min(), blk[~ad].min()) < min(blk[ad].max(), blk[~ad].max())
    assert _best_accuracy(blk, ad) <= 0.75
    # the texture tells them: uptake per unit cortex (temporo-parietal / sensorimotor) is reduced in AD only,
    # and the block's contrast (its coefficient of variation, relative) is larger in CN (cortex fragments, gaps)
    assert pc[ad].mean() < pc[~ad].mean() and _best_accuracy(pc, ad) >= 0.85
    assert con[ad].mean() < con[~ad].mean() and _best_accuracy(con, ad) >= 0.85
    # focal atrophy turns the cortex of CN brains into CSF there
    assert share[~ad].mean() < share[ad].mean() - 0.03


def test_adni_focal_atrophy_gaps_survive_the_pet_blur():
    """At the benchmark's 64 x 64 x 48, the CSF of the widened sulci in a CN brain's temporo-parietal zone
    stays well below its cortex in the PET image (dark gaps, not a uniform dimming)."""
    shape = (64, 64, 48)
    for seed in range(4):
        b = brain_pet(700 + seed, shape, ad=False)
        tp, _ = _zones(b, shape)
        img = b.scan.image
        gaps, cortex = tp & (b.regions == 4), tp & (b.regions == 1)
        assert gaps.sum() > 50
        assert float(np.median(img[gaps])) < 0.7 * float(np.median(img[cortex]))


def test_brain_varies_in_position_size_and_orientation():
    cents, vols, yaws = [], [], []
    for seed in range(8):
        b = brain_pet(seed, SMALL)
        img = b.scan.image
        brain = img > 0.25 * np.quantile(img[img > 0], 0.99)
        cents.append(_centroid(brain))
        vols.append(int(brain.sum()))
        yaws.append(np.degrees(np.arctan2(b.rot[1, 0], b.rot[0, 0])))
    assert np.linalg.norm(np.std(cents, axis=0)) > 0.7
    assert np.std(vols) / np.mean(vols) > 0.08
    assert np.std(yaws) > 3


@pytest.mark.parametrize("name", PET)
def test_write_round_trip_through_the_real_data_path(tmp_path, name):
    spec = get(name)
    cases = 4
    path = write_dataset(tmp_path / name, name, cases, 3, shape=SMALL)
    doc = json.loads(path.read_text())
    assert doc["modality"] == {"0": spec.channels[0]}
    roles = TASKS[spec.task].roles if spec.downstream else ("image",)
    listed = list_cases(path, "training", roles)
    if spec.downstream:
        listed += list_cases(path, "validation", roles)
    assert len(listed) == cases
    cfg = PreprocessConfig.from_preset(spec.preset, crop_foreground=False)
    if spec.task == "segmentation":
        item = LabelledCases(listed[:1], cfg, SMALL, len(spec.labels), None)[0]
        image, label = item["image"], item["label"]
        assert tuple(label.shape) == (1, *SMALL) and set(np.unique(label.numpy())) <= {0.0, 1.0}
        assert float(label.sum()) > 0
    else:
        image = CachedVolumes([listed[0]["image"]], cfg, SMALL, None)[0]
    assert tuple(image.shape) == (1, *SMALL)
    nonzero = image[image != 0]
    assert abs(float(nonzero.mean())) < 0.05 and abs(float(nonzero.std()) - 1) < 0.05  # z-scored
    if spec.task == "classification":
        assert [c["class"] for c in listed] == [i % 2 for i in range(cases)]
    if spec.task == "reconstruction":
        target = CachedVolumes([listed[0]["target"]], cfg, SMALL, None)[0]
        assert tuple(target.shape) == (1, *SMALL)
