"""The downstream tasks: each metric against a small hand computation, each engine trains a few steps."""

from __future__ import annotations

import json
import shutil
import math

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from s2dc.cli import main
from s2dc.data.registry import downstream_names
from s2dc.downstream import metrics

from conftest import REPO, TINY_FT

REPO_PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


# ----------------------------------------------------------------------------- metrics


def test_accuracy_and_auc_against_hand_computations():
    target = torch.tensor([0, 0, 1, 1])
    perfect = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    assert metrics.accuracy(perfect, target) == 1.0 and metrics.roc_auc(perfect, target) == 1.0
    assert metrics.accuracy(perfect.flip(1), target) == 0.0 and metrics.roc_auc(perfect.flip(1), target) == 0.0
    # scores of class 1 (softmax is monotone in the logit difference): 0.1, 0.6, 0.4, 0.9 -> of the 4
    # (negative, positive) pairs, 3 are ordered right: AUC 0.75 for class 1 and, mirrored, for class 0.
    diff = torch.tensor([0.1, 0.6, 0.4, 0.9])
    logits = torch.stack([torch.zeros(4), diff], dim=1)
    assert metrics.roc_auc(logits, target) == pytest.approx(0.75)
    assert metrics.accuracy(torch.stack([torch.full((4,), 0.5), diff], dim=1), target) == 0.5
    assert math.isnan(metrics.roc_auc(logits, torch.tensor([1, 1, 1, 1])))  # undefined with one class


def test_psnr_nrmse_mse_ssim_against_hand_computations():
    target = torch.zeros(1, 8, 8, 8)
    target[0, 2:6, 2:6, 2:6] = 1.0  # range 1
    off = target + 0.1  # error 0.1 everywhere
    assert metrics.mse(off, target) == pytest.approx(0.01)
    assert metrics.psnr(off, target) == pytest.approx(20.0, abs=1e-4)  # 10 log10(1 / 0.01)
    # RMS of the target = sqrt(64 / 512); RMSE 0.1
    assert metrics.nrmse(off, target) == pytest.approx(0.1 / math.sqrt(64 / 512), rel=1e-5)
    assert metrics.psnr(target, target) == math.inf and metrics.ssim(target, target) == pytest.approx(1.0, abs=1e-5)
    assert metrics.ssim(torch.zeros_like(target), target) < 0.2
    # inside a mask only: errors outside do not count
    mask = target > 0
    wrong_outside = torch.where(mask, target, torch.full_like(target, 5.0))
    assert metrics.mse(wrong_outside, target, mask) == 0.0
    assert metrics.mse(wrong_outside, target) == pytest.approx(25 * (512 - 64) / 512)
    assert metrics.ssim(wrong_outside, target, mask) == pytest.approx(1.0, abs=1e-5)
    # the data range is the target's, not the prediction's: half the target, range 1, MSE 0.25 x 64 / 512
    assert metrics.psnr(0.5 * target, target) == pytest.approx(10 * math.log10(1 / 0.03125), abs=1e-4)  # 15.05 dB


def test_masked_ssim_fills_outside_with_the_targets_minimum_inside():
    """With a mask, both volumes are set to the target's minimum *inside* the mask outside it (metrics.ssim's
    documented fill), then scored: against the SSIM formula (SciPy) of the volumes so filled by hand, on a target whose
    minimum inside (2) is not its minimum overall (0) and a prediction wrong inside and outside."""
    rng = np.random.default_rng(3)
    target = np.zeros((12, 12, 12))
    target[2:10, 2:10, 2:10] = 2 + rng.random((8, 8, 8))
    mask = target > 0
    pred = np.where(mask, target + 0.2 * rng.standard_normal(target.shape), 5.0)
    low = target[mask].min()
    filled_pred, filled_target = np.where(mask, pred, low), np.where(mask, target, low)
    expected = _gaussian_ssim(filled_pred, filled_target, float(filled_target.max() - filled_target.min()), 7)
    got = metrics.ssim(torch.from_numpy(pred)[None].float(), torch.from_numpy(target)[None].float(),
                       torch.from_numpy(mask)[None])
    assert got == pytest.approx(expected, abs=1e-5) and got < 0.99, (got, expected)


def _gaussian_ssim(x: np.ndarray, y: np.ndarray, data_range: float, win: int, sigma: float = 1.5) -> float:
    """SSIM of two 3-D arrays by its formula: a normalised Gaussian window (``win`` voxels, sd ``sigma``) over the
    positions where it fits inside the volume, C1 = (0.01 R)², C2 = (0.03 R)², the mean of the SSIM map."""
    from scipy.signal import convolve

    g = np.exp(-((np.arange(win) - (win - 1) / 2) ** 2) / (2 * sigma**2))
    g /= g.sum()
    kernel = g[:, None, None] * g[None, :, None] * g[None, None, :]
    f = lambda v: convolve(v, kernel, mode="valid")  # noqa: E731
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    return float((((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))).mean())


@pytest.mark.parametrize("size, window", [(16, 7), (7, 7), (6, 5), (4, 3)])
def test_ssim_is_the_gaussian_ssim_of_its_documented_window(size, window):
    """metrics.ssim: the 3-D SSIM with a Gaussian 7-voxel window (sd 1.5), or the largest odd window that fits a
    smaller volume, data range the target's; against the formula computed with SciPy (a 5-voxel window differs by
    ~1e-4, the tolerance is 2e-6)."""
    torch.manual_seed(0)
    target = torch.rand(1, size, size + 1, size + 2)
    pred = target + 0.1 * torch.randn_like(target)
    x, y = pred[0].double().numpy(), target[0].double().numpy()
    expected = _gaussian_ssim(x, y, float(y.max() - y.min()), window)
    assert metrics.ssim(pred, target) == pytest.approx(expected, abs=2e-6)
    if window == 7:
        assert abs(_gaussian_ssim(x, y, float(y.max() - y.min()), 5) - expected) > 2e-5  # ten times the tolerance


# ----------------------------------------------------------------------------- engines


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array, np.float32), np.eye(4)), str(path))
    return path.name


def _blob(rng, at, shape=(64, 32, 32)):
    """A bright box at x-offset ``at`` (None: no box) in a dim, noisy volume (positive, zero border: MR/PET-like)."""
    a = np.zeros(shape, np.float32)
    a[4:-4, 4:-4, 4:-4] = 1.0 + 0.1 * rng.random((shape[0] - 8, shape[1] - 8, shape[2] - 8))
    if at is not None:
        a[at : at + 12, 10:22, 10:22] += 3.0
    return a


def _run(tmp_path, doc, steps=3, *extra):
    js = tmp_path / "data" / "dataset.json"
    js.write_text(json.dumps(doc))
    config = tmp_path / "ft.yaml"
    config.write_text(yaml.safe_dump({**TINY_FT, "train": {**TINY_FT["train"], "steps": steps,
                                                                    "warmup_steps": min(1, steps - 1)}}))
    out = tmp_path / "run"
    rc = main(["finetune", "--config", str(config), "--data.source", str(js), "--run.out_dir", str(out),
               "--preprocess.intensity", "zscore", "--preprocess.crop_foreground", "false", *extra])
    assert rc == 0
    return json.loads((out / "metrics.json").read_text())


def test_classification_engine_learns_at_the_quick_options(tmp_path):
    """With the quick scale's optimiser options (learning rate, encoder's share of it, warm-up, steps) the classifier
    learns what any classifier learns: whether a volume holds a bright box (anywhere). At lr 3e-3 for the encoder
    too it collapsed to one class (accuracy 0.5 at every evaluation, as the quick CC-CCII and ADNI rows did)."""
    train = REPO_PARAMS["scales"]["quick"]["finetune"]["options"]["train"]
    rng = np.random.default_rng(0)
    entries = []
    for i in range(12):
        image = _blob(rng, None)
        if i % 2:
            x, y, z = rng.integers(6, [40, 16, 16])
            image[x : x + 12, y : y + 12, z : z + 12] += 3.0
        entries.append({"id": f"c{i}", "image": f"img/{_save(tmp_path / 'data' / 'img' / f'c{i}.nii.gz', image)}",
                        "class": i % 2})
    (tmp_path / "data" / "dataset.json").write_text(json.dumps({
        "name": "boxes", "task": "classification", "classes": ["none", "box"], "training": entries[:8],
        "validation": entries[8:]}))
    options = {key: train[key] for key in ("steps", "lr", "encoder_lr_scale", "warmup_steps") if key in train}
    config = tmp_path / "ft.yaml"
    config.write_text(yaml.safe_dump({**TINY_FT, "train": {**TINY_FT["train"], **options, "samples_per_volume": 1},
                                      "eval": {**TINY_FT["eval"], "every": train["steps"] // 2}}))
    assert main(["finetune", "--config", str(config), "--data.source", str(tmp_path / "data" / "dataset.json"),
                 "--run.out_dir", str(tmp_path / "run"), "--preprocess.intensity", "zscore",
                 "--preprocess.crop_foreground", "false"]) == 0
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["task"] == "classification" and m["steps"] == train["steps"] and m["val_cases"] == 4
    assert [h["accuracy"] for h in m["history"]] == [1.0, 1.0] and m["auc"] == 1.0
    assert m["score"] == {"key": "accuracy", "name": "accuracy", "value": 100.0}


def test_reconstruction_engine_trains_and_scores(tmp_path):
    rng = np.random.default_rng(1)
    entries = []
    for i in range(4):
        full = _blob(rng, 10 + 6 * i)
        low = rng.poisson(full * 4) / 4.0
        entries.append({"id": f"r{i}", "image": f"img/{_save(tmp_path / 'data' / 'img' / f'low{i}.nii.gz', low)}",
                        "target": f"img/{_save(tmp_path / 'data' / 'img' / f'full{i}.nii.gz', full)}"})
    doc = {"name": "doses", "task": "reconstruction", "training": entries[:3], "validation": entries[3:]}
    m = _run(tmp_path, doc, 3, "--eval.every", "1")
    assert m["task"] == "reconstruction" and set(m) >= {"psnr", "ssim", "nrmse"}
    assert math.isfinite(m["psnr"]) and -1 <= m["ssim"] <= 1 and m["nrmse"] > 0
    psnr = [h["psnr"] for h in m["history"]]  # trains: the weights move, so the score does (an optimiser that never
    assert len(psnr) == 3 and len(set(psnr)) == 3, psnr  # stepped scored the same PSNR at every step)
    assert m["score"]["key"] == "psnr" and m["score"]["value"] == pytest.approx(m["psnr"])


def test_translation_engine_trains_and_scores(tmp_path, capsys):
    rng = np.random.default_rng(2)
    entries = []
    for i in range(4):
        t1 = _blob(rng, 8 + 8 * i)
        channels = {"t1": t1, "t2": np.where(t1 > 0, 5.0 - t1, 0.0), "flair": np.sqrt(t1)}
        entries.append({"id": f"b{i}", "image": [
            f"img/{_save(tmp_path / 'data' / 'img' / f'b{i}_{c}.nii.gz', a)}" for c, a in channels.items()]})
    doc = {"name": "brains", "task": "translation", "modality": {"0": "t1", "1": "t2", "2": "flair"},
           "training": entries[:3], "validation": entries[3:]}
    m = _run(tmp_path, doc, 3, "--data.input_channel", "t2", "--eval.every", "1")
    assert m["task"] == "translation" and set(m) >= {"psnr", "ssim", "mse"}
    assert math.isfinite(m["psnr"]) and m["mse"] > 0
    psnr = [h["psnr"] for h in m["history"]]  # trains: the score moves from step to step
    assert len(psnr) == 3 and len(set(psnr)) == 3, psnr
    state = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert state["out.conv.conv.weight"].shape[0] == 2  # predicts the two other sequences
    rc = main(["finetune", "--data.source", str(tmp_path / "data" / "dataset.json"), "--data.input_channel", "t1ce",
               "--run.out_dir", str(tmp_path / "bad")])
    assert rc == 2 and "data.input_channel must be one of the dataset's sequences ['t1', 't2', 'flair'], got 't1ce'" \
        in capsys.readouterr().err


def test_a_one_channel_encoder_is_inflated_for_several_channels(tmp_path):
    """A four-sequence model starts from a one-channel (e.g. T1w-pretrained) encoder: on an image whose four
    channels are equal, its encoder gives exactly the one-channel encoder's features."""
    from s2dc.export import load_encoder_weights, swinunetr_for
    from s2dc.models.encoder import EncoderConfig

    one = EncoderConfig(in_channels=1, feature_size=12, num_heads=(1, 2, 3, 4), window_size=4)
    torch.manual_seed(0)
    source = swinunetr_for(one)
    path = tmp_path / "enc.pt"
    torch.save({"state_dict": {f"swinViT.{k}": v for k, v in source.swinViT.state_dict().items()},
                "encoder": one.to_dict()}, path)
    four = EncoderConfig(**{**one.to_dict(), "in_channels": 4})
    target = swinunetr_for(four)
    report = load_encoder_weights(target, path, expected=four)
    assert "input channels 1 -> 4" in report
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        want = source.swinViT(x)[-1]
        got = target.swinViT(x.repeat(1, 4, 1, 1, 1))[-1]
    assert torch.allclose(got, want, atol=1e-5)
    # two channels in the file and four in the model stay an error
    two = EncoderConfig(**{**one.to_dict(), "in_channels": 2})
    torch.save({"state_dict": {f"swinViT.{k}": v for k, v in swinunetr_for(two).swinViT.state_dict().items()},
                "encoder": two.to_dict()}, path)
    with pytest.raises(ValueError, match="in_channels=2"):
        load_encoder_weights(swinunetr_for(four), path, expected=four)


def test_dice_per_region_against_a_hand_computation():
    target = torch.zeros(1, 2, 4, 4, 4)
    target[0, 0, :2] = 1  # region 0: 32 voxels
    pred = torch.zeros_like(target)
    pred[0, 0, :1] = 1  # 16 voxels, all inside: Dice = 2 * 16 / (16 + 32)
    pred[0, 1, 0, 0, 0] = 1  # region 1 absent from the ground truth: NaN (left out of means)
    got = metrics.dice_per_region(pred, target)
    assert got[0] == pytest.approx(2 * 16 / 48) and math.isnan(got[1])


def test_validation_labels_holding_no_region_are_refused_naming_the_regions_and_the_cases():
    """With regions, a validation label holding only a value of no region scores no region (every Dice NaN): refused,
    naming the json, the regions with their label values and the case; one voxel of a region is enough."""
    from pathlib import Path

    from s2dc.data.errors import DataError
    from s2dc.downstream.tasks.segmentation import Segmentation

    doc = {"labels": {"0": "background", "1": "core", "2": "edema", "3": "other"}, "regions": {"tc": [1], "wt": [1, 2]}}
    task = Segmentation(doc, Path("brats.json"), None)
    label = torch.zeros(1, 4, 4, 4)
    label[0, 0, 0, 0] = 3  # a value of no region
    cases = [{"id": "v0", "label": Path("labelsTr/v0.nii.gz")}]
    with pytest.raises(DataError) as refused:
        task.check_validation([{"label": label}], cases)
    message = str(refused.value)
    assert "'brats.json'" in message and "'tc' (labels [1])" in message and "'wt' (labels [1, 2])" in message, message
    assert "'v0' ('labelsTr/v0.nii.gz')" in message, message
    label[0, 1, 1, 1] = 2
    task.check_validation([{"label": label}], cases)


@pytest.mark.filterwarnings("ignore:Num foregrounds")  # the crop is the whole volume: no background centre
def test_region_segmentation_trains_on_brats_like_labels(tmp_path):
    """Labels {0, 1, 2, 4} with BraTS regions: one sigmoid channel per region, Dice per region."""
    rng = np.random.default_rng(3)
    entries = []
    for i in range(4):
        image = _blob(rng, 10 + 8 * i)
        label = np.zeros(image.shape, np.float32)
        label[10 + 8 * i - 2 : 10 + 8 * i + 14, 8:24, 8:24] = 2  # edema around
        label[10 + 8 * i : 10 + 8 * i + 12, 10:22, 10:22] = 4  # enhancing
        label[10 + 8 * i + 4 : 10 + 8 * i + 8, 14:18, 14:18] = 1  # necrotic core
        entries.append({"id": f"t{i}", "image": [f"img/{_save(tmp_path / 'data' / 'img' / f't{i}_{c}.nii.gz', image * (c + 1))}"
                                                 for c in range(2)],
                        "label": f"img/{_save(tmp_path / 'data' / 'img' / f't{i}_seg.nii.gz', label)}"})
    doc = {"name": "tumours", "task": "segmentation",
           "labels": {"0": "background", "1": "necrosis", "2": "edema", "4": "enhancing"},
           "regions": {"tumour core": [1, 4], "whole tumour": [1, 2, 4], "enhancing tumour": [4]},
           "training": entries[:3], "validation": entries[3:]}
    m = _run(tmp_path, doc)
    assert set(m["dice_per_class"]) == {"tumour core", "whole tumour", "enhancing tumour"}
    assert all(0 <= v <= 1 for v in m["dice_per_class"].values())
    state = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert state["out.conv.conv.weight"].shape[0] == 3 and state["swinViT.patch_embed.proj.weight"].shape[1] == 2


#: The downstream twins that the smoke DAG does not fine-tune (tests/test_pipeline.py checks the runs of those it does).
NOT_IN_SMOKE = sorted(set(downstream_names()) - set(REPO_PARAMS["scales"]["smoke"]["experiments"]["datasets"]))


@pytest.mark.parametrize("name", NOT_IN_SMOKE)
def test_every_engine_trains_on_its_twin(tmp_path, name):
    """Each downstream twin, written as its release would be, fine-tunes for two steps with its registry preset: here
    the twins the smoke DAG leaves out, so that with it every twin is fine-tuned in the suite."""
    from s2dc.data.preprocess import PreprocessConfig
    from s2dc.data.registry import get
    from s2dc.data.synthetic import write_dataset

    spec = get(name)
    cases = 6 if spec.task == "classification" else 3
    js = write_dataset(tmp_path / "data", name, cases, seed=0, shape=(64, 32, 32), val_fraction=0.34)
    preset = PreprocessConfig.from_preset(spec.preset)
    intensity = [word for key, value in preset.intensity_fields().items() for word in (f"--preprocess.{key}", str(value))]
    config = tmp_path / "ft.yaml"
    config.write_text(yaml.safe_dump({**TINY_FT, "train": {**TINY_FT["train"], "steps": 2, "warmup_steps": 1,
                                                           "samples_per_volume": 1}}))
    out = tmp_path / "run"
    assert main(["finetune", "--config", str(config), "--data.source", str(js), "--run.out_dir", str(out),
                 *intensity]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["task"] == spec.task and m["score"]["key"] in m and m["steps"] == 2


def _one_step_finetune(tmp_path, capsys, doc: dict, *options: str):
    """Write ``doc`` as tmp_path/data/dataset.json and fine-tune it for one step with TINY_FT (z-score, no crop, then
    ``options``): (return code, what it printed on stderr, the run folder)."""
    js = tmp_path / "data" / "dataset.json"
    js.write_text(json.dumps(doc))
    config = tmp_path / "ft.yaml"
    config.write_text(yaml.safe_dump({**TINY_FT, "train": {**TINY_FT["train"], "steps": 1, "warmup_steps": 0}}))
    out = tmp_path / "run"
    rc = main(["finetune", "--config", str(config), "--data.source", str(js), "--run.out_dir", str(out),
               "--preprocess.intensity", "zscore", "--preprocess.crop_foreground", "false", *options])
    return rc, capsys.readouterr().err, out


def test_a_label_value_outside_the_json_labels_is_refused_with_regions(tmp_path, capsys):
    """With ``regions`` (labels {0, 1, 2, 4}) a label holding 3 (BraTS 2023's enhancing tumour, which BraTS 2021 calls 4)
    is no class of the dataset: the run fails naming the file and the value, instead of taking 3 for background."""
    rng = np.random.default_rng(4)
    entries = []
    for i in range(3):
        image = _blob(rng, 10 + 8 * i)
        label = np.zeros(image.shape, np.float32)
        label[10 + 8 * i : 10 + 8 * i + 12, 10:22, 10:22] = 2
        label[10 + 8 * i + 4 : 10 + 8 * i + 8, 14:18, 14:18] = 3 if i == 2 else 4
        entries.append({"id": f"t{i}", "image": f"img/{_save(tmp_path / 'data' / 'img' / f't{i}.nii.gz', image)}",
                        "label": f"img/{_save(tmp_path / 'data' / 'img' / f't{i}_seg.nii.gz', label)}"})
    doc = {"name": "tumours", "task": "segmentation",
           "labels": {"0": "background", "1": "necrosis", "2": "edema", "4": "enhancing"},
           "regions": {"tumour core": [1, 4], "whole tumour": [1, 2, 4], "enhancing tumour": [4]},
           "training": entries[:2], "validation": entries[2:]}
    rc, err, out = _one_step_finetune(tmp_path, capsys, doc)
    assert rc != 0 and not (out / "metrics.json").exists()
    assert "t2_seg.nii.gz" in err and "[3]" in err


def test_a_reconstruction_target_on_another_grid_than_its_image_is_refused(tmp_path, capsys):
    """A full-dose target with fewer slices than its low-dose image was zero-padded to the image's size and scored:
    the run must fail naming both files and their shapes, and write no metrics.json."""
    rng = np.random.default_rng(1)
    entries = []
    for i in range(3):
        full = _blob(rng, 10 + 6 * i)
        low = rng.poisson(full * 4) / 4.0
        target = full[:, :, :24] if i == 2 else full
        entries.append({"id": f"r{i}", "image": f"img/{_save(tmp_path / 'data' / 'img' / f'low{i}.nii.gz', low)}",
                        "target": f"img/{_save(tmp_path / 'data' / 'img' / f'full{i}.nii.gz', target)}"})
    rc, err, out = _one_step_finetune(tmp_path, capsys, {"name": "doses", "task": "reconstruction",
                                                         "training": entries[:2], "validation": entries[2:]})
    assert rc != 0 and not (out / "metrics.json").exists()
    assert "full2.nii.gz" in err and "low2.nii.gz" in err and "(64, 32, 24)" in err


def _doses(tmp_path, rng, last_target_affine: np.ndarray) -> list[dict]:
    """Three low-dose / full-dose pairs under tmp_path/data/img, all on the identity grid but the third full dose,
    written with ``last_target_affine``; their dataset.json entries."""
    entries = []
    for i in range(3):
        full = _blob(rng, 10 + 6 * i)
        low = rng.poisson(full * 4) / 4.0
        _save(tmp_path / "data" / "img" / f"low{i}.nii.gz", low)
        affine = last_target_affine if i == 2 else np.eye(4)
        nib.save(nib.Nifti1Image(full, affine), str(tmp_path / "data" / "img" / f"full{i}.nii.gz"))
        entries.append({"id": f"r{i}", "image": f"img/low{i}.nii.gz", "target": f"img/full{i}.nii.gz"})
    return entries


@pytest.mark.parametrize("affine, shown", [(np.diag([2.0, 2.0, 2.0, 1.0]), "2.0"),
                                           (np.array([[1, 0, 0, 5.0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "5.0")])
def test_a_reconstruction_target_of_another_voxel_size_or_origin_is_refused(tmp_path, capsys, affine, shown):
    """A full-dose target with its image's shape but 2 mm voxels where the image has 1 mm, or shifted by 5 mm, covers
    another part of the body: it was scored voxel by voxel against a misaligned prediction, exit 0. The run must
    fail naming both files and both grids."""
    entries = _doses(tmp_path, np.random.default_rng(2), affine)
    rc, err, out = _one_step_finetune(tmp_path, capsys, {"name": "doses", "task": "reconstruction",
                                                         "training": entries[:2], "validation": entries[2:]})
    assert rc != 0 and not (out / "metrics.json").exists()
    assert "full2.nii.gz" in err and "low2.nii.gz" in err and shown in err, err


def test_a_reconstruction_target_off_by_a_headers_rounding_is_scored_with_a_warning(tmp_path, capsys):
    """A full-dose target whose header puts it 0.02 mm from its low-dose image (a header's rounding, as two programs
    writing one scan's two reconstructions give) was refused as another grid, where a label so off only warns: both
    roles must be held to one rule, the run goes on with a warning."""
    affine = np.eye(4)
    affine[0, 3] = 0.02
    entries = _doses(tmp_path, np.random.default_rng(3), affine)
    with pytest.warns(UserWarning, match="by a header's rounding"):
        rc, err, out = _one_step_finetune(tmp_path, capsys, {"name": "doses", "task": "reconstruction",
                                                             "training": entries[:2], "validation": entries[2:]})
    assert rc == 0 and (out / "metrics.json").exists(), err


def test_a_translation_sequence_on_another_grid_is_refused(tmp_path, capsys):
    """A sequence of its case's shape but 5 mm away was stacked with the others as if aligned and the translation
    scored against it, exit 0: the run must fail naming both sequences."""
    rng = np.random.default_rng(4)
    folder = tmp_path / "data" / "img"
    folder.mkdir(parents=True)
    entries = []
    for i in range(3):
        brain = _blob(rng, 10 + 6 * i)
        paths = []
        for c in range(3):
            affine = np.eye(4)
            affine[1, 3] = 5.0 if (i == 2 and c == 1) else 0.0
            nib.save(nib.Nifti1Image(brain * (c + 1), affine), str(folder / f"b{i}_{c}.nii.gz"))
            paths.append(f"img/b{i}_{c}.nii.gz")
        entries.append({"id": f"b{i}", "image": paths})
    rc, err, out = _one_step_finetune(tmp_path, capsys, {"name": "sequences", "task": "translation",
                                                         "modality": {"0": "T1", "1": "T2", "2": "FLAIR"},
                                                         "training": entries[:2], "validation": entries[2:]})
    assert rc != 0 and not (out / "metrics.json").exists()
    assert "b2_1.nii.gz" in err and "b2_0.nii.gz" in err and "5.0" in err, err


@pytest.mark.parametrize("odd", ["training", "validation"])
def test_a_case_with_another_channel_count_is_refused_before_training(tmp_path, capsys, odd):
    """The network's input channels are the first training case's; a case listing another number of channels failed
    with a bare conv3d RuntimeError (a validation case only after all the training steps). It must be refused before
    anything is written, naming the case."""
    rng = np.random.default_rng(5)
    entries = []
    for i in range(3):
        image = _blob(rng, 10 + 8 * i)
        n = 1 if i == (1 if odd == "training" else 2) else 2
        paths = [f"img/{_save(tmp_path / 'data' / 'img' / f'c{i}_{c}.nii.gz', image * (c + 1))}" for c in range(n)]
        entries.append({"id": f"c{i}", "image": paths,
                        "label": f"img/{_save(tmp_path / 'data' / 'img' / f'c{i}_seg.nii.gz', image > 3)}"})
    rc, err, out = _one_step_finetune(tmp_path, capsys, {"name": "boxes", "task": "segmentation", "training": entries[:2],
                                                         "labels": {"0": "background", "1": "box"}, "validation": entries[2:]})
    assert rc != 0 and not (out / "split.json").exists() and not (out / "metrics.json").exists()
    assert f"'c{1 if odd == 'training' else 2}'" in err and "1 image channel" in err and "2" in err


@pytest.mark.parametrize("how", ["a case in both sections", "one section for both"])
def test_validation_cases_that_are_training_cases_are_refused(tmp_path, capsys, how):
    """A validation case that the run also trains on (listed in both sections, or `--data.val_key training`) was
    scored like any other and the run exited 0: the score measured memory, not generalisation. It must be refused
    before anything is written, naming the case and both sections."""
    rng = np.random.default_rng(7)
    entries = []
    for i in range(3):
        image = _blob(rng, 10 + 8 * i)
        entries.append({"id": f"b{i}", "image": f"img/{_save(tmp_path / 'data' / 'img' / f'b{i}.nii.gz', image)}",
                        "label": f"img/{_save(tmp_path / 'data' / 'img' / f'b{i}_seg.nii.gz', image > 3)}"})
    doc = {"name": "boxes", "task": "segmentation", "labels": {"0": "background", "1": "box"},
           "training": entries[:2], "validation": [entries[2], entries[0]]}
    extra = []
    if how == "one section for both":
        doc["validation"] = entries[2:]
        extra = ["--data.val_key", "training"]
    rc, err, out = _one_step_finetune(tmp_path, capsys, doc, *extra)
    assert rc != 0 and not (out / "split.json").exists() and not (out / "metrics.json").exists()
    assert "b0.nii.gz" in err and "'training'" in err and "Traceback" not in err, err


def test_classification_fine_tuning_draws_its_labelled_cases_per_class(tmp_path):
    """At 25 % of 8 training volumes (4 of each class) a classification run labels one volume of each class
    (split.json), where a plain draw of 2 of the 8 leaves one class out for 3 seeds in 7."""
    rng = np.random.default_rng(0)
    entries = [{"id": f"c{i}", "image": f"img/{_save(tmp_path / 'data' / 'img' / f'c{i}.nii.gz', _blob(rng, None))}",
                "class": i % 2} for i in range(10)]
    doc = {"name": "halves", "task": "classification", "classes": ["a", "b"], "training": entries[:8],
           "validation": entries[8:]}
    for seed in range(4):
        shutil.rmtree(tmp_path / "run", ignore_errors=True)
        _run(tmp_path, doc, 1, "--data.label_ratio", "0.25", "--run.seed", str(seed))
        split = json.loads((tmp_path / "run" / "split.json").read_text())
        assert sorted(c["class"] for c in split["cases"]) == ["0", "1"]


def test_roc_auc_ranks_confident_logits_apart():
    """Margins of 18, 20 and 25 round to a softmax of exactly 1.0 in float32: the cases must still rank by margin
    (AUC 1.0, as the margins themselves give), not tie (0.875)."""
    logits = torch.tensor([[0.0, 20.0], [0.0, 25.0], [0.0, 18.0], [0.0, -5.0]])
    assert metrics.roc_auc(logits, torch.tensor([1, 1, 0, 0])) == 1.0


def test_an_input_channel_given_to_a_task_that_has_none_is_refused(tmp_path, capsys):
    """data.input_channel names the input sequence of a translation; given for a reconstruction it was ignored with
    exit 0, as if it had taken effect."""
    rng = np.random.default_rng(1)
    entries = [{"id": f"r{i}", "image": f"img/{_save(tmp_path / 'data' / 'img' / f'low{i}.nii.gz', _blob(rng, None))}",
                "target": f"img/{_save(tmp_path / 'data' / 'img' / f'full{i}.nii.gz', _blob(rng, None))}"}
               for i in range(3)]
    (tmp_path / "data" / "dataset.json").write_text(json.dumps(
        {"name": "doses", "task": "reconstruction", "training": entries[:2], "validation": entries[2:]}))
    config = tmp_path / "ft.yaml"
    config.write_text(yaml.safe_dump(TINY_FT))
    assert main(["finetune", "--config", str(config), "--data.source", str(tmp_path / "data" / "dataset.json"),
                 "--run.out_dir", str(tmp_path / "run"), "--data.input_channel", "T1"]) == 2
    assert "data.input_channel is for translation; this dataset's task is reconstruction" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("task", ["reconstruction", "segmentation"])
def test_fine_tuning_resamples_to_a_given_spacing(tmp_path, task):
    """--preprocess.spacing (the paper scale sets 1.5 × 1.5 × 2 mm for every fine-tuning job) crashed every task in
    MONAI's Spacingd, which took the cases' file-stamp keys (image_size, label_ino) for metadata."""
    rng = np.random.default_rng(4)
    entries = []
    for i in range(3):
        image = f"img/{_save(tmp_path / 'data' / 'img' / f'a{i}.nii.gz', _blob(rng, None))}"
        other = _blob(rng, 10) if task == "reconstruction" else (_blob(rng, 10) > 2.0).astype(np.uint8)
        role = "target" if task == "reconstruction" else "label"
        entries.append({"id": f"c{i}", "image": image, role: f"img/{_save(tmp_path / 'data' / 'img' / f'b{i}.nii.gz', other)}"})
    doc = {"name": "spaced", "task": task, "training": entries[:2], "validation": entries[2:]}
    if task == "segmentation":
        doc["labels"] = {"0": "background", "1": "box"}
    m = _run(tmp_path, doc, 1, "--preprocess.spacing", "1.5", "1.5", "2.0")
    assert m["task"] == task and m["val_cases"] == 1


def test_reconstruction_is_scored_on_the_targets_own_voxels_not_the_padding(tmp_path):
    """A volume smaller than the crop is zero-padded to it for training; its score must come from its own voxels
    (where prediction and target are both zero in the padding, PSNR and SSIM rose with the crop size alone).
    Checked against PSNR, NRMSE computed here on the unpadded arrays."""
    from contextlib import nullcontext

    from s2dc.data.preprocess import PreprocessConfig
    from s2dc.downstream.tasks.common import Setting
    from s2dc.downstream.tasks.reconstruction import Reconstruction

    rng = np.random.default_rng(7)
    low = 1.0 + rng.random((20, 18, 6)).astype(np.float32)
    full = (2.0 * low * (1.0 + 0.1 * rng.standard_normal(low.shape))).astype(np.float32)
    case = {"image": _save(tmp_path / "low.nii.gz", low), "target": _save(tmp_path / "full.nii.gz", full)}
    case = {k: tmp_path / v for k, v in case.items()}

    class Twice(torch.nn.Module):
        def forward(self, x):
            return 2.0 * x

    scores = {}
    for roi in (8, 32):
        s = Setting(PreprocessConfig(intensity="zscore"), (roi,) * 3, 1, 0.0, 1, 0.0, torch.device("cpu"), nullcontext)
        task = Reconstruction({}, tmp_path / "dataset.json", None)
        _, val = task.datasets([case], [case], s, None)
        scores[roi] = task.evaluate(Twice(), val, s)
    scale = np.abs(low).mean()
    p, t = 2.0 * low / scale, full / scale
    expected_psnr = 10 * np.log10((t.max() - t.min()) ** 2 / np.mean((p - t) ** 2))
    for roi, m in scores.items():
        assert m["psnr"] == pytest.approx(expected_psnr, abs=1e-3), roi
        assert m["nrmse"] == pytest.approx(np.sqrt(np.mean((p - t) ** 2) / np.mean(t**2)), rel=1e-4), roi
    assert scores[8]["ssim"] == pytest.approx(scores[32]["ssim"], abs=1e-6)


class _PointwiseTranslation(torch.nn.Module):
    """Output ``k`` = ``x + (k + 1) x² / 5`` of its input ``x`` ``(B, 1, ...)`` at each voxel (two outputs): a
    prediction known voxel by voxel, the same in any window (so whatever the blending), 0 in the zero padding."""

    def forward(self, x):
        return torch.cat([x + (k + 1) * x * x / 5 for k in range(2)], dim=1)


@pytest.mark.parametrize("roi", [(12, 10, 9), (16, 16, 12), (32, 32, 24)],
                         ids=["no padding", "padded to 16x16x12", "padded to 32x32x24"])
def test_translation_is_scored_on_the_volumes_own_voxels_not_the_padding(tmp_path, roi):
    """A 12 x 10 x 9 validation case under a larger crop is zero-padded to it. Translation's default scores left the
    padding out of PSNR and MSE (outside the brain mask) but not out of SSIM, whose windows there, target and
    prediction both set to the target's minimum, score 1: the same prediction's SSIM rose with the crop size alone.
    Every score must be that of the case's own voxels, written out here with numpy and SciPy from the stored
    volumes (z-scored over their non-zero voxels), whatever the crop size."""
    from contextlib import nullcontext
    from types import SimpleNamespace

    from s2dc.data.preprocess import PreprocessConfig
    from s2dc.downstream.tasks.common import Setting
    from s2dc.downstream.tasks.translation import Translation

    rng = np.random.default_rng(9)
    names, raw = ("t1n", "t2w", "t2f"), []
    for _ in names:
        array = np.zeros((12, 10, 9), np.float32)
        array[2:10, 2:8, 1:8] = rng.uniform(1.0, 5.0, (8, 6, 7)).astype(np.float32)
        raw.append(array)
    case = {"id": "v0", "image": [tmp_path / _save(tmp_path / f"v0_{n}.nii.gz", a) for n, a in zip(names, raw)]}
    task = Translation({"modality": dict(enumerate(names))}, tmp_path / "brats.json", SimpleNamespace(input_channel=""))
    s = Setting(PreprocessConfig(intensity="zscore", crop_foreground=False), roi, 1, 0.0, 1, 0.0, torch.device("cpu"),
                nullcontext)
    _, val = task.datasets([case], [case], s, tmp_path / "cache")
    task.check_validation(val, [case])
    scores = task.evaluate(_PointwiseTranslation(), val, s)

    data = []
    for a in raw:  # z-scored over the non-zero voxels (ddof 0), the background 0
        brain = a[a != 0].astype(np.float64)
        data.append(np.where(a != 0, (a - brain.mean()) / brain.std(), 0.0))
    brain = data[0] != 0  # the input's non-zero voxels
    psnrs, ssims, mses = [], [], []
    for k, target in enumerate(data[1:]):
        pred = data[0] + (k + 1) * data[0] ** 2 / 5
        t, err = target[brain], ((pred - target)[brain] ** 2).mean()
        psnrs.append(10 * np.log10(np.ptp(t) ** 2 / err))
        mses.append(err)
        low = t.min()
        ssims.append(_gaussian_ssim(np.where(brain, pred, low), np.where(brain, target, low), float(np.ptp(t)), 7))
    assert scores["psnr"] == pytest.approx(np.mean(psnrs), rel=1e-5), roi
    assert scores["mse"] == pytest.approx(np.mean(mses), rel=1e-5), roi
    assert scores["ssim"] == pytest.approx(np.mean(ssims), abs=2e-5), (roi, scores["ssim"], np.mean(ssims))


def test_a_translation_volume_thinner_than_ssims_smallest_window_is_refused_before_training():
    """Scored on its own voxels, a volume needs SSIM's smallest window, 3 voxels, along every axis (a 12 x 10 x 2 case
    padded to a 16 x 16 x 12 crop scored its padding's windows): refused before training, naming the case, its file
    and its size, not by the scoring after training; 3 voxels pass."""
    from types import SimpleNamespace

    from s2dc.data.errors import DataError
    from s2dc.data.preprocess import EXTENT
    from s2dc.downstream.tasks.translation import Translation

    task = Translation({"modality": {"0": "t1n", "1": "t2w"}}, "brats.json", SimpleNamespace(input_channel=""))
    image = torch.zeros(2, 16, 16, 12)
    image[:, 2:14, 3:13, 5:7] = torch.rand(2, 12, 10, 2, generator=torch.Generator().manual_seed(0)) + 1.0
    cases = [{"id": "v0", "image": ["v0_t1n.nii.gz", "v0_t2w.nii.gz"]}]
    with pytest.raises(DataError) as refused:
        task.check_validation([{"image": image, EXTENT: torch.tensor([[2, 3, 5], [14, 13, 7]])}], cases)
    message = str(refused.value)
    assert "'brats.json'" in message and "'v0' ('v0_t1n.nii.gz', 12 x 10 x 2 voxels)" in message, message
    assert "3 voxels" in message and "translate.score brain" in message, message
    image[:, 2:14, 3:13, 7] = 1.5
    task.check_validation([{"image": image, EXTENT: torch.tensor([[2, 3, 5], [14, 13, 8]])}], cases)


@pytest.mark.parametrize("how", ["validation of one class", "a class without a case"])
def test_classification_refuses_classes_it_cannot_score(tmp_path, capsys, how):
    """Validation cases of one class: a model that always predicts it scores 100 % accuracy (the run exited 0 with
    100 % and no AUC). A declared class without a single case: nothing learns or scores it (AUC null, exit 0).
    Both are refused before training, naming the json and the class, and no run folder is left."""
    rng = np.random.default_rng(0)
    entries = [{"id": f"c{i}", "image": f"img/{_save(tmp_path / 'data' / 'img' / f'c{i}.nii.gz', _blob(rng, None))}",
                "class": i % 2} for i in range(7)]
    classes, validation = ["none", "box"], entries[4:]
    if how == "validation of one class":
        validation = [{**c, "class": 0} for c in validation]
    else:
        classes = ["none", "box", "other"]
    doc = {"name": "boxes", "task": "classification", "classes": classes, "training": entries[:4],
           "validation": validation}
    rc, err, out = _one_step_finetune(tmp_path, capsys, doc)
    assert rc == 2 and "Traceback" not in err and str(tmp_path / "data" / "dataset.json") in err, err
    assert ("validation cases" in err and "'none'" in err) if how == "validation of one class" else "'other'" in err, err
    assert not out.exists()


def test_segmentation_crops_are_centred_on_background_inside_a_z_scored_body():
    """Crops are centred on foreground or background with equal odds, background anywhere in the body: on a
    z-scored volume (MRI/PET presets) the body's voxels are negative below its mean, and `image > 0` as the test of
    "inside" left no background centre at all (MONAI then centres every crop on foreground, with a warning).
    Outside the body (exactly 0) stays no centre, as for CT (window scaled to 0..1, air 0)."""
    from pathlib import Path
    from types import SimpleNamespace

    from s2dc.data.volumes import plain
    from s2dc.downstream.tasks.segmentation import Segmentation

    image = np.zeros((1, 32, 32, 32), np.float32)
    image[:, 4:28, 4:28, 4:28] = -1.0  # the body, below its mean after z-scoring
    image[:, 12:16, 12:16, 12:16] = 2.0  # the structure
    label = (image > 0).astype(np.uint8)
    s = SimpleNamespace(roi_size=(4, 4, 4), samples_per_volume=40, flip_prob=0.0, flip_axes=(0, 1, 2), rot90_prob=0.0)
    task = Segmentation({"task": "segmentation", "labels": {"0": "background", "1": "structure"}}, Path("x.json"), None)
    augment = task.augment(s)
    augment.set_random_state(0)
    crops = augment({"image": torch.from_numpy(image), "label": torch.from_numpy(label)})
    centres = [plain(c["image"])[0, 2, 2, 2].item() for c in crops]
    assert 10 <= centres.count(-1.0) <= 30 and centres.count(-1.0) + centres.count(2.0) == 40, centres


def test_a_reconstruction_volume_too_thin_for_ssim_is_refused_before_training(tmp_path, capsys):
    """SSIM's smallest window is 3 voxels: a 64×32×2 validation pair (read_volume accepts 2 voxels) trained, then
    stopped with a traceback at its first validation. Refused before training (exit 2), naming the dataset json, the
    case, its file and its size; nothing is left."""
    rng = np.random.default_rng(1)
    entries = []
    for i in range(3):
        full = _blob(rng, 10 + 6 * i)[:, :, 15:17] if i == 2 else _blob(rng, 10 + 6 * i)
        low = rng.poisson(full * 4) / 4.0
        entries.append({"id": f"r{i}", "image": f"img/{_save(tmp_path / 'data' / 'img' / f'low{i}.nii.gz', low)}",
                        "target": f"img/{_save(tmp_path / 'data' / 'img' / f'full{i}.nii.gz', full)}"})
    rc, err, out = _one_step_finetune(tmp_path, capsys, {"name": "doses", "task": "reconstruction",
                                                         "training": entries[:2], "validation": entries[2:]})
    assert rc == 2 and "Traceback" not in err and str(tmp_path / "data" / "dataset.json") in err, err
    assert "'r2' ('" in err and "low2.nii.gz', 64 x 32 x 2 voxels)" in err and "3 voxels" in err, err
    assert not out.exists()


def _reconstruction_case(tmp_path, name: str, shape: tuple[int, int, int], rng) -> dict:
    """A low-/full-dose pair of ``shape`` (positive, varying voxels) saved under ``tmp_path``: a case entry."""
    low = 1.0 + rng.random(shape)
    full = 2.0 * low + 0.1 * rng.random(shape)
    return {"id": name, "image": tmp_path / _save(tmp_path / f"{name}_low.nii.gz", low),
            "target": tmp_path / _save(tmp_path / f"{name}_full.nii.gz", full)}


def test_reconstruction_refuses_a_validation_volume_of_2_voxels_along_an_axis_and_takes_3(tmp_path):
    """Its check_validation, before training, refuses a validation case whose own voxels (the padding up to the crop
    is not scored) are thinner than SSIM's smallest window, 3 voxels: naming the dataset json, the case, its file and
    its size. 3 voxels pass; a thin training case, never scored, is preprocessed and kept."""
    from contextlib import nullcontext
    from pathlib import Path

    from s2dc.data.errors import DataError
    from s2dc.data.preprocess import PreprocessConfig
    from s2dc.downstream.tasks.common import Setting
    from s2dc.downstream.tasks.reconstruction import Reconstruction

    rng = np.random.default_rng(3)
    thin, ok = _reconstruction_case(tmp_path, "r0", (12, 10, 2), rng), _reconstruction_case(tmp_path, "r1", (12, 10, 3), rng)
    s = Setting(PreprocessConfig(intensity="zscore", crop_foreground=False), (16, 16, 16), 1, 0.0, 1, 0.0,
                torch.device("cpu"), nullcontext)
    task = Reconstruction({}, Path("doses.json"), None)
    train, val = task.datasets([thin], [thin], s, tmp_path / "cache")
    assert tuple(train[0]["image"].shape) == (1, 16, 16, 16)  # a thin training case: padded, not refused
    with pytest.raises(DataError) as refused:
        task.check_validation(val, [thin])
    message = str(refused.value)
    assert "'doses.json'" in message and f"'r0' ('{thin['image']}', 12 x 10 x 2 voxels)" in message, message
    assert "3 voxels" in message, message
    _, val = task.datasets([thin], [ok], s, tmp_path / "cache")
    task.check_validation(val, [ok])


def test_every_task_keeps_its_dataset_json_under_one_name(tmp_path):
    """Each task keeps the path of the json it was built from as ``dataset_json`` (segmentation, classification and
    reconstruction called it ``source``, translation ``dataset_json``)."""
    from types import SimpleNamespace

    from s2dc.downstream.tasks import TASKS

    docs = {"segmentation": {"labels": {"0": "background", "1": "organ"}}, "classification": {"classes": ["a", "b"]},
            "reconstruction": {}, "translation": {"modality": {"0": "t1n", "1": "t2w"}}}
    assert set(docs) == set(TASKS)
    for name, doc in docs.items():
        js = tmp_path / f"{name}.json"
        assert TASKS[name](doc, js, SimpleNamespace(input_channel="")).dataset_json == js, name


@pytest.mark.parametrize("task", [["segmentation"], {"kind": "segmentation"}, 3])
def test_a_task_key_that_is_no_task_name_is_refused_naming_the_json(tmp_path, task):
    """A dataset.json whose 'task' is a list or dict failed with a TypeError (unhashable) instead of naming the key."""
    from s2dc.data.errors import DataError
    from s2dc.downstream.tasks import task_of

    source = tmp_path / "dataset.json"
    with pytest.raises(DataError, match=r"'task' must be one of \[") as err:
        task_of({"task": task, "labels": {"0": "background", "1": "organ"}}, source)
    assert str(source) in str(err.value) and repr(task) in str(err.value)


@pytest.mark.parametrize("labels", [{"0": "background", "one": "organ"}, ["background", "organ"]])
def test_malformed_labels_beside_regions_are_refused_naming_the_json_and_key(tmp_path, labels):
    from s2dc.data.errors import DataError
    from s2dc.downstream.tasks import Segmentation

    source = tmp_path / "dataset.json"
    with pytest.raises(DataError, match=r"'labels' of dataset json .* integer keys") as err:
        Segmentation({"task": "segmentation", "labels": labels, "regions": {"r": [1]}}, source, None)
    assert str(source) in str(err.value)


def test_a_modality_key_that_is_no_integer_is_refused_naming_the_json_and_key(tmp_path):
    from types import SimpleNamespace

    from s2dc.data.errors import DataError
    from s2dc.downstream.tasks import Translation

    source = tmp_path / "dataset.json"
    with pytest.raises(DataError, match=r"'modality' of dataset json .* integer keys.*'one'") as err:
        Translation({"task": "translation", "modality": {"0": "t1", "one": "t2"}}, source,
                    SimpleNamespace(input_channel=""))
    assert str(source) in str(err.value)


def test_an_empty_mask_is_refused_by_every_masked_metric():
    """Scores inside a mask that holds no voxel are undefined: each masked metric says so (PSNR and SSIM failed in
    torch's max() on an empty tensor, MSE returned NaN without a word)."""
    pred, target = torch.rand(2, 5, 5, 5), torch.rand(2, 5, 5, 5)
    empty = torch.zeros(1, 5, 5, 5, dtype=torch.bool)
    for metric in (metrics.psnr, metrics.ssim, metrics.mse, metrics.nrmse):
        with pytest.raises(ValueError, match="mask holds no voxel"):
            metric(pred, target, empty)


def test_a_translation_case_whose_input_sequence_is_empty_is_refused_naming_it():
    """A validation case whose input sequence is zero everywhere has no brain mask to score in: refused before
    training, naming the case and the sequence (the evaluation refused it, after training)."""
    from types import SimpleNamespace

    from s2dc.data.errors import DataError
    from s2dc.data.preprocess import EXTENT
    from s2dc.downstream.tasks.translation import Translation

    task = Translation({"modality": {"0": "t1n", "1": "t2w"}}, "brats.json", SimpleNamespace(input_channel=""))
    image, whole = torch.zeros(2, 4, 4, 4), torch.tensor([[0, 0, 0], [4, 4, 4]])  # unpadded: its extent the whole
    image[1] = torch.arange(64.0).reshape(4, 4, 4)  # the target sequence has content; the input t1n none
    cases = [{"id": "case_7", "image": ["case_7_t1n.nii.gz", "case_7_t2w.nii.gz"]}]
    with pytest.raises(DataError, match=r"'brats.json'.*case_7_t1n\.nii\.gz.*'t1n'.*'case_7'.*zero everywhere"):
        task.check_validation([{"image": image, EXTENT: whole}], cases)
    image[0, 1:3] = 2.0
    task.check_validation([{"image": image, EXTENT: whole}], cases)  # t2w varies inside t1n's non-zero voxels


def test_a_translation_sequence_constant_on_its_release_mask_is_refused_once_naming_it():
    """With the release's mask (each sequence's own voxels >= -0.35) and each sequence as input in turn, a sequence of
    one value on its mask (background -0.6 elsewhere) scores PSNR -inf against every input: refused before training,
    named once (its mask is its own, whatever the input); the other sequences vary on theirs."""
    from types import SimpleNamespace

    from s2dc.data.errors import DataError
    from s2dc.data.preprocess import EXTENT
    from s2dc.downstream.tasks.translation import Translation
    from s2dc.train.finetune_config import TranslateConfig

    task = Translation({"modality": {"0": "t1n", "1": "t2w", "2": "t2f"}}, "brats.json",
                       SimpleNamespace(input_channel=""), TranslateConfig(inputs="each", targets="all", mask="release"))
    image, whole = torch.full((3, 6, 6, 6), -0.6), torch.tensor([[0, 0, 0], [6, 6, 6]])
    image[:, 1:5, 1:5, 1:5] = torch.rand(3, 4, 4, 4, generator=torch.Generator().manual_seed(0))  # 0 .. 1: inside
    image[2, 1:5, 1:5, 1:5] = 0.4
    assert np.ptp(image[2].numpy()[image[2].numpy() >= -0.35]) == 0  # t2f: one value on its mask
    cases = [{"id": "case_3", "image": [f"case_3_{name}.nii.gz" for name in ("t1n", "t2w", "t2f")]}]
    with pytest.raises(DataError) as refused:
        task.check_validation([{"image": image, EXTENT: whole}], cases)
    message = str(refused.value)
    assert message.count("case_3_t2f.nii.gz") == 1 and "case_3_t2w" not in message and "'case_3'" in message, message
    assert "'brats.json'" in message and "constant (0.4 once preprocessed)" in message, message
    image[2, 1, 1, 1] = 0.5
    task.check_validation([{"image": image, EXTENT: whole}], cases)


def test_a_reconstruction_image_that_is_zero_everywhere_is_refused_naming_it():
    """The low-dose image's non-zero voxels set the scale both volumes are divided by; with none, the scale was the
    NaN mean of nothing and every voxel became NaN (then read as a diverged model): refused, naming the file."""
    from monai.data import MetaTensor

    from s2dc.data.errors import DataError
    from s2dc.downstream.tasks.reconstruction import ScaleByImaged

    image = MetaTensor(torch.zeros(1, 4, 4, 4), meta={"filename_or_obj": "low_dose_3.nii.gz"})
    with pytest.raises(DataError, match=r"low_dose_3\.nii\.gz.*zero everywhere"):
        ScaleByImaged()({"image": image, "target": torch.ones(1, 4, 4, 4)})
    scaled = ScaleByImaged()({"image": torch.tensor([[[[0.0, 2.0], [4.0, 0.0]]]]), "target": torch.full((1, 1, 2, 2), 6.0)})
    assert torch.allclose(scaled["target"], torch.full((1, 1, 2, 2), 2.0))  # divided by mean(2, 4) = 3


def test_accuracy_is_the_exact_fraction_of_cases():
    """49 of 100 cases right is 0.49, as Python computes 49 / 100 (a float32 mean wrote 0.49000000953674316 into
    metrics.json and 49.000000953674316 % as the run's score)."""
    target = torch.zeros(100, dtype=torch.long)
    logits = torch.zeros(100, 2)
    logits[49:, 1] = 1.0  # the first 49 predicted class 0 (ties go to the first class), the rest class 1
    assert metrics.accuracy(logits, target) == 49 / 100
    assert metrics.accuracy(logits[:3], torch.tensor([0, 1, 0])) == 2 / 3


def test_dice_is_exact_in_double_precision():
    """Dice 2 |P ∩ G| / (|P| + |G|) to the last bit, as Python computes it from the counts (float32 Dice wrote
    0.2857142984867096 for 2/7 into metrics.json), for classes and for one region or several; NaN where the ground
    truth is empty, as MONAI's DiceMetric with ignore_empty."""
    label = torch.zeros(1, 3, 3, 3, dtype=torch.long)
    pred = torch.zeros_like(label)
    pred[0, 0, 0, :3] = 1  # 3 voxels of class 1 predicted
    label[0, 0, 0, 2:] = 1  # 4 of class 1 in the ground truth, 1 shared: 2 / 7
    label[0, 0, 1, :3] = 1
    pred[0, 2, 2, 2] = 2  # class 2 predicted, absent from the ground truth: NaN
    got = metrics.dice_per_class(pred, label, 3)
    assert got.dtype == np.float64 and got[0] == 2 / 7 and math.isnan(got[1])
    one = metrics.dice_per_region((pred == 1)[None], (label == 1)[None])
    assert one.dtype == np.float64 and one.tolist() == [2 / 7]
    several = metrics.dice_per_region(torch.stack([pred == 1, pred == 2], 1), torch.stack([label == 1, label == 2], 1))
    assert several[0] == 2 / 7 and math.isnan(several[1])
    from monai.metrics import DiceMetric

    rng = np.random.default_rng(3)
    p, g = torch.from_numpy(rng.random((1, 3, 6, 5, 4)) < 0.4), torch.from_numpy(rng.random((1, 3, 6, 5, 4)) < 0.3)
    monai = DiceMetric(include_background=True, reduction="none", ignore_empty=True)(p.double(), g.double())[0]
    np.testing.assert_allclose(metrics.dice_per_region(p, g), monai.numpy(), rtol=1e-12)


def test_a_fifth_task_declared_by_its_module_alone_is_fine_tuned_and_probed(tmp_path, monkeypatch, capsys):
    """The engine and the probe read what a task module declares, never its name: a task they have no branch for
    (denoising: a volume from its noisy copy, scored by MSE, read by the frozen protocol as token values), declared
    here and added to the tasks' table alone, is fine-tuned and probed under its own name."""
    from monai.transforms import Compose

    from s2dc.data.volumes import plain
    from s2dc.downstream import tasks
    from s2dc.downstream.tasks.common import Task, cached_pair, infer, random_crops
    from s2dc.export import swinunetr_for
    from s2dc.models.encoder import EncoderConfig

    class Denoising(Task):
        name, roles, readout = "denoising", ("image",), "values"
        score_key, score_name, percent = "mse", "MSE", False

        def __init__(self, doc, source, data):
            pass

        def datasets(self, train, val, s, cache_root):
            return cached_pair(train, val, s, cache_root, "denoise1")

        def augment(self, s) -> Compose:
            return random_crops(["image"], s)

        def build_model(self, encoder, **kwargs):
            return swinunetr_for(encoder, out_channels=1, **kwargs)

        def loss(self, model, batch, s):
            clean = plain(batch["image"]).float()
            return ((model(clean + 0.1 * torch.randn_like(clean)) - clean) ** 2).mean()

        def input_and_target(self, item):
            clean = plain(item["image"]).float()
            return clean, clean

        def evaluate(self, model, val, s):
            errors = [float(((infer(model, val[i]["image"], s)[0] - plain(val[i]["image"]).float()) ** 2).mean())
                      for i in range(len(val))]
            return {"mse": sum(errors) / len(errors)}

    monkeypatch.setitem(tasks.TASKS, Denoising.name, Denoising)
    rng = np.random.default_rng(3)
    cases = [{"id": f"d{i}", "image": f"img/{_save(tmp_path / 'data' / 'img' / f'd{i}.nii.gz', _blob(rng, 8 * i))}"}
             for i in range(3)]
    source = tmp_path / "data" / "dataset.json"
    source.write_text(json.dumps({"name": "noisy", "task": "denoising", "modality": {"0": "MR"},
                                  "training": cases[:2], "validation": cases[2:]}))
    config = tmp_path / "ft.yaml"
    config.write_text(yaml.safe_dump(TINY_FT))
    assert main(["finetune", "--config", str(config), "--data.source", str(source), "--run.out_dir",
                 str(tmp_path / "run"), "--preprocess.intensity", "zscore", "--train.steps", "2"]) == 0, capsys.readouterr().err[-2000:]
    run = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert run["task"] == "denoising" and run["score"]["key"] == "mse" and math.isfinite(run["score"]["value"])

    sizes = EncoderConfig(feature_size=12, num_heads=(1, 2, 3, 4), window_size=4)
    torch.manual_seed(0)
    weights = swinunetr_for(sizes).swinViT.state_dict()  # an exported encoder file, as tests/test_probe.py writes one
    torch.save({"state_dict": {f"swinViT.{k}": v for k, v in weights.items()}, "encoder": sizes.to_dict()},
               tmp_path / "enc.pt")
    out = tmp_path / "probe" / "probe.json"
    assert main(["probe", "voxels", str(tmp_path / "enc.pt"), "--source", str(source), "--preset", "mri_zscore",
                 "--out", str(out)]) == 0, capsys.readouterr().err[-2000:]
    probed = json.loads(out.read_text())
    assert probed["task"] == "denoising" and probed["metric"] == "R²"
    # the voxels' own blocks predict their block means exactly: a ridge regression of x on x scores R² ~ 1
    assert probed["encoders"]["voxels"]["score"] > 0.99


def test_the_registry_the_task_modules_and_the_reports_table_know_the_same_tasks():
    """Each downstream task of the registry has its module (with a read-out the probe knows and the registry's first
    metric as its score) and its entry in the report's table, and no place knows a task the others do not."""
    from s2dc.data.registry import TASK_METRICS
    from s2dc.downstream.tasks import TASKS
    from s2dc.downstream.tasks.common import READOUTS
    from s2dc.report.tasks import TASK_VIEWS

    assert set(TASK_METRICS) == set(TASKS) == set(TASK_VIEWS)
    for name, task in TASKS.items():
        assert task.name == name and task.readout in READOUTS
        assert TASK_VIEWS[name].metrics[0][0].startswith(TASK_METRICS[name][0]), name  # 'dice' is 'dice_mean'
        assert task.score_key == TASK_VIEWS[name].metrics[0][0]
