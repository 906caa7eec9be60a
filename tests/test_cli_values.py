"""Option values the command line was fuzzed with (every command, one option at a time): each wrong one is an error
naming the option or the file and what was expected, exit 2, no traceback, nothing written."""

from __future__ import annotations

import errno
import json
import os

import pytest
import yaml

from s2dc.cli import main

from conftest import TINY, TINY_FT, write_boxes, write_pool
from test_figures import twin_and_encoder  # noqa: F401 - a fixture: the tiny BTCV twin and a random encoder
from test_report import write_run


def refused(capsys, *named: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Errno" not in err and all(n in err for n in named), err
    return err


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_a_config_file_that_is_not_yaml_is_named(tmp_path, capsys, command):
    """A --config that YAML cannot parse ended in yaml's ParserError traceback (exit 1); a binary file (a checkpoint
    given by mistake) in a bare "'utf-8' codec can't decode byte 0x80", naming no file; a folder read 'does not
    exist'."""
    broken = tmp_path / "broken.yaml"
    broken.write_text("optim: {steps: 1\n")
    binary = tmp_path / "model.pt"
    binary.write_bytes(b"PK\x03\x04\x80\x81\xff" * 10)
    for config, what in ((broken, "not YAML"), (binary, "not YAML"), (tmp_path, "is a folder")):
        argv = [command, "--config", str(config), "--data.source", str(tmp_path / "dataset.json"),
                "--run.out_dir", str(tmp_path / "run")]
        assert main(argv) == 2
        refused(capsys, f"config file '{config}'", what)
        assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["probe", "figures"])
@pytest.mark.parametrize("seed", ["-1", str(2**64)])
def test_probe_and_figures_refuse_a_seed_they_cannot_use(twin_and_encoder, tmp_path, capsys, command, seed):
    """--seed -1 drew similarity.png, then failed in scikit-learn's t-SNE ("The 'random_state' parameter of TSNE
    must be an int in the range [0, 4294967295]", naming no option) and left the figure; 2**64 failed with a bare
    "Overflow when unpacking long long"; `s2dc probe --seed -1` ran. Refused before any volume is read."""
    source, encoder = twin_and_encoder
    out = tmp_path / ("probe.json" if command == "probe" else "figs")
    argv = [command, "random", str(encoder), "--source", str(source), "--seed", seed, "--device", "cpu"]
    argv += ["--out", str(out)] if command == "probe" else ["--out-dir", str(out), "--structure", "liver"]
    assert main(argv) == 2
    refused(capsys, "--seed", "0..4294967295")
    assert not out.exists() and not out.with_suffix(".md").exists()


def test_an_output_under_a_file_is_named(twin_and_encoder, tmp_path, capsys):
    """An output folder that is a file, or has a file above it, failed with a bare "[Errno 17] File exists: ..." or
    "[Errno 20] Not a directory: ..." naming neither the option nor what was expected (figures, after reading every
    volume)."""
    source, encoder = twin_and_encoder
    notes = tmp_path / "notes.txt"
    notes.write_text("a user's notes")
    under = notes / "sub"
    cases = [
        (["synth", "--kind", "btcv", "--out", str(under), "--cases", "2", "--seed", "0", "--shape", "32", "32", "32"],
         ["--out", str(notes), "expected a folder"]),
        (["figures", str(encoder), "--source", str(source), "--structure", "liver", "--out-dir", str(notes)],
         ["--out-dir", str(notes), "expected a folder"]),
        (["figures", str(encoder), "--source", str(source), "--structure", "liver", "--out-dir", str(under)],
         ["--out-dir", str(notes), "expected a folder"]),
        (["probe", str(encoder), "--source", str(source), "--out", str(under / "probe.json")],
         ["--out", str(notes), "expected a folder"]),
        (["probe", str(encoder), "--source", str(source), "--out", str(tmp_path / "p.json"), "--cache-dir", str(notes)],
         ["cache folder", str(notes), "expected a folder"]),
        (["export-encoder", str(encoder), str(under / "enc.pt")], [str(notes), "expected a folder"]),
    ]
    for argv, named in cases:
        assert main(argv) == 2, argv
        refused(capsys, *named)
    assert notes.read_text() == "a user's notes" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    (tmp_path / "runs").mkdir()
    run = write_run(tmp_path / "runs", "s2dc", 0, 0.5)
    assert main(["report", str(run), "--out", str(under)]) == 2
    refused(capsys, "--out", str(notes), "expected a folder")
    assert main(["sweep", "work", "--storage", str(under / "study.journal"), "--study", "s", "--budget", "1",
                 "--spec", json.dumps({"objective": "toy", "space": {"finetune.train.lr": {"low": 1e-4, "high": 1e-2}},
                                       "toy": {"steps": 1, "sleep": 0.0}})]) == 2
    refused(capsys, "--storage", str(notes), "expected a folder")


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_a_cache_or_run_folder_under_a_file_is_named(tmp_path, capsys, command):
    notes = tmp_path / "notes.txt"
    notes.write_text("a user's notes")
    if command == "pretrain":
        write_pool(tmp_path / "data", 2)
    else:
        (tmp_path / "data").mkdir()
        write_boxes(tmp_path / "data")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(TINY if command == "pretrain" else TINY_FT))
    argv = [command, "--config", str(config), "--data.source", str(tmp_path / "data" / "dataset.json"),
            "--run.out_dir", str(tmp_path / "run"), "--data.cache_dir", str(notes / "cache")]
    assert main(argv) == 2
    refused(capsys, "cache folder", str(notes), "expected a folder")
    assert notes.read_text() == "a user's notes"
    argv[argv.index("--run.out_dir") + 1] = str(notes / "run")  # '[Errno 20] Not a directory', naming no option
    assert main(argv[:-2]) == 2
    refused(capsys, "run.out_dir", str(notes), "expected a folder")
    assert notes.read_text() == "a user's notes"


def test_an_empty_path_is_refused_naming_the_option(tmp_path, capsys, monkeypatch):
    """`--out ''` (an unset shell variable) was read as '.': `s2dc report` wrote its five tables into the working
    folder, printing '-> /benchmark.csv'; plots, ablation-table, figures and probe's --cache-dir did alike; `sweep work
    --study ''` ran a study named ''."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"task": "segmentation"}))
    for argv in (["report", str(run / "metrics.json"), "--out", ""],
                 ["plots", str(run / "metrics.json"), "--figures", "", "--curves", str(tmp_path / "c")],
                 ["ablation-table", str(run / "metrics.json"), "--terms", "a=global:dual_softmax", "--out", ""],
                 ["synth", "--kind", "btcv", "--out", "", "--cases", "2", "--seed", "0"],
                 ["pretrain", "--data.source", str(run / "metrics.json"), "--export-encoder", ""],  # trained, no export
                 ["pretrain", "--config", "", "--data.source", str(run / "metrics.json")],
                 ["sweep", "work", "--storage", str(tmp_path / "s.journal"), "--study", "", "--budget", "1",
                  "--spec", "{}"]):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert "expected a path" in err or "expected a YAML file" in err or "expected a name" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize("option, value", [
    ("--cases", str(10**20)),  # OverflowError traceback in the progress bar
    ("--shape", ["100000", "100000", "16"]),  # numpy's _ArrayMemoryError traceback (112 GiB)
])
def test_synth_refuses_what_it_cannot_draw(tmp_path, capsys, option, value):
    values = value if isinstance(value, list) else [value]
    argv = ["synth", "--kind", "btcv", "--out", str(tmp_path / "twin"), "--cases", "2", "--seed", "0",
            "--shape", "32", "32", "32"]
    i = argv.index(option)
    argv[i + 1:i + 1 + len(values)] = values
    assert main(argv) == 2
    refused(capsys, option)
    assert not (tmp_path / "twin").exists()


@pytest.mark.parametrize("option, value", [("loss.queue_size", "1000000000000"), ("head.hidden_dim", "1000000000000")])
def test_memory_running_out_is_an_error_not_a_traceback(tmp_path, capsys, option, value):
    """A size the machine cannot hold (a queue of 10**12 keys: 128 TB) ended in torch's RuntimeError traceback
    "[enforce fail at alloc_cpu.cpp:127] ... DefaultCPUAllocator: can't allocate memory" (exit 1)."""
    write_pool(tmp_path / "pool", 2)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    assert main(["pretrain", "--config", str(config), "--data.source", str(tmp_path / "pool" / "dataset.json"),
                 "--run.out_dir", str(tmp_path / "run"), f"--{option}", value]) == 1
    err = refused(capsys, "out of memory", "smaller")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("command, option", [("pretrain", "encoder.window_size"), ("finetune", "model.window_size")])
def test_an_attention_window_torch_cannot_size_is_named(tmp_path, capsys, command, option):
    """encoder.window_size 10**12 ended in torch's TypeError traceback ("Overflow when unpacking long long") while
    the relative position table was built."""
    argv = [command, "--data.source", str(tmp_path / "dataset.json"), "--run.out_dir", str(tmp_path / "run"),
            f"--{option}", str(10**12)]
    assert main(argv) == 2
    refused(capsys, option, "<= 64")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_more_loader_processes_than_any_machine_runs_are_refused(tmp_path, capsys, command):
    """data.workers 10**12 was accepted: the run hung, starting loader processes one after another."""
    argv = [command, "--data.source", str(tmp_path / "dataset.json"), "--run.out_dir", str(tmp_path / "run"),
            "--data.workers", str(10**12)]
    assert main(argv) == 2
    refused(capsys, "data.workers", "0..256")
    assert not (tmp_path / "run").exists()


def test_a_pretraining_refused_for_a_bad_volume_leaves_no_run_folder(tmp_path, capsys):
    """A bad volume found before step 1 left the run folder it had made, holding its lock and the cache of the good
    volumes (a refused fine-tuning run leaves nothing)."""
    pool = write_pool(tmp_path / "pool", 2)
    (pool / "imagesTr" / "case1.nii.gz").write_text("not a nifti")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    assert main(["pretrain", "--config", str(config), "--data.source", str(pool / "dataset.json"),
                 "--run.out_dir", str(out)]) == 2
    refused(capsys, "case1.nii.gz")
    assert not out.exists()


@pytest.mark.parametrize("change, key", [({"seed": -5}, "seed"), ({"seed": 2**40}, "seed"),
                                         ({"finetune_seeds": [0, 2**40]}, "finetune_seeds")])
def test_a_sweep_seed_numpy_cannot_take_is_refused_naming_its_key(tmp_path, capsys, change, key):
    """spec seed -5 failed with NumPy's "Seed must be between 0 and 2**32 - 1", naming no key; a fine-tuning seed
    above it passed the spec's check and failed in each trial (run.seed), as a failed trial (exit 1)."""
    storage = tmp_path / "study.journal"
    spec = {"objective": "toy", "space": {"finetune.train.lr": {"low": 1e-4, "high": 1e-2}},
            "toy": {"steps": 1, "sleep": 0.0}, **change}
    assert main(["sweep", "work", "--storage", str(storage), "--study", "s", "--budget", "1",
                 "--spec", json.dumps(spec)]) == 2
    refused(capsys, f"spec: {key} must be", "4294967295")
    assert not storage.exists()


@pytest.mark.parametrize("command, section", [("pretrain", "optim"), ("finetune", "train")])
@pytest.mark.parametrize("warmup", ["10", "11"])
def test_a_warm_up_as_long_as_the_run_is_refused(tmp_path, capsys, command, section, warmup):
    """warmup_steps >= steps was accepted (exit 0): the learning rate rose all run long and never reached its peak."""
    argv = [command, "--data.source", str(tmp_path / "dataset.json"), "--run.out_dir", str(tmp_path / "run"),
            f"--{section}.steps", "10", f"--{section}.warmup_steps", warmup]
    assert main(argv) == 2
    refused(capsys, f"{section}.warmup_steps ({warmup}) must be less than {section}.steps (10)")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command, options, named", [
    # each ground in a Python loop building 10**12 crops (the batch's list; MONAI's list of crop centres)
    ("finetune", ["--train.batch_size", str(10**12)], f"train.batch_size x train.samples_per_volume ({10**12} x 4"),
    ("finetune", ["--train.samples_per_volume", str(10**12)], f"train.batch_size x train.samples_per_volume (1 x {10**12}"),
    # padded every case to 100000 x 64 x 32 voxels (0.8 GB) for the preprocessing cache, minutes a case
    ("finetune", ["--train.roi_size", "100000", "64", "32"], "train.roi_size must be at most 1024"),
    # torch.randint of 10**12 volume picks (8 TB), after every volume was read
    ("pretrain", ["--optim.batch_size", str(10**12)], f"optim.batch_size x views.grid**2 ({10**12} x 4**2"),
    # grid_sample over a 100032 x 64 x 32 ROI each step
    ("pretrain", ["--views.roi_size", "100032", "64", "32"], "views.roi_size must be at most 1024"),
])
def test_sizes_no_machine_trains_are_refused(tmp_path, capsys, command, options, named):
    argv = [command, "--data.source", str(tmp_path / "dataset.json"), "--run.out_dir", str(tmp_path / "run"), *options]
    assert main(argv) == 2
    refused(capsys, named, "at most 1024")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command, module, options, named", [
    ("pretrain", "s2dc.train.pretrain.pretrain", ["--views.roi_size", "128", "128", "64", "--optim.batch_size", "3"],
     "views.roi_size 128 128 64, views.grid 4 (default), optim.batch_size 3, encoder.feature_size 48 (default), "
     "loss.queue_size 90 (default)"),
    ("finetune", "s2dc.downstream.engine.finetune", ["--train.batch_size", "2", "--eval.sw_batch_size", "8"],
     "train.roi_size 96 96 96 (default), train.batch_size 2, train.samples_per_volume 4 (default), "
     "model.feature_size 48 (default), eval.sw_batch_size 8"),
    ("finetune", "s2dc.downstream.engine.finetune", ["--model.init", "{encoder}"],
     "model.feature_size that of model.init's encoder, eval"),
    ("probe", "s2dc.eval.probe.probe", ["random", "--source", "{tmp}/dataset.json", "--out", "{tmp}/p.json",
                                        "--stage", "1"], "(--stage 1)"),
])
@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: "
                                                                "can't allocate memory: you tried to allocate 8 bytes")])
def test_running_out_of_memory_names_the_options_that_set_it(tmp_path, capsys, monkeypatch, command, module, options,
                                                             named, error, twin_and_encoder):
    """The out-of-memory message named no option ("smaller ROIs, batches, widths, queues or grids")."""
    def runs_out(*args, **kwargs):
        raise error

    monkeypatch.setattr(module, runs_out)
    if command != "probe":
        options = ["--data.source", str(tmp_path / "dataset.json"), "--run.out_dir", str(tmp_path / "run"), *options]
    assert main([command, *(o.format(tmp=tmp_path, encoder=twin_and_encoder[1]) for o in options)]) == 1
    err = refused(capsys, "out of memory", named)
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_is_a_failed_run_not_a_users_mistake(tmp_path, capsys, monkeypatch, code):
    """A full disk (or quota) exited 2, the status of a user's mistake; like memory running out, it is the
    machine's: exit 1, naming the file."""
    def fills_the_disk(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(tmp_path / "run" / "model.pt"))

    monkeypatch.setattr("s2dc.downstream.engine.finetune", fills_the_disk)
    assert main(["finetune", "--data.source", str(tmp_path / "dataset.json"), "--run.out_dir",
                 str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and os.strerror(code) in err and "model.pt" in err, err
