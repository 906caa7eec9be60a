"""The `s2dc` command line refuses what it would silently ignore or lose: a user's file in a run's curves folder,
options that contradict each other, an output path that is a file (found by an audit of its trust rules, 2026-12-05;
each test reproduces one finding)."""

from __future__ import annotations

import shutil

from conftest import write_pool
from s2dc.cli import main
from test_trust import finetune_argv


def test_a_finetune_rerun_keeps_a_users_file_in_the_runs_curves_folder(finished_finetuning, tmp_path, capsys):
    """A note of one's own in a finished fine-tuning run's dvclive/ (as `s2dc pretrain` refuses for its dvclive/):
    the rerun into that folder deleted it with the earlier curves, exit 0. It is refused (exit 2), naming the file,
    and the note is kept."""
    source, finished = finished_finetuning  # a one-step run of ``source`` (finetune_argv's)
    out = shutil.copytree(finished, tmp_path / "run")
    note = out / "dvclive" / "notes.md"
    note.write_text("the loss plateaus after step 1: checked by hand\n")
    capsys.readouterr()
    assert main(finetune_argv(tmp_path, source, out)) == 2
    err = capsys.readouterr().err
    assert "notes.md" in err and "Traceback" not in err, err
    assert note.read_text() == "the loss plateaus after step 1: checked by hand\n"
    note.unlink()
    (out / "dvclive" / ".metrics.json.4242.tmp").write_text("{")  # a curve write killed before its rename: the run's
    assert main(finetune_argv(tmp_path, source, out)) == 0


def test_a_student_encoder_asked_of_a_scratch_run_is_refused(seg_dir, tmp_path, capsys):
    """--model.init_which student with model.init scratch picks nothing (there is no encoder file): the run trained
    from random weights, exit 0, and its metrics.json recorded model.init_which 'student' among its options (so two
    scratch seeds that differ only there were refused as one row by the report). It is refused at parse (exit 2),
    naming both options, before the folder is made."""
    out = tmp_path / "run"
    assert main(finetune_argv(tmp_path, seg_dir / "dataset.json", out, "--model.init_which", "student")) == 2
    err = capsys.readouterr().err
    assert "model.init_which" in err and "scratch" in err and "Traceback" not in err, err
    assert not out.exists()


def test_a_section_asked_of_a_folder_of_volumes_is_refused(tmp_path, tiny_config, capsys):
    """--data.key names a section of a dataset.json; given a folder of volumes (which has none), the pretraining
    read every volume of the folder and recorded data.key 'validation' in its run.json, exit 0. It is refused (exit 2),
    naming both options, before the run folder is made."""
    pool = write_pool(tmp_path / "pool", 2)
    out = tmp_path / "run"
    argv = ["pretrain", "--config", str(tiny_config), "--data.source", str(pool / "imagesTr"), "--data.key",
            "validation", "--run.out_dir", str(out), "--optim.steps", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "data.key" in err and "folder" in err and "Traceback" not in err, err
    assert not out.exists()


def test_a_download_into_a_file_names_the_option_and_what_was_expected(tmp_path, capsys):
    """`s2dc download msd_spleen --raw F` where F (or a folder above --raw) is a file stopped with a bare '[Errno 17]
    File exists' or '[Errno 20] Not a directory' (exit 2), naming neither the option nor what was expected, as
    `s2dc prepare --out` does (check_folder_path); the file is kept and nothing is fetched."""
    mine = tmp_path / "notes.txt"
    mine.write_text("mine\n")
    for raw in (mine, mine / "raw"):
        assert main(["download", "msd_spleen", "--raw", str(raw)]) == 2
        err = capsys.readouterr().err
        assert "--raw" in err and "expected a folder" in err and "Errno" not in err, err
    assert mine.read_text() == "mine\n"
