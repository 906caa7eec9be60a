"""Pretraining, export and twin-writing input that must never cost a user's work or reuse a stale result: a cache of
other preprocessing code, the run that loses the folder's lock, a killed export's leftovers, files added to a twin,
a twin folder behind a link, export paths inside the run and option values that name nothing."""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch

from conftest import REPO, write_pool
from s2dc import fingerprint
from s2dc.cli import main
from s2dc.data.synthetic import write_dataset
from test_pretrain import pretrain


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return write_pool(tmp_path_factory.mktemp("pool"), 2)


def test_a_cache_written_by_other_preprocessing_code_is_never_read(tmp_path, pool, tiny_config, monkeypatch):
    """The pipeline reruns a pretraining whose code changed in the same run folder (--run.resume if_unchanged): the
    old run goes to previous/, and the fresh one must preprocess with the new code, not read the volumes the old code
    cached there (it trained on the old code's data while its run.json named the new code). A copy of the package
    whose CT window maps to [0, 2] instead of [0, 1] stands for the new code."""
    package = tmp_path / "package"
    shutil.copytree(REPO / "s2dc", package / "s2dc", ignore=shutil.ignore_patterns("__pycache__"))
    source = package / "s2dc/data/preprocess.py"
    text = source.read_text()
    assert text.count("b_min=0.0, b_max=1.0") == 1
    source.write_text(text.replace("b_min=0.0, b_max=1.0", "b_min=0.0, b_max=2.0"))
    out = tmp_path / "run"
    argv = ["pretrain", "--config", str(tiny_config), "--data.source", str(pool / "dataset.json"),
            "--run.out_dir", str(out), "--optim.steps", "1", "--run.resume", "if_unchanged"]
    # the old code: this process's own, its parsed modules kept where the new code's run looks (s2dc.fingerprint)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(fingerprint, "_read_module", functools.lru_cache(fingerprint._read_module.__wrapped__))
    assert main(argv) == 0
    old = torch.load(out / "checkpoints/step_00000001.pt", weights_only=True)["teacher"]
    # entry(): as the `s2dc` command starts (MONAI imported lean, ~5 s less than a plain import on the Zen 3)
    done = subprocess.run([sys.executable, "-c", "from s2dc.cli import entry; entry()", *argv],
                          capture_output=True, text=True,
                          cwd=tmp_path,  # not the checkout, whose s2dc/ `python -c` would import first
                          env={**os.environ, "PYTHONPATH": str(package), "OMP_NUM_THREADS": "1",
                               "XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert done.returncode == 0, done.stderr[-2000:]
    assert list((out / "previous").glob("*/checkpoints/step_00000001.pt")), "the old run was not set aside"
    new = torch.load(out / "checkpoints/step_00000001.pt", weights_only=True)["teacher"]
    assert any(not torch.equal(old[k], new[k]) for k in old), "the new code's run trained on the old code's cache"
    assert len([p for p in (out / "cache").iterdir() if p.is_dir()]) == 2  # one cache per code


def test_the_run_that_loses_the_lock_leaves_the_winners_folder(tmp_path, pool, tiny_config, monkeypatch, capsys):
    """Two pretrainings started at once into a folder that does not exist yet: the one that finds the lock taken
    exits 2 and leaves the folder, its lock and its cache to the one that holds it (it removed them, believing it had
    made the folder, and a third run could then take the lock beside the running one)."""
    import s2dc.train.pretrain as pretrain_module
    from s2dc.train.checkpoint import lock_folder

    out = tmp_path / "run"
    held = []

    def winner_first(folder):  # the other run makes the folder and takes its lock between our two steps
        held.append(lock_folder(folder))
        (folder / "cache").mkdir()
        return lock_folder(folder)

    monkeypatch.setattr(pretrain_module, "lock_folder", winner_first)
    try:
        assert pretrain(tiny_config, pool / "dataset.json", out, "--optim.steps", "1") == 2
        assert "in use by" in capsys.readouterr().err
        assert (out / ".lock").is_file() and (out / "cache").is_dir()
        with pytest.raises(ValueError, match="in use by"):
            lock_folder(out)  # still held by the winner
    finally:
        for handle in held:
            handle.close()


def test_an_export_killed_midway_leaves_nothing_the_next_export_keeps(tmp_path, one_step_run):
    """What a killed `s2dc export-encoder` left beside its output (its work file and the temporary file of the write
    into it, hundreds of MB at scale) is removed by the next export; a running export's, and a user's, are kept."""
    run = one_step_run
    output = tmp_path / "enc" / "encoder.pt"
    output.parent.mkdir()
    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that ran and is gone
    left = [output.parent / f".encoder.pt.{host}.{dead.pid}.tmp",
            output.parent / f"..encoder.pt.{host}.{dead.pid}.tmp.{host}.{dead.pid}.tmp"]
    kept = [output.parent / f".encoder.pt.{host}.{os.getppid()}.tmp", output.parent / ".draft.tmp"]  # a live pid
    for path in (*left, *kept):
        path.write_bytes(b"partial")
    assert main(["export-encoder", str(run), str(output)]) == 0
    assert output.is_file() and not any(p.exists() for p in left) and all(p.exists() for p in kept)


def test_synth_never_deletes_files_named_like_its_own_that_its_dataset_json_does_not_list(tmp_path):
    """A prediction saved as labelsTr/case_0000_pred.nii.gz, or a case added by hand as imagesTr/case_0007.nii.gz,
    is named like a twin's file but is the user's: writing the twin again is refused and both are kept."""
    out = tmp_path / "twin"
    write_dataset(out, "msd_spleen", cases=2, seed=0, shape=(32, 32, 32), val_fraction=0.5)
    added = [out / "labelsTr" / "case_0000_pred.nii.gz", out / "imagesTr" / "case_0007.nii.gz"]
    for path in added:
        shutil.copy(out / "imagesTr" / "case_0000.nii.gz", path)
    with pytest.raises(ValueError, match="case_0000_pred.nii.gz"):
        write_dataset(out, "msd_spleen", cases=2, seed=1, shape=(32, 32, 32), val_fraction=0.5)
    assert all(p.is_file() for p in added)
    for path in added:
        path.unlink()
    write_dataset(out, "msd_spleen", cases=2, seed=1, shape=(32, 32, 32), val_fraction=0.5)  # its own: replaced


def test_synth_writes_through_a_link_to_its_folder(tmp_path):
    """--out a symbolic link to a twin elsewhere (another disk): the twin there is replaced and the link kept; the
    link was replaced by a local folder and left aside as a .old file."""
    elsewhere = tmp_path / "disk" / "twin"
    write_dataset(elsewhere, "msd_spleen", cases=2, seed=0, shape=(32, 32, 32), val_fraction=0.5)
    before = (elsewhere / "imagesTr" / "case_0000.nii.gz").read_bytes()
    link = tmp_path / "work" / "twin"
    link.parent.mkdir()
    link.symlink_to(elsewhere)
    write_dataset(link, "msd_spleen", cases=2, seed=1, shape=(32, 32, 32), val_fraction=0.5)
    assert link.is_symlink() and (elsewhere / "imagesTr" / "case_0000.nii.gz").read_bytes() != before
    assert sorted(p.name for p in link.parent.iterdir()) == ["twin"]


@pytest.mark.parametrize("where", ["the run folder", "its checkpoints", "run.json", "a new file in it"])
def test_an_export_path_the_run_writes_is_refused_before_training(tmp_path, pool, tiny_config, capsys, where):
    """--export-encoder the run folder itself, a file in its checkpoints/, its run.json or any other file in it is
    refused before any step is trained (it was refused after the whole training, and the folder case called the
    folder a checkpoint)."""
    out = tmp_path / "run"
    target = {"the run folder": out, "its checkpoints": out / "checkpoints" / "enc.pt", "run.json": out / "run.json",
              "a new file in it": out / "encoder.pt"}
    assert pretrain(tiny_config, pool / "dataset.json", out, "--optim.steps", "1", "--export-encoder",
                    str(target[where])) == 2
    err = capsys.readouterr().err
    assert str(target[where]) in err and "Traceback" not in err, err
    assert not (out / "checkpoints").exists() or not list((out / "checkpoints").glob("step_*.pt"))


def test_the_published_summary_and_curves_are_the_runs_and_a_killed_copys_work_files_go(tmp_path, pool, tiny_config):
    """`--export-summary` and `--export-curves` (the workflow's outputs beside the encoder) copy the run's summary.json
    and dvclive/; what a killed copy left beside them (its work file or folder, named after its gone process) is
    removed, a running copy's and a user's file are kept."""
    run, published = tmp_path / "variant" / "runs" / "x", tmp_path / "variant"
    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that ran and is gone
    left = [published / f".summary.json.{host}.{dead.pid}.tmp", published / f".dvclive.{host}.{dead.pid}.tmp"]
    kept = [published / f".summary.json.{host}.{os.getppid()}.tmp", published / ".draft.tmp"]  # a live pid; a user's
    (left[1] / "plots").mkdir(parents=True)
    for path in (left[0], *kept):
        path.write_text("partial")
    assert pretrain(tiny_config, pool / "dataset.json", run, "--optim.steps", "1", "--export-summary",
                    str(published / "summary.json"), "--export-curves", str(published / "dvclive")) == 0
    assert (published / "summary.json").read_bytes() == (run / "summary.json").read_bytes()
    files = {p.relative_to(run / "dvclive") for p in (run / "dvclive").rglob("*") if p.is_file()}
    assert files and {p.relative_to(published / "dvclive") for p in (published / "dvclive").rglob("*")
                      if p.is_file()} == files
    assert not any(p.exists() for p in left) and all(p.exists() for p in kept)


@pytest.mark.parametrize("option, where, message", [
    ("--export-summary", "a user's summary.json", "is not a pretraining run's summary"),
    ("--export-summary", "the run's own summary.json", "lies in the run's folder"),
    ("--export-curves", "a folder holding a user's note", "notes.txt' is not a curve file s2dc writes"),
    ("--export-curves", "the folder above the run's", "holds the run's folder"),
])
def test_a_published_copys_path_that_is_a_users_or_the_runs_is_refused_before_training(
        tmp_path, pool, tiny_config, capsys, option, where, message):
    """`--export-summary` on a user's file or the run's own summary.json, `--export-curves` on a folder holding a
    user's note or one the run's folder lies in (renaming the copy in would move the run aside): exit 2 naming the
    path, before any step is trained, the user's file as it was."""
    run = tmp_path / "variant" / "runs" / "x"
    target = {"a user's summary.json": tmp_path / "summary.json", "the run's own summary.json": run / "summary.json",
              "a folder holding a user's note": tmp_path / "dvclive", "the folder above the run's": run.parent}[where]
    mine = {"a user's summary.json": target, "a folder holding a user's note": target / "notes.txt"}.get(where)
    if mine is not None:
        mine.parent.mkdir(parents=True, exist_ok=True)
        mine.write_text('{"my": "notes"}')
    assert pretrain(tiny_config, pool / "dataset.json", run, "--optim.steps", "1", option, str(target)) == 2
    err = capsys.readouterr().err
    assert message in err and str(target) in err and "Traceback" not in err, err
    assert not list(run.glob("checkpoints/step_*.pt"))
    assert mine is None or mine.read_text() == '{"my": "notes"}'


@pytest.mark.parametrize("where", ["the run's folder", "the folder holding it", "a folder above that", "its run.json",
                                   "a new file in it", "a file in its checkpoints"])
def test_every_copy_of_a_runs_output_is_refused_at_above_or_in_its_folder(tmp_path, capsys, where):
    """`s2dc export-encoder` and `pretrain --export-encoder` let the encoder go to a new file directly in the run's
    folder or replace a folder above it, which `--export-summary` and `--export-curves` refuse: one policy now, for
    every copy of a run's output and both commands, naming the path: nothing at, above or inside the run's folder."""
    run = tmp_path / "variant" / "runs" / "x"
    (run / "checkpoints").mkdir(parents=True)
    path = {"the run's folder": run, "the folder holding it": run.parent, "a folder above that": tmp_path / "variant",
            "its run.json": run / "run.json", "a new file in it": run / "encoder.pt",
            "a file in its checkpoints": run / "checkpoints" / "encoder.pt"}[where]
    pretrain = ["pretrain", "--data.source", str(tmp_path / "pool.json"), "--run.out_dir", str(run)]
    for argv in (["export-encoder", str(run), str(path)], *([*pretrain, option, str(path)] for option in (
            "--export-encoder", "--export-summary", "--export-curves"))):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"the output '{path}'" in err and "the run's folder" in err and "Traceback" not in err, (argv, err)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints"] and not any((run / "checkpoints").iterdir())


@pytest.mark.parametrize("option, value, message", [
    ("--run.resume", "if-unchanged", "run.resume"),
    ("--run.out_dir", " ", "run.out_dir"),
])
def test_option_values_that_name_nothing_are_refused_naming_the_option(tmp_path, pool, tiny_config, capsys, option,
                                                                          value, message):
    """A mistyped resume mode (read as a checkpoint path that does not exist) and a blank out_dir name the option."""
    out, extra = (value, ()) if option == "--run.out_dir" else (tmp_path / "run", (option, value))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert pretrain(tiny_config, pool / "dataset.json", out, "--optim.steps", "1", *extra) == 2
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not (tmp_path / " ").exists()
