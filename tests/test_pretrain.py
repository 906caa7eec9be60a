"""End-to-end pretraining: the CLI, loss going down, exact resume, DDP under torchrun, export, bad input."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from s2dc.cli import main
from s2dc.export import load_pretrained_encoder, swinunetr_for
from s2dc.models.encoder import EncoderConfig
from s2dc.train.config import HELP, PretrainConfig

from conftest import write_volume


def pretrain(tiny_config, source, out_dir, *extra):
    return main(["pretrain", "--config", str(tiny_config), "--data.source", str(source),
                 "--run.out_dir", str(out_dir), *extra])


def sha256_of(state: dict) -> str:
    h = hashlib.sha256()
    for name, tensor in state.items():
        h.update(name.encode())
        h.update(tensor.contiguous().numpy().tobytes())
    return h.hexdigest()


def test_total_loss_falls(tiny_config, volumes_dir, tmp_path):
    """A short CPU run on test-made volumes lowers the total loss (first 6 steps vs last 6)."""
    assert pretrain(tiny_config, volumes_dir / "dataset.json", tmp_path / "run", "--optim.steps", "24",
                    "--optim.warmup_steps", "0", "--optim.lr", "3e-3", "--loss.match_temperature", "0.1",
                    "--loss.queue_size", "0", "--run.checkpoint_every", "100") == 0
    losses = json.loads((tmp_path / "run" / "summary.json").read_text())["losses_this_run"]
    assert len(losses) == 24 and np.isfinite(losses).all()
    first, last = np.mean(losses[:6]), np.mean(losses[-6:])
    assert last < 0.95 * first, (first, last)
    logged = json.loads((tmp_path / "run" / "dvclive" / "metrics.json").read_text())["pretrain"]
    assert set(logged) == {"loss", "loss_global", "loss_p2p", "loss_p2s", "lr"}


def test_resume_gives_the_same_weights(tiny_config, volumes_dir, tmp_path):
    """Stopping at step 3 and resuming from its checkpoint ends bit-identical to an uninterrupted run."""
    cache = ["--data.cache_dir", str(tmp_path / "cache")]
    assert pretrain(tiny_config, volumes_dir / "imagesTr", tmp_path / "full", *cache) == 0
    interrupted = tmp_path / "full" / "checkpoints" / "step_00000003.pt"
    assert pretrain(tiny_config, volumes_dir / "imagesTr", tmp_path / "resumed", *cache, "--run.resume", str(interrupted)) == 0
    full = torch.load(tmp_path / "full" / "checkpoints" / "step_00000006.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "checkpoints" / "step_00000006.pt", weights_only=True)
    assert json.loads((tmp_path / "resumed" / "summary.json").read_text())["resumed_from"] == str(interrupted)
    for part in ("student", "teacher", "queue"):
        for key, value in full[part].items():
            assert torch.equal(value, resumed[part][key]), f"{part}.{key} differs after resume"
    for key, value in full["optimizer"]["state"].items():
        for name in value:
            assert torch.equal(value[name], resumed["optimizer"]["state"][key][name])
    assert full["scheduler"] == resumed["scheduler"]


def test_resume_auto_continues_and_keeps_last_k(tiny_config, volumes_dir, tmp_path):
    """run.resume=auto picks up the newest checkpoint of the same out_dir; only keep_last files remain."""
    out = tmp_path / "run"
    assert pretrain(tiny_config, volumes_dir / "imagesTr", out, "--optim.steps", "4", "--run.checkpoint_every", "1",
                    "--run.keep_last", "2") == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000003.pt", "step_00000004.pt"]
    (out / "checkpoints" / "step_00000004.pt").unlink()  # as if stopped after step 3
    assert pretrain(tiny_config, volumes_dir / "imagesTr", out, "--optim.steps", "4", "--run.checkpoint_every", "1",
                    "--run.keep_last", "2") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from"].endswith("step_00000003.pt") and len(summary["losses_this_run"]) == 1


def test_torchrun_two_ranks_end_with_identical_teachers(tiny_config, volumes_dir, tmp_path):
    """2-process torchrun (gloo): both ranks finish with bit-identical EMA teachers, equal to the checkpoint's."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "s2dc.cli", "pretrain", "--config", str(tiny_config), "--data.source", str(volumes_dir / "dataset.json"),
           "--run.out_dir", str(out), "--optim.steps", "3", "--run.device", "cpu"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    ranks = summary["teacher_fingerprint_per_rank"]
    assert len(ranks) == 2 and ranks[0] == ranks[1]
    ckpt = torch.load(out / "checkpoints" / "step_00000003.pt", weights_only=True)
    assert sha256_of(ckpt["teacher"]) == ranks[0]
    assert ckpt["queue"]["count"] == 2 * 3  # one key per rank and step, gathered from both ranks


def test_export_encoder_loads_strictly_into_swinunetr(one_step_run, tmp_path, capsys):
    """export-encoder writes swinViT.* weights that load strictly into SwinUNETR(use_v2=True), with a report."""
    ckpt_path = one_step_run / "checkpoints" / "step_00000001.pt"
    out = tmp_path / "encoder.pt"
    assert main(["export-encoder", str(ckpt_path), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "missing keys: none; unexpected keys: none" in printed
    ckpt = torch.load(ckpt_path, weights_only=True)
    cfg = EncoderConfig(**ckpt["config"]["encoder"])
    model = swinunetr_for(cfg, out_channels=3)
    report = load_pretrained_encoder(model, out)
    assert "SwinUNETR.swinViT" in report
    teacher = {k[len("encoder."):]: v for k, v in ckpt["teacher"].items() if k.startswith("encoder.")}
    loaded = model.swinViT.state_dict()
    assert teacher.keys() == loaded.keys()
    assert all(torch.equal(teacher[k], loaded[k]) for k in teacher)
    other = swinunetr_for(EncoderConfig(feature_size=24, num_heads=(1, 2, 3, 4), window_size=4))
    with pytest.raises(ValueError, match="shape mismatch"):
        load_pretrained_encoder(other, out)


def test_help_documents_every_option(capsys):
    """`s2dc pretrain --help` lists every config field with its help text."""
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = capsys.readouterr().out
    fields = PretrainConfig().to_dict()
    keys = {f"{section}.{name}" for section, values in fields.items() for name in values}
    assert keys == set(HELP)
    for key in keys:
        assert f"--{key}" in text, key


def _bad_dataset(tmp_path, name, writer):
    folder = tmp_path / name
    folder.mkdir()
    writer(folder)
    return folder


def test_truncated_nifti_is_named(tiny_config, tmp_path, capsys):
    """A truncated .nii.gz fails with an error naming the file."""
    def writer(folder):
        path = write_volume(folder / "broken.nii.gz", np.random.default_rng(1))
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    assert pretrain(tiny_config, _bad_dataset(tmp_path, "trunc", writer), tmp_path / "r", "--optim.steps", "1") == 2
    err = capsys.readouterr().err
    assert "broken.nii.gz" in err and "could not read" in err
    assert not list((tmp_path / "r").glob("checkpoints/*.pt"))


def test_two_dimensional_image_is_refused(tiny_config, tmp_path, capsys):
    """A 2-D image fails with an error naming the file and asking for a 3-D volume."""
    def writer(folder):
        nib.save(nib.Nifti1Image(np.ones((64, 64), np.float32), np.eye(4)), str(folder / "slice.nii.gz"))

    assert pretrain(tiny_config, _bad_dataset(tmp_path, "flat", writer), tmp_path / "r", "--optim.steps", "1") == 2
    err = capsys.readouterr().err
    assert "slice.nii.gz" in err and "3-D" in err


def test_missing_file_in_dataset_json_is_named(tiny_config, tmp_path, capsys):
    """A dataset.json entry pointing at a missing file fails before training, naming file and json."""
    def writer(folder):
        (folder / "dataset.json").write_text(json.dumps({"training": [{"image": "./imagesTr/ghost.nii.gz"}]}))

    folder = _bad_dataset(tmp_path, "ghost", writer)
    assert pretrain(tiny_config, folder / "dataset.json", tmp_path / "r", "--optim.steps", "1") == 2
    err = capsys.readouterr().err
    assert "ghost.nii.gz" in err and "dataset.json" in err


def test_volume_smaller_than_roi_is_padded(tiny_config, tmp_path):
    """A volume smaller than the ROI (40x36x20 < 64x64x32) is zero-padded and trains."""
    def writer(folder):
        write_volume(folder / "small.nii.gz", np.random.default_rng(2), shape=(40, 36, 20))

    assert pretrain(tiny_config, _bad_dataset(tmp_path, "small", writer), tmp_path / "r", "--optim.steps", "1") == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--loss.assignment", "hungarian"], "loss.assignment"),
        (["--optim.steps", "ten"], "optim.steps must be an integer"),
        (["--views.roi_size", "64", "64", "30"], "views.roi_size"),
        (["--encoder.feature_size", "10"], "encoder.feature_size"),
        (["--encoder.feature_size", "0"], "encoder.feature_size must be a positive multiple of 12"),
        (["--encoder.window_size", "0"], "encoder.window_size must be >= 1"),
        (["--encoder.patch_size", "0"], "encoder.patch_size must be >= 1"),
        (["--encoder.num_heads", "0", "2", "3", "4"], "encoder.num_heads must be >= 1 each"),
        (["--encoder.depths", "-1", "2", "2", "2"], "encoder.depths must be >= 1 each"),
        (["--run.seed", "-3"], "run.seed must be in 0..4294967295"),
        (["--run.seed", "99999999999"], "run.seed must be in 0..4294967295"),
        (["--run.device", "cpu", "--run.amp", "bf16"], "run.amp=bf16 is not supported on the CPU"),
    ],
)
def test_bad_options_name_the_key(tiny_config, volumes_dir, tmp_path, capsys, args, message):
    """A wrong option value fails at start with a message naming the option."""
    assert pretrain(tiny_config, volumes_dir / "imagesTr", tmp_path / "r", *args) == 2
    assert message in capsys.readouterr().err


def test_unknown_yaml_key_is_named(volumes_dir, tmp_path, capsys):
    """An unknown key in the YAML config is reported by name."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss:\n  weight_p2q: 1.0\n")
    assert main(["pretrain", "--config", str(bad), "--data.source", str(volumes_dir)]) == 2
    assert "loss.weight_p2q" in capsys.readouterr().err


def test_pretrain_can_write_its_encoder_itself(tiny_config, volumes_dir, tmp_path, capsys):
    """`s2dc pretrain --export-encoder OUT` (the pipeline's one process per pretraining job) writes the teacher
    encoder of its last checkpoint, the very weights `s2dc export-encoder` writes, and the flag is no run option:
    the run's identity (and so its resume) does not see it."""
    out = tmp_path / "encoder.pt"
    assert pretrain(tiny_config, volumes_dir / "imagesTr", tmp_path / "run", "--optim.steps", "1",
                    "--export-encoder", str(out)) == 0
    assert "missing keys: none; unexpected keys: none" in capsys.readouterr().out
    assert main(["export-encoder", str(tmp_path / "run"), str(tmp_path / "separate.pt")]) == 0
    mine, separate = (torch.load(p, weights_only=True) for p in (out, tmp_path / "separate.pt"))
    assert mine["state_dict"].keys() == separate["state_dict"].keys() and mine["step"] == separate["step"] == 1
    assert all(torch.equal(mine["state_dict"][k], separate["state_dict"][k]) for k in mine["state_dict"])
    run = (tmp_path / "run" / "run.json").read_text()
    assert "encoder.pt" not in run and "export_encoder" not in run


def test_a_run_killed_after_its_last_checkpoint_resumes_with_the_curves_summary(tiny_config, volumes_dir, tmp_path,
                                                                                  monkeypatch):
    """Killed between the last checkpoint and the end, the resumed run (no step left to take) still leaves
    dvclive/metrics.json, equal to an uninterrupted run's (the rule copies dvclive/ as a DVC output)."""
    from s2dc.train import pretrain as pretraining

    args = ["--optim.steps", "3", "--run.checkpoint_every", "1", "--data.cache_dir", str(tmp_path / "cache")]
    assert pretrain(tiny_config, volumes_dir / "imagesTr", tmp_path / "full", *args) == 0
    save = pretraining.Pretrainer.save

    def save_then_die(self):
        save(self)
        if self.step == 3:
            raise KeyboardInterrupt  # as a SIGINT right after the final checkpoint

    monkeypatch.setattr(pretraining.Pretrainer, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        pretrain(tiny_config, volumes_dir / "imagesTr", tmp_path / "killed", *args)
    monkeypatch.undo()
    assert pretrain(tiny_config, volumes_dir / "imagesTr", tmp_path / "killed", *args) == 0
    full, killed = (json.loads((tmp_path / r / "dvclive" / "metrics.json").read_text()) for r in ("full", "killed"))
    assert killed == full and killed["step"] == 3


def test_a_run_refused_for_its_data_starts_afresh_once_the_data_is_fixed(tiny_config, tmp_path, capsys):
    """No step was taken: the folder holds no run to resume, so the rerun on the repaired volume trains (it was
    refused as "another run than this one ... 1 volume(s) changed")."""
    folder = tmp_path / "data"
    folder.mkdir()
    good = write_volume(folder / "a.nii.gz", np.random.default_rng(1))
    broken = folder / "b.nii.gz"
    broken.write_bytes(good.read_bytes()[:200])
    assert pretrain(tiny_config, folder, tmp_path / "r", "--optim.steps", "1") == 2
    assert "b.nii.gz" in capsys.readouterr().err
    write_volume(broken, np.random.default_rng(2))
    assert pretrain(tiny_config, folder, tmp_path / "r", "--optim.steps", "1") == 0
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["resumed_from"] is None


@pytest.mark.parametrize("damage, message", [
    (lambda c: c.pop("step"), "no step"),
    (lambda c: c["config"].pop("optim"), "no config.optim.steps"),
    (lambda c: c["config"]["encoder"].update(heads=3), "holds unknown key(s) ['heads']"),
])
def test_a_checkpoint_missing_what_export_needs_is_refused_naming_it(one_step_run, tmp_path, capsys, damage, message):
    """A dict checkpoint short of its step, its optim.steps or with unknown encoder sizes gave a KeyError or
    TypeError traceback (exit 1), in export-encoder and in probe alike."""
    ckpt = torch.load(one_step_run / "checkpoints" / "step_00000001.pt", weights_only=True)
    damage(ckpt)
    bad = tmp_path / "bad.pt"
    torch.save(ckpt, bad)
    assert main(["export-encoder", str(bad), str(tmp_path / "enc.pt")]) == 2
    assert f"'{bad}'" in (err := capsys.readouterr().err) and message in err, err
    assert not (tmp_path / "enc.pt").exists()


def test_an_output_path_under_a_file_is_an_error_naming_it_not_a_traceback(tmp_path, capsys):
    """An OSError (a file where a folder must be) is a user's mistake: exit 2 with a message naming the path."""
    (tmp_path / "afile").write_text("x")
    assert main(["synth", "--kind", "btcv", "--out", str(tmp_path / "afile" / "sub"), "--cases", "2", "--seed", "0",
                 "--shape", "16", "16", "16"]) == 2
    assert str(tmp_path / "afile") in capsys.readouterr().err


def _as_if_older_code(run):
    """Mark a run folder (run.json and its checkpoints) as made by other s2dc code."""
    doc = json.loads((run / "run.json").read_text())
    doc["identity"]["code"] = "older-code"
    (run / "run.json").write_text(json.dumps(doc))
    for path in (run / "checkpoints").glob("step_*.pt"):
        state = torch.load(path, weights_only=True)
        state["identity"]["code"] = "older-code"
        torch.save(state, path)


def test_an_explicit_resume_never_overwrites_a_run_of_other_code_in_the_folder(tiny_config, volumes_dir, tmp_path):
    """Resuming a named checkpoint of other code is allowed (with a warning), but the folder's finished run of that
    code is moved to previous/, not overwritten in place and mixed with the new steps."""
    args = ["--optim.steps", "2", "--run.checkpoint_every", "1", "--data.cache_dir", str(tmp_path / "cache")]
    run = tmp_path / "run"
    assert pretrain(tiny_config, volumes_dir / "imagesTr", run, *args) == 0
    _as_if_older_code(run)
    old = {p.name: p.read_bytes() for p in (run / "checkpoints").glob("step_*.pt")}
    old_summary = (run / "summary.json").read_text()
    assert pretrain(tiny_config, volumes_dir / "imagesTr", run, *args,
                    "--run.resume", str(run / "checkpoints" / "step_00000001.pt")) == 0
    (aside,) = (run / "previous").iterdir()
    assert {p.name: p.read_bytes() for p in (aside / "checkpoints").glob("step_*.pt")} == old
    assert (aside / "summary.json").read_text() == old_summary
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from"] == str(aside / "checkpoints" / "step_00000001.pt")
    assert len(summary["losses_this_run"]) == 1


def test_rerunning_a_finished_pretraining_keeps_its_summary(tiny_config, volumes_dir, tmp_path, capsys):
    """The same command again trains nothing: the finished run's summary.json (its losses) stays as it was, and the
    command says that it trained nothing, not the earlier run's losses as if it had trained them."""
    args = ["--optim.steps", "2", "--data.cache_dir", str(tmp_path / "cache")]
    assert pretrain(tiny_config, volumes_dir / "imagesTr", tmp_path / "run", *args) == 0
    before = (tmp_path / "run" / "summary.json").read_text()
    assert len(json.loads(before)["losses_this_run"]) == 2
    assert "pretrained to step 2: loss" in capsys.readouterr().out
    assert pretrain(tiny_config, volumes_dir / "imagesTr", tmp_path / "run", *args) == 0
    assert (tmp_path / "run" / "summary.json").read_text() == before
    out = capsys.readouterr().out
    assert "pretrained to step" not in out, out
    assert "already at step 2: nothing trained" in out and "step_00000002.pt" in out, out
