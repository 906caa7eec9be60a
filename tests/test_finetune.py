"""Segmentation fine-tuning: a run that learns, label-ratio subsets, initialisation from S²DC, Dice, bad input."""

from __future__ import annotations

import json
import shutil
import warnings

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from s2dc.cli import main
from s2dc.export import encoder_plan, load_encoder_weights, swinunetr_for
from s2dc.data.datalist import list_cases
from s2dc.data.splits import choose_subset
from s2dc.downstream.engine import Finetuner
from s2dc.downstream.metrics import dice_per_class, summarize_dice
from s2dc.train.finetune_config import HELP, FinetuneConfig, ModelConfig, build_config

from conftest import MODEL, REPO, TINY, TINY_FT, write_boxes

QUICK_TRAIN = yaml.safe_load((REPO / "params.yaml").read_text())["scales"]["quick"]["finetune"]["options"]["train"]


@pytest.fixture
def ft_config(tmp_path):
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump(TINY_FT))
    return path


def finetune(config, source, out_dir, *extra):
    return main(["finetune", "--config", str(config), "--data.source", str(source), "--run.out_dir", str(out_dir), *extra])


@pytest.mark.parametrize("name", ["../../escaped", "MSD/Spleen", ".."])
def test_a_dataset_named_like_a_path_is_refused_before_training(ft_config, seg_dir, tmp_path, capsys, name):
    """A dataset.json whose ``name`` is no plain name (``../../escaped``): its runs' figures would be written
    outside their folder (``per_class/<name>.png``). Refused at start, naming the json and the key; nothing written."""
    doc = json.loads((seg_dir / "dataset.json").read_text())
    for entry in doc["training"] + doc["validation"]:
        entry.update({k: str(seg_dir / v) for k, v in entry.items()})
    source = tmp_path / "named" / "dataset.json"
    source.parent.mkdir()
    source.write_text(json.dumps({**doc, "name": name}))
    assert finetune(ft_config, source, tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert f"'name' of dataset json '{source}' is {name!r}; expected a plain name" in err, err
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def boxes_dir(tmp_path_factory):
    """Like ``seg_dir`` (five training, two validation cases) on volumes of 64x32x32, the training crop's size, so
    that every crop holds both boxes."""
    return write_boxes(tmp_path_factory.mktemp("boxes"), (64, 32, 32))


def test_short_run_learns_the_boxes(ft_config, boxes_dir, tmp_path, capsys):
    """20 steps from scratch at the quick scale's learning rates segment the two boxes well above chance;
    metrics.json, model.pt, split.json, dvclive; the closing line gives the score in its unit (Dice in %)."""
    out = tmp_path / "run"
    # one crop per step, of the whole volume, the decoder at the quick rate 1e-2, the encoder at 3e-4 (measured on the
    # AMD EPYC machine: mean Dice 0.94 after 20 steps, 0.95 after 32; with the decoder at the former quick rate 3e-3,
    # 0.20 after 32. With every rate at 1e-2, seeds 0-4 gave 0.93, 0.92, 0.44, 0.96 and 0.96 after 20 steps; 15 steps
    # 0.26 on seed 0)
    rates = [f"--train.{key}={QUICK_TRAIN[key]}" for key in ("lr", "encoder_lr_scale", "warmup_steps")]
    assert finetune(ft_config, boxes_dir / "dataset.json", out, "--train.samples_per_volume", "1",
                    "--train.steps", "20", *rates) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "segmentation" and metrics["dataset"] == "Boxes" and metrics["method"] == "scratch"
    assert (metrics["train_cases"], metrics["val_cases"], metrics["steps"], metrics["label_ratio"]) == (5, 2, 20, 1.0)
    per_class = metrics["dice_per_class"]
    assert set(per_class) == {"bright", "dark"}
    assert all(0.0 <= v <= 1.0 for v in per_class.values())
    assert metrics["dice_mean"] == pytest.approx(np.nanmean(list(per_class.values())))
    assert metrics["dice_mean"] > 0.5, metrics  # chance (a constant or random map) is < 0.05 on these boxes
    closing = capsys.readouterr().out.strip().splitlines()[-1]
    assert closing.endswith(f"segmentation Dice {100 * metrics['dice_mean']:.4g} %"), closing
    state = torch.load(out / "model.pt", weights_only=True)
    assert state["out.conv.conv.weight"].shape[0] == 3
    logged = json.loads((out / "dvclive" / "metrics.json").read_text())
    assert {"loss", "lr"} <= set(logged["train"]) and "dice_mean" in logged["val"]
    assert len(json.loads((out / "split.json").read_text())["cases"]) == 5


def test_label_ratio_subsets(ft_config, seg_dir, tmp_path):
    """ratio 0.4 of 5 cases -> 2; the same seed gives the same cases (nested in larger ratios) and, run twice, the
    same weights (the second run reads the first one's cache); split.json records the cases."""
    cases = list_cases(seg_dir / "dataset.json", "training", ("image", "label"))
    assert [c["image"].name for c in cases] == [f"train{i}.nii.gz" for i in range(5)]
    first = choose_subset(cases, 0.4, seed=0)
    assert len(first) == 2 and first == choose_subset(cases, 0.4, seed=0)
    assert any(choose_subset(cases, 0.4, seed=s) != first for s in range(1, 6))
    assert all(c in choose_subset(cases, 0.6, seed=0) for c in first)
    assert len(choose_subset(cases, 0.01, seed=3)) == 1 and choose_subset(cases, 1.0, seed=3) == cases

    weights = []
    for out in (tmp_path / "a", tmp_path / "b"):
        assert finetune(ft_config, seg_dir / "dataset.json", out, "--data.label_ratio", "0.4", "--run.seed", "0",
                        "--train.steps", "2", "--data.cache_dir", str(tmp_path / "cache")) == 0
        split = json.loads((out / "split.json").read_text())
        assert (split["seed"], split["label_ratio"], split["available"]) == (0, 0.4, 5)
        assert split["cases"] == [{k: str(v) for k, v in c.items()} for c in first]
        assert json.loads((out / "metrics.json").read_text())["train_cases"] == 2
        weights.append(torch.load(out / "model.pt", weights_only=True))
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # same seed: same data, crops, init


def test_init_from_pretraining_checkpoint(ft_config, seg_dir, one_step_run, tmp_path, capsys):
    """Fine-tuning starts from the S²DC teacher encoder, loaded strictly; other sizes fail naming both."""
    # a finished one-step pretraining of TINY, whose encoder has MODEL's sizes (copied: an export locks its folder)
    pre = shutil.copytree(one_step_run, tmp_path / "pre")
    ckpt = pre / "checkpoints" / "step_00000001.pt"

    sizes = ModelConfig(**MODEL).encoder_config()
    model = swinunetr_for(sizes, out_channels=3)
    report = load_encoder_weights(model, ckpt, "teacher", expected=sizes)
    assert "strict" in report and "missing keys: none; unexpected keys: none" in report
    blob = torch.load(ckpt, weights_only=True)
    teacher = {k[len("encoder."):]: v for k, v in blob["teacher"].items() if k.startswith("encoder.")}
    loaded = model.swinViT.state_dict()
    assert teacher.keys() == loaded.keys() and all(torch.equal(teacher[k], loaded[k]) for k in teacher)
    student = {k[len("encoder."):]: v for k, v in blob["student"].items() if k.startswith("encoder.")}
    assert any(not torch.equal(teacher[k], student[k]) for k in teacher)  # teacher != student: the choice matters
    assert main(["export-encoder", str(ckpt), str(tmp_path / "encoder.pt")]) == 0  # the exported form is detected too
    exported = swinunetr_for(sizes, out_channels=3)
    assert "exported encoder" in load_encoder_weights(exported, tmp_path / "encoder.pt", expected=sizes)
    assert all(torch.equal(teacher[k], v) for k, v in exported.swinViT.state_dict().items())
    # the student asked of the exported teacher: refused, naming both (it loaded the teacher and recorded "student")
    with pytest.raises(ValueError, match=r"model.init_which 'student'.*encoder.pt' holds the teacher encoder"):
        load_encoder_weights(swinunetr_for(sizes, out_channels=3), tmp_path / "encoder.pt", "student", expected=sizes)

    capsys.readouterr()
    out = tmp_path / "ft"
    assert finetune(ft_config, seg_dir / "dataset.json", out, "--model.init", str(ckpt), "--train.steps", "1",
                    "--run.method", "s2dc") == 0
    printed = capsys.readouterr().out
    assert "strict load" in printed and "missing keys: none; unexpected keys: none" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "s2dc" and metrics["init_from"] == str(ckpt)
    import hashlib

    assert metrics["init_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()  # which encoder, whatever its path

    # The encoder file carries what fine-tuning needs: the sizes (token stage too) and the pretraining's preprocessing.
    plan = encoder_plan(tmp_path / "encoder.pt")
    assert plan == encoder_plan(ckpt)
    assert plan["encoder"]["feature_size"] == 12 and plan["encoder"]["token_stage"] == TINY["encoder"]["token_stage"]
    assert plan["preprocess"] == blob["config"]["preprocess"]
    bare = tmp_path / "bare.yaml"  # no model sizes: they come from the file
    bare.write_text(yaml.safe_dump({k: v for k, v in TINY_FT.items() if k != "model"}))
    assert finetune(bare, seg_dir / "dataset.json", tmp_path / "from_file", "--model.init", str(tmp_path / "encoder.pt"),
                    "--train.steps", "1") == 0
    printed = capsys.readouterr().out
    assert "network sizes from" in printed and "feature_size=12" in printed and "window_size=4" in printed
    assert "intensity: the pretraining's" in printed  # 'Boxes' is no registry dataset

    bigger = ModelConfig(**{**MODEL, "feature_size": 24}).encoder_config()
    with pytest.raises(ValueError, match=r"in '.*step_00000001.pt' \(feature_size=12\) differ from the model's \(feature_size=24\)"):
        load_encoder_weights(swinunetr_for(bigger, 3), ckpt, expected=bigger)
    with pytest.raises(ValueError, match=r"feature_size=12\).*feature_size=24"):
        load_encoder_weights(swinunetr_for(bigger, 3), tmp_path / "encoder.pt", expected=bigger)
    assert finetune(ft_config, seg_dir / "dataset.json", tmp_path / "bad", "--model.init", str(ckpt),
                    "--model.feature_size", "24") == 2
    err = capsys.readouterr().err
    assert "feature_size=12" in err and "feature_size=24" in err
    assert not (tmp_path / "bad" / "metrics.json").exists()


def test_encoder_lr_scale(ft_config, seg_dir, tmp_path):
    """train.encoder_lr_scale 0 freezes swinViT (the decoder still learns); 0.5 halves the encoder's rate."""
    frozen = tmp_path / "frozen"
    assert finetune(ft_config, seg_dir / "dataset.json", frozen, "--train.steps", "3",
                    "--train.encoder_lr_scale", "0") == 0
    torch.manual_seed(0)  # the fine-tuner's initial weights (seed 0)
    initial = swinunetr_for(ModelConfig(**MODEL).encoder_config(), out_channels=3).state_dict()
    final = torch.load(frozen / "model.pt", weights_only=True)
    encoder = [k for k in final if k.startswith("swinViT.")]
    assert encoder and all(torch.equal(final[k], initial[k]) for k in encoder)
    assert any(not torch.equal(final[k], initial[k]) for k in final if k.startswith("decoder"))

    cfg = build_config({**TINY_FT, "data": {"source": str(seg_dir / "dataset.json"), "workers": 0},
                                    "train": {**TINY_FT["train"], "lr": 0.01, "warmup_steps": 0,
                                              "encoder_lr_scale": 0.5},
                                    "run": {"out_dir": str(tmp_path / "half"), "progress": False}})
    groups = Finetuner(cfg).optimizer.param_groups
    assert [g["lr"] for g in groups] == pytest.approx([0.005, 0.01])


def test_dice_matches_numpy():
    """Per-class Dice equals an independent numpy Dice; a class absent from the ground truth is NaN and left out."""
    rng = np.random.default_rng(5)
    label = rng.integers(0, 3, (1, 10, 9, 8))  # classes 0..2; class 3 absent from the ground truth
    pred = np.where(rng.random(label.shape) < 0.3, rng.integers(0, 4, label.shape), label)
    pred[0, 0, 0, 0] = 3  # predicted somewhere, still absent from the ground truth

    def numpy_dice(c):
        p, g = pred == c, label == c
        return 2 * (p & g).sum() / (p.sum() + g.sum()) if g.any() else np.nan

    got = dice_per_class(torch.as_tensor(pred), torch.as_tensor(label), num_classes=4)
    want = np.array([numpy_dice(c) for c in (1, 2, 3)])
    assert np.isnan(got[2]) and np.isnan(want[2])
    np.testing.assert_allclose(got[:2], want[:2], rtol=1e-6)

    other = dice_per_class(torch.as_tensor(label), torch.as_tensor(label), num_classes=4)
    per_class, mean = summarize_dice([got, other], ["bg", "a", "b", "c"])
    assert per_class["a"] == pytest.approx((want[0] + 1) / 2) and per_class["b"] == pytest.approx((want[1] + 1) / 2)
    assert np.isnan(per_class["c"])
    assert mean == pytest.approx((per_class["a"] + per_class["b"]) / 2)


def _copy_dataset(seg_dir, tmp_path, edit):
    """A copy of the dataset's json in tmp_path pointing at seg_dir's files, changed by edit(spec, folder)."""
    folder = tmp_path / "bad"
    (folder / "labelsTr").mkdir(parents=True)
    spec = json.loads((seg_dir / "dataset.json").read_text())
    for section in ("training", "validation"):
        for entry in spec[section]:
            for role in ("image", "label"):
                entry[role] = str(seg_dir / entry[role])
    edit(spec, folder)
    (folder / "dataset.json").write_text(json.dumps(spec))
    return folder / "dataset.json"


def test_missing_label_is_named(ft_config, seg_dir, tmp_path, capsys):
    """A label listed in dataset.json that does not exist fails at start, naming it and the json."""
    def edit(spec, folder):
        spec["training"][1]["label"] = "./labelsTr/ghost.nii.gz"

    source = _copy_dataset(seg_dir, tmp_path, edit)
    assert finetune(ft_config, source, tmp_path / "r") == 2
    err = capsys.readouterr().err
    assert "ghost.nii.gz" in err and "dataset.json" in err and "label" in err
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_label_shape_mismatch_names_both_files(ft_config, seg_dir, tmp_path, capsys):
    """A label whose shape differs from its image's fails before training, naming both files."""
    def edit(spec, folder):
        nib.save(nib.Nifti1Image(np.zeros((64, 48, 30), np.uint8), np.eye(4)), str(folder / "labelsTr" / "short.nii.gz"))
        spec["validation"][0]["label"] = str(folder / "labelsTr" / "short.nii.gz")

    source = _copy_dataset(seg_dir, tmp_path, edit)
    assert finetune(ft_config, source, tmp_path / "r") == 2
    err = capsys.readouterr().err
    assert "short.nii.gz" in err and "val0.nii.gz" in err and "(64, 48, 30)" in err and "(64, 32, 32)" in err
    assert not (tmp_path / "r" / "metrics.json").exists() and not (tmp_path / "r" / "model.pt").exists()


@pytest.mark.parametrize("change, refused", [("voxels", True), ("shift", True), ("rounding", False)])
def test_a_label_on_another_grid_than_its_image_is_refused(ft_config, seg_dir, tmp_path, capsys, change, refused):
    """A label of its image's shape whose header puts it elsewhere (twice the voxel size, or 6 mm away: another part
    of the body) only warned, and the run trained and scored on it, exit 0; it must fail naming both files and both
    grids. A difference of a header's rounding (0.01 mm) is no other grid: it warns and the run goes on."""
    def edit(spec, folder):
        name = spec["validation"][0]["label"]
        img = nib.load(name)
        affine = img.affine.copy()
        if change == "voxels":
            affine[:3, :3] *= 2
        else:
            affine[0, 3] += 6.0 if change == "shift" else 0.01
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), affine), str(folder / "labelsTr" / "moved.nii.gz"))
        spec["validation"][0]["label"] = str(folder / "labelsTr" / "moved.nii.gz")

    source = _copy_dataset(seg_dir, tmp_path, edit)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = finetune(ft_config, source, tmp_path / "r", "--train.steps", "1", "--preprocess.crop_foreground", "false")
    err = capsys.readouterr().err
    rounding = [w for w in caught if "by a header's rounding" in str(w.message)]
    assert bool(rounding) == (not refused), [str(w.message) for w in caught]
    if refused:
        assert rc == 2 and "moved.nii.gz" in err and "val0.nii.gz" in err, err
        assert ("3.0" in err) if change == "voxels" else ("6.0" in err), err
        assert not (tmp_path / "r" / "metrics.json").exists()
    else:
        assert rc == 0, err


def test_help_documents_every_option(capsys):
    """`s2dc finetune --help` lists every config field with its help text."""
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    text = capsys.readouterr().out
    fields = FinetuneConfig().to_dict()
    keys = {f"{section}.{name}" for section, values in fields.items() for name in values}
    assert keys == set(HELP)
    for key in keys:
        assert f"--{key}" in text, key


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data.label_ratio", "0"], "data.label_ratio"),
        (["--train.roi_size", "64", "32", "30"], "train.roi_size"),
        (["--train.roi_size", "32", "32", "32"], "bottleneck"),
        (["--model.num_heads", "5", "2", "3", "4"], "model.num_heads"),
        (["--model.init_which", "both"], "model.init_which"),
        (["--model.window_size", "0"], "model.window_size must be >= 1"),
        (["--model.num_heads", "0", "2", "3", "4"], "model.num_heads must be >= 1 each"),
        (["--run.seed", "-3"], "run.seed must be in 0..4294967295"),
        (["--run.device", "cpu", "--train.amp", "bf16"], "train.amp=bf16 is not supported on the CPU"),
    ],
)
def test_bad_options_name_the_key(ft_config, seg_dir, tmp_path, capsys, args, message):
    """A wrong option value fails at start with a message naming the option."""
    assert finetune(ft_config, seg_dir / "dataset.json", tmp_path / "r", *args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused before anything is made


def test_finetune_defaults_to_the_registry_preset_and_keeps_given_options(tmp_path):
    """With no intensity option, a registry dataset's json gets its preset (BraTS: z-score; BTCV: the abdomen
    window), whatever the encoder was pretrained with; options the user gave are never replaced."""
    from s2dc.data.registry import PRESETS, get
    from s2dc.downstream.defaults import fill_finetune_defaults

    def json_named(name):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"name": name, "training": []}))
        return str(path)

    values, notes = fill_finetune_defaults({"data": {"source": json_named("synthetic_brats23")}})
    assert values["preprocess"] == {"intensity": "zscore"} and "brats23" in notes[0]
    btcv = PRESETS[get("btcv").preset]
    values, _ = fill_finetune_defaults({"data": {"source": json_named("btcv")}})
    assert values["preprocess"] == {"intensity": "ct", "a_min": btcv.a_min, "a_max": btcv.a_max}
    given = {"data": {"source": json_named("btcv")}, "preprocess": {"a_max": 400.0}, "model": {"feature_size": 24}}
    values, notes = fill_finetune_defaults(given)  # one intensity option given: the preset's fill the others
    assert values["preprocess"] == {"intensity": "ct", "a_min": btcv.a_min, "a_max": 400.0}
    assert values["model"] == {"feature_size": 24} and notes == [
        f"intensity: intensity=ct, a_min={btcv.a_min:g} from preset 'ct_abdomen' of registry dataset btcv (given: a_max)"]
    # a CT window's bound on a z-scored dataset (BraTS): it made a CT window of the MRI without a word; refused
    with pytest.raises(ValueError, match=r"preprocess.a_min sets a CT window, but the intensity is zscore \(preset "
                                         r"'mri_zscore' of registry dataset brats23\).*--preprocess.intensity ct"):
        fill_finetune_defaults({"data": {"source": json_named("synthetic_brats23")}, "preprocess": {"a_min": 0.0}})
    values, notes = fill_finetune_defaults({"data": {"source": json_named("my_own")}})
    assert values["preprocess"] == {} and notes == []  # neither source knows: the options' defaults stand


def test_metrics_record_the_options_that_change_the_result(finished_finetuning):
    """metrics.json's `options`: every option that changes what the run computes (the learning rate, the steps, the
    precision it computed in), none of where it writes, how it logs or which seed it is (the row's own keys)."""
    _, run = finished_finetuning  # TINY_FT's (lr 0.005) with --train.steps 1, out of the config's 30
    options = json.loads((run / "metrics.json").read_text())["options"]
    assert options["train.lr"] == 0.005 and options["train.steps"] == 1 and options["precision"] == "fp32"
    assert "train.roi_size" in options and "model.feature_size" in options
    for local in ("run.out_dir", "run.seed", "run.progress", "run.device", "data.workers", "data.cache_dir",
                  "train.log_every", "train.amp", "data.label_ratio", "run.method"):
        assert local not in options, local


def _weights(folder):
    return torch.load(folder / "model.pt", weights_only=True)


def _same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_loader_processes_do_not_change_the_result(ft_config, seg_dir, tmp_path):
    """``data.workers`` is recorded as an option that changes nothing the run computes (it is left out of metrics.json's
    options, so the tables average runs that differ in it): 0 and 2 loader processes must draw the same crops and flips
    (two crops a volume, as the paper scale draws four) and end with the same weights, bit for bit."""
    runs = []
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        assert finetune(ft_config, seg_dir / "dataset.json", out, "--train.steps", "3", "--train.flip_prob", "0.5",
                        "--train.samples_per_volume", "2",
                        "--data.workers", str(workers), "--data.cache_dir", str(tmp_path / "cache")) == 0
        runs.append(_weights(out))
    assert _same_weights(*runs)


#: The options of the resumed runs below: 4 steps, validated at step 2, with flips and stochastic depth (each draws
#: from a generator whose state a resume must restore).
RESUMED = ["--train.steps", "4", "--train.flip_prob", "0.5", "--eval.every", "2", "--model.drop_path_rate", "0.1"]


@pytest.fixture(scope="module")
def never_stopped(tmp_path_factory, seg_dir):
    """The run folder of a fine-tuning of ``seg_dir`` with the options of :data:`RESUMED` (and TINY_FT's) that was
    never stopped and never checkpointed: what a stopped run of these options must end with once resumed (shared by
    the tests of a process: they only read it)."""
    root = tmp_path_factory.mktemp("never_stopped")
    (root / "ft.yaml").write_text(yaml.safe_dump(TINY_FT))
    assert finetune(root / "ft.yaml", seg_dir / "dataset.json", root / "run", *RESUMED, "--run.checkpoint_every", "0",
                    "--data.cache_dir", str(root / "cache")) == 0
    return root / "run"


def test_an_interrupted_finetuning_resumes_bit_identically(ft_config, seg_dir, never_stopped, tmp_path):
    """A run stopped after its step-2 checkpoint, run again with the same command, continues from step 2 (it does not
    start afresh) and ends with the weights, validation history and curves of the run that was never stopped; in
    between, every case file is written again with the same bytes (as a twin made again: new times and inodes),
    which leaves the checkpoint this run's."""
    common = [*RESUMED, "--data.cache_dir", str(tmp_path / "cache")]
    whole = never_stopped

    out = tmp_path / "stopped"
    values = yaml.safe_load(ft_config.read_text())
    args = dict(values)
    cfg = build_config({**args, "data": {**args["data"], "source": str(seg_dir / "dataset.json"),
                                         "cache_dir": str(tmp_path / "cache")},
                        "train": {**args["train"], "steps": 4, "flip_prob": 0.5},
                        "eval": {**args["eval"], "every": 2}, "model": {**args["model"], "drop_path_rate": 0.1},
                        "run": {**args["run"], "out_dir": str(out), "checkpoint_every": 2}})

    class Stop(Exception):
        pass

    def stop_at_the_last_step(step, value):
        if step == 4:
            raise Stop

    from s2dc.downstream.engine import finetune as run_finetune
    with pytest.raises(Stop):
        run_finetune(cfg, on_score=stop_at_the_last_step)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002.pt"]
    assert not (out / "metrics.json").exists()

    for path in sorted(seg_dir.rglob("*.nii*")):
        data = path.read_bytes()
        path.unlink()
        path.write_bytes(data)
    assert finetune(ft_config, seg_dir / "dataset.json", out, *common, "--run.checkpoint_every", "2") == 0
    assert _same_weights(_weights(whole), _weights(out))
    a, b = (json.loads((f / "metrics.json").read_text()) for f in (whole, out))
    assert a["history"] == b["history"] and a["dice_mean"] == b["dice_mean"]
    assert a["train_loss_first_last"] == b["train_loss_first_last"]
    assert b["resumed_from_step"] == 2 and a["resumed_from_step"] is None
    for name in ("train/loss.tsv", "val/dice_mean.tsv"):
        assert (whole / "dvclive/plots/metrics" / name).read_text() == (out / "dvclive/plots/metrics" / name).read_text()
    assert not (out / "checkpoints").exists()  # a finished run keeps model.pt, not its checkpoints


def _interrupted_at_step_2(ft_config, source, out, cache) -> list[str]:
    """A 3-step fine-tuning of ``source`` into ``out`` stopped (KeyboardInterrupt) after its step-2 checkpoint (at its
    last step's score, before model.pt); returns the command-line options of that run, for its resume."""
    values = yaml.safe_load(ft_config.read_text())
    cfg = build_config({**values, "data": {**values["data"], "source": str(source), "cache_dir": str(cache)},
                        "train": {**values["train"], "steps": 3},
                        "eval": {**values["eval"], "every": 2},
                        "run": {**values["run"], "out_dir": str(out), "checkpoint_every": 2}})

    def stop(step, value):
        if step == 3:  # after the step-2 checkpoint
            raise KeyboardInterrupt

    from s2dc.downstream.engine import finetune as run_finetune
    with pytest.raises(KeyboardInterrupt):
        run_finetune(cfg, on_score=stop)
    return ["--train.steps", "3", "--data.cache_dir", str(cache)]


@pytest.fixture(scope="module")
def stopped_btcv(tmp_path_factory, seg_dir):
    """``seg_dir``'s cases under a dataset.json named ``btcv`` (the registry's BTCV, as a twin is), and a fine-tuning of
    it stopped after its step-2 checkpoint (:func:`_interrupted_at_step_2`): (that dataset.json, the run folder, the
    options of the run less its cache). Shared by the tests of a process: they copy the run folder before they run into
    it, and give their runs a cache of their own."""
    root = tmp_path_factory.mktemp("stopped_btcv")
    data = shutil.copytree(seg_dir, root / "data")
    doc = json.loads((data / "dataset.json").read_text())
    (data / "dataset.json").write_text(json.dumps({**doc, "name": "btcv"}))
    (root / "ft.yaml").write_text(yaml.safe_dump(TINY_FT))
    common = _interrupted_at_step_2(root / "ft.yaml", data / "dataset.json", root / "run", root / "cache")
    assert common[-2] == "--data.cache_dir"
    return data / "dataset.json", root / "run", common[:-2]


def test_a_checkpoint_of_another_run_is_not_resumed(ft_config, stopped_btcv, tmp_path, capsys):
    """A checkpoint left by a run with another learning rate: ``run.resume auto`` (the default) refuses, naming the
    option and both values, and leaves the checkpoint; ``if_unchanged`` (the pipeline's) starts afresh, saying every
    option that differs (a second one too: the log named only the first)."""
    source, stopped, options = stopped_btcv
    out = shutil.copytree(stopped, tmp_path / "run")
    common = [*options, "--data.cache_dir", str(tmp_path / "cache")]
    capsys.readouterr()
    assert finetune(ft_config, source, out, *common, "--train.lr", "0.001") != 0
    err = capsys.readouterr().err
    assert "train.lr" in err and "0.005" in err and "0.001" in err
    assert (out / "checkpoints" / "step_00000002.pt").exists() and not (out / "metrics.json").exists()
    assert finetune(ft_config, source, out, *common, "--train.lr", "0.001",
                    "--train.weight_decay", "0.02", "--run.resume", "if_unchanged") == 0
    said = capsys.readouterr().out
    assert "another run's" in said and "train.lr" in said and "train.weight_decay" in said, said
    assert json.loads((out / "metrics.json").read_text())["resumed_from_step"] is None


@pytest.mark.parametrize("content", [b"encoder notes\n", b"", b"PK\x05\x06" + bytes(18)])
def test_a_file_that_is_no_checkpoint_is_refused_as_such(ft_config, seg_dir, tmp_path, capsys, content):
    """A text file, an empty file or an empty zip given as ``model.init`` read "could not read checkpoint ...: pop from
    empty list", "...: " or torch's advice to load with weights_only=False (which runs arbitrary code): the message
    must name the file and say what it is not, and give no such advice."""
    bad = tmp_path / "encoder.pt"
    bad.write_bytes(content)
    assert finetune(ft_config, seg_dir / "dataset.json", tmp_path / "run", "--train.steps", "1",
                    "--model.init", str(bad)) != 0
    err = capsys.readouterr().err
    assert str(bad) in err and "torch.save" in err, err
    assert "weights_only" not in err and "pop from empty list" not in err, err


def test_a_users_file_in_the_checkpoints_folder_is_never_deleted(ft_config, finished_finetuning, tmp_path, capsys):
    """A run started afresh deletes the earlier run's checkpoints/ folder: a note a user put in it went with it. The
    run must refuse the folder, naming the file, and leave it."""
    source, finished = finished_finetuning  # a one-step run of ``source``
    out = shutil.copytree(finished, tmp_path / "run")
    note = out / "checkpoints" / "which step diverged.txt"
    note.parent.mkdir()
    note.write_text("step 3\n")
    capsys.readouterr()
    assert finetune(ft_config, source, out, "--train.steps", "1") != 0
    assert "which step diverged.txt" in capsys.readouterr().err
    assert note.read_text() == "step 3\n"


@pytest.mark.parametrize("resume", ["auto", "never"])
def test_a_checkpoint_that_is_no_finetuning_checkpoint_is_never_deleted(ft_config, finished_finetuning, tmp_path, capsys,
                                                                        resume):
    """A pretraining checkpoint (or any torch file) named like a fine-tuning one in run.out_dir/checkpoints/ is not a
    run's to resume or to delete, even with ``run.resume never``."""
    source, finished = finished_finetuning  # a one-step run of ``source``
    out = shutil.copytree(finished, tmp_path / "run")
    other = out / "checkpoints" / "step_00000100.pt"
    other.parent.mkdir()
    torch.save({"student": {}, "config": {}, "step": 100}, other)
    capsys.readouterr()
    assert finetune(ft_config, source, out, "--train.steps", "1", "--run.resume", resume) != 0
    assert "not an s2dc fine-tuning checkpoint" in capsys.readouterr().err and other.exists()


def test_a_finetuning_killed_with_sigkill_resumes_bit_identically(ft_config, seg_dir, never_stopped, tmp_path):
    """`kill -9` of `s2dc finetune` after its step-2 checkpoint (whatever it was writing then), then the same command
    again: it continues from the newest checkpoint and ends with the weights of a run never killed."""
    import subprocess
    import sys
    import time

    args = ["--config", str(ft_config), "--data.source", str(seg_dir / "dataset.json"), *RESUMED,
            "--run.checkpoint_every", "2", "--data.cache_dir", str(tmp_path / "cache")]
    whole, killed = never_stopped, tmp_path / "killed"  # the run never killed: of these options, never checkpointed
    command = [sys.executable, "-m", "s2dc.cli", "finetune", *args, "--run.out_dir", str(killed)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (killed / "checkpoints" / "step_00000002.pt").exists() and process.poll() is None:
        assert time.monotonic() < deadline, "no step-2 checkpoint within 2 minutes"
        time.sleep(0.05)
    process.kill()
    process.wait()
    assert not (killed / "metrics.json").exists(), "the run ended before it was killed: lower the sleep"
    assert main(command[3:]) == 0  # the same command again (in this process: the CPU of a new one's imports saved)
    assert json.loads((killed / "metrics.json").read_text())["resumed_from_step"] >= 2
    assert _same_weights(_weights(whole), _weights(killed))


def test_label_ratio_subsets_round_the_exact_product_half_up():
    """0.29 × 50 is 14.5 (floating point: 14.499999999999998) -> 15 cases; 0.35 × 90 = 31.5 -> 32."""
    assert len(choose_subset(list(range(50)), 0.29, seed=0)) == 15
    assert len(choose_subset(list(range(90)), 0.35, seed=0)) == 32
    assert len(choose_subset(list(range(25)), 0.58, seed=0)) == 15


def test_a_classification_subset_draws_each_class_at_the_ratio():
    """Stratified by class: 3 classes of 20 cases at 10 % give 2 of each for every seed (a plain draw of 6 of the
    60 misses a class for about a quarter of the seeds), nested in the 20 % subset of the same seed."""
    cases = [{"image": f"c{i}.nii.gz", "class": i % 3} for i in range(60)]
    for seed in range(100):
        small = choose_subset(cases, 0.1, seed, stratify_by="class")
        assert sorted(c["class"] for c in small) == [0, 0, 1, 1, 2, 2]
        assert all(c in choose_subset(cases, 0.2, seed, stratify_by="class") for c in small)
    assert small == [c for c in cases if c in small]  # in their original order
    rare = [{"image": f"r{i}", "class": int(i == 0)} for i in range(30)]  # one case of class 1: always drawn
    assert [c["class"] for c in choose_subset(rare, 0.1, 4, stratify_by="class")].count(1) == 1


def test_an_encoder_pretrained_on_another_intensity_is_refused_unless_the_intensity_is_given(tmp_path):
    """An encoder whose pretraining z-scored its volumes (an MRI or PET encoder) fine-tuned on a CT dataset of the
    registry, whose preset is a CT window: refused naming both normalisations (it ran without a word); given
    --preprocess.intensity, the user has chosen, and it stands."""
    import torch

    from s2dc.downstream.defaults import fill_finetune_defaults

    source = tmp_path / "btcv.json"
    source.write_text(json.dumps({"name": "btcv", "training": []}))
    encoder = tmp_path / "mri.pt"
    torch.save({"state_dict": {}, "encoder": {"feature_size": 12}, "preprocess": {"intensity": "zscore"}}, encoder)
    values = {"data": {"source": str(source)}, "model": {"init": str(encoder)}}
    with pytest.raises(ValueError, match=r"'.*mri.pt' was pretrained on z-scored volumes \(zscore\), but preset "
                                         r"'ct_abdomen' of registry dataset btcv is a CT window \(ct\).*"
                                         r"--preprocess.intensity"):
        fill_finetune_defaults(values)
    given = {**values, "preprocess": {"intensity": "zscore"}}
    assert fill_finetune_defaults(given)[0]["preprocess"] == {"intensity": "zscore"}
    torch.save({"state_dict": {}, "encoder": {"feature_size": 12}, "preprocess": {"intensity": "ct", "a_min": -1000.0,
                                                                                   "a_max": 1000.0}}, encoder)
    assert fill_finetune_defaults(values)[0]["preprocess"]["intensity"] == "ct"  # another window: same modality


def test_the_label_ratio_help_says_how_the_subset_is_counted():
    """--help said round(ratio * n): Python's round is half to even (0.5 of 5 cases -> 2) where the subset rounds
    half up (3), and a classification draws per class (0.5 of classes of 7, 3 and 12 cases: 4 + 2 + 6 = 12, not
    round(0.5 * 22) = 11)."""
    assert len(choose_subset(list(range(5)), 0.5, seed=0)) == 3 != round(0.5 * 5)
    cases = [{"image": f"c{i}", "class": c} for i, c in enumerate([0] * 7 + [1] * 3 + [2] * 12)]
    assert len(choose_subset(cases, 0.5, seed=0, stratify_by="class")) == 12
    text = HELP["data.label_ratio"]
    assert "half up" in text and "each class" in text


def test_a_checkpoint_of_a_run_on_another_registry_entry_is_not_resumed(ft_config, stopped_btcv, tmp_path, capsys,
                                                                         monkeypatch):
    """A dataset's registry entry is data (s2dc.data.datasets), which the code hash leaves out: the run counts the
    entry of the dataset it reads (registry.spec_digest) instead, so that a run interrupted before the entry was edited
    is not continued as if it were this one (``if_unchanged`` starts afresh, naming the entry)."""
    import dataclasses
    from types import MappingProxyType

    from s2dc.data import datalist, registry

    source, stopped, options = stopped_btcv  # a run of the registry's BTCV (by name), stopped at step 2
    out = shutil.copytree(stopped, tmp_path / "run")
    common = [*options, "--data.cache_dir", str(tmp_path / "cache")]
    assert (out / "checkpoints" / "step_00000002.pt").exists()
    before = registry.spec_digest("btcv")
    edited = dataclasses.replace(registry.get("btcv"), channels=("CT, an entry edited after the run started",))
    entries = MappingProxyType({**registry.REGISTRY, "btcv": edited})
    monkeypatch.setattr(registry, "REGISTRY", entries)
    monkeypatch.setattr(datalist, "REGISTRY", entries)
    assert registry.spec_digest("btcv") != before
    capsys.readouterr()
    assert finetune(ft_config, source, out, *common, "--run.resume", "if_unchanged") == 0
    said = capsys.readouterr().out
    assert "another run's" in said and "registry entry" in said, said
    assert json.loads((out / "metrics.json").read_text())["resumed_from_step"] is None
