"""The release's BraTS 2023 protocol as fine-tuning options (``Downstream/RECON/trainer.py``): each sequence in turn as
input, every sequence predicted, masked MSE times 10, a constant learning rate; checked against small computations
written out here, and the refusals of combinations that mean nothing."""

from __future__ import annotations

import contextlib
import json
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from s2dc.cli import main
from s2dc.data.preprocess import EXTENT
from s2dc.data.preprocess_config import PreprocessConfig
from s2dc.downstream.tasks.common import Setting
from s2dc.downstream.tasks.translation import RandInputSequenced, Translation
from s2dc.train.finetune_config import TranslateConfig, build_config
from s2dc.train.schedule import warmup_constant

from conftest import TINY_FT

SEQUENCES = {"0": "t1n", "1": "t1c", "2": "t2w", "3": "t2f"}
RELEASE = ["--translate.inputs", "each", "--translate.targets", "all", "--translate.loss", "mse",
           "--translate.loss_weight", "10", "--train.schedule", "constant"]


def _task(**options) -> Translation:
    return Translation({"modality": SEQUENCES}, "brats.json", SimpleNamespace(input_channel=""),
                       TranslateConfig(**options))


def _setting(roi=(8, 8, 8)) -> Setting:
    return Setting(PreprocessConfig(intensity="zscore"), roi, 1, 0.0, 1, 0.0, torch.device("cpu"),
                   contextlib.nullcontext)


def _brains(rng, n: int, shape=(8, 8, 8)) -> torch.Tensor:
    """``(n, 4, X, Y, Z)``: four different positive sequences inside a brain box, zero outside."""
    image = torch.zeros(n, 4, *shape)
    image[:, :, 1:-1, 1:-1, 1:-1] = torch.from_numpy(rng.uniform(0.5, 3.0, (n, 4, *(s - 2 for s in shape)))).float()
    return image


def test_each_crop_draws_its_input_sequence_uniformly_and_reproducibly():
    draw = RandInputSequenced("image")
    image = {"image": torch.zeros(4, 2, 2, 2)}
    draw.set_random_state(seed=7)
    first = [int(draw(image)["source"]) for _ in range(800)]
    draw.set_random_state(seed=7)
    assert [int(draw(image)["source"]) for _ in range(800)] == first
    counts = np.bincount(first, minlength=4)
    assert len(counts) == 4 and counts.min() > 150, counts  # 200 expected each; 150 is 4 standard deviations off


def test_the_training_input_is_each_crops_drawn_sequence_and_the_targets_all_four():
    task = _task(inputs="each", targets="all")
    image = _brains(np.random.default_rng(0), 3)
    x, target, mask = task.training_split(image, {"source": torch.tensor([2, 0, 3])})
    for b, c in enumerate([2, 0, 3]):
        assert torch.equal(x[b, 0], image[b, c])
        assert torch.equal(mask[b, 0], image[b, c] != 0)
    assert torch.equal(target, image)


def test_the_loss_is_the_releases_masked_mse_times_ten():
    """The release: ``MSELoss(reduction='sum')(out * mask, data * mask) * 10 / mask.sum()`` with a mask of every
    sequence; written out here voxel by voxel, the brain box being the same in all four sequences."""
    rng = np.random.default_rng(1)
    task = _task(inputs="each", targets="all", loss="mse", loss_weight=10.0)
    image = _brains(rng, 2)
    pred = torch.from_numpy(rng.normal(size=image.shape)).float()
    loss = task.loss(lambda x: pred, {"image": image, "source": torch.tensor([1, 3])}, _setting())
    data, out = image.numpy().astype(np.float64), pred.numpy().astype(np.float64)
    mask = data >= 0.5  # the brain: every voxel of the box, in every sequence
    expected = ((out * mask - data * mask) ** 2).sum() * 10 / mask.sum()
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_the_default_loss_is_the_l1_of_the_other_sequences_in_the_brain():
    rng = np.random.default_rng(2)
    task = _task()
    image = _brains(rng, 2)
    pred = torch.from_numpy(rng.normal(size=(2, 3, 8, 8, 8))).float()
    loss = task.loss(lambda x: pred, {"image": image}, _setting())
    data, out = image.numpy().astype(np.float64), pred.numpy().astype(np.float64)
    brain = data[:, :1] != 0
    expected = (np.abs(out - data[:, 1:]) * brain).sum() / (brain.sum() * 3)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_validation_scores_each_input_against_the_other_sequences_only():
    """A network that copies its input into all four outputs: scored on the three other sequences of each input in
    turn (the input's own channel, a perfect copy, is not scored), MSE averaged over the four inputs."""
    image = _brains(np.random.default_rng(3), 1)[0]
    task = _task(inputs="each", targets="all")
    whole = torch.tensor([[0, 0, 0], list(image.shape[1:])])  # the extent of an unpadded volume
    scores = task.evaluate(lambda x: x.repeat(1, 4, 1, 1, 1), [{"image": image, EXTENT: whole}], _setting())
    data = image.numpy().astype(np.float64)
    per_input = []
    for s in range(4):
        brain = data[s] != 0
        per_input.append(np.mean([((data[s] - data[c])[brain] ** 2).mean() for c in range(4) if c != s]))
    assert scores["mse"] == pytest.approx(np.mean(per_input), rel=1e-5)
    own_scored = np.mean([np.mean([((data[s] - data[c])[data[s] != 0] ** 2).mean() for c in range(4)])
                          for s in range(4)])
    assert scores["mse"] != pytest.approx(own_scored, rel=1e-3)


def test_constant_schedule_is_the_warm_up_then_the_peak_rate():
    assert [warmup_constant(s, 4, 10) for s in range(7)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0]
    assert warmup_constant(0, 0, 10) == 1.0


@pytest.mark.parametrize("values, message", [
    ({"translate": {"inputs": "each"}}, "translate.inputs each needs translate.targets all"),
    ({"translate": {"inputs": "all"}}, "translate.inputs must be 'one' or 'each'"),
    ({"translate": {"targets": "some"}}, "translate.targets must be 'others' or 'all'"),
    ({"translate": {"loss": "huber"}}, "translate.loss must be 'l1' or 'mse'"),
    ({"translate": {"loss_weight": 0.0}}, "translate.loss_weight must be a finite number > 0"),
    ({"train": {"schedule": "step"}}, "train.schedule must be 'cosine' or 'constant'"),
])
def test_release_options_out_of_range_are_refused_naming_the_key(values, message):
    with pytest.raises(ValueError) as err:
        build_config(values)
    assert message in str(err.value), str(err.value)


def test_an_input_channel_with_each_sequence_as_input_is_refused():
    with pytest.raises(ValueError, match=r"data.input_channel \('t2w'\).*translate.inputs each"):
        Translation({"modality": SEQUENCES}, "brats.json", SimpleNamespace(input_channel="t2w"),
                    TranslateConfig(inputs="each", targets="all"))


def _write_brains(root, rng, n=3, shape=(64, 32, 32)) -> str:
    entries = []
    for i in range(n):
        brain = np.zeros(shape, np.float32)
        brain[4:-4, 4:-4, 4:-4] = 1.0
        images = []
        for k, name in SEQUENCES.items():
            path = root / f"b{i}_{name}.nii.gz"
            array = brain * (1.0 + int(k) + 0.3 * rng.random(shape).astype(np.float32))
            nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
            images.append(path.name)
        entries.append({"id": f"b{i}", "image": images})
    js = root / "dataset.json"
    js.write_text(json.dumps({"name": "brains", "task": "translation", "modality": SEQUENCES,
                              "training": entries[:-1], "validation": entries[-1:]}))
    return str(js)


def test_the_releases_protocol_trains_end_to_end(tmp_path, capsys):
    """Two steps with the release's options: four outputs in model.pt, the options in metrics.json, the peak rate
    from the first step to the last (constant, no warm-up); translate.* on a segmentation dataset is refused."""
    (tmp_path / "data").mkdir()
    source = _write_brains(tmp_path / "data", np.random.default_rng(4))
    config = tmp_path / "ft.yaml"
    config.write_text(yaml.safe_dump({**TINY_FT, "train": {**TINY_FT["train"], "steps": 2, "log_every": 1}}))
    out = tmp_path / "run"
    assert main(["finetune", "--config", str(config), "--data.source", source, "--run.out_dir", str(out),
                 "--preprocess.intensity", "zscore", "--preprocess.crop_foreground", "false", *RELEASE]) == 0
    weights = torch.load(out / "model.pt", weights_only=True)
    assert weights["out.conv.conv.weight"].shape[0] == 4
    m = json.loads((out / "metrics.json").read_text())
    assert m["options"]["translate.inputs"] == "each" and m["options"]["translate.loss_weight"] == 10.0
    assert m["options"]["train.schedule"] == "constant" and np.isfinite(m["psnr"])
    lr = (out / "dvclive" / "plots" / "metrics" / "train" / "lr.tsv").read_text().split("\n")
    assert [float(line.split("\t")[1]) for line in lr[1:] if line] == [TINY_FT["train"]["lr"]] * 2

    from conftest import write_boxes

    (tmp_path / "seg").mkdir()
    write_boxes(tmp_path / "seg")
    capsys.readouterr()
    assert main(["finetune", "--config", str(config), "--data.source", str(tmp_path / "seg" / "dataset.json"),
                 "--run.out_dir", str(tmp_path / "refused"), "--translate.loss", "mse"]) == 2
    err = capsys.readouterr().err
    assert "translate.* options are for translation" in err and "is segmentation" in err, err
    assert not (tmp_path / "refused").exists()
