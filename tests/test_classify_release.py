"""The release's CC-CCII protocol as fine-tuning options: the whole-volume view (a centred in-plane box, moved at random
in training, resized to the ROI), the intensity jitter, flips along chosen axes, the two-layer head, AMSGrad; and the
refusals of options that would change nothing."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from s2dc.cli import main
from s2dc.data.preprocess_config import PreprocessConfig
from s2dc.downstream.tasks.classification import Classification, InPlaneBoxd
from s2dc.downstream.tasks.common import Setting
from s2dc.train.finetune_config import ClassifyConfig, build_config

from conftest import TINY_FT

RELEASE = ["--classify.view", "whole", "--classify.in_plane", "0.75", "--classify.shift", "0.035",
           "--classify.head_hidden", "16", "--classify.brightness", "0.07", "--classify.contrast", "0.05",
           "--train.flip_axes", "2", "--train.flip_prob", "0.5", "--train.amsgrad", "true"]


def _setting(roi=(32, 32, 32), intensity="ct", flip_prob=0.0, flip_axes=(0, 1, 2)) -> Setting:
    preprocess = PreprocessConfig(intensity=intensity, a_min=0.0, a_max=255.0, crop_foreground=False)
    return Setting(preprocess, roi, 1, flip_prob, 1, 0.0, torch.device("cpu"), None, flip_axes)


def _task(**options) -> Classification:
    doc = {"classes": ["a", "b"]}
    return Classification(doc, None, SimpleNamespace(input_channel=""), ClassifyConfig(**options))


def test_the_box_is_the_releases_centred_384_of_512_moved_by_up_to_18_pixels():
    """The release (`Downstream/CC-CCII/utils/data_utils.py`) crops slices of 512 pixels to 384 from pixel
    (512 - 384) / 2 = 64, moved in training by `random.randint(-18, 18)` along each axis (pre_size 420): every start
    in 46..82, and only those; validation starts at 64."""
    x = torch.arange(512 * 512, dtype=torch.float32).reshape(1, 512, 512, 1)  # value = 512 * row + column
    centred = InPlaneBoxd("image", 0.75)({"image": x})["image"]
    assert centred.shape == (1, 384, 384, 1) and int(centred[0, 0, 0, 0]) == 512 * 64 + 64
    moved = InPlaneBoxd("image", 0.75, 0.035)
    rows, columns = set(), set()
    for seed in range(600):
        moved.set_random_state(seed)
        first = int(moved({"image": x})["image"][0, 0, 0, 0])
        rows.add(first // 512)
        columns.add(first % 512)
    assert rows == columns == set(range(64 - 18, 64 + 18 + 1))


def test_a_box_that_would_leave_an_odd_sized_volume_stays_inside_it():
    """A shift of (1 - in_plane) / 2 on a size whose roundings add up past the edge: the box is kept inside."""
    x = torch.ones(1, 11, 7, 3)
    t = InPlaneBoxd("image", 0.5, 0.25)
    for seed in range(50):
        t.set_random_state(seed)
        assert t({"image": x})["image"].shape == (1, 6, 4, 3)  # round(5.5) = 6, round(3.5) = 4


def test_the_whole_view_is_resized_to_the_roi_by_nearest_neighbour_at_voxel_centres(tmp_path):
    """Validation's view of a 64 x 48 x 64 volume at in_plane 0.5 and ROI 32^3: the centred 32 x 24 box, each axis
    resized by nearest neighbour at voxel centres: output voxel k of an axis shrunk by 2 is input voxel 2k + 1,
    of one kept, voxel k; grown from 24 to 32, voxel floor((k + 0.5) * 24 / 32)."""
    shape = (64, 48, 64)
    grid = np.indices(shape).astype(np.float32)
    image = grid[0] * 10000 + grid[1] * 100 + grid[2]  # each voxel names its position
    nib.save(nib.Nifti1Image(image, np.eye(4)), str(tmp_path / "v.nii.gz"))
    s = Setting(PreprocessConfig(intensity="ct", a_min=0.0, a_max=1e6, crop_foreground=False), (32, 32, 32), 1,
                0.0, 1, 0.0, torch.device("cpu"), None)
    cases = [{"id": f"c{k}", "image": tmp_path / "v.nii.gz", "class": k} for k in (0, 1)]
    _, val = _task(view="whole", in_plane=0.5).datasets(cases, cases, s, tmp_path / "cache")
    out = np.asarray(val[0]["image"][0]) * 1e6  # the window [0, 1e6] -> [0, 1]
    x = 16 + np.arange(32) * 1  # the box starts at (64 - 32) / 2 = 16: kept as is
    y = 12 + np.floor((np.arange(32) + 0.5) * 24 / 32).astype(int)  # (48 - 24) / 2 = 12, grown 24 -> 32
    z = 2 * np.arange(32) + 1  # shrunk 64 -> 32
    expected = x[:, None, None] * 10000 + y[None, :, None] * 100 + z[None, None, :]
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_the_intensity_jitter_is_the_releases_offset_and_factor_clipped_to_the_window():
    """Brightness 0.07 and contrast 0.05 as in the release: (x + U[-0.07, 0.07]) * U[0.95, 1.05], clipped to [0, 1]
    after a CT window (the release clips its /255 intensities); both ends of each range are reached."""
    augment = _task(brightness=0.07, contrast=0.05).augment(_setting(roi=(8, 8, 8)))
    half, seen = torch.full((1, 8, 8, 8), 0.5), []
    for seed in range(400):
        augment.set_random_state(seed)
        out = augment({"image": half})[0]["image"]  # crops: a list of samples
        assert torch.all(out == out.flatten()[0])  # one offset and one factor a volume
        seen.append(float(out.flatten()[0]))
    low, high = (0.5 - 0.07) * 0.95, (0.5 + 0.07) * 1.05
    assert low - 1e-6 <= min(seen) < low + 0.01 and high - 0.01 < max(seen) <= high + 1e-6
    ones = [float(augment({"image": torch.ones(1, 8, 8, 8)})[0]["image"].max()) for _ in range(100)]
    assert max(ones) == 1.0 and min(ones) < 0.97  # clipped above, lowered below


def test_flips_only_along_the_chosen_axes():
    """train.flip_axes 2 with flip_prob 1: every volume flipped along Z (the slice axis, as the release flips
    CC-CCII), never along X or Y."""
    x = torch.arange(8 * 8 * 8, dtype=torch.float32).reshape(1, 8, 8, 8)
    augment = _task().augment(_setting(roi=(8, 8, 8), flip_prob=1.0, flip_axes=(2,)))
    out = augment({"image": x})[0]["image"]
    assert torch.equal(torch.as_tensor(out), torch.flip(x, dims=[3]))


def _cases(root, count=6, shape=(80, 72, 40)):
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    entries = []
    for i in range(count):
        image = rng.uniform(0, 255, shape).astype(np.float32)
        nib.save(nib.Nifti1Image(image, np.eye(4)), str(root / "img" / f"c{i}.nii.gz"))
        entries.append({"id": f"c{i}", "image": f"img/c{i}.nii.gz", "class": i % 2})
    doc = {"name": "scans", "task": "classification", "classes": ["a", "b"], "training": entries[:4],
           "validation": entries[4:]}
    (root / "dataset.json").write_text(json.dumps(doc))
    return root / "dataset.json"


def test_the_releases_protocol_trains_with_its_head_and_amsgrad(tmp_path):
    """The release's options end to end (2 steps): the two-layer head in model.pt, the options in metrics.json,
    every validation case seen whole at the ROI, and AdamW's AMSGrad state (its running maximum) after a step."""
    from s2dc.downstream.engine import Finetuner

    source = _cases(tmp_path / "data")
    config = tmp_path / "ft.yaml"
    config.write_text(yaml.safe_dump({**TINY_FT, "train": {**TINY_FT["train"], "steps": 2, "warmup_steps": 0}}))
    out = tmp_path / "run"
    assert main(["finetune", "--config", str(config), "--data.source", str(source), "--run.out_dir", str(out),
                 "--preprocess.intensity", "ct", "--preprocess.a_min", "0", "--preprocess.a_max", "255",
                 "--preprocess.crop_foreground", "false", *RELEASE]) == 0
    weights = torch.load(out / "model.pt")
    assert weights["head.0.weight"].shape == (16, 16 * 12) and weights["head.1.weight"].shape == (2, 16)
    assert "head.weight" not in weights
    m = json.loads((out / "metrics.json").read_text())
    assert m["options"]["classify.view"] == "whole" and m["options"]["train.amsgrad"] is True
    assert m["options"]["train.flip_axes"] == [2] and m["val_cases"] == 2

    values = yaml.safe_load(config.read_text())
    values["data"] = {**values["data"], "source": str(source)}
    values["run"] = {**values["run"], "out_dir": str(tmp_path / "run2")}
    values["preprocess"] = {"intensity": "ct", "a_min": 0.0, "a_max": 255.0, "crop_foreground": False}
    values["classify"] = {"view": "whole", "in_plane": 0.75, "shift": 0.035}
    values["train"] = {**values["train"], "amsgrad": True}
    tuner = Finetuner(build_config(values))
    try:
        train, val = tuner._datasets()
        assert [tuple(val[i]["image"].shape) for i in range(len(val))] == [(1, 64, 32, 32)] * 2
        tuner.train_step(next(tuner._batches(train)))
        state = tuner.optimizer.state[next(tuner.model.parameters())]
        assert "max_exp_avg_sq" in state and torch.all(state["max_exp_avg_sq"] >= state["exp_avg_sq"])
    finally:
        tuner.close()


def test_classify_options_on_a_dataset_of_another_task_are_refused(tmp_path, capsys):
    """classify.* on a segmentation dataset would change nothing: refused (exit 2), naming the section and the task,
    before anything is written."""
    from conftest import write_boxes

    write_boxes(tmp_path)
    config = tmp_path / "ft.yaml"
    config.write_text(yaml.safe_dump(TINY_FT))
    assert main(["finetune", "--config", str(config), "--data.source", str(tmp_path / "dataset.json"),
                 "--run.out_dir", str(tmp_path / "run"), "--classify.head_hidden", "8"]) == 2
    err = capsys.readouterr().err
    assert "classify.* options are for classification" in err and "is segmentation" in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("values, message", [
    ({"classify": {"view": "whole", "in_plane": 0.75, "shift": 0.2}}, "classify.shift must be in [0, (1 - "),
    ({"classify": {"in_plane": 0.75}}, "set classify.view whole"),
    ({"classify": {"view": "slices"}}, "classify.view must be 'crops' or 'whole'"),
    ({"classify": {"head_hidden": -1}}, "classify.head_hidden must be an integer in 0..65536"),
    ({"classify": {"contrast": 1.0}}, "classify.contrast must be in [0, 1)"),
    ({"train": {"flip_axes": [0, 3]}}, "train.flip_axes must be distinct axes among 0 1 2"),
    ({"train": {"flip_axes": [1, 1]}}, "train.flip_axes must be distinct axes among 0 1 2"),
])
def test_release_options_out_of_range_are_refused_naming_the_key(values, message):
    with pytest.raises(ValueError, match=None) as err:
        build_config(values)
    assert message in str(err.value), str(err.value)


@pytest.mark.parametrize("in_plane, shift", [(0.8, 0.1), (0.7, 0.15), (0.9, 0.05), (0.75, 0.125)])
def test_a_shift_at_its_bound_is_accepted(in_plane, shift):
    """classify.shift may be (1 - classify.in_plane) / 2, the bound its message gives: 0.1 at in_plane 0.8 was refused
    as "in [0, ... = 0.1], got 0.1" ((1 - 0.8) / 2 is 0.0999... in floating point)."""
    assert build_config({"classify": {"view": "whole", "in_plane": in_plane, "shift": shift}}).classify.shift == shift
    with pytest.raises(ValueError, match="classify.shift must be in"):
        build_config({"classify": {"view": "whole", "in_plane": in_plane, "shift": shift + 1e-6}})


def test_flip_axes_in_any_order_are_one_run():
    """2 0 and 0 2 flip alike: one option value, so one run identity."""
    assert build_config({"train": {"flip_axes": [2, 0]}}).train.flip_axes == (0, 2)


def test_epochs_count_steps_of_the_label_ratio_subset(tmp_path, capsys):
    """The release's CC-CCII schedule (main.py: `max_steps = max_epochs * len(loader)`, warm-up likewise, a loader of
    ceil(cases / batch) batches): 3 epochs with 1 of warm-up over 4 training cases at 3 a step are 2 steps an epoch,
    6 steps, 2 of warm-up, and the learning rate follows them; at half the labels (2 cases) 1 step an epoch."""
    source = _cases(tmp_path / "data", shape=(64, 32, 32))  # the crop's size: the schedule counts cases, not voxels
    config = tmp_path / "ft.yaml"
    config.write_text(yaml.safe_dump({**TINY_FT, "train": {**TINY_FT["train"], "log_every": 1}}))
    lr = TINY_FT["train"]["lr"]
    for ratio, steps, warmup in ((1.0, 6, 2), (0.5, 3, 1)):
        out = tmp_path / f"run{ratio}"
        assert main(["finetune", "--config", str(config), "--data.source", str(source), "--run.out_dir", str(out),
                     "--preprocess.intensity", "ct", "--preprocess.a_min", "0", "--preprocess.a_max", "255",
                     "--data.label_ratio", str(ratio), "--train.batch_size", "3", "--train.epochs", "3",
                     "--train.warmup_epochs", "1"]) == 0
        assert f"train.epochs 3 of {round(4 * ratio)} training cases, 3 a step: {steps} steps" in capsys.readouterr().out
        m = json.loads((out / "metrics.json").read_text())
        assert (m["options"]["train.steps"], m["options"]["train.warmup_steps"]) == (steps, warmup)
        assert m["options"]["train.epochs"] == 3 and m["history"][-1]["step"] == steps
        rows = (out / "dvclive" / "plots" / "metrics" / "train" / "lr.tsv").read_text().split("\n")[1:]
        logged = [float(row.split("\t")[1]) for row in rows if row]
        expected = [lr * (s + 1) / warmup if s < warmup else
                    lr * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (steps - warmup))) for s in range(steps)]
        assert logged == pytest.approx(expected, rel=1e-6), (logged, expected)


@pytest.mark.parametrize("values, message", [
    ({"train": {"warmup_epochs": 2}}, "train.warmup_epochs (2) needs train.epochs > 0"),
    ({"train": {"epochs": 5, "warmup_epochs": 5}}, "train.warmup_epochs (5) must be less than train.epochs (5)"),
    ({"train": {"epochs": -1}}, "train.epochs must be an integer >= 0"),
])
def test_epoch_options_that_mean_nothing_are_refused(values, message):
    with pytest.raises(ValueError) as err:
        build_config(values)
    assert message in str(err.value), str(err.value)
