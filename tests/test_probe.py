"""Structure probe: token targets, the linear probe's maths, and the `s2dc probe` command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import CODE, sealed
from s2dc.cli import main
from s2dc.data.synthetic import write_dataset
from s2dc.eval.probe import fit_linear_probe, pad_to_multiple, per_class_recall, token_targets, voxel_blocks
from s2dc.export import swinunetr_for
from s2dc.models.encoder import EncoderConfig

SIZES = EncoderConfig(feature_size=12, num_heads=(1, 2, 3, 4), window_size=4)


def save_encoder(path, weights: dict) -> dict:
    """An exported encoder file of :data:`SIZES` holding ``weights`` (a swinViT state dict); returns the weights."""
    torch.save({"state_dict": {f"swinViT.{k}": v for k, v in weights.items()}, "encoder": SIZES.to_dict()}, path)
    return weights


def _dominant_structure(block: np.ndarray, num_classes: int) -> int:
    """The reference rule, block by block: the most frequent foreground class (ties to the lower) when
    foreground fills at least an eighth of the block, else background (0)."""
    counts = np.bincount(block.ravel(), minlength=num_classes)
    if counts[1:].sum() * 8 < block.size:
        return 0
    return int(counts[1:].argmax()) + 1


def test_token_targets_name_the_structure_in_each_block():
    """Against a loop over the blocks with numpy's bincount."""
    rng = np.random.default_rng(0)
    label = rng.choice(4, (8, 6, 4), p=[0.85, 0.05, 0.05, 0.05])
    label[:4, :2, :2] = 3  # one pure block
    got = token_targets(torch.from_numpy(label), 2, 4).numpy()
    want = []
    for i in range(4):
        for j in range(3):
            for k in range(2):
                want.append(_dominant_structure(label[2 * i : 2 * i + 2, 2 * j : 2 * j + 2, 2 * k : 2 * k + 2], 4))
    np.testing.assert_array_equal(got, want)
    assert got[0] == 3 and 0 < (got == 0).sum() < len(got)


def test_a_lesion_smaller_than_half_a_block_still_labels_its_token():
    """A majority rule would call every block background here and the probe would score a vacuous 100 %."""
    label = torch.zeros(8, 8, 8, dtype=torch.long)
    label[0:2, 0:2, 0:1] = 1  # 4 of the 64 voxels of the first 4³ block: under an eighth
    label[4:6, 4:6, 4:6] = 1  # 8 of 64: an eighth
    got = token_targets(label, 4, 2)
    assert got.tolist() == [0, 0, 0, 0, 0, 0, 0, 1]


def test_a_probe_with_no_foreground_token_to_score_fails():
    """Balanced accuracy over background alone would read 100 %: the probe refuses instead, naming the stage."""
    from types import SimpleNamespace

    from s2dc.data.errors import DataError
    from s2dc.eval.probe import _score

    task = SimpleNamespace(name="segmentation", readout="labels")
    x = {"training": torch.randn(40, 3), "validation": torch.randn(10, 3)}
    y = {"training": torch.tensor([0, 1] * 20), "validation": torch.zeros(10, dtype=torch.long)}
    with pytest.raises(DataError, match="no validation token.*lesion"):
        _score(task, ["background", "lesion"], x, y, torch.arange(10) // 5, 2)


def test_voxel_blocks_follow_the_token_order():
    """On a label map made of pure 2³ blocks, every row of voxel_blocks is constant and equals its token's target."""
    rng = np.random.default_rng(1)
    coarse = rng.integers(0, 5, (3, 4, 2))
    label = torch.from_numpy(np.kron(coarse, np.ones((2, 2, 2), dtype=np.int64)))
    rows = voxel_blocks(label[None].float(), 2)
    assert rows.shape == (24, 8)
    assert torch.equal(rows, rows[:, :1].expand(-1, 8))
    assert torch.equal(rows[:, 0].long(), token_targets(label, 2, 5))
    assert torch.equal(rows[:, 0].long(), torch.from_numpy(coarse.ravel()))


def test_pad_to_multiple():
    x = torch.ones(1, 33, 64, 10)
    y = pad_to_multiple(x, 32)
    assert y.shape == (1, 64, 64, 32)
    assert y.sum() == x.sum() and torch.equal(y[:, :33, :, :10], x)


def test_per_class_recall_by_hand():
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    pred = torch.tensor([0, 1, 0, 1, 0, 2])
    recall = per_class_recall(pred, y, 4)
    np.testing.assert_allclose(recall[:3], [2 / 3, 1 / 2, 1.0])
    assert np.isnan(recall[3])


def test_probe_separates_informative_features_and_not_noise():
    """Features that carry the class (plus noise) are separated; pure noise stays near chance (1/3)."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(3, (3000,), generator=g)
    y_val = torch.randint(3, (1500,), generator=g)
    centres = torch.randn(3, 8, generator=g) * 3
    informative = centres[y] + torch.randn(3000, 8, generator=g)
    layer = fit_linear_probe(informative, y, 3)
    val = centres[y_val] + torch.randn(1500, 8, generator=g)
    with torch.no_grad():
        good = per_class_recall(layer(val.double()).argmax(1), y_val, 3)
    assert good.min() > 0.95
    noise = fit_linear_probe(torch.randn(3000, 8, generator=g), y, 3)
    with torch.no_grad():
        chance = per_class_recall(noise(torch.randn(1500, 8, generator=g).double()).argmax(1), y_val, 3)
    assert 0.15 < chance.mean() < 0.5


def test_probe_balances_classes():
    """A rare class is still found: the loss weights classes by inverse frequency."""
    g = torch.Generator().manual_seed(1)
    y = (torch.rand(4000, generator=g) < 0.02).long()  # 2 % positives
    x = torch.randn(4000, 4, generator=g) + 1.5 * y[:, None]
    layer = fit_linear_probe(x, y, 2)
    with torch.no_grad():
        recall = per_class_recall(layer(x.double()).argmax(1), y, 2)
    assert recall[1] > 0.7 and recall[0] > 0.7  # an unweighted fit predicts almost only class 0


def test_stratified_folds_deal_each_class_evenly():
    from s2dc.eval.probe import stratified_folds

    y = torch.tensor([0] * 7 + [1] * 3 + [2] * 5)
    fold = stratified_folds(y, 3)
    for c, n in ((0, 7), (1, 3), (2, 5)):
        per_fold = torch.bincount(fold[y == c], minlength=3)
        assert per_fold.sum() == n and per_fold.max() - per_fold.min() <= 1


def test_cross_validation_regularises_noise_and_not_signal():
    """Few samples, many pure-noise features: the held-out loss is lowest for the strongest decay (a near-uniform
    prediction); many samples of well-separated classes: a weak decay (confident, correct predictions)."""
    from s2dc.eval.probe import WEIGHT_DECAYS, cross_validated_weight_decay

    g = torch.Generator().manual_seed(3)
    y = torch.arange(40) % 2
    assert cross_validated_weight_decay(torch.randn(40, 300, generator=g), y, 2) == max(WEIGHT_DECAYS)
    y = torch.arange(300) % 3
    x = torch.randn(3, 4, generator=g)[y] * 4 + torch.randn(300, 4, generator=g)
    assert cross_validated_weight_decay(x, y, 3) <= 1e-2


def test_cross_validation_needs_two_samples_per_class():
    from s2dc.eval.probe import cross_validated_weight_decay

    y = torch.tensor([0, 0, 0, 1])  # class 1 cannot be held out and still trained on
    assert cross_validated_weight_decay(torch.randn(4, 3), y, 2) == 1e-3


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    # 32³: one encoder grid with no padding (the tests on it are of the command, its outputs and refusals; the
    # zero padding's tokens have tests of their own)
    return write_dataset(tmp_path_factory.mktemp("twin") / "btcv", "btcv", cases=4, seed=3, shape=(32, 32, 32),
                         val_fraction=0.5)


@pytest.fixture(scope="module")
def twin_probe(twin, tmp_path_factory):
    """A folder where `s2dc probe voxels ENC --source TWIN --out probe.json` ran once, ENC its enc.pt (a random
    encoder of seed 5): enc.pt, probe.json and probe.md (shared: tests copy the result, never change it)."""
    folder = tmp_path_factory.mktemp("twin-probe")
    torch.manual_seed(5)
    save_encoder(folder / "enc.pt", swinunetr_for(SIZES).swinViT.state_dict())
    assert main(["probe", "voxels", str(folder / "enc.pt"), "--source", str(twin), "--out",
                 str(folder / "probe.json")]) == 0
    return folder


def test_probe_command(twin, tmp_path, capsys):
    """`s2dc probe random FILE` writes a row per encoder; the file's weights change the result."""
    torch.manual_seed(5)
    model = swinunetr_for(SIZES)
    exported = tmp_path / "enc.pt"
    save_encoder(exported, model.swinViT.state_dict())
    out = tmp_path / "probe" / "probe.json"
    assert main(["probe", "voxels", "random", str(exported), "--source", str(twin), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["stride"] == 8 and result["train_tokens"] == 2 * 4 * 4 * 4
    rows = result["encoders"]
    assert set(rows) == {"voxels", "random", str(exported)}
    for row in rows.values():
        assert 0.0 <= row["balanced_accuracy"] <= 1.0
        assert row["recall"]["background"] is not None
        assert 0.0 < row["se"] < 0.5 and len(row["versus"]) == 2  # two validation cases, resampled
    assert rows["random"]["versus"]["voxels"]["difference"] == pytest.approx(
        rows["random"]["score"] - rows["voxels"]["score"])
    # the file's weights change the result (whole rows always differ: each row's `versus` names the other encoders)
    assert rows["random"]["score"] != rows[str(exported)]["score"]
    md = out.with_suffix(".md").read_text()
    assert "| random |" in md and "Paired differences (row minus column" in md and "2 validation cases" in md
    assert "balanced accuracy" in capsys.readouterr().out


def test_probe_needs_an_encoder_file(twin, tmp_path, capsys):
    assert main(["probe", "random", "--source", str(twin), "--out", str(tmp_path / "p.json")]) == 2
    assert "at least one encoder file" in capsys.readouterr().err


def test_ridge_and_r_squared_against_numpy():
    from s2dc.eval.probe import fit_ridge, r_squared

    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 5)) * [1, 2, 3, 4, 5] + 7
    y = x @ rng.normal(size=(5, 2)) + [1.0, -2.0] + 0.1 * rng.normal(size=(200, 2))
    predict = fit_ridge(torch.from_numpy(x), torch.from_numpy(y), alpha=3.0)
    z = (x - x.mean(0)) / x.std(0, ddof=1)  # independent closed form on standardised features
    w = np.linalg.solve(z.T @ z + 3.0 * np.eye(5), z.T @ (y - y.mean(0)))
    np.testing.assert_allclose(predict(torch.from_numpy(x)).numpy(), z @ w + y.mean(0), rtol=1e-9, atol=1e-9)
    yt = torch.from_numpy(y)
    assert r_squared(yt.double(), yt) == 1.0
    assert r_squared(yt.mean(0).expand_as(yt).double(), yt) == pytest.approx(0.0, abs=1e-12)
    sse = ((y - y.mean(0)) ** 2).sum()
    assert r_squared(yt.double() + 1.0, yt) == pytest.approx(1 - y.size / sse)


def _probe_a_twin(tmp_path, name, cases, shape, out):
    """`s2dc probe voxels enc=...` on a fresh twin of ``name`` (half of its cases validate) with a random encoder
    file; returns the result json."""
    source = write_dataset(tmp_path / name, name, cases=cases, seed=1, shape=shape, val_fraction=0.5)
    torch.manual_seed(5)
    exported = tmp_path / "enc.pt"
    save_encoder(exported, swinunetr_for(SIZES).swinViT.state_dict())
    assert main(["probe", "voxels", f"enc={exported}", "--source", str(source), "--out", str(out)]) == 0
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def probed_twin(tmp_path_factory):
    """:func:`_probe_a_twin` of ``(name, cases, shape)``, run once in this module for each: the result json's path
    (shared: tests read it, never change it)."""
    results = {}

    def probed(name, cases, shape):
        if (name, cases, shape) not in results:
            folder = tmp_path_factory.mktemp(name)
            _probe_a_twin(folder, name, cases, shape, folder / "probe.json")
            results[name, cases, shape] = folder / "probe.json"
        return results[name, cases, shape]
    return probed


@pytest.mark.parametrize("name, metric, unit", [("adni", "balanced accuracy", "volumes"), ("udpet", "R²", "tokens")])
def test_frozen_protocol_for_classification_and_reconstruction(probed_twin, name, metric, unit):
    """Classification: one pooled vector per volume; reconstruction: ridge from tokens to target block means."""
    # UDPET 48 x 48 x 32: the zero-padding test's probe too; ADNI's volumes are pooled on a grid at any size
    out = probed_twin(name, 8, (32, 32, 32)) if name == "adni" else probed_twin(name, 4, (48, 48, 32))
    result = json.loads(out.read_text())
    assert result["metric"] == metric and result[f"train_{unit}"] > 0 and set(result["encoders"]) == {"voxels", "enc"}
    for row in result["encoders"].values():
        assert np.isfinite(row["score"]) and (row["score"] <= 1.0)
    if name == "adni":
        assert result["train_volumes"] == 4 and result["classes"] == ["CN", "AD"]
        from s2dc.eval.probe import WEIGHT_DECAYS

        assert all(row["weight_decay"] in WEIGHT_DECAYS for row in result["encoders"].values())
        assert "chosen by 5-fold cross-validation" in out.with_suffix(".md").read_text()
    else:  # the raw low-dose block predicts the full-dose block's mean: a fit that ignores its features scores < 0
        assert result["encoders"]["voxels"]["score"] > 0.5, result["encoders"]


def test_pooled_features_keep_the_layout_of_the_volume():
    """Against numpy: each channel averaged over each cell of a grid³ partition, channel-major, cells in C order."""
    from s2dc.eval.probe import pooled_features

    rng = np.random.default_rng(3)
    fmap = rng.normal(size=(1, 3, 4, 6, 2))
    got = pooled_features(torch.from_numpy(fmap), 2).numpy()
    want = [fmap[0, c, 2 * i : 2 * i + 2, 3 * j : 3 * j + 3, k : k + 1].mean()
            for c in range(3) for i in range(2) for j in range(2) for k in range(2)]
    np.testing.assert_allclose(got, np.array(want)[None], rtol=1e-12)


def test_classification_probe_reads_tokens_on_a_grid(monkeypatch):
    """The pooled classification features of an encoder are its stage map averaged on a 2³ grid, not over the
    whole volume (a class that is a regional pattern is lost by a global mean; the voxel baseline keeps a 4³ grid)."""
    from s2dc.eval import probe as probe_module

    swin = swinunetr_for(SIZES).swinViT.eval()
    image = torch.rand(1, 1, 32, 32, 32)
    got = probe_module._token_features(swin, image, 2, pooled=True)
    with torch.no_grad():
        fmap = swin(image, True)[2]  # (1, C, 4, 4, 4): cells of 2³ tokens
    c = fmap.shape[1]
    assert got.shape == (1, c * 8)
    first_cell = fmap[0, :, :2, :2, :2].mean((1, 2, 3))
    torch.testing.assert_close(got[0].reshape(c, 8)[:, 0], first_cell)


def test_region_segmentation_is_probed_by_its_per_voxel_labels(tmp_path):
    """BraTS 2021 is segmented into overlapping regions (tumour core, whole tumour, enhancing); a token takes one
    class, so the probe reads the json's per-voxel labels (values 1, 2, 4: value 3 is no class and not scored)."""
    # 64 x 32 x 32 (half the grid of 64 x 64 x 32; at 32³ no validation token holds a necrotic core): every region
    # is in the validation tokens
    source = write_dataset(tmp_path / "brats21", "brats21", cases=4, seed=1, shape=(64, 32, 32), val_fraction=0.5)
    labels = json.loads(source.read_text())["labels"]
    torch.manual_seed(5)
    exported = tmp_path / "enc.pt"
    save_encoder(exported, swinunetr_for(SIZES).swinViT.state_dict())
    out = tmp_path / "probe.json"
    assert main(["probe", "voxels", f"enc={exported}", "--source", str(source), "--stage", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["classes"] == [labels[k] for k in ("0", "1", "2", "4")]
    for row in result["encoders"].values():
        assert set(row["recall"]) == set(result["classes"]) and 0.0 <= row["balanced_accuracy"] <= 1.0
        assert row["recall"]["peritumoral edema"] is not None  # the edema fills blocks of every validation case


def test_structure_scores_on_a_hand_made_feature_map():
    """Three structures whose tokens are known unit vectors: A = e1, B = e2, C = (e1 + e2)/sqrt 2 (scaled copies:
    cosine ignores length). Within each: cosine 1; between: A-B 0, A-C and B-C 1/sqrt 2."""
    from s2dc.eval.probe import structure_scores

    e1, e2 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    features = torch.stack([e1, 2 * e1, 3 * e1, e2, 5 * e2, e1 + e2, 4 * (e1 + e2)])
    labels = torch.tensor([0, 0, 0, 3, 3, 7, 7])  # class ids need not be contiguous
    got = structure_scores(features, labels)
    inter = (0 + 2 / np.sqrt(2)) / 3
    assert got["consistency"] == pytest.approx(1.0)
    assert got["inter"] == pytest.approx(inter) and got["discrepancy"] == pytest.approx(1 - inter)
    assert got["ratio"] > 1e6  # no spread within: the structures are perfectly separated


def test_structure_scores_against_every_pair():
    """Random tokens in four classes (one with a single token, which has no pair): against a double loop."""
    from s2dc.eval.probe import structure_scores

    rng = np.random.default_rng(4)
    features = rng.normal(size=(40, 6)) + 0.5
    labels = np.array([0] * 15 + [1] * 12 + [2] * 12 + [5])
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    cos = unit @ unit.T
    classes = [0, 1, 2, 5]
    within = [np.mean([cos[i, j] for i in np.flatnonzero(labels == c) for j in np.flatnonzero(labels == c) if i != j])
              for c in classes if (labels == c).sum() > 1]
    between = [cos[np.ix_(labels == a, labels == b)].mean() for ia, a in enumerate(classes) for b in classes[ia + 1:]]
    got = structure_scores(torch.from_numpy(features), torch.from_numpy(labels))
    assert got["consistency"] == pytest.approx(np.mean(within), rel=1e-12)
    assert got["inter"] == pytest.approx(np.mean(between), rel=1e-12)
    assert got["ratio"] == pytest.approx((1 - np.mean(between)) / (1 - np.mean(within)), rel=1e-12)
    with pytest.raises(ValueError, match="two structures"):
        structure_scores(torch.from_numpy(features), torch.zeros(40, dtype=torch.long))


def test_structure_scores_with_all_zero_tokens_against_scikit_learn():
    """Tokens whose features are all zero (the raw-voxel baseline's blocks of air, windowed to 0) have no direction:
    as scikit-learn's cosine_similarity, every pair with one of them counts as cosine 0, within a structure as between
    (a structure of identical zero tokens scored -1/(n-1) within when each token's self-pair was taken as 1)."""
    from sklearn.metrics.pairwise import cosine_similarity

    from s2dc.eval.probe import structure_scores

    rng = np.random.default_rng(7)
    features = rng.normal(size=(30, 5)) + 0.3
    labels = np.array([0] * 10 + [1] * 12 + [2] * 8)
    features[:10] = 0.0  # structure 0: air
    features[12:14] = 0.0  # two zero tokens among structure 1
    cos = cosine_similarity(features)
    classes = [0, 1, 2]
    within = [(cos[np.ix_(labels == c, labels == c)].sum() - np.trace(cos[np.ix_(labels == c, labels == c)]))
              / ((labels == c).sum() * ((labels == c).sum() - 1)) for c in classes]
    between = [cos[np.ix_(labels == a, labels == b)].mean() for ia, a in enumerate(classes) for b in classes[ia + 1:]]
    got = structure_scores(torch.from_numpy(features), torch.from_numpy(labels))
    assert within[0] == 0.0
    assert got["consistency"] == pytest.approx(np.mean(within), rel=1e-12)
    assert got["inter"] == pytest.approx(np.mean(between), rel=1e-12)
    assert got["ratio"] == pytest.approx((1 - np.mean(between)) / (1 - np.mean(within)), rel=1e-12)


def test_structure_scores_without_a_pair_within_a_structure_have_no_consistency_and_write_no_nan(tmp_path):
    """Every structure with one token (a coarse stage on a small volume): no pair within, so no consistency and no
    ratio (None, shown as a dash), not a NaN that strict JSON readers refuse; the cosine between is still defined."""
    from s2dc.eval.probe import markdown, structure_scores

    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    got = structure_scores(features, torch.tensor([0, 1, 2]))
    assert got["consistency"] is None and got["ratio"] is None
    assert got["inter"] == pytest.approx((0 + 2 / np.sqrt(2)) / 3)
    result = {"metric": "balanced accuracy", "classes": ["a"], "val_cases": 1, "resamples": 1,
              "encoders": {"e": {"balanced_accuracy": 0.5, "se": None, "recall": {"a": 0.5}, "versus": {},
                                 "structure": got}}}
    table = markdown(result)
    assert "| e | – |" in table and "nan" not in table.lower()
    from s2dc.report.tables import collect_probes

    result.update(dataset="d", task="segmentation", stage=4, code=CODE)
    result["encoders"]["e"]["score"] = 0.5
    (tmp_path / "p.json").write_text(json.dumps(sealed(result)))
    row = collect_probes([tmp_path / "p.json"]).iloc[0]  # the report's probe table reads it: no consistency, no ratio
    assert np.isnan(row["consistency"]) and np.isnan(row["ratio"]) and row["discrepancy"] == pytest.approx(1 - got["inter"])


@pytest.mark.parametrize("pooled", [False, True])
def test_a_one_channel_encoder_reads_each_sequence_alone(pooled):
    """A pool's encoder was pretrained on one sequence at a time: frozen, it reads each channel of a multi-channel
    volume on its own and the features of the channels are concatenated (channel-major), not the mean of the
    sequences that an inflated patch embedding would see. Against the encoder run on each channel by hand."""
    from s2dc.eval import probe as probe_module
    from s2dc.eval.probe import pooled_features

    torch.manual_seed(2)
    swin = swinunetr_for(SIZES).swinViT.eval()
    image = torch.rand(1, 3, 64, 64, 32)
    got = probe_module._token_features(swin, image, 1, pooled=pooled)
    with torch.no_grad():
        maps = [swin(image[:, k : k + 1], True)[1] for k in range(3)]  # each (1, C, 16, 16, 8)
    if pooled:
        want = torch.cat([pooled_features(m, 2) for m in maps], dim=1)
    else:
        want = torch.cat([m[0].flatten(1).T for m in maps], dim=1)  # (tokens, 3 C)
    assert got.shape == want.shape == ((1, 3 * 24 * 8) if pooled else (16 * 16 * 8, 3 * 24))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_the_probe_builds_a_one_channel_encoder_for_a_multi_channel_dataset(tmp_path):
    """The frozen model keeps the encoder file's one input channel (no inflation) for BraTS's four sequences, and
    its weights are the file's."""
    from types import SimpleNamespace

    from s2dc.eval.probe import frozen_encoder

    torch.manual_seed(4)
    weights = swinunetr_for(SIZES).swinViT.state_dict()
    exported = tmp_path / "enc.pt"
    save_encoder(exported, weights)
    data = SimpleNamespace(sizes=SIZES, volumes={"training": [torch.zeros(1, 4, 64, 64, 32)]}, device=torch.device("cpu"))
    for what in (str(exported), "random"):
        swin = frozen_encoder(what, data, seed=0)
        assert swin.patch_embed.proj.weight.shape[1] == 1
    torch.testing.assert_close(frozen_encoder(str(exported), data, 0).patch_embed.proj.weight,
                               weights["patch_embed.proj.weight"])


def _readouts():
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("probe_readouts", REPO / "scripts" / "probe_readouts.py")
    readouts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(readouts)
    return readouts


def test_the_readout_diagnostic_reads_the_probes_blocks_in_token_order():
    """scripts/probe_readouts.py: a block's mean and sd per channel, in the order of the probe's voxel blocks (whose
    C s³ values are channel-major), and a grid cell's mean and sd per channel, as numpy computes them."""
    from s2dc.eval.probe import block_means

    readouts = _readouts()
    image = torch.randn(3, 8, 12, 4, generator=torch.Generator().manual_seed(0))
    blocks = voxel_blocks(image, 4).reshape(-1, 3, 64).numpy()
    np.testing.assert_allclose(block_means(image, 4).numpy(), blocks.mean(-1), atol=1e-6)  # what --blocks means reads
    both = readouts.block_means_and_sds(image, 4).numpy()
    np.testing.assert_allclose(both, np.concatenate([blocks.mean(-1), blocks.std(-1)], 1), atol=1e-5)
    cells = image.numpy().reshape(3, 2, 4, 2, 6, 2, 2).transpose(0, 1, 3, 5, 2, 4, 6).reshape(3, 8, -1)
    pooled = readouts.pooled_means_and_sds(image[None], 2).numpy()[0]
    np.testing.assert_allclose(pooled, np.concatenate([cells.mean(-1).ravel(), cells.std(-1).ravel()]), atol=1e-5)


def test_the_readout_diagnostic_puts_a_brain_in_one_of_every_n_pool_cases():
    """scripts/probe_readouts.py --brain-share N: the PET pool's own case function is asked for its brain kind in
    1 of every N cases (N = 4: the twin's own pool, whose brains are the indices 3, 7, ...), seed and shape passed on;
    a share below 1 is refused."""
    from s2dc.data.synthetic.twins import TWINS

    readouts = _readouts()
    calls = []
    kinds = {}
    for every in (4, 2, 1):
        case = readouts.with_brain_share(lambda seed, shape, index: calls.append((seed, shape, index)), every)
        for index in range(8):
            case(100 + index, (8, 8, 8), index)
        kinds[every] = ["brain" if i % 4 == 3 else "torso" for *_, i in calls[-8:]]
    assert kinds[4] == ["torso", "torso", "torso", "brain"] * 2
    assert kinds[2] == ["torso", "brain"] * 4 and kinds[1] == ["brain"] * 8
    assert [(seed, shape) for seed, shape, _ in calls[:8]] == [(100 + i, (8, 8, 8)) for i in range(8)]
    with pytest.raises(ValueError, match="brain-share"):
        readouts.with_brain_share(TWINS["pet_pool"].make, 0)


def test_the_readout_diagnostic_swaps_only_the_glioma_cores_radius():
    """scripts/probe_readouts.py --core-radius: the brain twin draws the core's radius once, with the bounds the script
    knows (so the swap stays tied to the twin), and only that draw is taken from the new range: the same seed gives a
    larger core (enhancing + necrosis voxels) and the same brain outline; a range outside (0, 0.5) is refused."""
    from unittest import mock

    import s2dc.data.synthetic.brain as brain

    readouts = _readouts()
    bounds, uniform = [], brain.uniform
    spy = lambda rng, a, b: bounds.append((a, b)) or uniform(rng, a, b)  # noqa: E731
    with mock.patch.object(brain, "uniform", spy):
        before = brain.brain_anatomy(np.random.default_rng(3), (40, 40, 32), tumour=True)
    assert bounds.count(readouts.CORE_RADIUS) == 1
    with mock.patch.object(brain, "uniform", readouts.with_core_radius(brain.uniform, 0.40, 0.40)):
        after = brain.brain_anatomy(np.random.default_rng(3), (40, 40, 32), tumour=True)
    core = lambda b: int(np.isin(b.label, (1, 4)).sum())  # noqa: E731
    assert core(after) > 2 * core(before) > 0
    np.testing.assert_array_equal(after.mask, before.mask)
    for low, high in ((0.0, 0.3), (0.3, 0.2), (0.2, 0.5)):
        with pytest.raises(ValueError, match="core-radius"):
            readouts.with_core_radius(brain.uniform, low, high)


def test_the_readout_diagnostic_renders_the_mri_pool_in_three_sequences_in_turn():
    """scripts/probe_readouts.py --pool-sequences: the MRI pool's own case function renders case ``index`` as T1w, T2w,
    FLAIR in turn (indices 0, 1, 2, 3, ...), with the twin's own tumour probability and the seed and shape passed on;
    the images differ from the T1w ones in the sequence's contrast (CSF bright on T2w, dark on T1w and FLAIR)."""
    from s2dc.data.synthetic import brain, render_mri, twins

    readouts = _readouts()
    calls = []

    def mri_case(seed, shape, channels, **options):
        calls.append((seed, shape, list(channels), options))
        return render_mri.mri_case(seed, shape, channels, **options)

    case = readouts.in_sequences(twins.TWINS["mri_pool"].make, mri_case)
    images = [case(7, (32, 32, 24), index).image for index in range(4)]
    assert [c[2] for c in calls] == [["T1w"], ["t2"], ["flair"], ["T1w"]]
    assert {(c[0], c[1]) for c in calls} == {(7, (32, 32, 24))}
    assert all(c[3] == {"tumour_probability": 0.25} for c in calls)
    _, anatomy = render_mri.mri_case(7, (32, 32, 24), ["T1w"], tumour_probability=0.25)
    csf, wm = anatomy.tissue == brain.CSF, anatomy.tissue == brain.WM
    ratio = [float(image[0][csf].mean() / image[0][wm].mean()) for image in images]
    assert ratio[1] > 1.2 > 0.6 > ratio[0] and ratio[2] < 0.6 and ratio[3] == ratio[0]
    np.testing.assert_array_equal(images[0], twins.TWINS["mri_pool"].make(7, (32, 32, 24), 0).image)


def test_each_encoder_file_keeps_its_own_input_channels_whatever_the_order(tmp_path):
    """The probe takes the shared sizes from the first file; a one-channel file listed after a four-channel one
    still reads each sequence alone (its own input channel, its weights unchanged), as it does when listed first."""
    from types import SimpleNamespace

    from s2dc.eval.probe import frozen_encoder

    four = EncoderConfig(**{**SIZES.to_dict(), "in_channels": 4})
    torch.manual_seed(4)
    weights = swinunetr_for(SIZES).swinViT.state_dict()
    one = tmp_path / "one.pt"
    save_encoder(one, weights)
    volumes = {"training": [torch.zeros(1, 4, 64, 64, 32)]}
    for first in (SIZES, four):  # the sizes of the first file listed
        data = SimpleNamespace(sizes=first, volumes=volumes, device=torch.device("cpu"))
        swin = frozen_encoder(str(one), data, seed=0)
        torch.testing.assert_close(swin.patch_embed.proj.weight, weights["patch_embed.proj.weight"])


def test_the_probe_never_overwrites_a_file_that_is_not_a_probe_result(twin, twin_probe, tmp_path, capsys):
    """`--out` naming the dataset's own json, a user's file, or a .md (the table's name: the json would be lost) is
    refused before the probe runs, naming the file; a user's notes beside the json (its .md) likewise; an earlier
    probe result is replaced."""
    exported = twin_probe / "enc.pt"
    source = tmp_path / "data"
    shutil.copytree(twin.parent, source)
    mine = tmp_path / "mine.json"
    mine.write_text('{"my": "results"}')
    notes = tmp_path / "fresh.md"
    notes.write_text("my notes")
    before = {p: p.read_bytes() for p in (source / "dataset.json", mine, notes)}
    for out, named in ((source / "dataset.json", "dataset.json"), (mine, "mine.json"), (tmp_path / "p.md", "p.md"),
                       (tmp_path / "fresh.json", "fresh.md")):
        capsys.readouterr()
        assert main(["probe", "voxels", str(exported), "--source", str(source / "dataset.json"), "--out",
                     str(out)]) == 2, out
        err = capsys.readouterr().err
        assert named in err and "Traceback" not in err, err
    assert {p: p.read_bytes() for p in before} == before and not (tmp_path / "p.md").exists()
    out = tmp_path / "probe.json"
    for suffix in (".json", ".md"):  # an earlier probe result (of the twin itself, twin_probe) and its table
        shutil.copy(twin_probe / f"probe{suffix}", out.with_suffix(suffix))
    assert main(["probe", "voxels", str(exported), "--source", str(source / "dataset.json"), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["source"] == str(source / "dataset.json")  # replaced by this run's
    assert json.loads(out.read_text())["encoders"] and out.with_suffix(".md").read_text().startswith("|")


def _probe_inputs(twin, tmp_path, edit):
    """A random exported encoder and a copy of the twin whose dataset.json ``edit(doc)`` changed in place:
    (encoder file, dataset.json, the edited doc)."""
    torch.manual_seed(5)
    exported = tmp_path / "enc.pt"
    save_encoder(exported, swinunetr_for(SIZES).swinViT.state_dict())
    source = tmp_path / "data"
    shutil.copytree(twin.parent, source)
    doc = json.loads((source / "dataset.json").read_text())
    edit(doc)
    (source / "dataset.json").write_text(json.dumps(doc))
    return exported, source / "dataset.json", doc


def test_one_validation_case_gives_no_standard_error(twin, tmp_path):
    """With a single validation case every bootstrap resample is that case: the spread cannot be estimated, so the
    probe records no standard error (null) instead of a spread of 0, and its table shows none ("± 0.0" would claim
    an exact score); the report's probe table reads such a file."""
    from s2dc.report.tables import collect_probes

    def one_case(doc):
        doc["validation"], doc["numValidation"] = doc["validation"][:1], 1

    exported, source, doc = _probe_inputs(twin, tmp_path, one_case)
    out = tmp_path / "probe.json"
    assert main(["probe", "voxels", str(exported), "--source", str(source), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["val_cases"] == 1
    for row in result["encoders"].values():
        assert row["se"] is None and all(v["se"] is None for v in row["versus"].values())
    assert "± 0.0" not in out.with_suffix(".md").read_text()
    assert collect_probes([out])["se"].isna().all()


@pytest.mark.parametrize("role", ["training", "validation"])
def test_a_classification_split_of_one_class_is_refused(tmp_path, capsys, role):
    """Training cases of one class leave the linear model nothing to learn, and over validation cases of one class
    the balanced accuracy is that class's recall, which a model always predicting it reads as 100 %: either is
    refused, naming the split and the file, and nothing is written."""
    torch.manual_seed(5)
    exported = tmp_path / "enc.pt"
    save_encoder(exported, swinunetr_for(SIZES).swinViT.state_dict())
    source = write_dataset(tmp_path / "cc", "cc_ccii", cases=6, seed=1, shape=(32, 32, 16), val_fraction=0.5)
    doc = json.loads(source.read_text())
    assert len({c["class"] for c in doc[role]}) > 1
    doc[role] = [{**c, "class": 0} for c in doc[role]]
    source.write_text(json.dumps(doc))
    out = tmp_path / "probe.json"
    assert main(["probe", "voxels", str(exported), "--source", str(source), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"the {role} cases of '{source}'" in err and "one class" in err, err
    assert not out.exists() and not out.with_suffix(".md").exists()


def test_a_validation_case_that_is_a_training_case_is_refused(twin, tmp_path, capsys):
    """A case listed under both 'training' and 'validation' was fitted and scored: the probe exited 0 with a score
    that measured memory. It is refused, naming the case, before any encoder runs (as `s2dc finetune` refuses it)."""
    exported, source, doc = _probe_inputs(twin, tmp_path, lambda doc: doc["validation"].append(doc["training"][0]))
    out = tmp_path / "probe.json"
    assert main(["probe", "voxels", str(exported), "--source", str(source), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert Path(doc["training"][0]["image"]).name in err and "'training'" in err and "Traceback" not in err, err
    assert not out.exists()


@pytest.mark.parametrize("name, shape, inside", [("btcv", (32, 32, 40), 4 * 4 * 5), ("udpet", (48, 48, 32), 6 * 6 * 4),
                                                 ("btcv", (32, 32, 16), 4 * 4 * 2), ("udpet", (48, 48, 16), 6 * 6 * 2)])
def test_the_tokens_of_the_zero_padding_are_neither_fitted_nor_scored(probed_twin, name, shape, inside):
    """The encoder reads volumes zero-padded to a multiple of 32 voxels; a token whose 8³ block (stage 2) holds no
    voxel of the image is no case of background (or of a zero target) to fit or score: 32×32×40 holds 4·4·5
    blocks of image, 48×48×32 holds 6·6·4. An axis under 32 voxels (16) is padded by nothing but the probe, at its
    far end: 32×32×16 holds 4·4·2 blocks of image (the preprocessing's own padding to the crop, on both sides,
    counted 4·4·4)."""
    result = json.loads(probed_twin(name, 4, shape).read_text())  # udpet 48×48×32: the frozen protocol's probe
    assert result["stride"] == 8
    assert result["train_tokens"] == 2 * inside and result["val_tokens"] == 2 * inside


def test_inside_tokens_are_the_blocks_that_meet_the_volumes_own_voxels():
    """A volume's own voxels lie at ``extent`` (its first index and one past its last per axis) in a grid padded to 32:
    along an axis, block k holds one of them when [k s, (k + 1) s) meets [first, last), by hand on numpy's ranges."""
    from s2dc.data.preprocess import EXTENT
    from s2dc.eval.probe import inside_tokens, own_grid

    for shape, extent, stride in (((20, 32, 7), [[5, 0, 0], [20, 32, 7]], 4),
                                  ((33, 64, 40), [[0, 0, 0], [33, 64, 40]], 8),
                                  ((32, 32, 32), [[0, 9, 0], [32, 23, 32]], 16)):
        own = own_grid({"image": torch.zeros(1, *shape), EXTENT: torch.tensor(extent)}, 32)
        blocks = [np.arange(-(-n // 32) * 32 // stride) for n in shape]  # each axis's blocks, padded to 32
        axes = [(k * stride < b) & ((k + 1) * stride > a) for k, a, b in zip(blocks, *extent)]
        expected = axes[0][:, None, None] & axes[1][None, :, None] & axes[2][None, None, :]
        assert torch.equal(inside_tokens(own, stride), torch.from_numpy(expected.ravel()))


def test_a_block_straddling_the_volumes_edge_is_labelled_on_its_own_voxels(tmp_path):
    """A 10 x 12 x 6 case is zero-padded to the encoder's 32³ grid; at stage 1 (4³ blocks) the blocks at X 8..11 and
    Z 4..7 straddle its edge. The padding was counted as background: 3 structure voxels of a block's 16 own ones (3 of
    its 64 with the padding, under an eighth) made it background. A block is decided on the case's own voxels: here
    the reference rule on numpy's blocks of the unpadded label (slices cut at its edge); blocks of padding alone are
    neither fitted nor scored."""
    import nibabel as nib

    from s2dc.eval.probe import load_labelled

    shape, stride = (10, 12, 6), 4
    label = np.zeros(shape, np.uint8)
    label[0:2, 0:2, 0:2] = 1  # 8 of block (0, 0, 0)'s 64 voxels, all its own: an eighth, either way
    label[8, 0, 4:6] = label[9, 0, 4] = 1  # block (2, 0, 1): 3 of its 2·4·2 = 16 own voxels
    label[8:10, 4, 4] = 1  # block (2, 1, 1): 2 voxels of class 1 and 4 of class 2 of its 16 own voxels
    label[8:10, 5, 4:6] = 2
    label[8, 8, 0] = 2  # block (2, 2, 0): 1 of its 2·4·4 = 32 own voxels, under an eighth either way
    blocks = [(i, j, k) for i in range(3) for j in range(3) for k in range(2)]  # the blocks holding a voxel, C order
    def cut(a, i, j, k):  # numpy cuts a block at the array's edge
        return a[i * stride:(i + 1) * stride, j * stride:(j + 1) * stride, k * stride:(k + 1) * stride]

    want = [_dominant_structure(cut(label, *b), 3) for b in blocks]
    padded = np.pad(label, [(0, 32 - n) for n in shape])
    assert want != [_dominant_structure(cut(padded, *b), 3) for b in blocks]  # the two rules disagree here
    assert sorted(set(want)) == [0, 1, 2]
    image = (1.0 + np.random.default_rng(4).random(shape) + label).astype(np.float32)  # no voxel 0: nothing cropped
    doc = {"name": "edge", "task": "segmentation", "labels": {"0": "background", "1": "a", "2": "b"}}
    for role in ("training", "validation"):
        for name, array in (("image", image), ("label", label)):
            nib.save(nib.Nifti1Image(array.astype(np.float32), np.eye(4)), str(tmp_path / f"{role}_{name}.nii.gz"))
        doc[role] = [{"image": f"{role}_image.nii.gz", "label": f"{role}_label.nii.gz"}]
    (tmp_path / "dataset.json").write_text(json.dumps(doc))
    exported = tmp_path / "enc.pt"
    save_encoder(exported, swinunetr_for(SIZES).swinViT.state_dict())
    data = load_labelled(tmp_path / "dataset.json", {"enc": str(exported)}, 1, None, "cpu", "mri_zscore")
    assert data.stride == stride
    for role in ("training", "validation"):
        (targets,), (inside,) = data.targets[role], data.inside[role]
        assert targets.shape == inside.shape == ((32 // stride) ** 3,) and int(inside.sum()) == len(blocks)
        assert targets[inside].tolist() == want, f"{role}: got {targets[inside].tolist()}, want {want}"


@pytest.mark.parametrize("task", ["reconstruction", "translation"])
def test_a_block_straddling_the_volumes_edge_predicts_the_mean_of_its_own_voxels(tmp_path, task):
    """The regression probes (UDPET's full dose, BraTS 2023's other sequences) predict each token block's mean of the
    target. A 10 x 12 x 6 case is zero-padded to the encoder's 32³ grid; at stage 1 (4³ blocks) the blocks at X 8..11
    and Z 4..7 straddle its edge, and the padding's zeros were averaged in: block (2, 0, 1), 16 own voxels of its 64,
    read a quarter of its own mean. A block's mean is over the case's own voxels: here numpy's means of the blocks of
    the unpadded, preprocessed target (slices cut at its edge); blocks of padding alone are neither fitted nor scored."""
    import nibabel as nib

    from s2dc.eval.probe import load_labelled

    shape, stride = (10, 12, 6), 4
    rng = np.random.default_rng(7)
    blocks = [(i, j, k) for i in range(3) for j in range(3) for k in range(2)]  # the blocks holding a voxel, C order

    def cut(a, i, j, k):  # numpy cuts a block at the array's edge
        return a[..., i * stride:(i + 1) * stride, j * stride:(j + 1) * stride, k * stride:(k + 1) * stride]

    def block_means_of(target):  # (T, X, Y, Z) -> (blocks, T)
        return np.stack([cut(target, *b).reshape(len(target), -1).mean(1) for b in blocks])

    doc = {"name": "edge", "task": task}
    if task == "reconstruction":  # the low dose, the full dose; both divided by the low dose's mean (no voxel 0)
        arrays = {"image": 1.0 + rng.random(shape), "target": 2.0 + 3.0 * rng.random(shape)}
        target = (arrays["target"] / arrays["image"].mean())[None]
    else:  # three sequences, each z-scored on its own (no voxel 0); the first is the input, the others the targets
        sequences = [1.0 + (1 + c) * rng.random(shape) for c in range(3)]
        arrays = {f"seq{c}": s for c, s in enumerate(sequences)}
        target = np.stack([(s - s.mean()) / s.std() for s in sequences[1:]])
        doc["modality"] = {"0": "t1n", "1": "t2w", "2": "t2f"}
    want = block_means_of(target)
    padded = np.pad(target, [(0, 0)] + [(0, 32 - n) for n in shape])
    assert not np.allclose(want, block_means_of(padded), atol=1e-3)  # the two rules disagree here
    for role in ("training", "validation"):
        for name, array in arrays.items():
            nib.save(nib.Nifti1Image(array.astype(np.float32), np.eye(4)), str(tmp_path / f"{role}_{name}.nii.gz"))
        files = {name: f"{role}_{name}.nii.gz" for name in arrays}
        doc[role] = [files if task == "reconstruction" else {"image": list(files.values())}]
    (tmp_path / "dataset.json").write_text(json.dumps(doc))
    exported = tmp_path / "enc.pt"
    save_encoder(exported, swinunetr_for(SIZES).swinViT.state_dict())
    preset = "pet_zscore" if task == "reconstruction" else "mri_zscore"
    data = load_labelled(tmp_path / "dataset.json", {"enc": str(exported)}, 1, None, "cpu", preset)
    assert data.stride == stride
    for role in ("training", "validation"):
        (targets,), (inside,) = data.targets[role], data.inside[role]
        assert targets.shape == ((32 // stride) ** 3, len(target)) and int(inside.sum()) == len(blocks)
        np.testing.assert_allclose(targets[inside].numpy(), want, rtol=1e-5, atol=1e-5, err_msg=role)


def test_a_student_export_and_encoders_of_other_widths_are_probed_side_by_side(twin, tmp_path, capsys):
    """The probe reads what an export holds: a `--which student` export was refused (with advice to give an option
    the probe does not have). Encoders of other widths read the volumes on one token grid (same patch size) and are
    probed side by side, each with its own architecture: a second encoder of feature size 24 beside one of 12 was
    refused. Another patch size (another grid) is refused naming both files."""
    torch.manual_seed(5)
    narrow, student, wide, coarse = (tmp_path / f"{n}.pt" for n in ("narrow", "student", "wide", "coarse"))
    save_encoder(narrow, swinunetr_for(SIZES).swinViT.state_dict())
    torch.save({"state_dict": {f"swinViT.{k}": v for k, v in swinunetr_for(SIZES).swinViT.state_dict().items()},
                "encoder": SIZES.to_dict(), "which": "student"}, student)
    for path, sizes in ((wide, EncoderConfig(feature_size=24, num_heads=(1, 2, 3, 4), window_size=4)),
                        (coarse, EncoderConfig(feature_size=12, num_heads=(1, 2, 3, 4), window_size=4, patch_size=4))):
        torch.save({"state_dict": {f"swinViT.{k}": v for k, v in swinunetr_for(sizes).swinViT.state_dict().items()},
                    "encoder": sizes.to_dict()}, path)
    out = tmp_path / "probe.json"
    assert main(["probe", "voxels", f"narrow={narrow}", f"student={student}", f"wide={wide}", "--source", str(twin),
                 "--out", str(out)]) == 0, capsys.readouterr().err
    assert set(json.loads(out.read_text())["encoders"]) == {"voxels", "narrow", "student", "wide"}
    assert main(["probe", f"narrow={narrow}", f"coarse={coarse}", "--source", str(twin),
                 "--out", str(tmp_path / "p2.json")]) == 2
    err = capsys.readouterr().err
    assert str(coarse) in err and str(narrow) in err and "patch" in err, err


def test_segmentation_training_tokens_of_one_class_are_refused(twin, tmp_path, capsys):
    """Training labels that are background only give training tokens of one class: the linear model learns nothing
    and every validation token reads background, yet the probe scored it (balanced accuracy 1 / classes). Refused as
    the classification case is, naming the json, and nothing is written."""
    import nibabel as nib

    def background_only(doc):
        for case in doc["training"]:
            path = tmp_path / "data" / case["label"]
            label = nib.load(path)
            nib.save(nib.Nifti1Image(np.zeros(label.shape, np.asarray(label.dataobj).dtype), label.affine,
                                     label.header), path)
        doc.pop("content_sha256", None)

    exported, source, _ = _probe_inputs(twin, tmp_path, background_only)
    out = tmp_path / "probe.json"
    assert main(["probe", "voxels", str(exported), "--source", str(source), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"the training tokens of '{source}' hold one class only ('background')" in err and "Traceback" not in err, err
    assert not out.exists() and not out.with_suffix(".md").exists()


def test_notes_beside_an_earlier_probe_result_are_not_overwritten(twin, twin_probe, tmp_path, capsys):
    """`--out F/notes.json` over an earlier probe result replaced a user's F/notes.md beside it (the .md check was
    waived for an earlier result): the .md is replaced only when it is that result's table (as the probe renders it
    from the json, or as the json records it), else refused naming the .md."""
    out = tmp_path / "notes.json"
    command = ["probe", "voxels", str(twin_probe / "enc.pt"), "--source", str(twin), "--out", str(out)]
    for suffix in (".json", ".md"):  # the earlier result: what the same command wrote (twin_probe)
        shutil.copy(twin_probe / f"probe{suffix}", out.with_suffix(suffix))
    table = out.with_suffix(".md").read_text()
    for notes in ("my notes on the probe\n", table + "\nMy reading: the encoder is no better than the voxels.\n"):
        out.with_suffix(".md").write_text(notes)
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"'{out.with_suffix('.md')}'" in err and "is not the table of the probe result" in err, err
        assert out.with_suffix(".md").read_text() == notes
    out.with_suffix(".md").write_text(table)  # the earlier result's own table: replaced
    assert main(command) == 0
    assert out.with_suffix(".md").read_text() == table


def test_an_earlier_probe_results_table_is_recognised_by_the_checksum_it_records(tmp_path):
    """A table written by another version of the probe's Markdown (which renders the json otherwise now) is still
    recognised as the result's own: the json records the checksum of the table written beside it."""
    import hashlib

    from s2dc.eval.outputs import check_probe_out

    out = tmp_path / "p.json"
    old_table = "| encoder | balanced accuracy (as an older probe wrote it) |\n"
    out.write_text(json.dumps({"source": "d.json", "metric": "balanced accuracy", "stage": 2, "encoders": {},
                               "table_sha256": hashlib.sha256(old_table.encode()).hexdigest()}))
    out.with_suffix(".md").write_text(old_table)
    check_probe_out(out, tmp_path / "d.json")
    out.with_suffix(".md").write_text(old_table + "my notes\n")
    with pytest.raises(ValueError, match="is not the table of the probe result"):
        check_probe_out(out, tmp_path / "d.json")


def test_a_probe_killed_between_its_two_files_leaves_no_pair_that_the_next_run_refuses(tmp_path, monkeypatch):
    """`s2dc probe --out` writes the result, then its table. Killed between the two over an earlier result, it left the
    new result beside the old table, whose checksum the new result does not record: the next run refused the table as
    "edited, or notes of one's own" (it was the probe's own). The earlier table goes first, so a run killed there
    leaves the new result alone, and the same command again writes both."""
    from s2dc.eval import probe as probe_module
    from s2dc.eval.outputs import check_probe_out, is_table_of

    def result(score):
        return {"source": str(tmp_path / "d.json"), "metric": "balanced accuracy", "stage": 2, "classes": ["a"],
                "val_cases": 1, "resamples": 1,
                "encoders": {"e": {"balanced_accuracy": score, "se": None, "recall": {"a": score}, "versus": {}}}}

    out = tmp_path / "probe" / "btcv.json"
    probe_module.write_probe(result(0.5), out)
    real = probe_module.atomic_write_text

    def killed_at_the_table(path, text):
        if str(path).endswith(".md"):
            raise KeyboardInterrupt
        real(path, text)

    monkeypatch.setattr(probe_module, "atomic_write_text", killed_at_the_table)
    with pytest.raises(KeyboardInterrupt):
        probe_module.write_probe(result(0.75), out)
    monkeypatch.setattr(probe_module, "atomic_write_text", real)
    check_probe_out(out, tmp_path / "d.json")  # the same command again is not refused
    probe_module.write_probe(result(0.75), out)
    assert is_table_of(out.with_suffix(".md"), out)


def _cells(n: int, grid: int) -> list[slice]:
    """The cells of an adaptive average pooling of ``n`` values to ``grid`` (PyTorch's and the reference's rule: cell
    i is [floor(i n / grid), ceil((i + 1) n / grid)))."""
    return [slice(i * n // grid, -(-(i + 1) * n // grid)) for i in range(grid)]


def _grid_means(a: np.ndarray, grid: int) -> np.ndarray:
    """(C, X, Y, Z) -> (C · grid³,): each channel's mean over each cell, channel-major, cells in C order (numpy)."""
    cx, cy, cz = (_cells(n, grid) for n in a.shape[1:])
    return np.array([a[c, i, j, k].mean() for c in range(a.shape[0]) for i in cx for j in cy for k in cz])


def test_the_classification_probe_pools_the_volumes_own_voxels_not_the_padding(tmp_path):
    """A classification case is read by the encoder zero-padded to its multiple (32 voxels), and its features are a
    4³ grid of the voxels and a 2³ grid of an encoder's stage map. The grids were drawn over the padded volume: a
    20 x 36 x 12 case padded to 32 x 64 x 32 put its whole image in the first cells and the padding's zeros (or the
    encoder's tokens of them) in the rest. The grids partition the case's own voxels and the stage map's tokens that
    hold them (at stage 1, 4-voxel blocks: 5 x 9 x 3 of the 8 x 16 x 8), by hand on numpy's slices."""
    import nibabel as nib

    from s2dc.eval.probe import TOKEN_GRID, VOXEL_GRID, features, frozen_encoder, load_labelled

    shape, stage, stride = (20, 36, 12), 1, 4
    rng = np.random.default_rng(7)
    doc = {"name": "edge", "task": "classification", "classes": ["a", "b"]}
    for role in ("training", "validation"):
        doc[role] = []
        for k in range(2):
            image = (1.0 + rng.random(shape)).astype(np.float32)  # no voxel 0: nothing cropped
            nib.save(nib.Nifti1Image(image, np.eye(4)), str(tmp_path / f"{role}_{k}.nii.gz"))
            doc[role].append({"image": f"{role}_{k}.nii.gz", "class": k})
    (tmp_path / "dataset.json").write_text(json.dumps(doc))
    exported = tmp_path / "enc.pt"
    torch.manual_seed(5)
    save_encoder(exported, swinunetr_for(SIZES).swinViT.state_dict())
    data = load_labelled(tmp_path / "dataset.json", {"enc": str(exported)}, stage, None, "cpu", "mri_zscore")
    assert data.stride == stride
    encoder = frozen_encoder(str(exported), data, 0)
    for volume in data.volumes["training"]:
        own = volume[0, :, : shape[0], : shape[1], : shape[2]].numpy()  # the case's voxels, wherever it is padded
        assert own.shape == (1, *shape) and own.min() != 0 and float((volume != 0).sum()) == own.size
        voxels = features(data, None, volume, stage, True, "voxels")
        np.testing.assert_allclose(voxels[0].numpy(), _grid_means(own, VOXEL_GRID), rtol=1e-5, atol=1e-6)
        with torch.no_grad():
            fmap = encoder(pad_to_multiple(torch.from_numpy(own)[None], 32), True)[stage][0]  # (C, 8, 16, 8)
        assert fmap.shape[1:] == (8, 16, 8)
        tokens = fmap[:, :5, :9, :3].numpy()  # the blocks holding the case's voxels: ceil(20/4), ceil(36/4), ceil(12/4)
        got = features(data, encoder, volume, stage, True, "enc")
        np.testing.assert_allclose(got[0].numpy(), _grid_means(tokens, TOKEN_GRID), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name, cases", [("adni", 8), ("msd_spleen", 4)])
def test_the_random_baseline_is_the_mean_of_three_random_encoders(tmp_path, monkeypatch, name, cases):
    """One random encoder is one draw: on a twin where S²DC led one draw by a point, another read better. The
    `random` row is the mean of RANDOM_DRAWS random encoders drawn with seeds seed, seed + 1, ...: its score, every
    class's recall and (segmentation) structure score are the means of those of single-draw probes run with each
    seed, and the other rows are the single probes'. (Volumes of 48 x 32 x 32, a 64 x 32 x 32 grid for the encoders:
    the rule holds at any size, and there the three draws still score apart.)"""
    from s2dc.eval import probe as probe_module

    source = write_dataset(tmp_path / name, name, cases=cases, seed=1, shape=(48, 32, 32), val_fraction=0.5)
    torch.manual_seed(5)
    exported = tmp_path / "enc.pt"
    save_encoder(exported, swinunetr_for(SIZES).swinViT.state_dict())
    assert probe_module.RANDOM_DRAWS == 3
    drawn = probe_module.probe(source, ["voxels", "random", f"enc={exported}"], seed=3)["encoders"]
    monkeypatch.setattr(probe_module, "RANDOM_DRAWS", 1)
    # the voxels row is compared with the first single's only (the file stays: the random encoders take its sizes)
    singles = [probe_module.probe(source, ["voxels"] * (s == 3) + ["random", f"enc={exported}"], seed=s)["encoders"]
               for s in (3, 4, 5)]
    mean = lambda values: pytest.approx(sum(values) / len(values), abs=1e-12)  # noqa: E731
    assert len(set(drawn["random"]["draws"])) > 1  # draws that differ: their mean is no single draw's score
    assert drawn["random"]["score"] == mean([r["random"]["score"] for r in singles])
    assert drawn["random"]["draws"] == [r["random"]["score"] for r in singles]
    for c, value in drawn["random"]["recall"].items():
        assert value == mean([r["random"]["recall"][c] for r in singles])
    assert ("structure" in drawn["random"]) == (name == "msd_spleen")  # segmentation: its structure scores too
    for key in drawn["random"].get("structure", {}):
        assert drawn["random"]["structure"][key] == mean([r["random"]["structure"][key] for r in singles])
    for row in ("voxels", "enc"):
        assert drawn[row]["score"] == singles[0][row]["score"]
    assert drawn["enc"]["versus"]["random"]["difference"] == pytest.approx(
        drawn["enc"]["score"] - drawn["random"]["score"], abs=1e-12)
