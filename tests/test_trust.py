"""Runs a user can trust: no non-finite weights saved, no resume across a changed configuration, data or
code, no overwritten inputs, every option value checked, bad volumes found before step 1."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from s2dc.cli import main
from s2dc.export import load_encoder_weights, swinunetr_for
from s2dc.losses.p2p import p2p_loss
from s2dc.models.encoder import EncoderConfig

from conftest import TINY, TINY_FT, signal_at_line, write_pool, write_volume


@pytest.fixture
def pool(tmp_path):
    """A private copy of three CT-like volumes with a dataset.json (tests may change its files)."""
    return write_pool(tmp_path / "pool", 3)


def pretrain(tiny_config, source, out_dir, *extra):
    return main(["pretrain", "--config", str(tiny_config), "--data.source", str(source),
                 "--run.out_dir", str(out_dir), *extra])


@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory, volumes_dir):
    """The run folder of the tiny pretraining (TINY) of :func:`volumes_dir`'s dataset.json finished after two steps
    (shared: tests read it, or copy it with ``shutil.copytree`` before they change it or run into it)."""
    root = tmp_path_factory.mktemp("two-steps")
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    assert pretrain(root / "tiny.yaml", volumes_dir / "dataset.json", root / "run", "--optim.steps", "2") == 0
    return root / "run"


def checkpoints(out_dir):
    return sorted(p.name for p in (out_dir / "checkpoints").glob("step_*.pt"))


def all_finite(state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if torch.is_tensor(v) and v.is_floating_point())


# --------------------------------------------------------------------------- 1. non-finite values


def test_divergence_stops_the_run_and_keeps_the_last_finite_checkpoint(tiny_config, pool, tmp_path, capsys):
    """lr 1e4 makes the second update non-finite: the run stops (exit 1) before applying it, naming the
    step, and the step-1 checkpoint survives even with keep_last 1."""
    out = tmp_path / "run"
    code = pretrain(tiny_config, pool / "dataset.json", out, "--optim.lr", "1e4", "--optim.steps", "3",
                    "--optim.warmup_steps", "0", "--run.checkpoint_every", "1", "--run.keep_last", "1")
    err = capsys.readouterr().err
    assert code == 1
    assert "non-finite" in err and "step 2" in err and "Traceback" not in err
    clip = yaml.safe_load(tiny_config.read_text()).get("optim", {}).get("grad_clip", 3.0)  # the default clips
    assert ("a lower optim.grad_clip (now" in err) == (clip > 0) and ("optim.grad_clip > 0" in err) == (clip == 0), err
    assert checkpoints(out) == ["step_00000001.pt"]
    state = torch.load(out / "checkpoints" / "step_00000001.pt", weights_only=True)
    assert all_finite(state["student"]) and all_finite(state["teacher"])


@pytest.fixture
def poisoned(one_step_run, tmp_path):
    """A finished one-step checkpoint, and a copy of it with one encoder weight set to NaN."""
    state = torch.load(one_step_run / "checkpoints" / "step_00000001.pt", weights_only=True)
    key = next(k for k in state["teacher"] if k.startswith("encoder.") and k.endswith("weight"))
    state["teacher"][key][0] = float("nan")
    path = tmp_path / "poisoned.pt"
    torch.save(state, path)
    return path, key


def test_export_refuses_non_finite_weights(poisoned, tmp_path, capsys):
    path, key = poisoned
    assert main(["export-encoder", str(path), str(tmp_path / "encoder.pt")]) == 2
    err = capsys.readouterr().err
    assert "not finite" in err and key.removeprefix("encoder.") in err
    assert not (tmp_path / "encoder.pt").exists()


def test_loading_non_finite_weights_is_refused(poisoned, tmp_path):
    """Fine-tuning initialisation and the probe load encoders through load_encoder_weights."""
    path, _ = poisoned
    sizes = {k: v for k, v in TINY["encoder"].items() if k != "token_stage"}
    with pytest.raises(ValueError, match="not finite"):
        load_encoder_weights(swinunetr_for(EncoderConfig(**sizes)), path)
    exported = torch.load(path, weights_only=True)  # the same weights as an export file
    blob = {"state_dict": {"swinViT." + k[len("encoder."):]: v for k, v in exported["teacher"].items()
                           if k.startswith("encoder.")}, "encoder": EncoderConfig(**sizes).to_dict()}
    torch.save(blob, tmp_path / "exported.pt")
    with pytest.raises(ValueError, match="not finite"):
        load_encoder_weights(swinunetr_for(EncoderConfig(**sizes)), tmp_path / "exported.pt")


def test_finetune_divergence_fails_without_outputs(seg_dir, tmp_path, capsys):
    config = tmp_path / "ft.yaml"
    config.write_text(yaml.safe_dump(TINY_FT))
    out = tmp_path / "ft"
    code = main(["finetune", "--config", str(config), "--data.source", str(seg_dir / "dataset.json"),
                 "--run.out_dir", str(out), "--train.lr", "1e30", "--train.steps", "4", "--train.warmup_steps", "0"])
    err = capsys.readouterr().err
    assert code == 1 and "non-finite" in err and "Traceback" not in err
    assert "or train.grad_clip > 0" in err  # fine-tuning does not clip by default
    assert not (out / "metrics.json").exists() and not (out / "model.pt").exists()
    code = main(["finetune", "--config", str(config), "--data.source", str(seg_dir / "dataset.json"),
                 "--run.out_dir", str(out), "--train.lr", "1e30", "--train.steps", "4", "--train.warmup_steps", "0",
                 "--train.grad_clip", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "a lower train.grad_clip (now 1)" in err and "grad_clip > 0" not in err, err


def finetune_argv(tmp_path, source, out, *extra):
    """`s2dc finetune` with the tiny fine-tuning options, one step."""
    config = tmp_path / "ft.yaml"
    config.write_text(yaml.safe_dump(TINY_FT))
    return ["finetune", "--config", str(config), "--data.source", str(source), "--run.out_dir", str(out),
            "--train.steps", "1", *extra]


def test_validation_labels_holding_no_class_are_refused_before_training(seg_dir, tmp_path, capsys):
    """Validation labels that hold none of the classes (every voxel background) give no Dice at all: the run trained
    to its end, then failed with exit 1 as a diverged run would. It is bad input: refused before any step is trained
    (exit 2), naming the dataset json, the validation cases and their label files and the classes expected, and no
    model.pt, metrics.json, curves or checkpoint are written."""
    import nibabel as nib

    source = tmp_path / "data"
    shutil.copytree(seg_dir, source)
    doc = json.loads((source / "dataset.json").read_text())
    for case in doc["validation"]:
        label = nib.load(source / case["label"])
        nib.save(nib.Nifti1Image(np.zeros(label.shape, np.uint8), label.affine), str(source / case["label"]))
    out = tmp_path / "ft"
    capsys.readouterr()
    assert main(finetune_argv(tmp_path, source / "dataset.json", out)) == 2
    err = capsys.readouterr().err
    assert str(source / "dataset.json") in err and "diverged" not in err and "Traceback" not in err, err
    assert all(Path(case["label"]).name in err for case in doc["validation"]), err
    assert "'bright'" in err and "'dark'" in err and "validation" in err, err
    assert not out.exists(), list(out.iterdir())  # the folder it made, removed again


def test_finetune_never_replaces_a_users_file_named_like_its_outputs(finished_finetuning, tmp_path, capsys):
    """A run folder is a fine-tuning run's only if an earlier run wrote it (its split.json): a user's model.pt (here
    the very encoder the run starts from), metrics.json or split.json (a user's own folds, alone in the folder) in
    run.out_dir is refused, the file left as it was; so is an encoder to start from inside an earlier run's folder
    (the run would replace it)."""
    source, finished = finished_finetuning  # a one-step run of ``source`` (finetune_argv's)
    torch.manual_seed(0)
    sizes = EncoderConfig(**{k: v for k, v in TINY_FT["model"].items() if k in ("feature_size", "num_heads",
                                                                              "window_size")})
    blob = {"state_dict": {f"swinViT.{k}": v for k, v in swinunetr_for(sizes).swinViT.state_dict().items()},
            "encoder": sizes.to_dict()}
    for name in ("model.pt", "metrics.json", "split.json"):
        out = tmp_path / name.replace(".", "_")
        out.mkdir()
        torch.save(blob, out / "model.pt") if name == "model.pt" else (out / name).write_text('{"mine": 1}')
        before = (out / name).read_bytes()
        init = ["--model.init", str(out / "model.pt")] if name == "model.pt" else []
        capsys.readouterr()
        assert main(finetune_argv(tmp_path, source, out, *init)) == 2, name
        err = capsys.readouterr().err
        assert "run.out_dir" in err and name in err, err
        assert (out / name).read_bytes() == before and sorted(p.name for p in out.iterdir()) == [name]
    out = shutil.copytree(finished, tmp_path / "run")  # an earlier run's own folder, but the encoder to start from
    # lies in it: refused
    torch.save(blob, out / "model.pt")  # an encoder saved over the run's model
    before = (out / "model.pt").read_bytes()
    capsys.readouterr()
    assert main(finetune_argv(tmp_path, source, out, "--model.init", str(out / "model.pt"))) == 2
    assert "model.init" in capsys.readouterr().err and (out / "model.pt").read_bytes() == before


def test_two_fine_tuning_runs_never_share_a_folder(finished_finetuning, tmp_path, capsys):
    """While a run holds run.out_dir, another run into it is refused (exit 2), naming the folder; nothing of the
    holder's is touched."""
    from s2dc.train.checkpoint import lock_folder

    source, finished = finished_finetuning  # a one-step run of ``source`` (finetune_argv's)
    out = shutil.copytree(finished, tmp_path / "ft")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    held = lock_folder(out)
    try:
        capsys.readouterr()
        assert main(finetune_argv(tmp_path, source, out, "--run.seed", "1")) == 2
        err = capsys.readouterr().err
        assert "in use" in err and str(out) in err, err
    finally:
        held.close()
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"} == before
    assert main(finetune_argv(tmp_path, source, out, "--run.seed", "1")) == 0  # free again


# --------------------------------------------------------------------------- 2-3. run identity and resume


def test_changed_data_is_never_resumed(tiny_config, pool, tmp_path, capsys):
    """A finished run whose pool changed: `auto` refuses naming the file; `if_unchanged` starts afresh and
    moves the old run aside (nothing lost); an unchanged pool resumes (no new step)."""
    out = tmp_path / "run"
    assert pretrain(tiny_config, pool / "dataset.json", out, "--optim.steps", "2") == 0
    old = torch.load(out / "checkpoints" / "step_00000002.pt", weights_only=True)["teacher"]
    finished = (out / "summary.json").read_text()
    assert pretrain(tiny_config, pool / "dataset.json", out, "--optim.steps", "2") == 0  # same data: finished
    assert (out / "summary.json").read_text() == finished  # nothing trained: the run's summary stands
    assert torch.equal(torch.load(out / "checkpoints" / "step_00000002.pt", weights_only=True)["teacher"][
        next(iter(old))], old[next(iter(old))]) and not (out / "previous").exists()
    capsys.readouterr()

    write_volume(pool / "imagesTr" / "case1.nii.gz", np.random.default_rng(7))
    assert pretrain(tiny_config, pool / "dataset.json", out, "--optim.steps", "2") == 2
    err = capsys.readouterr().err
    assert "case1.nii.gz" in err and "--run.resume never" in err and "Traceback" not in err

    assert pretrain(tiny_config, pool / "dataset.json", out, "--optim.steps", "2", "--run.resume", "if_unchanged") == 0
    err = capsys.readouterr().err
    assert err.count("was moved to") == 1 and "case1.nii.gz" in err.split("was moved to")[1], err  # where, and why
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from"] is None and len(summary["losses_this_run"]) == 2
    new = torch.load(out / "checkpoints" / "step_00000002.pt", weights_only=True)["teacher"]
    assert any(not torch.equal(new[k], old[k]) for k in old)
    (previous,) = (out / "previous").iterdir()
    kept = torch.load(previous / "checkpoints" / "step_00000002.pt", weights_only=True)["teacher"]
    assert all(torch.equal(kept[k], old[k]) for k in old)


def test_data_written_again_with_the_same_bytes_keeps_the_run(tiny_config, pool, tmp_path, capsys):
    """A twin made again rewrites every volume with the same bytes (new times, new inodes): the finished run stands
    (nothing trained, nothing moved aside); a volume whose bytes changed but not its size is still another run's."""
    from s2dc.files import file_stamp

    out = tmp_path / "run"
    assert pretrain(tiny_config, pool / "dataset.json", out, "--optim.steps", "2") == 0
    finished = (out / "summary.json").read_text()
    volumes = sorted((pool / "imagesTr").glob("*.nii.gz"))
    stamps = [file_stamp(path) for path in volumes]
    for path in volumes:
        data = path.read_bytes()
        path.unlink()
        path.write_bytes(data)
    assert all(file_stamp(path) != stamp for path, stamp in zip(volumes, stamps))
    capsys.readouterr()
    assert pretrain(tiny_config, pool / "dataset.json", out, "--optim.steps", "2") == 0
    captured = capsys.readouterr()
    assert captured.err.count("with the same bytes: the run stands") == 1, captured.err  # once, not per file read
    assert "already at step 2: nothing trained" in captured.out, captured.out
    assert (out / "summary.json").read_text() == finished and not (out / "previous").exists()

    moved = tmp_path / "moved"  # the finished run's folder moved: the command names the checkpoint where it is now
    shutil.move(str(out), str(moved))
    assert pretrain(tiny_config, pool / "dataset.json", moved, "--optim.steps", "2") == 0
    said = capsys.readouterr().out
    assert f"nothing trained; checkpoint {moved / 'checkpoints' / 'step_00000002.pt'}" in said, said
    shutil.move(str(moved), str(out))

    data = bytearray(volumes[0].read_bytes())
    data[4] ^= 0xFF  # the gzip header's modification time: a readable volume, the same size, other bytes
    volumes[0].write_bytes(bytes(data))
    assert pretrain(tiny_config, pool / "dataset.json", out, "--optim.steps", "2") == 2
    err = capsys.readouterr().err
    assert volumes[0].name in err and "--run.resume never" in err and "Traceback" not in err


@pytest.mark.parametrize("change, key", [
    (["--optim.lr", "0.5"], "optim.lr"),
    (["--encoder.feature_size", "24"], "encoder.feature_size"),
    (["--optim.steps", "9"], "optim.steps"),
])
def test_resume_refuses_a_changed_configuration(tiny_config, volumes_dir, two_step_run, tmp_path, capsys, change, key):
    pool = volumes_dir
    out = shutil.copytree(two_step_run, tmp_path / "run")  # a finished two-step run of the pool
    def stamps():  # every file of the run (the folder lock aside)
        return {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != ".lock"}

    before = stamps()
    capsys.readouterr()
    steps = [] if key == "optim.steps" else ["--optim.steps", "2"]  # an option is given once (s2dc.cli._Parser)
    assert pretrain(tiny_config, pool / "dataset.json", out, *steps, *change) == 2
    err = capsys.readouterr().err
    assert key in err and "--run.resume never" in err and "Traceback" not in err
    assert stamps() == before
    # an explicit checkpoint path is checked the same way
    assert pretrain(tiny_config, pool / "dataset.json", tmp_path / "other", *steps, *change,
                    "--run.resume", str(out / "checkpoints" / "step_00000002.pt")) == 2
    assert key in capsys.readouterr().err


def test_resume_never_moves_the_old_run_aside(tiny_config, pool, tmp_path, capsys):
    """Starting afresh in a used folder leaves no mix: the old files move to previous/<stamp>/, and the message
    says why."""
    out = tmp_path / "run"  # the old run has a checkpoint more than the new one: a mix would keep it
    assert pretrain(tiny_config, pool / "dataset.json", out, "--optim.steps", "2", "--run.checkpoint_every", "1") == 0
    capsys.readouterr()
    assert pretrain(tiny_config, pool / "dataset.json", out, "--optim.steps", "1", "--run.checkpoint_every", "1",
                    "--run.resume", "never") == 0
    assert "was moved to" in (err := capsys.readouterr().err) and "--run.resume never" in err, err
    assert checkpoints(out) == ["step_00000001.pt"]
    (previous,) = (out / "previous").iterdir()
    assert checkpoints(previous) == ["step_00000001.pt", "step_00000002.pt"]
    assert json.loads((previous / "summary.json").read_text())["steps"] == 2


def test_resume_does_not_repeat_logged_steps(tiny_config, pool, tmp_path):
    """A run that logged steps past its last checkpoint and resumes logs each step once."""
    out = tmp_path / "run"
    assert pretrain(tiny_config, pool / "dataset.json", out, "--optim.steps", "3", "--run.checkpoint_every", "2") == 0
    (out / "checkpoints" / "step_00000003.pt").unlink()  # as if killed between logging step 3 and saving it
    assert pretrain(tiny_config, pool / "dataset.json", out, "--optim.steps", "3", "--run.checkpoint_every", "2") == 0
    assert json.loads((out / "summary.json").read_text())["resumed_from"].endswith("step_00000002.pt")
    for tsv in (out / "dvclive" / "plots" / "metrics").rglob("*.tsv"):
        steps = [int(line.split("\t")[0]) for line in tsv.read_text().splitlines()[1:]]
        assert steps == [1, 2, 3], (tsv, steps)


def test_training_inside_a_users_git_repository_leaves_it_untouched(tiny_config, pool, seg_dir, tmp_path,
                                                                       monkeypatch):
    """Pretraining and fine-tuning started inside a Git repository without DVC write their run folders and nothing
    else: no `.dvc/` is initialised and nothing is staged in the user's index (DVCLive 3 runs `dvc init` and stages
    its files wherever it starts)."""
    import subprocess

    repo = tmp_path / "project"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "start"], check=True)
    monkeypatch.chdir(repo)
    assert pretrain(tiny_config, pool / "dataset.json", repo / "pre", "--optim.steps", "1") == 0
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(TINY_FT))
    assert main(["finetune", "--config", str(tmp_path / "ft.yaml"), "--data.source", str(seg_dir / "dataset.json"),
                 "--run.out_dir", str(repo / "ft"), "--train.steps", "1"]) == 0
    assert sorted(p.name for p in repo.iterdir()) == [".git", "ft", "pre"]
    status = subprocess.run([*git, "status", "--porcelain"], check=True, capture_output=True, text=True).stdout
    assert status.splitlines() == ["?? ft/", "?? pre/"]
    assert (repo / "pre" / "dvclive" / "plots" / "metrics" / "pretrain" / "loss.tsv").exists()
    assert (repo / "ft" / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv").exists()


def test_finetune_never_clears_a_folder_that_is_not_a_fine_tuning_run(one_step_run, seg_dir, tmp_path, capsys):
    """`s2dc finetune --run.out_dir DIR` replaces an earlier fine-tuning run's outputs in DIR; a DIR that holds
    anything else (here the pretraining run whose checkpoint it starts from: its curves would be deleted, its
    dvclive/metrics.json replaced) is refused before anything is written, naming the option and a file."""

    def files(folder):
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    pre = shutil.copytree(one_step_run, tmp_path / "pre")  # a finished one-step run
    before = files(pre)
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(TINY_FT))
    argv = ["finetune", "--config", str(tmp_path / "ft.yaml"), "--data.source", str(seg_dir / "dataset.json"),
            "--train.steps", "1", "--model.init", str(pre / "checkpoints" / "step_00000001.pt")]
    capsys.readouterr()
    assert main([*argv, "--run.out_dir", str(pre)]) == 2
    err = capsys.readouterr().err
    assert "run.out_dir" in err and str(pre) in err and "run.json" in err, err
    assert files(pre) == before
    assert main([*argv, "--run.out_dir", str(tmp_path / "ft")]) == 0
    assert main([*argv, "--run.out_dir", str(tmp_path / "ft")]) == 0  # its own earlier run is replaced
    # its metrics.json edited by hand since (a score corrected): kept, as the workflow and `s2dc probe --out` keep
    # theirs (it was replaced without a word)
    metrics = tmp_path / "ft" / "metrics.json"
    edited = metrics.read_text().replace('"seed": 0', '"seed": 5', 1)
    assert edited != metrics.read_text()
    metrics.write_text(edited)
    capsys.readouterr()
    assert main([*argv, "--run.out_dir", str(tmp_path / "ft")]) == 2
    err = capsys.readouterr().err
    assert "run.out_dir" in err and str(metrics) in err and "result_sha256 differs" in err, err
    assert metrics.read_text() == edited
    # edited and its checksum deleted with the edit (this s2dc records its code, and its checksum with it)
    doc = json.loads(edited)
    del doc["result_sha256"]
    metrics.write_text(json.dumps(doc))
    assert main([*argv, "--run.out_dir", str(tmp_path / "ft")]) == 2
    err = capsys.readouterr().err
    assert "run.out_dir" in err and str(metrics) in err and "result_sha256 is missing" in err, err
    assert json.loads(metrics.read_text()) == doc


def test_the_fine_tuning_engine_itself_never_clears_a_folder_of_something_else(seg_dir, tmp_path):
    """The library call (`s2dc.downstream.engine.finetune`, which the sweep's workers make) refuses as the command
    does: a run.out_dir holding a user's file is left as it was, the error naming the option and the file."""
    from s2dc.downstream.engine import finetune
    from s2dc.train.finetune_config import build_config

    out = tmp_path / "mine"
    (out / "dvclive").mkdir(parents=True)
    (out / "notes.txt").write_text("my notes")
    (out / "dvclive" / "metrics.json").write_text("{}")
    values = {**TINY_FT, "train": {**TINY_FT["train"], "steps": 1},
              "data": {**TINY_FT["data"], "source": str(seg_dir / "dataset.json")},
              "run": {**TINY_FT["run"], "out_dir": str(out)}}
    with pytest.raises(ValueError, match="run.out_dir") as refused:
        finetune(build_config(values))
    assert "notes.txt" in str(refused.value) and str(out) in str(refused.value)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["dvclive", "dvclive/metrics.json",
                                                                             "notes.txt"]
    assert (out / "dvclive" / "metrics.json").read_text() == "{}"


# --------------------------------------------------------------------------- 4. export never overwrites its input


def test_export_never_overwrites_a_file_that_is_not_an_export(one_step_run, tmp_path, capsys):
    out = shutil.copytree(one_step_run, tmp_path / "run")  # a finished one-step run
    ckpt = out / "checkpoints" / "step_00000001.pt"
    digest = ckpt.read_bytes()
    assert main(["export-encoder", str(ckpt), str(ckpt)]) == 2
    assert "itself" in capsys.readouterr().err and ckpt.read_bytes() == digest
    other = tmp_path / "notes.pt"
    other.write_text("my notes")
    assert main(["export-encoder", str(ckpt), str(other)]) == 2
    assert "not an exported encoder" in capsys.readouterr().err and other.read_text() == "my notes"
    shutil.copy(ckpt, tmp_path / "copy.pt")
    assert main(["export-encoder", str(ckpt), str(tmp_path / "copy.pt")]) == 2
    encoder = tmp_path / "encoder.pt"
    assert main(["export-encoder", str(ckpt), str(encoder)]) == 0
    assert main(["export-encoder", str(ckpt), str(encoder)]) == 0  # an earlier export may be replaced
    # into the run's own checkpoints/ (a name like a checkpoint's): the next export and the run's resume read it as
    # a checkpoint and failed, misleadingly; refused, naming the run's folder
    inside = out / "checkpoints" / "step_00000099.pt"
    assert main(["export-encoder", str(out), str(inside)]) == 2
    assert f"lies in the run's folder '{out}'" in capsys.readouterr().err and not inside.exists()


def test_refused_export_keeps_the_earlier_export(one_step_run, tmp_path, capsys):
    """An export that fails its verification (a teacher with a tensor SwinUNETR lacks) is refused, exit 2, and the
    earlier export at the output is kept byte for byte: it was saved over and then deleted (data loss); no
    temporary file is left beside it."""
    out = shutil.copytree(one_step_run, tmp_path / "run")  # a finished one-step run (an export locks its folder)
    ckpt = out / "checkpoints" / "step_00000001.pt"
    encoder = tmp_path / "exports" / "encoder.pt"
    assert main(["export-encoder", str(ckpt), str(encoder)]) == 0
    before = encoder.read_bytes()
    state = torch.load(ckpt, weights_only=True)
    state["teacher"]["encoder.extra_tensor"] = torch.zeros(3)
    odd = tmp_path / "odd.pt"
    torch.save(state, odd)
    capsys.readouterr()
    assert main(["export-encoder", str(odd), str(encoder)]) == 2
    err = capsys.readouterr().err
    assert "extra_tensor" in err and f"'{encoder}'" in err and "Traceback" not in err
    assert encoder.read_bytes() == before
    assert sorted(p.name for p in encoder.parent.iterdir()) == ["encoder.pt"]


def test_synth_never_replaces_a_folder_it_did_not_write(tmp_path, capsys):
    """`s2dc synth --out DIR` replaces DIR only when it holds nothing but a synthetic dataset that s2dc synth wrote
    (its mark, its dataset.json, which Snakemake deletes before rerunning the job, and its case files); a folder with
    anything else (a user's data, a file added to a twin), or with case files named like the twin's but no mark of
    s2dc synth, is refused, named with a file, and left as it was."""

    def files(folder):
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    args = ["--kind", "btcv", "--cases", "2", "--shape", "32", "32", "16"]
    users = tmp_path / "mydata"
    (users / "imagesTr").mkdir(parents=True)
    (users / "notes.txt").write_text("my notes")
    (users / "imagesTr" / "patient1.nii.gz").write_bytes(b"a scan of mine")
    before = files(users)
    assert main(["synth", "--out", str(users), "--seed", "0", *args]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and str(users) in err and "notes.txt" in err, err
    assert files(users) == before and sorted(p.name for p in tmp_path.iterdir()) == ["mydata"]

    msd = tmp_path / "msd"  # a real dataset.json beside files named like the twin's: not s2dc synth's
    (msd / "imagesTr").mkdir(parents=True)
    (msd / "imagesTr" / "case_0000.nii.gz").write_bytes(b"a scan of mine")
    (msd / "dataset.json").write_text('{"name": "Spleen", "training": [{"image": "./imagesTr/case_0000.nii.gz"}]}')
    assert main(["synth", "--out", str(msd), "--seed", "0", *args]) == 2
    assert "dataset.json" in capsys.readouterr().err and (msd / "imagesTr" / "case_0000.nii.gz").exists()

    nnunet = tmp_path / "kits"  # no dataset.json, and files named as the twin's (nnU-Net's own naming): a user's
    (nnunet / "imagesTr").mkdir(parents=True)
    (nnunet / "labelsTr").mkdir()
    (nnunet / "imagesTr" / "case_0001_0000.nii.gz").write_bytes(b"a scan of mine")
    (nnunet / "labelsTr" / "case_0001.nii.gz").write_bytes(b"my segmentation")
    before = files(nnunet)
    assert main(["synth", "--out", str(nnunet), "--seed", "0", *args]) == 2
    assert str(nnunet) in capsys.readouterr().err and files(nnunet) == before

    twin = tmp_path / "twin"
    twin.mkdir()  # an empty folder may be written
    assert main(["synth", "--out", str(twin), "--seed", "0", *args]) == 0
    first = files(twin)
    assert main(["synth", "--out", str(twin), "--seed", "1", *args]) == 0  # its own dataset is replaced
    (twin / "dataset.json").unlink()  # as Snakemake does before it reruns the job
    assert main(["synth", "--out", str(twin), "--seed", "0", *args]) == 0 and files(twin) == first
    (twin / "labelsTr" / "extra.nii.gz").write_bytes(b"added by hand")
    assert main(["synth", "--out", str(twin), "--seed", "1", *args]) == 2
    assert "extra.nii.gz" in capsys.readouterr().err
    assert files(twin) == {**first, "labelsTr/extra.nii.gz": b"added by hand"}


def test_synth_never_replaces_a_file_of_a_twin_that_a_user_listed_or_changed(tmp_path, capsys):
    """A twin's files are s2dc synth's own only as it wrote them: a user's scan listed in the twin's dataset.json,
    or a case file overwritten with a user's volume, is refused by name and kept, with the dataset.json there or
    deleted (as Snakemake deletes it before rerunning the job); so is a dataset.json the user edited."""

    def files(folder):
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    args = ["--kind", "msd_spleen", "--cases", "3", "--shape", "16", "16", "16"]
    twin = tmp_path / "twin"
    assert main(["synth", "--out", str(twin), "--seed", "0", *args]) == 0
    first = files(twin)

    listed = tmp_path / "listed"  # a user's scan added to the twin and listed in its dataset.json
    shutil.copytree(twin, listed)
    shutil.copy(listed / "imagesTr/case_0000.nii.gz", listed / "imagesTr/my_scan.nii.gz")
    doc = json.loads((listed / "dataset.json").read_text())
    doc["training"].append({"image": "./imagesTr/my_scan.nii.gz", "label": "./labelsTr/case_0000.nii.gz"})
    (listed / "dataset.json").write_text(json.dumps(doc))
    before = files(listed)
    assert main(["synth", "--out", str(listed), "--seed", "0", *args]) == 2
    err = capsys.readouterr().err
    assert "my_scan.nii.gz" in err and "dataset.json" in err and files(listed) == before, err
    (listed / "dataset.json").unlink()  # as Snakemake does before it reruns the job: the scan is still the user's
    assert main(["synth", "--out", str(listed), "--seed", "0", *args]) == 2
    assert "my_scan.nii.gz" in capsys.readouterr().err and (listed / "imagesTr/my_scan.nii.gz").exists()

    changed = tmp_path / "changed"  # a case file overwritten with a user's volume, under the twin's own name
    shutil.copytree(twin, changed)
    (changed / "imagesTr/case_0001.nii.gz").write_bytes(first["imagesTr/case_0000.nii.gz"])
    for json_there in (True, False):
        if not json_there:
            (changed / "dataset.json").unlink()
        before = files(changed)
        assert main(["synth", "--out", str(changed), "--seed", "0", *args]) == 2
        err = capsys.readouterr().err
        assert "case_0001.nii.gz" in err and "changed" in err and files(changed) == before, err

    assert main(["synth", "--out", str(twin), "--seed", "1", *args]) == 0  # unchanged: its own, replaced
    assert files(twin) != first


def test_synth_refuses_the_folder_it_runs_in(tmp_path, monkeypatch, capsys):
    """A twin replaces its whole folder, so `s2dc synth --out .` (or `..`, or the same folder spelled `"$PWD"` or
    `sub/..`) is refused naming --out, and nothing is written (it stopped with "PosixPath('.') has an empty name",
    and `--out "$PWD"` left the command's working folder deleted under it)."""
    args = ["--kind", "msd_spleen", "--cases", "2", "--shape", "16", "16", "16", "--seed", "0"]
    here = tmp_path / "here"
    (here / "sub").mkdir(parents=True)
    monkeypatch.chdir(here)
    for out in (".", "..", str(here), "sub/..", "./"):
        assert main(["synth", "--out", out, *args]) == 2, out
        err = capsys.readouterr().err
        assert "--out" in err and "runs in" in err and "Traceback" not in err, err
    assert [p.name for p in tmp_path.iterdir()] == ["here"] and [p.name for p in here.iterdir()] == ["sub"]
    assert main(["synth", "--out", "sub", *args]) == 0  # a folder below it is the twin's own
    assert (here / "sub/dataset.json").is_file() and Path.cwd() == here


# --------------------------------------------------------------------------- 6. option values


@pytest.mark.parametrize("option, value", [
    ("optim.lr", "nan"), ("optim.lr", "-1e-3"), ("optim.lr", "inf"), ("optim.lr", "0"),
    ("optim.weight_decay", "-0.1"), ("optim.grad_clip", "-1"), ("optim.grad_clip", "nan"),
    ("loss.match_temperature", "nan"), ("loss.global_temperature", "0"), ("loss.weight_p2p", "nan"),
    ("loss.weight_global", "inf"), ("loss.bin_score", "nan"), ("loss.sinkhorn_iters", "0"),
    ("views.rotation_deg", "nan"), ("views.rotation_deg", "-5"), ("views.translation_frac", "-0.1"),
    ("views.crop_rotation_deg", "nan"), ("views.crop_translation_frac", "-1"), ("views.intensity_shift", "nan"),
    ("ema.momentum", "nan"), ("ema.momentum", "1"), ("ema.momentum", "1.5"), ("ema.momentum", "-0.1"),
    ("encoder.drop_path_rate", "1.5"), ("run.device", "gpu"), ("run.out_dir", ""),
    ("preprocess.a_min", "nan"),
])
def test_bad_pretrain_option_values_are_named(tiny_config, pool, tmp_path, capsys, option, value):
    out = [] if option == "run.out_dir" else ["--run.out_dir", str(tmp_path / "run")]  # an option is given once
    argv = ["pretrain", "--config", str(tiny_config), "--data.source", str(pool / "dataset.json"), *out,
            f"--{option}={value}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert option in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()



def test_a_teacher_that_never_moves_is_refused(tiny_config, pool, tmp_path, capsys):
    """ema.momentum 1 keeps the teacher at its random initialisation at every step (constant), and with the cosine
    schedule too (which runs from ema.momentum to 1): the run trained, exited 0 and exported the untrained teacher.
    A momentum just below 1 is a legitimate (slow) teacher."""
    for schedule in ("constant", "cosine"):
        assert pretrain(tiny_config, pool / "dataset.json", tmp_path / schedule, "--ema.momentum", "1",
                        "--ema.schedule", schedule) == 2
        err = capsys.readouterr().err
        assert "ema.momentum" in err and "< 1" in err and "Traceback" not in err
        assert not (tmp_path / schedule).exists()
    assert pretrain(tiny_config, pool / "dataset.json", tmp_path / "slow", "--ema.momentum", "0.9999",
                    "--ema.schedule", "cosine", "--optim.steps", "1") == 0

@pytest.mark.parametrize("options, named", [
    # a pool volume is one channel: a two-channel encoder crashed in its first convolution (traceback, exit 1)
    (["--encoder.in_channels", "2"], ["encoder.in_channels"]),
    # one crop per volume and no queue: L_g had no negative, was 0 with no gradient at every step (exit 0)
    (["--views.grid", "1", "--loss.queue_size", "0", "--optim.batch_size", "2"],
     ["loss.weight_global", "views.grid", "loss.queue_size"]),
    # one crop a step: torch's "Expected more than 1 value per channel", naming no option
    (["--views.grid", "1"], ["views.grid", "optim.batch_size"]),
    # one token per matching set: L_p2s's spread over one token was NaN ("try a lower optim.lr", exit 1)
    (["--views.roi_size", "32", "32", "32", "--views.grid", "1", "--encoder.token_stage", "4", "--optim.batch_size",
      "2"], ["views.roi_size", "encoder.token_stage"]),
    # a negative ROI size passed the views' checks and failed later, naming a `min_size` no option has
    (["--views.roi_size", "-64", "64", "32"], ["views.roi_size", ">= 1"]),
])
def test_pretrain_options_that_cannot_train_are_named(tiny_config, pool, tmp_path, capsys, options, named):
    argv = ["pretrain", "--config", str(tiny_config), "--data.source", str(pool / "dataset.json"),
            "--run.out_dir", str(tmp_path / "run"), *options]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert all(name in err for name in named) and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option, value", [
    ("train.lr", "nan"), ("train.weight_decay", "inf"), ("train.grad_clip", "-1"), ("train.encoder_lr_scale", "nan"),
    ("eval.overlap", "nan"), ("run.device", "gpu"), ("run.out_dir", ""), ("data.label_ratio", "nan"),
])
def test_bad_finetune_option_values_are_named(seg_dir, tmp_path, capsys, option, value):
    out = [] if option == "run.out_dir" else ["--run.out_dir", str(tmp_path / "ft")]  # an option is given once
    argv = ["finetune", "--data.source", str(seg_dir / "dataset.json"), *out, f"--{option}={value}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert option in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_cuda_without_a_gpu_is_a_clear_error(tiny_config, pool, seg_dir, tmp_path, capsys, command):
    source = pool / "dataset.json" if command == "pretrain" else seg_dir / "dataset.json"
    extra = ["--config", str(tiny_config)] if command == "pretrain" else []
    assert main([command, *extra, "--data.source", str(source), "--run.out_dir", str(tmp_path / "x"),
                 "--run.device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "run.device" in err and "CUDA" in err and "Traceback" not in err


# --------------------------------------------------------------------------- 7. volumes checked before step 1


@pytest.mark.parametrize("workers", [0, 2])
def test_a_bad_volume_among_good_ones_fails_before_training(tiny_config, pool, tmp_path, capsys, workers):
    (pool / "imagesTr" / "case2.nii.gz").write_bytes(b"not a nifti")
    out = tmp_path / "run"
    assert pretrain(tiny_config, pool / "dataset.json", out, "--data.workers", str(workers)) == 2
    err = capsys.readouterr().err
    assert "case2.nii.gz" in err and "Traceback" not in err and len(err.strip().splitlines()) <= 3
    assert not (out / "checkpoints").exists() or checkpoints(out) == []


def test_out_of_range_label_values_are_shown(seg_dir, tmp_path, capsys):
    """A label with values beyond the json's classes names exactly those values (not the first few found)."""
    import nibabel as nib

    folder = tmp_path / "seg"
    shutil.copytree(seg_dir, folder)
    label = nib.load(str(folder / "labelsTr" / "train2.nii.gz"))
    values = np.asarray(label.dataobj).copy()
    values.flat[:13] = np.arange(13)  # classes 0..2 are declared; 3..12 are not
    nib.save(nib.Nifti1Image(values, label.affine), str(folder / "labelsTr" / "train2.nii.gz"))
    config = tmp_path / "ft.yaml"
    config.write_text(yaml.safe_dump(TINY_FT))
    assert main(["finetune", "--config", str(config), "--data.source", str(folder / "dataset.json"),
                 "--run.out_dir", str(tmp_path / "ft")]) == 2
    err = capsys.readouterr().err
    assert "train2.nii.gz" in err and "[3, 4, 5, 6, 7, 8, 9, 10, 11, 12]" in err


def test_interrupted_checkpoint_writes_leave_no_temp_files(tiny_config, pool, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    stale = out / "checkpoints" / ".step_00000001.pt.k3j2l1.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert pretrain(tiny_config, pool / "dataset.json", out, "--optim.steps", "1") == 0
    assert not stale.exists()
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_00000001.pt"]


def test_a_full_disk_while_checkpointing_is_an_error_naming_the_file(tiny_config, pool, tmp_path, capsys, monkeypatch):
    """torch.save reports a write that fails (a full disk) as a bare RuntimeError ("unexpected pos N vs M"): the run
    stops with a message naming the checkpoint and the disk's error, no traceback, and leaves no temporary file; a
    rerun with room completes."""
    import errno
    import io

    from s2dc.train import checkpoint

    class FullDisk(io.FileIO):
        def write(self, data):
            if self.tell() + len(memoryview(data).cast("B")) > 4096:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(data)

    out = tmp_path / "run"
    def full_disk_open(file, mode="r", *args, **kwargs):  # the checkpoint module's binary writes fill the disk
        return FullDisk(file, mode) if mode == "wb" else open(file, mode, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "open", full_disk_open, raising=False)
    assert pretrain(tiny_config, pool / "dataset.json", out, "--optim.steps", "1") == 1  # the machine's, not a user's mistake
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert "No space left on device" in err and "step_00000001.pt" in err and "unexpected pos" not in err, err
    assert list((out / "checkpoints").iterdir()) == []
    assert pretrain(tiny_config, pool / "dataset.json", out, "--optim.steps", "1") == 0
    assert checkpoints(out) == ["step_00000001.pt"]


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), SystemExit(143)])
def test_a_checkpoint_write_stopped_by_a_signal_stops_as_the_signal_says(tmp_path, monkeypatch, stop):
    """Ctrl-C or SIGTERM (exit 143, s2dc.cli.entry) arriving while torch.save writes stops the run as that signal,
    not as torch's RuntimeError ("unexpected pos"), and leaves no temporary file."""
    import io

    from s2dc.train import checkpoint
    from s2dc.train.checkpoint import atomic_save

    class Stopped(io.FileIO):
        def write(self, data):
            if self.tell() > 1000:
                raise stop
            return super().write(data)

    monkeypatch.setattr(checkpoint, "open", Stopped, raising=False)
    with pytest.raises(type(stop)) as raised:
        atomic_save({"w": torch.zeros(100_000)}, tmp_path / "step_00000001.pt")
    assert raised.value is stop
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- 8. half-precision L_p2p


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("temperature", [0.01, 0.005])
def test_p2p_loss_in_half_precision_is_finite_and_matches_fp32(dtype, temperature):
    gen = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(2, 27, 16, generator=gen), dim=-1)
    k = torch.nn.functional.normalize(q + 0.05 * torch.randn(2, 27, 16, generator=gen), dim=-1)
    gt = torch.eye(27, dtype=torch.bool).expand(2, -1, -1)
    reference = p2p_loss(q, k, gt, "dual_softmax", "positive_negative", temperature)
    half = p2p_loss(q.to(dtype), k.to(dtype), gt, "dual_softmax", "positive_negative", temperature)
    assert torch.isfinite(half) and half.dtype == torch.float32
    assert half.item() == pytest.approx(reference.item(), rel=0.05)


# --------------------------------------------------------------------------- 9. pretraining folders and exports


def test_export_refuses_a_run_that_stopped_short_unless_asked(tiny_config, pool, tmp_path, capsys):
    """A run that diverged (or was stopped, or still runs) holds a checkpoint short of optim.steps: exporting its
    folder is refused, naming the step; --partial exports it and the file says so. A running run's folder is
    locked: its export waits for no one and is refused. The output is checked before any work: a folder there is
    named as such, and `pretrain --export-encoder` refuses a user's file before it trains."""
    out = tmp_path / "run"
    assert pretrain(tiny_config, pool / "dataset.json", out, "--optim.lr", "1e4", "--optim.steps", "3",
                    "--optim.warmup_steps", "0", "--run.checkpoint_every", "1") == 1
    capsys.readouterr()
    assert main(["export-encoder", str(out), str(tmp_path / "enc.pt")]) == 2
    assert "stopped at step 1 of its 3" in capsys.readouterr().err and not (tmp_path / "enc.pt").exists()
    assert main(["export-encoder", str(out), str(tmp_path / "enc.pt"), "--partial"]) == 0
    assert torch.load(tmp_path / "enc.pt", weights_only=True)["partial"] == {"step": 1, "steps": 3}
    from s2dc.train.checkpoint import lock_folder

    held = lock_folder(out)  # as a run in progress holds it
    try:
        assert main(["export-encoder", str(out), str(tmp_path / "enc2.pt"), "--partial"]) == 2
        assert "is in use by" in capsys.readouterr().err
    finally:
        held.close()
    (tmp_path / "folder.pt").mkdir()
    assert main(["export-encoder", str(out), str(tmp_path / "folder.pt"), "--partial"]) == 2
    assert f"'{tmp_path / 'folder.pt'}' is a folder" in capsys.readouterr().err
    notes = tmp_path / "notes.pt"
    notes.write_text("my notes")
    assert pretrain(tiny_config, pool / "dataset.json", tmp_path / "fresh", "--export-encoder", str(notes)) == 2
    assert "not an exported encoder" in capsys.readouterr().err and not (tmp_path / "fresh").exists()


def test_resume_is_bit_identical_with_stochastic_depth(tiny_config, pool, tmp_path):
    """Drop-path draws from torch's global generator; the data loader must not (its iterator drew a seed from it at
    every start, so a resumed run was one draw off the uninterrupted one)."""
    common = ["--optim.steps", "4", "--run.checkpoint_every", "2", "--encoder.drop_path_rate", "0.2"]
    assert pretrain(tiny_config, pool / "dataset.json", tmp_path / "a", *common) == 0
    assert pretrain(tiny_config, pool / "dataset.json", tmp_path / "b", *common, "--run.resume",
                    str(tmp_path / "a" / "checkpoints" / "step_00000002.pt")) == 0
    a, b = (torch.load(tmp_path / r / "checkpoints" / "step_00000004.pt", weights_only=True) for r in "ab")
    assert all(torch.equal(a["teacher"][k], b["teacher"][k]) for k in a["teacher"])


def test_a_checkpoint_of_other_code_is_never_resumed_silently(tiny_config, volumes_dir, two_step_run, tmp_path, capsys):
    """run.json says what the run is now, but each checkpoint records what made it: a checkpoint whose identity
    differs (older code) is not continued by a plain rerun."""
    pool = volumes_dir
    out = shutil.copytree(two_step_run, tmp_path / "run")  # a finished two-step run of the pool
    ckpt = out / "checkpoints" / "step_00000002.pt"
    state = torch.load(ckpt, weights_only=False)
    state["identity"] = {**state["identity"], "code": "0" * 64}
    torch.save(state, ckpt)
    capsys.readouterr()
    assert pretrain(tiny_config, pool / "dataset.json", out, "--optim.steps", "2") == 2
    err = capsys.readouterr().err
    assert f"checkpoint '{ckpt}'" in err and "code" in err and "Traceback" not in err


def test_pretraining_never_takes_a_users_files_for_an_earlier_run(tiny_config, pool, tmp_path, capsys):
    """A user's summary.json, dvclive/, run.json (even one that is no JSON object) or `.draft.tmp` in run.out_dir
    are never moved, deleted or reused: the run refuses the folder naming the file; a file as run.out_dir and a
    resume checkpoint that is no checkpoint are clear errors."""
    cases = {"summary.json": '{"accuracy": 0.93}', "run.json": "not json, my notes", "dvclive": None}
    for name, text in cases.items():
        folder = tmp_path / name.replace(".", "_")
        folder.mkdir()
        if text is None:
            (folder / name).mkdir()
            (folder / name / "metrics.json").write_text('{"my": "experiment"}')
        else:
            (folder / name).write_text(text)
        (folder / ".draft.tmp").write_text("my draft")
        before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
        for mode in ("auto", "if_unchanged", "never"):
            assert pretrain(tiny_config, pool / "dataset.json", folder, "--run.resume", mode) == 2, (name, mode)
            err = capsys.readouterr().err
            assert f"'{folder}' holds {name}, which no pretraining run wrote" in err and "Traceback" not in err, err
        assert sorted(p.relative_to(folder) for p in folder.rglob("*") if p.name != ".lock") == before
    afile = tmp_path / "afile.txt"
    afile.write_text("my file")
    assert pretrain(tiny_config, pool / "dataset.json", afile) == 2
    assert f"run.out_dir '{afile}' is a file" in capsys.readouterr().err and afile.read_text() == "my file"
    torch.save([1, 2, 3], tmp_path / "list.pt")
    assert pretrain(tiny_config, pool / "dataset.json", tmp_path / "new", "--run.resume", str(tmp_path / "list.pt")) == 2
    assert f"'{tmp_path / 'list.pt'}' is not an s2dc pretraining checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # a refused run leaves no folder it made (not even its lock file)


def test_a_run_computed_in_another_precision_is_never_resumed_silently(tiny_config, volumes_dir, two_step_run,
                                                                       tmp_path, capsys):
    """`run.amp auto` is bf16 on a GPU and fp32 on the CPU: the identity records the precision a run computed in,
    not the option, so a checkpoint made in bf16 (here: recorded so) is not continued in fp32 on the CPU, and
    `off` and `auto` on the CPU (both fp32) are one run."""
    pool = volumes_dir
    out = shutil.copytree(two_step_run, tmp_path / "run")  # a finished two-step run of the pool, run.amp auto (TINY's)
    assert "amp" not in TINY["run"]  # auto: the default
    finished = (out / "summary.json").read_text()
    assert pretrain(tiny_config, pool / "dataset.json", out, "--optim.steps", "2", "--run.amp", "off") == 0
    assert (out / "summary.json").read_text() == finished  # finished: nothing to redo, the summary stands
    assert not (out / "previous").exists()
    ckpt = out / "checkpoints" / "step_00000002.pt"
    state = torch.load(ckpt, weights_only=False)
    assert state["identity"]["precision"] == "fp32"
    state["identity"] = {**state["identity"], "precision": "bf16"}  # as `auto` records it on a GPU
    torch.save(state, ckpt)
    run_json = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({"identity": {**run_json["identity"], "precision": "bf16"}}))
    capsys.readouterr()
    assert pretrain(tiny_config, pool / "dataset.json", out, "--optim.steps", "2") == 2
    err = capsys.readouterr().err
    assert "precision: 'bf16' in the run, 'fp32' now" in err and "Traceback" not in err


def test_a_run_folder_given_as_the_checkpoint_to_resume_is_named_a_folder(tiny_config, volumes_dir, two_step_run, tmp_path,
                                                                           capsys):
    """`--run.resume <the run's folder>` said the folder "does not exist"; it must say it is a folder and show where
    the checkpoints lie."""
    pool = volumes_dir
    run = two_step_run  # a finished two-step run of the pool (read only)
    capsys.readouterr()
    assert pretrain(tiny_config, pool / "dataset.json", tmp_path / "again", "--run.resume", str(run)) == 2
    err = capsys.readouterr().err
    assert f"'{run}' is a folder" in err and "checkpoints" in err and "does not exist" not in err, err


def test_a_run_resumed_at_its_last_step_elsewhere_names_a_checkpoint_that_exists(tiny_config, volumes_dir, two_step_run,
                                                                                  tmp_path):
    """Resuming a finished run's last checkpoint into a new folder trains no step and saves nothing there; its
    summary.json named `<new folder>/checkpoints/step_<last>.pt`, which does not exist (the sweep fine-tunes from that
    field). It must name the checkpoint that holds the weights."""
    pool = volumes_dir
    first = two_step_run  # a finished two-step run of the pool (read only)
    last = first / "checkpoints" / "step_00000002.pt"
    again = tmp_path / "again"
    assert pretrain(tiny_config, pool / "dataset.json", again, "--optim.steps", "2", "--run.resume", str(last)) == 0
    summary = json.loads((again / "summary.json").read_text())
    assert Path(summary["checkpoint"]).is_file(), summary["checkpoint"]
    assert Path(summary["checkpoint"]).resolve() == last.resolve()


def test_work_left_by_a_killed_process_is_removed_and_a_folder_renamed_aside_put_back(tmp_path):
    """`files.remove_abandoned`: of the work siblings of a process of this host that is gone, a `.tmp` goes and an
    `.old` (what `replace_folder` had renamed aside when it was killed) is put back where nothing replaced it; a
    running process's are kept, and with a mark only folders that hold it are touched."""
    import socket
    import subprocess
    import sys

    from s2dc.files import remove_abandoned

    host = socket.gethostname()
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        made = {}
        for name in (f".data.{host}.{dead}.old", f".data.{host}.{dead}.tmp", f".kept.{host}.{dead}.old",
                     f".data.{host}.{alive.pid}.tmp", f".data.elsewhere.{dead}.tmp", f".x.pt.{host}.{dead}.tmp"):
            made[name] = tmp_path / name
            if name.endswith(".pt." + f"{host}.{dead}.tmp"):
                made[name].write_bytes(b"half a cache entry")
            else:
                made[name].mkdir()
                (made[name] / "what.txt").write_text(name)
        (tmp_path / "kept").mkdir()  # replaced after all: its .old is stale
        remove_abandoned(tmp_path)
        assert (tmp_path / "data" / "what.txt").read_text() == f".data.{host}.{dead}.old"
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            ["data", "kept", f".data.{host}.{alive.pid}.tmp", f".data.elsewhere.{dead}.tmp"])

        (tmp_path / f".y.{host}.{dead}.tmp").mkdir()
        remove_abandoned(tmp_path, mark="MADE_HERE")  # unmarked: not ours to remove
        assert (tmp_path / f".y.{host}.{dead}.tmp").is_dir()
    finally:
        alive.kill()
        alive.wait()


def test_every_write_in_progress_is_named_one_way_and_cleaned_up_one_way(tmp_path, monkeypatch):
    """One naming of work in progress (``.<name>.<host>.<pid>.tmp``, a host's name may hold dots) and one clean-up:
    this host's dead processes' siblings of the targets asked for go, a running one's, another host's and a user's
    stay; under a run folder's lock (``every_host``) every temporary of the targets goes, whatever its host."""
    import socket
    import subprocess
    import sys

    from s2dc.files import atomic_write_bytes, is_abandoned, remove_abandoned, work_sibling
    from s2dc.train.checkpoint import atomic_save

    monkeypatch.setattr(socket, "gethostname", lambda: "node7.cluster.org")
    seen = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (seen.append(Path(src).name), real_replace(src, dst)))
    atomic_write_bytes(tmp_path / "a.json", b"{}")
    atomic_save({"x": 1}, tmp_path / "step_00000001.pt")
    assert seen == [f".a.json.node7.cluster.org.{os.getpid()}.tmp",
                    f".step_00000001.pt.node7.cluster.org.{os.getpid()}.tmp"]
    assert work_sibling(tmp_path / "a.json").name == seen[0]

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    names = {"dead": f".a.png.node7.cluster.org.{dead}.tmp", "alive": f".a.png.node7.cluster.org.{os.getpid()}.tmp",
             "elsewhere": f".a.png.node8.cluster.org.{dead}.tmp", "other target": f".a.txt.node7.cluster.org.{dead}.tmp",
             "user": f".a.png.{dead}.tmp", "nested": f"..a.png.node7.cluster.org.{dead}.tmp.node7.cluster.org.{dead}.tmp"}
    for name in names.values():
        (tmp_path / name).write_text("left")
    assert {k for k, n in names.items() if is_abandoned(tmp_path / n, "*.png")} == {"dead", "nested"}
    assert {k for k, n in names.items() if is_abandoned(tmp_path / n, "*.png", every_host=True)} == {
        "dead", "alive", "elsewhere", "user", "nested"}
    remove_abandoned(tmp_path, "*.png")
    assert {k for k, n in names.items() if (tmp_path / n).exists()} == {"alive", "elsewhere", "other target", "user"}
    remove_abandoned(tmp_path, "*.png", every_host=True)
    assert {k for k, n in names.items() if (tmp_path / n).exists()} == {"other target"}


def test_every_atomic_write_reaches_the_disk_before_its_rename_and_the_rename_after_it(tmp_path, monkeypatch):
    """A power loss after a rename can leave an empty or truncated file (ext4 without data=ordered, XFS) unless the
    data is fsynced before the rename, and loses the rename itself unless its folder is fsynced after it: so
    atomic_write_bytes, atomic_save, replace_all and replace_folder fsync what they rename in (a folder: each file
    and the folder), rename it, then fsync the folder it went into."""
    from s2dc.files import atomic_write_bytes, replace_folder
    from s2dc.recorded import replace_all
    from s2dc.train.checkpoint import atomic_save

    tmp_path = tmp_path.resolve()  # as /proc names what a descriptor is open on
    events, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)

    def written_durably(write, *targets: Path, inside: tuple[str, ...] = ()):
        events.clear()
        write()
        for target in targets:
            at, renamed = next((i, e) for i, e in enumerate(events) if e[0] == "replace" and e[2] == str(target))
            before, after = events[:at], events[at + 1:]
            for path in (renamed[1], *(f"{renamed[1]}/{name}" for name in inside)):
                assert ("fsync", path) in before, (path, events)
            assert ("fsync", str(target.parent)) in after, (target, events)

    written_durably(lambda: atomic_write_bytes(tmp_path / "a.json", b"{}"), tmp_path / "a.json")
    written_durably(lambda: atomic_save({"x": 1}, tmp_path / "ck" / "step_00000001.pt"),
                    tmp_path / "ck" / "step_00000001.pt")
    written_durably(lambda: replace_all(tmp_path / "r", {"a.md": b"a", "sub/b.md": b"b"}),
                    tmp_path / "r" / "a.md", tmp_path / "r" / "sub" / "b.md")
    new = tmp_path / "new"
    (new / "sub").mkdir(parents=True)
    (new / "sub" / "x.txt").write_text("x")
    written_durably(lambda: replace_folder(new, tmp_path / "folder"), tmp_path / "folder", inside=("sub", "sub/x.txt"))


def test_a_killed_process_not_yet_reaped_is_gone_not_running(tmp_path):
    """A killed process stays a zombie until its parent reaps it, and where the init of a container does not reap
    orphans (this machine's does not: a pretraining killed with its Snakemake run stays one), that is for ever:
    `os.kill(pid, 0)` succeeds on it, so its work in progress was taken for a running process's and kept (the
    rerun of a killed pretraining job left its `.dvclive.<host>.<pid>.tmp` beside the outputs, under load)."""
    import socket
    import subprocess
    import sys
    import time

    from s2dc.files import is_abandoned, remove_abandoned

    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # not waited for: a zombie once it exits
    try:
        stat = Path(f"/proc/{zombie.pid}/stat")
        for _ in range(500):
            if stat.read_text().rpartition(")")[2].split()[0] == "Z":
                break
            time.sleep(0.01)
        assert stat.read_text().rpartition(")")[2].split()[0] == "Z"
        left = tmp_path / f".dvclive.{socket.gethostname()}.{zombie.pid}.tmp"
        left.mkdir()
        assert is_abandoned(left, "dvclive")
        remove_abandoned(tmp_path)
        assert not left.exists()
    finally:
        zombie.wait()


def test_a_checkpoint_with_a_damaged_byte_is_refused_naming_the_entry(tmp_path):
    """torch.load reads a zip's stored entries without checking their CRC-32: one byte flipped inside a weight's entry
    loaded silently with a changed tensor (fine-tuning and the probe exited 0). The archive's CRCs are checked
    first; the error names the file and the entry."""
    import zipfile

    from s2dc.train.checkpoint import load_checkpoint

    path = tmp_path / "enc.pt"
    torch.save({"w": torch.arange(1000, dtype=torch.float32)}, path)
    assert torch.equal(load_checkpoint(path)["w"], torch.arange(1000, dtype=torch.float32))
    with zipfile.ZipFile(path) as archive:
        entry = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size >= 4000)
    data = bytearray(path.read_bytes())
    start = entry.header_offset + 30 + len(entry.filename.encode()) + int.from_bytes(
        data[entry.header_offset + 28:entry.header_offset + 30], "little")  # local header + name + extra field
    data[start + 2000] ^= 0x40
    path.write_bytes(bytes(data))
    assert not torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(1000, dtype=torch.float32))
    with pytest.raises(ValueError, match=rf"'{path}' is damaged: its entry '{entry.filename}' fails its checksum"):
        load_checkpoint(path)


@pytest.mark.parametrize("name", ["btcv", "cc_ccii", "udpet", "brats23"])
def test_a_model_whose_outputs_are_not_finite_fails_without_outputs(tmp_path, capsys, name):
    """One step at lr 1e30 leaves finite (huge) weights whose outputs are NaN: every task must fail (exit 1) saying so,
    not score them (an argmax of NaN logits is class 0: a Dice of 0, an accuracy of one class), and write neither
    model.pt nor metrics.json."""
    from s2dc.data.preprocess import PreprocessConfig
    from s2dc.data.registry import get
    from s2dc.data.synthetic import write_dataset

    spec = get(name)
    js = write_dataset(tmp_path / "data", name, 6 if spec.task == "classification" else 3, seed=0,
                       shape=(64, 32, 32), val_fraction=0.34)
    preset = PreprocessConfig.from_preset(spec.preset)
    config = tmp_path / "ft.yaml"
    config.write_text(yaml.safe_dump({**TINY_FT, "train": {**TINY_FT["train"], "samples_per_volume": 1}}))
    out = tmp_path / "run"
    code = main(["finetune", "--config", str(config), "--data.source", str(js), "--run.out_dir", str(out),
                 *[word for key, value in preset.intensity_fields().items() for word in (f"--preprocess.{key}", str(value))],
                 "--train.steps", "1", "--train.warmup_steps", "0",
                 "--train.lr", "1e30"])
    err = capsys.readouterr().err
    assert code == 1 and "not finite" in err and "Traceback" not in err, err
    assert not (out / "metrics.json").exists() and not (out / "model.pt").exists()


def test_fine_tuning_refuses_a_pretraining_checkpoint_short_of_its_run_unless_exported_as_partial(
        tiny_config, pool, seg_dir, tmp_path, capsys):
    """A checkpoint from the middle of a pretraining run (one that diverged, was stopped, or still runs) was taken as
    model.init without a word, where `export-encoder` refuses it: fine-tuning refuses it too, naming the step and the
    way to use it anyway (an export with --partial, which the fine-tuning then names as partial)."""
    out = tmp_path / "pre"
    assert pretrain(tiny_config, pool / "dataset.json", out, "--optim.steps", "2", "--run.checkpoint_every", "1") == 0
    middle = out / "checkpoints" / checkpoints(out)[0]
    ft = tmp_path / "ft"
    assert main(finetune_argv(tmp_path, seg_dir / "dataset.json", ft, "--model.init", str(middle))) == 2
    err = capsys.readouterr().err
    assert "stopped at step 1 of its 2" in err and "--partial" in err and "Traceback" not in err, err
    assert not ft.exists()
    assert main(["export-encoder", str(middle), str(tmp_path / "enc.pt"), "--partial"]) == 0
    capsys.readouterr()
    assert main(finetune_argv(tmp_path, seg_dir / "dataset.json", ft, "--model.init", str(tmp_path / "enc.pt"))) == 0
    assert "partial: step 1 of 2" in capsys.readouterr().out


def test_a_checkpoint_is_created_with_the_users_permissions(tmp_path):
    """Checkpoints, exported encoders and model.pt were created 0600 (tempfile.mkstemp), whatever the umask: on a
    cluster's shared project folder no one else of the group could read an encoder. They follow the umask as every
    other file the pipeline writes does (an atomic text write is the independent reference)."""
    import os

    from s2dc.files import atomic_write_text
    from s2dc.train.checkpoint import atomic_save

    previous = os.umask(0o022)
    try:
        atomic_save({"w": torch.zeros(2)}, tmp_path / "model.pt")
        atomic_write_text(tmp_path / "metrics.json", "{}")
        os.umask(0o077)
        atomic_save({"w": torch.zeros(2)}, tmp_path / "private.pt")
    finally:
        os.umask(previous)
    assert (tmp_path / "model.pt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "private.pt").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("fail_second", [False, True], ids=["renames succeed", "second rename fails"])
def test_a_signal_at_any_line_of_replace_folder_leaves_the_old_folder_or_the_new(tmp_path, fail_second):
    """A Ctrl-C may land between any two lines of replace_folder (Python runs its handler there): wherever it lands,
    the target holds the whole old folder or the whole new one, never none while the process lives (a folder renamed
    aside waits for the process to end before remove_abandoned puts it back); the command stops. Before, a signal in
    the instant between a failed rename and the put-back left no folder at the target."""
    import errno

    from s2dc.files import replace_folder

    real_replace = os.replace

    def run(folder: Path, at: int | None):
        def failing_replace(src, dst, *args, **kwargs):
            if fail_second and Path(src) == folder / "new":  # the new folder's rename in, the second
                raise OSError(errno.EIO, "Input/output error")
            return real_replace(src, dst, *args, **kwargs)

        (folder / "target").mkdir(parents=True)
        (folder / "target" / "a.txt").write_text("old")
        (folder / "new").mkdir()
        (folder / "new" / "a.txt").write_text("new")
        os.replace = failing_replace
        try:
            return signal_at_line(at, lambda: replace_folder(folder / "new", folder / "target"))
        finally:
            os.replace = real_replace

    total, raised = run(tmp_path / "dry", None)
    assert total > 10 and (raised is None) is not fail_second
    wrong = []
    for at in range(1, total + 1):
        folder = tmp_path / str(at)
        _, raised = run(folder, at)
        target = folder / "target" / "a.txt"
        found = target.read_text() if target.is_file() else None
        if found not in (["old"] if fail_second else ["old", "new"]) or raised is None:
            wrong.append((at, found, repr(raised)))
    assert not wrong, f"{len(wrong)} of {total} signal places: first {wrong[:3]}"
