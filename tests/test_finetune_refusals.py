"""Fine-tuning input refused before anything is trained or replaced: a rerun on bad data keeps the earlier run's
outputs, training cases of one class only, and encoder files whose entries are of the wrong kind."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import write_boxes
from s2dc.cli import main
from s2dc.data.synthetic import write_dataset
from s2dc.export import swinunetr_for
from s2dc.models.encoder_config import EncoderConfig
from test_trust import finetune_argv

SIZES = EncoderConfig(feature_size=12, num_heads=(1, 2, 3, 4), window_size=4)


def finetune(tmp_path, source, out, *extra) -> int:
    """`s2dc finetune` of ``source`` into ``out``, the tiny options, one step (test_trust.finetune_argv)."""
    return main(finetune_argv(tmp_path, source, out, *extra))


def test_a_rerun_refused_for_its_data_keeps_the_earlier_runs_outputs(finished_finetuning, tmp_path, capsys):
    """A finished run, then the same folder given a copy of its data with a NaN in a validation image: the rerun is
    refused (exit 2, naming the file) before it replaces anything, so the earlier model.pt, metrics.json, split.json
    and curves are still there, byte for byte; the same rerun on good data then replaces them."""
    source, finished = finished_finetuning  # a one-step run of ``source`` (finetune_argv's)
    out = shutil.copytree(finished, tmp_path / "run")
    kept = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and "cache" not in p.parts}
    assert {"model.pt", "metrics.json", "split.json"} <= {p.name for p in kept}
    assert any("dvclive" in p.parts for p in kept)
    bad = tmp_path / "bad"
    shutil.copytree(source.parent, bad)
    image = bad / "imagesTr" / "val0.nii.gz"
    nifti = nib.load(str(image))
    array = np.asarray(nifti.dataobj).copy()
    array[30, 20, 10] = np.nan
    nib.save(nib.Nifti1Image(array, nifti.affine), str(image))
    capsys.readouterr()
    assert finetune(tmp_path, bad / "dataset.json", out) == 2
    err = capsys.readouterr().err
    assert "val0.nii.gz" in err and "NaN" in err and "Traceback" not in err, err
    assert {p: p.read_bytes() for p in kept} == kept
    assert finetune(tmp_path, source, out, "--train.lr", "0.001") == 0
    assert json.loads((out / "metrics.json").read_text())["options"]["train.lr"] == 0.001


def test_segmentation_training_labels_of_background_only_are_refused(tmp_path, capsys):
    """Training labels that hold no structure (every voxel background; the validation ones untouched) teach the
    network nothing to find: exit 2 naming the dataset, no outputs, as the probe refuses them."""
    root = tmp_path / "seg"
    root.mkdir()
    write_boxes(root)
    for case in json.loads((root / "dataset.json").read_text())["training"]:
        path = root / case["label"]
        nifti = nib.load(str(path))
        nib.save(nib.Nifti1Image(np.zeros(nifti.shape, np.uint8), nifti.affine), str(path))
    capsys.readouterr()
    assert finetune(tmp_path, root / "dataset.json", tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert "background only" in err and str(root / "dataset.json") in err and "Traceback" not in err, err
    assert not (tmp_path / "run" / "metrics.json").exists() and not (tmp_path / "run" / "model.pt").exists()


def test_classification_training_cases_of_one_class_are_refused(tmp_path, capsys):
    """Every training case of one class (the validation ones of both): a classifier so trained always predicts it;
    exit 2 naming the class and the dataset, no outputs."""
    source = write_dataset(tmp_path / "cls", "cc_ccii", cases=9, seed=0, shape=(64, 64, 32), val_fraction=0.34)
    doc = json.loads(source.read_text())
    assert len({case["class"] for case in doc["validation"]}) > 1
    for case in doc["training"]:
        case["class"] = 1
    source.write_text(json.dumps(doc))
    capsys.readouterr()
    assert finetune(tmp_path, source, tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert "training cases" in err and "one class only" in err and str(source) in err, err
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_score_not_finite_from_finite_outputs_is_the_validation_cases_not_a_divergence():
    """A validation score NaN or infinite although the network's outputs were finite (each forward is checked: a
    diverged model's outputs stop the run first, exit 1) comes from the validation cases (a target constant inside
    its mask: PSNR -inf): a DataError (exit 2) naming the dataset json and the cases, not a diverged run."""
    from types import SimpleNamespace

    from s2dc.data.errors import DataError
    from s2dc.downstream.engine import Finetuner

    run = SimpleNamespace(step=4, val_cases=[{"id": "v0"}, {"id": "v1"}],
                          task=SimpleNamespace(score_key="psnr", why_not_finite="PSNR is infinite where a target is "
                                                                                 "constant or a prediction exact"),
                          cfg=SimpleNamespace(data=SimpleNamespace(source="data/x.json")))
    with pytest.raises(DataError) as refused:
        Finetuner._require_a_score(run, float("-inf"))
    assert not isinstance(refused.value, FloatingPointError)
    message = str(refused.value)
    assert "data/x.json" in message and "'v0'" in message and "'v1'" in message and "diverged" not in message, message
    Finetuner._require_a_score(run, 31.5)  # a finite score passes


@pytest.fixture(scope="module")
def good_export(tmp_path_factory):
    """An exported encoder file of :data:`SIZES`, as `s2dc export-encoder` writes one."""
    path = tmp_path_factory.mktemp("enc") / "enc.pt"
    weights = swinunetr_for(SIZES).swinViT.state_dict()
    torch.save({"state_dict": {f"swinViT.{k}": v for k, v in weights.items()}, "encoder": SIZES.to_dict(),
                "which": "teacher", "step": 1, "modality": "CT", "preprocess": None}, path)
    return path


BROKEN_ENTRIES = {  # an entry of the export replaced, and what the message must name
    "encoder None": ({"encoder": None}, "'encoder'"),
    "encoder a number": ({"encoder": 5}, "'encoder'"),
    "encoder a string": ({"encoder": "abc"}, "'encoder'"),
    "a size a string": ({"encoder": {**SIZES.to_dict(), "feature_size": "abc"}}, "feature_size"),
    "preprocess a string": ({"preprocess": "ct"}, "'preprocess'"),
    "preprocess an unknown key": ({"preprocess": {"windowing": 3}}, "'preprocess'"),
    "modality a number": ({"modality": 3}, "'modality'"),
    "state_dict a list": ({"state_dict": [1, 2]}, "'state_dict'"),
    "state_dict of numbers": ({"state_dict": {"swinViT.patch_embed.proj.weight": 1.0}}, "'state_dict'"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_ENTRIES))
def test_an_encoder_file_with_an_entry_of_the_wrong_kind_is_refused_naming_it(
        good_export, seg_dir, tmp_path, capsys, case):
    """A hand-made (or damaged) encoder file whose entry is of the wrong kind: `s2dc finetune` and `s2dc probe` exit
    2 naming the file and the entry, with no traceback and no outputs (a preprocess entry is not skipped)."""
    change, named = BROKEN_ENTRIES[case]
    bad = tmp_path / "bad.pt"
    torch.save({**torch.load(good_export, weights_only=False), **change}, bad)
    assert finetune(tmp_path, seg_dir / "dataset.json", tmp_path / "run", "--model.init", str(bad)) == 2, case
    err = capsys.readouterr().err
    assert str(bad) in err and named in err and "Traceback" not in err, err
    assert not (tmp_path / "run" / "metrics.json").exists()
    out = tmp_path / "probe.json"
    assert main(["probe", str(bad), "--source", str(seg_dir / "dataset.json"), "--out", str(out),
                 "--preset", "ct_abdomen"]) == 2, case
    err = capsys.readouterr().err
    assert str(bad) in err and named in err and "Traceback" not in err, err
    assert not out.exists()


def _save(path, array) -> str:
    nib.save(nib.Nifti1Image(np.asarray(array, np.float32), np.eye(4)), str(path))
    return path.name


def _box(rng, at: int, shape=(64, 32, 32)) -> np.ndarray:
    """A noisy box of values 1..1.1 with a brighter block at x-offset ``at``, zero 4 voxels from every border."""
    a = np.zeros(shape, np.float32)
    a[4:-4, 4:-4, 4:-4] = 1.0 + 0.1 * rng.random(tuple(s - 8 for s in shape))
    a[at : at + 12, 10:22, 10:22] += 3.0
    return a


def _refused_before_training(tmp_path, capsys, monkeypatch, doc: dict, *extra: str) -> str:
    """Fine-tune ``doc`` (written as tmp_path/data/dataset.json) for one step: it must exit 2 before any step, the run
    folder it made removed again (no checkpoint, curves, split.json, model.pt or metrics.json); returns stderr."""
    from s2dc.downstream.engine import Finetuner

    steps, train_step = [], Finetuner.train_step
    monkeypatch.setattr(Finetuner, "train_step", lambda self, batch: steps.append(self.step) or train_step(self, batch))
    js = tmp_path / "data" / "dataset.json"
    js.write_text(json.dumps(doc))
    out = tmp_path / "run"
    capsys.readouterr()
    rc = finetune(tmp_path, js, out, "--preprocess.intensity", "zscore", "--preprocess.crop_foreground", "false",
                  "--train.log_every", "1", *extra)
    captured = capsys.readouterr()
    assert rc == 2, captured.err
    assert steps == [], f"{len(steps)} training step(s) ran before the refusal: {captured.err}"
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))
    assert str(js) in captured.err and "Traceback" not in captured.err, captured.err
    assert "validation at step" not in captured.err, captured.err  # not the refusal after training
    return captured.err


def test_a_reconstruction_target_constant_on_its_voxels_is_refused_before_training(tmp_path, capsys, monkeypatch):
    """A full-dose validation target of value 2 but one voxel of 3 at (1, 1, 1), resampled to 2 mm (the grid samples
    the 1 mm voxels of even indices, with weight 1: it misses the odd one), is 2 on every voxel scored: its range is 0,
    so PSNR is -inf. The run trained to its end, then failed (exit 2); it must be refused before the first step,
    naming the dataset json, the case and its target file, and what was expected."""
    rng = np.random.default_rng(1)
    (tmp_path / "data").mkdir()
    entries = []
    for i in range(3):
        full = _box(rng, 10 + 6 * i)
        low = rng.poisson(full * 4) / 4.0
        if i == 2:
            full = np.full(full.shape, 2.0, np.float32)
            full[1, 1, 1] = 3.0  # not constant as stored: loading takes it
        entries.append({"id": f"r{i}", "image": _save(tmp_path / "data" / f"low{i}.nii.gz", low),
                        "target": _save(tmp_path / "data" / f"full{i}.nii.gz", full)})
    doc = {"name": "doses", "task": "reconstruction", "training": entries[:2], "validation": entries[2:]}
    err = _refused_before_training(tmp_path, capsys, monkeypatch, doc, "--preprocess.spacing", "2", "2", "2")
    assert "'r2'" in err and "full2.nii.gz" in err and "'r0'" not in err and "'r1'" not in err, err
    assert "constant" in err and "expected" in err, err


def test_a_translation_target_constant_inside_the_brain_is_refused_before_training(tmp_path, capsys, monkeypatch):
    """A validation t2 of value 5 inside the brain (the input t1's non-zero voxels) that varies only outside it (so
    its z-score over its own non-zero voxels is defined) is one value on every voxel scored: PSNR -inf. The run
    trained to its end, then failed (exit 2); it must be refused before the first step, naming the dataset json, the
    case, the sequence's file and the input, and what was expected."""
    rng = np.random.default_rng(2)
    (tmp_path / "data").mkdir()
    entries = []
    for i in range(3):
        t1 = _box(rng, 8 + 8 * i)
        t2 = np.where(t1 > 0, 5.0 - t1, 0.0)
        if i == 2:
            t2 = np.where(t1 > 0, 5.0, 0.0)
            t2[:2] = rng.uniform(1.0, 2.0, t2[:2].shape)  # varies outside the brain only
            assert np.ptp(t2[t1 > 0]) == 0 and np.ptp(t2[t2 != 0]) > 0
        sequences = {"t1": t1, "t2": t2, "flair": np.sqrt(t1)}
        entries.append({"id": f"b{i}", "image": [_save(tmp_path / "data" / f"b{i}_{c}.nii.gz", a)
                                                 for c, a in sequences.items()]})
    err = _refused_before_training(tmp_path, capsys, monkeypatch, {
        "name": "brains", "task": "translation", "modality": {"0": "t1", "1": "t2", "2": "flair"},
        "training": entries[:2], "validation": entries[2:]})
    assert "'b2'" in err and "b2_t2.nii.gz" in err and "'t1'" in err and "b2_flair" not in err, err
    assert "constant" in err and "expected" in err, err
