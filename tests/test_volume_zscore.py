"""The release's BraTS 2023 normalisation, brain mask and scores as options (``Downstream/RECON``:
``NormalizeIntensityd`` of each whole sequence in ``utils/data_utils.py``, ``mask = data.ge(-0.35)`` in ``trainer.py``,
scikit-image's scores in ``test.py``): ``preprocess.intensity zscore_volume``, ``translate.mask release`` and
``translate.score release``, checked against small computations written out here, and the refusals of the
combinations that would read every voxel as the brain or body."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from scipy.ndimage import uniform_filter

from s2dc.cli import main
from s2dc.data.preprocess import EXTENT, preprocess_transforms
from s2dc.data.preprocess_config import PreprocessConfig
from s2dc.downstream.metrics import release_volume_scores
from s2dc.downstream.tasks.common import Setting
from s2dc.downstream.tasks.segmentation import Segmentation
from s2dc.downstream.tasks.translation import Translation
from s2dc.train.finetune_config import SegmentConfig, TranslateConfig, build_config

from conftest import TINY_FT
from test_translate_release import SEQUENCES, _write_brains  # the four sequences of a brain box, as a dataset.json


def _volume(rng, shape=(20, 16, 12)) -> np.ndarray:
    """A zero background around a brain box of positive values, which are not the same on any two voxels."""
    array = np.zeros(shape, np.float32)
    array[5:15, 4:12, 3:9] = rng.uniform(1.0, 5.0, (10, 8, 6)).astype(np.float32)
    return array


def _save(tmp_path, name, array) -> str:
    path = tmp_path / name
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    return str(path)


def test_zscore_volume_uses_the_statistics_of_every_voxel_before_the_crop(tmp_path):
    """Each sequence minus its mean over the whole stored volume (background included) over its standard deviation
    there (numpy's, ddof 0), then cropped to the brain's box: the release normalises before it crops."""
    rng = np.random.default_rng(0)
    a, b = _volume(rng), 3.0 * _volume(rng)
    paths = [_save(tmp_path, "a.nii.gz", a), _save(tmp_path, "b.nii.gz", b)]
    out = preprocess_transforms(PreprocessConfig(intensity="zscore_volume"), (4, 4, 4))({"image": paths})["image"]
    assert tuple(out.shape) == (2, 10, 8, 6)  # the brain's box
    for channel, raw in enumerate((a, b)):
        expected = (raw[5:15, 4:12, 3:9].astype(np.float64) - raw.mean(dtype=np.float64)) / raw.std(dtype=np.float64)
        np.testing.assert_allclose(out[channel].numpy(), expected, rtol=1e-5, atol=1e-6)
    # over the cropped box the statistics differ: the whole volume's were used, not the crop's
    crop = a[5:15, 4:12, 3:9].astype(np.float64)
    assert not np.allclose(out[0].numpy(), (crop - crop.mean()) / crop.std(), atol=1e-3)


def test_zscore_volume_pads_with_the_background_as_the_volume_has_it(tmp_path):
    """A volume smaller than the crop: padded with raw 0 (its background) before the z-score, so the padding takes
    the background's z-value, not 0 (which is about the mean of the volume)."""
    rng = np.random.default_rng(1)
    a = _volume(rng)
    paths = [_save(tmp_path, "a.nii.gz", a)]
    cfg = PreprocessConfig(intensity="zscore_volume", crop_foreground=False)
    out = preprocess_transforms(cfg, (24, 16, 12))({"image": paths})["image"][0].numpy()
    assert out.shape == (24, 16, 12)
    background = -a.mean(dtype=np.float64) / a.std(dtype=np.float64)
    np.testing.assert_allclose(out[:2], background, rtol=1e-5)  # SpatialPad: 2 voxels on each side of X
    np.testing.assert_allclose(out[-2:], background, rtol=1e-5)
    np.testing.assert_allclose(out[2:-2], (a - a.mean(dtype=np.float64)) / a.std(dtype=np.float64), rtol=1e-5,
                               atol=1e-6)


def test_zscore_over_the_brain_is_unchanged(tmp_path):
    """The default MRI preset: z-score over the non-zero voxels only, the background stays 0."""
    rng = np.random.default_rng(2)
    a = _volume(rng)
    out = preprocess_transforms(PreprocessConfig(intensity="zscore", crop_foreground=False), (4, 4, 4))(
        {"image": [_save(tmp_path, "a.nii.gz", a)]})["image"][0].numpy()
    brain = a[a != 0].astype(np.float64)
    np.testing.assert_allclose(out[a != 0], (brain - brain.mean()) / brain.std(), rtol=1e-5, atol=1e-6)
    assert (out[a == 0] == 0).all()


def test_an_unknown_intensity_is_refused_naming_the_three():
    with pytest.raises(ValueError, match="preprocess.intensity must be one of 'ct', 'zscore', 'zscore_volume', got "
                                         "'volume'"):
        PreprocessConfig(intensity="volume")


def _task(**options) -> Translation:
    return Translation({"modality": SEQUENCES}, "brats.json", SimpleNamespace(input_channel=""),
                       TranslateConfig(**options))


def _setting(intensity: str, roi=(8, 8, 8)) -> Setting:
    return Setting(PreprocessConfig(intensity=intensity), roi, 1, 0.0, 1, 0.0, torch.device("cpu"),
                   contextlib.nullcontext)


def _zscored_brains(rng, n: int) -> torch.Tensor:
    """``(n, 4, 8, 8, 8)``: four sequences z-scored over the whole volume, each with its own brain (a box shifted
    per sequence, so the masks of the sequences differ), the background about -0.6."""
    image = torch.full((n, 4, 8, 8, 8), -0.6)
    for c in range(4):
        image[:, c, 1 + c % 2 : 6 + c % 2, 1:-1, 1:-1] = torch.from_numpy(
            rng.uniform(-0.3, 2.0, (n, 5, 6, 6))).float()
    return image


def test_the_release_mask_is_each_sequences_own_voxels_at_or_above_the_floor():
    """The release's loss, ``MSELoss(reduction='sum')(out * mask, data * mask) * 10 / mask.sum()`` with
    ``mask = data.ge(-0.35)`` of all four sequences, written out voxel by voxel."""
    rng = np.random.default_rng(3)
    task = _task(inputs="each", targets="all", loss="mse", loss_weight=10.0, mask="release")
    image = _zscored_brains(rng, 2)
    pred = torch.from_numpy(rng.normal(size=image.shape)).float()
    loss = task.loss(lambda x: pred, {"image": image, "source": torch.tensor([1, 3])}, _setting("zscore_volume"))
    data, out = image.numpy().astype(np.float64), pred.numpy().astype(np.float64)
    mask = data >= -0.35
    assert 0 < mask.mean() < 1 and not (mask[:, 0] == mask[:, 1]).all()  # each sequence its own brain
    expected = ((out * mask - data * mask) ** 2).sum() * 10 / mask.sum()
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # the default mask (the input's non-zero voxels) would be every voxel here
    every = ((out - data) ** 2).mean() * 10
    assert float(_task(inputs="each", targets="all", loss="mse", loss_weight=10.0).loss(
        lambda x: pred, {"image": image, "source": torch.tensor([1, 3])}, _setting("zscore"))) == pytest.approx(
        every, rel=1e-5)


def test_the_release_mask_turns_at_its_floor():
    """The release's ``data.ge(-0.35)`` at its edge, by hand: -0.34 and -0.35 are brain, -0.36 is not (the z-scored
    twins put their background at -0.6 and their brain above -0.3, where any floor between reads alike)."""
    task = _task(inputs="each", targets="all", loss="mse", loss_weight=10.0, mask="release")
    target = torch.tensor([-0.34, -0.35, -0.36, -0.6, 1.0]).reshape(1, 5, 1, 1)
    assert task.brain(torch.zeros_like(target), target).flatten().tolist() == [True, True, False, False, True]


def test_the_release_mask_scores_each_other_sequence_in_its_own_brain():
    """A network that copies its input (t1n) into the three outputs: the MSE of each other sequence over its own
    voxels >= -0.35, averaged over the three sequences (each scored alone)."""
    rng = np.random.default_rng(4)
    image = _zscored_brains(rng, 1)[0]
    whole = torch.tensor([[0, 0, 0], [8, 8, 8]])  # the extent of an unpadded 8³ volume
    scores = _task(mask="release").evaluate(lambda x: x.repeat(1, 3, 1, 1, 1), [{"image": image, EXTENT: whole}],
                                            _setting("zscore_volume"))
    data = image.numpy().astype(np.float64)
    errors = [((data[0] - data[c]) ** 2)[data[c] >= -0.35].mean() for c in (1, 2, 3)]
    assert scores["mse"] == pytest.approx(np.mean(errors), rel=1e-5)


@pytest.mark.parametrize("intensity, mask, words", [
    ("zscore_volume", "nonzero", "translate.mask nonzero (the input's non-zero voxels) would be every voxel"),
    ("zscore", "release", "translate.mask release (each sequence's voxels >= -0.35) reads sequences z-scored over "
                          "the whole volume, but preprocess.intensity is zscore"),
])
def test_a_brain_mask_that_does_not_fit_the_normalisation_is_refused(intensity, mask, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        _task(mask=mask).check(_setting(intensity))
    _task(mask=mask).check(_setting("zscore_volume" if mask == "release" else "zscore"))  # the fitting pair stands


def test_segmentation_background_crops_need_a_zero_background():
    task = Segmentation({"labels": {"0": "background", "1": "box"}}, "boxes.json", SimpleNamespace(input_channel=""))
    with pytest.raises(ValueError, match=r"zscore_volume leaves no zero background.*segment.neg 1\)"):
        task.check(_setting("zscore_volume"))
    task.check(_setting("zscore"))
    Segmentation({"labels": {"0": "background", "1": "box"}}, "boxes.json", SimpleNamespace(input_channel=""),
                 SegmentConfig(neg=0)).check(_setting("zscore_volume"))


def test_an_unknown_mask_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="translate.mask must be 'nonzero' or 'release'"):
        build_config({"translate": {"mask": "brain"}})


def _skimage_scores(pred: np.ndarray, target: np.ndarray) -> tuple[float, float, float]:
    """scikit-image's ``peak_signal_noise_ratio`` and ``structural_similarity`` (``win_size`` 7, uniform weights,
    ``use_sample_covariance``), as its source computes them, with ``data_range`` the larger of the two ranges (the
    release's ``rg``); and the MSE."""
    x, y = pred.astype(np.float64), target.astype(np.float64)
    r = max(np.ptp(x), np.ptp(y))
    err = ((x - y) ** 2).mean()
    ux, uy = uniform_filter(x, 7), uniform_filter(y, 7)
    uxx, uyy, uxy = uniform_filter(x * x, 7), uniform_filter(y * y, 7), uniform_filter(x * y, 7)
    n = 7**3 / (7**3 - 1)
    vx, vy, vxy = n * (uxx - ux * ux), n * (uyy - uy * uy), n * (uxy - ux * uy)
    c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2
    ssim = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return 10 * np.log10(r**2 / err), ssim[3:-3, 3:-3, 3:-3].mean(), err


def test_the_release_volume_scores_are_scikit_images():
    rng = np.random.default_rng(6)
    target = rng.normal(size=(12, 10, 9))
    pred = target + rng.normal(scale=0.5, size=target.shape)
    got = release_volume_scores(torch.from_numpy(pred).float(), torch.from_numpy(target).float())
    np.testing.assert_allclose(got, _skimage_scores(pred.astype(np.float32), target.astype(np.float32)), rtol=1e-6)
    psnr, ssim, mse = release_volume_scores(torch.from_numpy(target), torch.from_numpy(target))
    assert (psnr, mse) == (float("inf"), 0.0) and ssim == pytest.approx(1.0, abs=1e-12)
    # a constant prediction: no structure shared, so the SSIM is its luminance term at most, far below 1
    assert release_volume_scores(torch.zeros(12, 10, 9), torch.from_numpy(target))[1] < 0.05
    with pytest.raises(ValueError, match="at least 7 voxels"):
        release_volume_scores(torch.zeros(12, 10, 6), torch.zeros(12, 10, 6))


def test_release_scoring_renormalises_fills_the_background_and_scores_all_sixteen_pairs():
    """A network that copies its input into all four outputs, scored as the release's test.py: each output channel
    z-scored over the volume (numpy's mean and population std), the target's voxels outside ``data >= -0.35``, then
    scikit-image's scores of every input -> output pair, averaged over the two cases; the input's own among them."""
    rng = np.random.default_rng(7)
    cases = [torch.from_numpy(rng.normal(size=(4, 10, 10, 10))).float() * 0.8 for _ in range(2)]
    task = _task(inputs="each", targets="all", mask="release", score="release")
    whole = torch.tensor([[0, 0, 0], [10, 10, 10]])  # the extent of an unpadded 10³ volume
    scores = task.evaluate(lambda x: x.repeat(1, 4, 1, 1, 1), [{"image": c, EXTENT: whole} for c in cases],
                           _setting("zscore_volume", roi=(10, 10, 10)))
    names = list(SEQUENCES.values())
    assert sorted(scores["pairs_psnr"]) == sorted(f"{a}_2_{b}" for a in names for b in names)
    expected = {}
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            per_case = []
            for image in cases:
                data = image.numpy().astype(np.float64)
                out = (data[i] - data[i].mean()) / data[i].std()
                out = np.where(data[j] >= -0.35, out, data[j])
                per_case.append(_skimage_scores(out, data[j]))
            expected[f"{a}_2_{b}"] = np.mean(per_case, axis=0)
    for pair, (p, s_, m) in expected.items():
        assert scores["pairs_psnr"][pair] == pytest.approx(p, rel=1e-4), pair
        assert scores["pairs_ssim"][pair] == pytest.approx(s_, rel=1e-4, abs=1e-6), pair
        assert scores["pairs_mse"][pair] == pytest.approx(m, rel=1e-4), pair
    assert scores["psnr"] == pytest.approx(np.mean([v[0] for v in expected.values()]), rel=1e-4)
    assert scores["mse"] == pytest.approx(np.mean([v[2] for v in expected.values()]), rel=1e-4)
    # the input's own sequence, renormalised, is scored too: better than the other outputs of that input
    for a in names:
        own = scores["pairs_psnr"][f"{a}_2_{a}"]
        assert own > max(scores["pairs_psnr"][f"{a}_2_{b}"] for b in names if b != a), a


class _Pointwise(torch.nn.Module):
    """Output ``c`` = ``x + (c + 1) x² / 5`` of its input ``x`` ``(B, 1, ...)`` at each voxel: a prediction known
    voxel by voxel, the same in any window (so whatever the blending), in the padding too; none the input again."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x + (c + 1) * x * x / 5 for c in range(4)], dim=1)


@pytest.mark.parametrize("roi", [(12, 10, 9), (16, 16, 12)], ids=["no padding", "padded on every axis"])
def test_release_scoring_scores_the_volumes_own_voxels_not_its_padding(tmp_path, roi):
    """A 12 x 10 x 9 validation case under a 16 x 16 x 12 crop is padded to it (with its background's z-value, outside
    the mask: the target's there): the release's scores took the padded volume, its z-score of each prediction and its
    averages and SSIM windows with the padding in. They must be those of the case's own voxels, written out here from
    the stored volumes with numpy and scipy (:func:`_skimage_scores`), whatever the crop size."""
    rng = np.random.default_rng(8)
    raw = []
    for name in SEQUENCES.values():
        array = np.zeros((12, 10, 9), np.float32)
        array[2:10, 2:8, 1:8] = rng.uniform(1.0, 5.0, (8, 6, 7)).astype(np.float32)
        raw.append(array)
    case = {"id": "v0", "image": [Path(_save(tmp_path, f"v0_{name}.nii.gz", a)) for name, a in
                                  zip(SEQUENCES.values(), raw)]}
    s = Setting(PreprocessConfig(intensity="zscore_volume", crop_foreground=False), roi, 1, 0.0, 1, 0.25,
                torch.device("cpu"), contextlib.nullcontext)
    task = _task(inputs="each", targets="all", mask="release", score="release")
    _, val = task.datasets([case], [case], s, None)
    scores = task.evaluate(_Pointwise(), val, s)

    data = [(a.astype(np.float64) - a.mean(dtype=np.float64)) / a.std(dtype=np.float64) for a in raw]  # stored
    names, expected = list(SEQUENCES.values()), {}
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            out = data[i] + (j + 1) * data[i] ** 2 / 5
            out = (out - out.mean()) / out.std()  # renormalised over the volume's voxels
            out = np.where(data[j] >= -0.35, out, data[j])
            expected[f"{a}_2_{b}"] = _skimage_scores(out, data[j])
    for pair, (p, s_, m) in expected.items():
        got = (scores["pairs_psnr"][pair], scores["pairs_ssim"][pair], scores["pairs_mse"][pair])
        assert got == (pytest.approx(p, rel=1e-4), pytest.approx(s_, rel=1e-4, abs=1e-6), pytest.approx(m, rel=1e-4)), (
            roi, pair, got, (p, s_, m))
    assert scores["psnr"] == pytest.approx(np.mean([v[0] for v in expected.values()]), rel=1e-4)
    assert scores["ssim"] == pytest.approx(np.mean([v[1] for v in expected.values()]), rel=1e-4)
    assert scores["mse"] == pytest.approx(np.mean([v[2] for v in expected.values()]), rel=1e-4)


def test_release_scoring_refuses_before_training_a_volume_thinner_than_its_ssim_window():
    """The release's SSIM needs 7 voxels along every axis of the volume scored, now its own voxels (a 12 x 10 x 6
    case padded to a 16 x 16 x 12 crop): refused before training, naming the case, its file and its size, not by
    the scoring after training; 7 voxels pass."""
    from s2dc.data.errors import DataError

    task = _task(inputs="each", targets="all", mask="release", score="release")
    image = torch.zeros(4, 16, 16, 12)
    cases = [{"id": "v0", "image": [f"v0_{name}.nii.gz" for name in SEQUENCES.values()]}]
    with pytest.raises(DataError) as refused:
        task.check_validation([{"image": image, EXTENT: torch.tensor([[2, 3, 3], [14, 13, 9]])}], cases)
    message = str(refused.value)
    assert "'brats.json'" in message and "'v0' ('v0_t1n.nii.gz', 12 x 10 x 6 voxels)" in message, message
    assert "7 voxels" in message and "translate.score release" in message, message
    task.check_validation([{"image": image, EXTENT: torch.tensor([[2, 3, 2], [14, 13, 9]])}], cases)


@pytest.mark.parametrize("options, words", [
    ({"targets": "others", "mask": "release"}, "needs translate.targets all (got others)"),
    ({"targets": "all", "mask": "nonzero"}, "and translate.mask release (got nonzero)"),
])
def test_release_scoring_without_every_output_or_the_release_mask_is_refused(options, words):
    with pytest.raises(ValueError, match=r"translate.score release .*" + words.replace("(", r"\(").replace(")", r"\)")):
        build_config({"translate": {**options, "score": "release"}})
    with pytest.raises(ValueError, match="translate.score must be 'brain' or 'release'"):
        build_config({"translate": {"score": "test"}})


def test_the_releases_normalisation_and_mask_train_end_to_end_and_a_mismatch_writes_nothing(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    source = _write_brains(tmp_path / "data", np.random.default_rng(5))
    config = tmp_path / "ft.yaml"
    config.write_text(yaml.safe_dump({**TINY_FT, "train": {**TINY_FT["train"], "steps": 2}}))
    common = ["finetune", "--config", str(config), "--data.source", source, "--preprocess.intensity", "zscore_volume",
              "--translate.inputs", "each", "--translate.targets", "all", "--translate.loss", "mse"]
    out = tmp_path / "run"
    assert main([*common, "--translate.mask", "release", "--run.out_dir", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["options"]["translate.mask"] == "release" and m["options"]["preprocess.intensity"] == "zscore_volume"
    assert np.isfinite(m["psnr"]) and np.isfinite(m["mse"]) and "pairs_psnr" not in m
    # what this run adds is the release's scoring, done once at the end however many steps: one step is enough
    assert main([*common, "--translate.mask", "release", "--translate.score", "release", "--train.steps", "1",
                 "--run.out_dir", str(tmp_path / "release")]) == 0
    r = json.loads((tmp_path / "release" / "metrics.json").read_text())
    assert len(r["pairs_psnr"]) == 16 and r["options"]["translate.score"] == "release"
    assert r["psnr"] == pytest.approx(np.mean(list(r["pairs_psnr"].values())))
    assert r["score"]["value"] == r["psnr"]
    capsys.readouterr()
    assert main([*common, "--run.out_dir", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert "translate.mask nonzero" in err and "zscore_volume" in err, err
    assert not (tmp_path / "refused").exists()


# --------------------------------------------------------------------------- translate.inputs cycle


def _crops(task, n_cases=3, seed=0):
    """Cases of four random sequences (12³) and the task's training augmentation (8³ crops)."""
    rng = np.random.default_rng(seed)
    cases = [{"image": torch.from_numpy(rng.normal(size=(4, 12, 12, 12))).float()} for _ in range(n_cases)]
    return cases, task.augment(_setting("zscore", roi=(8, 8, 8)))


def test_cycle_gives_each_crop_for_one_step_per_sequence_each_sequence_once():
    """The release's loop (trainer.py: `np.random.shuffle(modal_index)`, then a step per sequence of one crop): steps
    4u .. 4u + 3 share batch u, which is the batch a one-step-a-batch stream builds at step u (the crop does not
    depend on the repeat), and their inputs are the four sequences, each once, in the crop's drawn order."""
    from s2dc.downstream.engine import StepBatches

    task = _task(inputs="cycle", targets="all")
    assert task.steps_per_batch == 4 and task.inputs == [0, 1, 2, 3]
    cases, augment = _crops(task)
    cycled = StepBatches(cases, augment, batch_size=2, seed=5, steps_per_batch=4)
    plain_stream = StepBatches(cases, augment, batch_size=2, seed=5)
    orders = set()
    for u in range(3):
        reference = plain_stream[u]
        seen = []
        for turn in range(4):
            batch = cycled[4 * u + turn]
            assert int(batch["turn"]) == turn
            assert torch.equal(batch["image"], reference["image"]) and torch.equal(batch["order"], reference["order"])
            x, target, _ = task.training_split(batch["image"], batch)
            for b in range(2):
                c = int(batch["order"][b, turn])
                assert torch.equal(x[b, 0], batch["image"][b, c])
            assert torch.equal(target, batch["image"])
            seen.append([int(batch["order"][b, turn]) for b in range(2)])
        for b in range(2):
            assert sorted(s[b] for s in seen) == [0, 1, 2, 3]  # every sequence of the crop once
            orders.add(tuple(s[b] for s in seen))
        assert not torch.equal(cycled[4 * u]["image"], cycled[4 * u + 4]["image"])  # the next batch: other crops
    assert len(orders) > 1  # the order is drawn, not fixed


def test_one_step_a_batch_streams_carry_no_turn():
    from s2dc.downstream.engine import StepBatches

    task = _task(inputs="each", targets="all")
    assert task.steps_per_batch == 1
    cases, augment = _crops(task)
    assert "turn" not in StepBatches(cases, augment, batch_size=1, seed=0)[3]


def test_an_epoch_of_cycle_is_one_step_per_sequence_of_every_batch():
    cfg = build_config({"train": {"epochs": 2, "warmup_epochs": 1, "batch_size": 2},
                        "translate": {"inputs": "cycle", "targets": "all"}})
    t = cfg.in_steps(5, steps_per_batch=4).train
    assert (t.steps, t.warmup_steps) == (2 * 3 * 4, 1 * 3 * 4)  # ceil(5 / 2) = 3 batches an epoch, 4 steps each
    with pytest.raises(ValueError, match="translate.inputs cycle needs translate.targets all"):
        build_config({"translate": {"inputs": "cycle"}})
    with pytest.raises(ValueError, match=r"translate.inputs cycle gives every sequence in turn"):
        Translation({"modality": SEQUENCES}, "brats.json", SimpleNamespace(input_channel="t2w"),
                    TranslateConfig(inputs="cycle", targets="all"))


def test_cycle_trains_end_to_end_and_resumes_mid_crop_to_the_same_weights(tmp_path, monkeypatch):
    """Six steps of cycle (a crop's four, then two of the next): stopped right after its step-3 checkpoint (mid-crop)
    and run again, it ends with the weights of the run that was never stopped, bit for bit: a step's batch and turn
    depend on its number alone."""
    from s2dc.downstream.engine import Finetuner

    (tmp_path / "data").mkdir()
    source = _write_brains(tmp_path / "data", np.random.default_rng(8))
    config = tmp_path / "ft.yaml"
    values = {**TINY_FT, "train": {**TINY_FT["train"], "steps": 6}, "eval": {**TINY_FT["eval"], "every": 3}}
    config.write_text(yaml.safe_dump(values))
    common = ["finetune", "--config", str(config), "--data.source", source, "--translate.inputs", "cycle",
              "--translate.targets", "all", "--translate.loss", "mse", "--data.cache_dir", str(tmp_path / "cache"),
              "--preprocess.intensity", "zscore"]
    assert main([*common, "--run.out_dir", str(tmp_path / "whole"), "--run.checkpoint_every", "0"]) == 0
    m = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert m["options"]["translate.inputs"] == "cycle" and m["steps"] == 6 and np.isfinite(m["psnr"])

    out = tmp_path / "stopped"
    save = Finetuner._save_checkpoint

    def save_then_stop(self, *args):
        save(self, *args)
        if self.step == 3:
            raise KeyboardInterrupt  # as a Ctrl-C right after the checkpoint: steps 4 .. 6 are the resumed run's

    with monkeypatch.context() as patched:
        patched.setattr(Finetuner, "_save_checkpoint", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            main([*common, "--run.out_dir", str(out), "--run.checkpoint_every", "3"])
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000003.pt"]
    assert main([*common, "--run.out_dir", str(out), "--run.checkpoint_every", "3"]) == 0
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["resumed_from_step"] == 3
    a, b = (torch.load(f / "model.pt", weights_only=True) for f in (tmp_path / "whole", out))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["history"] == m["history"]
