"""The release's BTCV and BraTS 2023 augmentation as options: quarter turns (``train.rot90_prob``), the crops'
foreground odds (``segment.pos`` / ``segment.neg``) and the intensity factor and offset (``segment.intensity_*``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from monai.transforms import Compose, RandFlipd, RandRotate90d

from s2dc.cli import main
from s2dc.downstream.tasks.common import Setting, random_flips_and_turns
from s2dc.downstream.tasks.segmentation import Segmentation
from s2dc.train.finetune_config import SegmentConfig, build_config

from conftest import TINY_FT, write_boxes

DOC = {"task": "segmentation", "labels": {"0": "background", "1": "organ"}}


def _setting(roi=(8, 8, 8), flip_prob=0.0, rot90=0.0) -> Setting:
    return Setting(None, roi, 1, flip_prob, 1, 0.0, torch.device("cpu"), None, (0, 1, 2), rot90)


def _task(**options) -> Segmentation:
    return Segmentation(DOC, Path("twin/dataset.json"), None, SegmentConfig(**options))


def test_quarter_turns_are_np_rot90_in_the_x_y_plane_of_image_and_label_alike():
    """With probability 1 every draw is np.rot90 by k = 1, 2 or 3 over the spatial X-Y axes (array axes 1, 2), the
    same k for image and label, each k drawn; with 0.5 about half of 1000 draws are left as they are."""
    rng = np.random.default_rng(0)
    image = rng.normal(size=(1, 6, 6, 4)).astype(np.float32)
    label = rng.integers(0, 3, (1, 6, 6, 4)).astype(np.float32)
    turns = Compose(random_flips_and_turns(["image", "label"], _setting(rot90=1.0))).set_random_state(seed=0)
    seen = []
    for _ in range(60):
        out = turns({"image": torch.as_tensor(image), "label": torch.as_tensor(label)})
        got_image, got_label = np.asarray(out["image"]), np.asarray(out["label"])
        k = [k for k in range(4) if np.array_equal(got_image, np.rot90(image, k, axes=(1, 2)))]
        assert len(k) == 1 and k[0] != 0, k
        assert np.array_equal(got_label, np.rot90(label, k[0], axes=(1, 2)))
        seen.append(k[0])
    assert {k: seen.count(k) >= 8 for k in (1, 2, 3)} == {1: True, 2: True, 3: True}, seen

    half = Compose(random_flips_and_turns(["image"], _setting(rot90=0.5))).set_random_state(seed=1)
    kept = sum(np.array_equal(np.asarray(half({"image": torch.as_tensor(image)})["image"]), image) for _ in range(1000))
    assert 0.45 < kept / 1000 < 0.55, kept  # binomial sd 0.016


def test_no_quarter_turn_transform_at_probability_zero():
    """At 0 (the default) the chain is the flips alone, as before the option: the other draws stay as they were."""
    chain = random_flips_and_turns(["image"], _setting(flip_prob=0.1))
    assert [type(t) for t in chain] == [RandFlipd] * 3
    assert [type(t) for t in random_flips_and_turns(["image"], _setting(rot90=0.2))][-1] is RandRotate90d


def _body_and_organ():
    """A 40^3 volume: the body (1.0) fills [4, 36)^3, the organ (label 1) [16, 24)^3; an 8^3 crop centred on any
    body voxel fits, so its centre voxel (4, 4, 4) is the drawn one."""
    image = torch.zeros(1, 40, 40, 40)
    image[:, 4:36, 4:36, 4:36] = 1.0
    label = torch.zeros(1, 40, 40, 40)
    label[:, 16:24, 16:24, 16:24] = 1.0
    return image, label


@pytest.mark.parametrize("pos, neg, low, high", [(3, 1, 0.68, 0.82), (1, 1, 0.42, 0.58), (1, 0, 1.0, 1.0),
                                                 (0, 1, 0.0, 0.0)])
def test_crops_are_centred_on_the_organ_at_the_odds_pos_to_neg(pos, neg, low, high):
    """Over 400 crops the share centred on the organ is pos / (pos + neg) (binomial sd ~0.022 at 3 : 1); a crop
    centred on the background lies in the body."""
    image, label = _body_and_organ()
    augment = _task(pos=pos, neg=neg).augment(_setting()).set_random_state(seed=3)
    centres = []
    for _ in range(400):
        crop = augment({"image": image, "label": label})[0]
        assert set(crop) == {"image", "label"}
        centres.append(float(crop["label"][0, 4, 4, 4]))
        assert float(crop["image"][0, 4, 4, 4]) == 1.0  # inside the body
    share = sum(centres) / len(centres)
    assert low <= share <= high, share


@pytest.mark.parametrize("kind, amount, prob, low, high", [("scale", 0.1, 1.0, 1.0, 1.0), ("scale", 0.1, 0.1, 0.04, 0.17),
                                                            ("shift", 0.1, 0.5, 0.40, 0.60)])
def test_the_intensity_factor_and_offset_are_uniform_per_crop_at_their_probability(kind, amount, prob, low, high):
    """A crop of the body (all 1.0) comes out times one factor in [1 - s, 1 + s] (scale) or plus one offset in
    [-s, s] (shift, the background too), changed in the share ``prob`` of 300 crops; the label is not (0 and 1, the organ at the centre)."""
    image, label = _body_and_organ()
    augment = _task(pos=1, neg=0, **{f"intensity_{kind}": amount, f"intensity_{kind}_prob": prob}) \
        .augment(_setting()).set_random_state(seed=4)
    changes = []
    for _ in range(300):
        crop = augment({"image": image, "label": label})[0]
        values = torch.unique(crop["image"])
        assert len(values) == 1, values  # one factor or offset for the whole crop (all body here)
        change = float(values[0]) - 1.0
        assert -amount - 1e-6 <= change <= amount + 1e-6
        changes.append(change)
        assert float(crop["label"][0, 4, 4, 4]) == 1.0 and set(torch.unique(crop["label"]).tolist()) <= {0.0, 1.0}
    changed = [c for c in changes if c != 0.0]
    assert low <= len(changed) / len(changes) <= high, len(changed)
    if prob == 1.0:
        assert min(changes) < -amount / 2 and max(changes) > amount / 2  # both sides of the range drawn


@pytest.mark.parametrize("kind", ["scale", "shift"])
def test_a_factor_multiplies_and_an_offset_adds(kind):
    """On a body of 1.0 and 2.0 alternating along X (every crop holds both): a factor keeps their ratio 2 (1 + f and
    2 (1 + f)), an offset their difference 1 (1 + f and 2 + f); on an all-1.0 crop the two read alike."""
    image, label = _body_and_organ()
    image[:, 4:36, 4:36, 4:36] += (torch.arange(32)[:, None, None] % 2).float()
    augment = _task(pos=1, neg=0, **{f"intensity_{kind}": 0.1, f"intensity_{kind}_prob": 1.0}) \
        .augment(_setting()).set_random_state(seed=4)
    for _ in range(40):
        values = torch.unique(augment({"image": image, "label": label})[0]["image"])
        assert len(values) == 2, values
        low, high = float(values[0]), float(values[1])
        assert low != 1.0 and abs(low - 1.0) <= 0.1 + 1e-6  # changed, by at most the amount
        if kind == "scale":
            assert high / low == pytest.approx(2.0, rel=1e-6), (low, high)
        else:
            assert high - low == pytest.approx(1.0, abs=1e-6), (low, high)


@pytest.mark.parametrize("values, message", [
    ({"train": {"rot90_prob": 0.2, "roi_size": [64, 32, 32]}}, "train.rot90_prob (0.2) turns crops in the X-Y plane"),
    ({"train": {"rot90_prob": 1.5}}, "train.rot90_prob must be in [0, 1]"),
    ({"segment": {"pos": 0, "neg": 0}}, "segment.pos and segment.neg are both 0"),
    ({"segment": {"neg": -1}}, "segment.neg must be a finite number >= 0"),
    ({"segment": {"intensity_scale_prob": 0.1}}, "segment.intensity_scale_prob (0.1) without segment.intensity_scale"),
    ({"segment": {"intensity_shift": 1.5}}, "segment.intensity_shift must be in [0, 1)"),
])
def test_augmentation_options_that_mean_nothing_are_refused_naming_the_key(values, message):
    with pytest.raises(ValueError) as err:
        build_config(values)
    assert message in str(err.value), str(err.value)


def test_the_release_btcv_augmentation_runs_end_to_end_and_is_recorded(tmp_path, capsys):
    """The release's BTCV options together on the boxes: exit 0, each recorded in metrics.json; segment.* on a
    classification run is refused before anything is written, naming the section and the task."""
    (tmp_path / "boxes").mkdir()
    source = write_boxes(tmp_path / "boxes") / "dataset.json"
    config = tmp_path / "ft.yaml"
    config.write_text(yaml.safe_dump({**TINY_FT, "train": {**TINY_FT["train"], "roi_size": [64, 64, 32]}}))
    out = tmp_path / "run"
    options = {"train.rot90_prob": 0.2, "train.flip_prob": 0.2, "segment.pos": 3.0, "segment.neg": 1.0,
               "segment.intensity_scale": 0.1, "segment.intensity_scale_prob": 0.1,
               "segment.intensity_shift": 0.1, "segment.intensity_shift_prob": 0.5}
    flags = [arg for key, value in options.items() for arg in (f"--{key}", str(value))]
    assert main(["finetune", "--config", str(config), "--data.source", str(source), "--run.out_dir", str(out),
                 "--train.steps", "3", *flags]) == 0
    recorded = json.loads((out / "metrics.json").read_text())["options"]
    assert {key: recorded[key] for key in options} == options

    classes = tmp_path / "classes" / "dataset.json"  # refused from its json, before a case file is read
    classes.parent.mkdir()
    classes.write_text(json.dumps({"name": "scans", "task": "classification", "classes": ["a", "b"],
                                   "training": [{"id": "c0", "image": "c0.nii.gz", "class": 0}],
                                   "validation": [{"id": "c1", "image": "c1.nii.gz", "class": 1}]}))
    assert main(["finetune", "--config", str(config), "--data.source", str(classes),
                 "--run.out_dir", str(tmp_path / "cls"), "--segment.pos", "3"]) == 2
    err = capsys.readouterr().err
    assert "segment.* options are for segmentation" in err and "is classification" in err, err
    assert not (tmp_path / "cls").exists()
