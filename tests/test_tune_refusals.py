"""What the sweep refuses or survives without a traceback: a live worker is never declared dead on its own host, and
a worker whose trial another worker failed goes on; a study is bound to its `workers` and to one budget even when
two workers bind it at once; a refused run claims no trial folder; malformed spec files, SQLite storages, damaged
journals and search ranges holding one value are refused naming the file, URL or key (exit 2)."""

from __future__ import annotations

import datetime
import json
import os
import re
import socket
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from s2dc.cli import main
from s2dc.tune.liveness import this_worker
from s2dc.tune.space import parse_space
from s2dc.tune.spec import load_spec, spec_from_dict
from s2dc.tune.storage import open_storage, open_study, open_sweep
from s2dc.tune.toy import make_toy_objective
from s2dc.tune.worker import bind_study, run_worker

from conftest import write_listing

SPACE = {"pretrain.loss.weight_p2p": {"low": 0.0, "high": 1.0}}


def toy_spec(**change) -> dict:
    """A sweep spec with the toy objective, one report a trial and no sleep; ``change`` overrides its keys."""
    return {"objective": "toy", "space": SPACE, "toy": {"steps": 1, "sleep": 0.0}, "pruner": None,
            "heartbeat": {"interval": 1, "grace": 30}, **change}


def work(storage, study: str, budget: int, spec) -> list[str]:
    """The arguments of `s2dc sweep work`."""
    return ["sweep", "work", "--storage", str(storage), "--study", study, "--budget", str(budget),
            "--spec", spec if isinstance(spec, str) else json.dumps(spec)]


def _running(number: int, worker: dict, beat_age: float) -> optuna.trial.FrozenTrial:
    """A RUNNING trial started an hour ago whose ``worker`` last beat ``beat_age`` seconds ago."""
    return optuna.trial.FrozenTrial(
        number=number, trial_id=number, state=TrialState.RUNNING, value=None, values=None, intermediate_values={},
        datetime_start=datetime.datetime.now() - datetime.timedelta(hours=1), datetime_complete=None,
        params={"x": 0.5}, distributions={"x": optuna.distributions.FloatDistribution(0.0, 1.0)},
        user_attrs={"worker": worker, "heartbeat": time.time() - beat_age}, system_attrs={})


def test_a_live_worker_on_this_host_is_never_dead_however_old_its_last_beat(tmp_path):
    """docs/sweeps.md: on the same host dead means the process no longer exists. A worker whose beats stopped for
    longer than the grace period (paused, swapping, or a checker with a shorter grace) but whose process lives was
    failed, and then crashed on its next report. A process that is gone, or whose pid another process now has (its
    recorded start differs), is dead at once."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: its pid names no process
    study, liveness = open_sweep(str(tmp_path / "study.journal"), "alive", heartbeat_interval=1, grace_period=5)
    host = socket.gethostname()
    for number, worker in enumerate([this_worker(), {"host": host, "pid": gone.pid},
                                     {"host": host, "pid": os.getpid(), "start": 1}]):
        study.add_trial(_running(number, worker, beat_age=600.0))
    assert liveness.fail_stale(study) == [1, 2]
    assert [t.state for t in study.get_trials(deepcopy=False)[:3]] == [TrialState.RUNNING, TrialState.FAIL,
                                                                       TrialState.FAIL]


def test_a_worker_whose_trial_another_worker_failed_warns_and_goes_on(tmp_path):
    """While worker A runs trial 0, another worker fails it as dead and enqueues its retry: A's next report raised
    UpdateFinishedTrialError, and so did recording it as the trial's error, so A died with a traceback (exit 1).
    A warns, does not count the lost trial, and runs the retry to the budget."""
    spec = spec_from_dict(toy_spec())
    storage = str(tmp_path / "study.journal")
    study, live = open_sweep(storage, "s", heartbeat_interval=1, grace_period=30, sampler=spec.make_sampler())
    other, other_live = open_sweep(storage, "s", heartbeat_interval=1, grace_period=30)  # another worker's view
    bind_study(study, 1, spec.space)
    toy = make_toy_objective(spec.toy, spec.dims)

    def objective(trial, params):
        if trial.number == 0:
            other.tell(0, state=TrialState.FAIL)
            other_live.retry(other, other.trials[0], "its worker died")
        return toy(trial, params)

    lines = []
    report = run_worker(study, objective, spec.dims, 1, live, log=lines.append)
    assert (report.complete, report.failed) == (1, 0)
    assert any(line.startswith("warning: trial 0") and "another worker" in line for line in lines), lines
    lost, retry = study.get_trials(deepcopy=False)
    assert lost.state == TrialState.FAIL and "error" not in lost.user_attrs
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["retry_of"] == 0


def test_a_worker_of_other_workers_is_refused(tmp_path, capsys):
    """`workers` sets the generations, and so what every trial draws: a study started with workers: 1 was joined
    silently by a worker whose spec says workers: 3."""
    storage = tmp_path / "study.journal"
    assert main(work(storage, "s", 1, toy_spec(workers=1))) == 0
    capsys.readouterr()
    assert main(work(storage, "s", 1, toy_spec(workers=3))) == 2
    err = capsys.readouterr().err
    assert "study 's' was started with other options: they differ in workers, 1 there, 3 in this worker's" in err
    assert "Traceback" not in err
    assert main(work(storage, "s", 1, toy_spec(workers=1))) == 0  # the same workers: joins (budget met)


def test_two_workers_of_other_budgets_binding_at_once_are_not_both_accepted(tmp_path):
    """Worker B binds a new study completely between worker A's check and A's write: both were accepted, and B ran
    to its budget of 10 in a study recorded (and exported) as of budget 5. Each binding is written under a key of its
    own now, so the study shows both: each worker is refused naming the study before it runs a trial."""
    storage = str(tmp_path / "study.journal")
    study_a, live_a = open_sweep(storage, "s", heartbeat_interval=1, grace_period=30)
    study_b, live_b = open_sweep(storage, "s", heartbeat_interval=1, grace_period=30)
    options = {"objective": "toy", "seed": 0}
    real_set, first = study_a.set_user_attr, [True]

    def set_after_b(key, value):  # A has already seen that the study is not bound
        if first[0]:
            first[0] = False
            bind_study(study_b, 10, SPACE, None, options)
        real_set(key, value)

    study_a.set_user_attr = set_after_b
    with pytest.raises(ValueError, match="study 's' was bound at once by workers of other settings"):
        bind_study(study_a, 5, SPACE, None, options)
    dims, toy = parse_space(SPACE), make_toy_objective({"steps": 1, "sleep": 0.0}, parse_space(SPACE))
    for study, live, budget in ((study_b, live_b, 10), (study_a, live_a, 5)):
        with pytest.raises(ValueError, match="study 's' was bound at once .*use a new study name"):
            run_worker(study, toy, dims, budget, live, log=lambda line: None)
    assert study_b.get_trials(deepcopy=False) == []


def test_a_trial_begun_under_a_binding_written_over_never_counts_for_the_other(tmp_path):
    """B has seen the new study unbound; A binds it, reads its binding back and starts trial 0; B's write lands
    during A's trial and B reads back its own binding. The one attribute held the last write: B was accepted and went
    on to its budget with A's trial, drawn from A's space, counted as one of its own (a review reproduced it). Both
    bindings stand now, and both workers are refused naming the study."""
    space_a = {"pretrain.loss.weight_p2p": {"low": 0.0, "high": 1.0}}
    space_b = {"finetune.train.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True}}
    storage = str(tmp_path / "study.journal")
    study_a, live_a = open_sweep(storage, "s", heartbeat_interval=1, grace_period=30)
    study_b, live_b = open_sweep(storage, "s", heartbeat_interval=1, grace_period=30)
    dims_a, dims_b = parse_space(space_a), parse_space(space_b)
    toy_a = make_toy_objective({"steps": 1, "sleep": 0.0}, dims_a)
    real_set_b, refused_a = study_b.set_user_attr, []

    def b_writes_late(key, value):  # B has seen the study unbound; A binds it and starts its trial first
        def a_objective(trial, params):
            real_set_b(key, value)  # B's write lands while A's trial runs
            return toy_a(trial, params)

        bound_a = bind_study(study_a, 3, space_a)
        with pytest.raises(ValueError, match="study 's'") as err:  # refused at its next round
            run_worker(study_a, a_objective, dims_a, 3, live_a, log=lambda line: None, bound=bound_a)
        refused_a.append(str(err.value))

    study_b.set_user_attr = b_writes_late
    with pytest.raises(ValueError, match="study 's' was bound at once by workers of other settings"):
        bind_study(study_b, 3, space_b)
    assert refused_a and "bound at once" in refused_a[0], refused_a
    with pytest.raises(ValueError, match="study 's' was bound at once"):
        run_worker(study_b, make_toy_objective({"steps": 1, "sleep": 0.0}, dims_b), dims_b, 3, live_b,
                   log=lambda line: None)
    assert [set(t.params) for t in study_b.get_trials(deepcopy=False)] == [set(space_a)]  # A's one trial only
    # its export: refused with what --force does (it was refused even with --force, told to use a new study name)
    from s2dc.tune.export import export_study

    out = tmp_path / "export"
    with pytest.raises(ValueError, match=r"study 's' in '.*' was bound at once by workers of other settings "
                                         r"\['bound:\w+', 'bound:\w+'\]: its trials may mix them; export them all "
                                         r"the same with --force"):
        export_study(storage, "s", out)
    assert not out.exists()
    best = yaml.safe_load(export_study(storage, "s", out, force=True)["best.yaml"].read_text())
    assert best["budget"] is None and best["finished"] == 1


def test_a_refused_run_leaves_no_claim_on_the_trial_folders(tmp_path, capsys, monkeypatch):
    """`sweep work` claimed <out_dir>/<study> for the storage given before it opened that storage: a run refused for
    a wrong storage (or another budget) left the claim, and the corrected command was refused for ever."""
    monkeypatch.chdir(tmp_path)
    write_listing(tmp_path / "pool.json", "my_pool")
    write_listing(tmp_path / "ds.json", "my_dataset")
    (tmp_path / "notes.txt").write_text("my notes, not a journal\n")
    spec = {"space": SPACE, "data": {"pretrain": "pool.json", "finetune": "ds.json"}, "out_dir": "sw"}
    claim = tmp_path / "sw" / "s" / ".s2dc-storage.json"
    assert main(work("notes.txt", "s", 1, spec)) == 2
    assert "storage 'notes.txt' is not an Optuna journal file" in capsys.readouterr().err and not claim.exists()
    study = open_study("study.journal", "s")
    bind_study(study, 2, spec_from_dict(spec).space)
    assert main(work("study.journal", "s", 1, spec)) == 2  # another budget than the study's
    assert "was started with budget 2, this worker has 1" in capsys.readouterr().err and not claim.exists()


@pytest.mark.parametrize("name, content, message", [
    ("bad.yaml", b"space: {a: [1,\n", "not valid YAML"),
    ("latin.yaml", b"\xff\xfe space: {}\n", "not UTF-8"),
    ("latin.json", b'{"space": "\xff"}\n', "not UTF-8"),
])
def test_a_spec_file_that_cannot_be_read_is_refused_naming_it(tmp_path, capsys, name, content, message):
    """A malformed YAML spec crashed with a yaml traceback (exit 1); one not in UTF-8 was refused naming no file."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as err:
        load_spec(str(path))
    assert f"spec file '{path}'" in str(err.value)
    assert main(work(tmp_path / "study.journal", "s", 1, str(path))) == 2
    assert str(path) in capsys.readouterr().err and not (tmp_path / "study.journal").exists()


def test_an_sqlite_storage_that_cannot_be_opened_is_refused_naming_it(tmp_path):
    """A text file given as an SQLite database, or one in a folder that does not exist, crashed with an SQLAlchemy
    traceback (exit 1)."""
    from s2dc.tune.export import export_study

    (tmp_path / "notes.db").write_text("my notes\n")
    for url in (f"sqlite:///{tmp_path / 'notes.db'}", f"sqlite:///{tmp_path / 'missing' / 'x.db'}"):
        with pytest.raises(ValueError, match=re.escape(f"storage '{url}' cannot be opened as a database")):
            open_storage(url)
    assert (tmp_path / "notes.db").read_text() == "my notes\n" and not (tmp_path / "missing").exists()
    # export only reads: a database that does not exist is refused as a missing journal is, and not created
    typo = tmp_path / "typo.db"
    with pytest.raises(FileNotFoundError, match=re.escape(f"storage 'sqlite:///{typo}': its SQLite database '{typo}' "
                                                          "does not exist")):
        export_study(f"sqlite:///{typo}", "s", tmp_path / "out")
    assert not typo.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("key, value", [
    ("pretrain.loss.weight_p2p", {"low": 0.0, "high": 1.0, "step": 5.0}),
    ("pretrain.optim.warmup_steps", {"low": 10, "high": 12, "step": 5}),
])
def test_a_range_whose_step_exceeds_it_is_refused_naming_its_key(key, value):
    """A step larger than high - low leaves the range one value, low: every trial drew it."""
    with pytest.raises(ValueError, match="step") as err:
        parse_space({key: value})
    assert repr(key) in str(err.value) and "high - low" in str(err.value)
    parse_space({key: {**value, "step": value["high"] - value["low"]}})  # low and high: accepted


def test_a_damaged_journal_is_refused_naming_it_and_left_as_it_was(tmp_path, capsys):
    """A line that is no record (a stray write) gave a bare 'Expecting value: line 1 column 1' naming no file, and
    `sweep work` appended a record before failing."""
    from s2dc.tune.export import export_study

    journal = tmp_path / "s.journal"
    open_study(str(journal), "s")
    with open(journal, "a") as handle:
        handle.write("GARBAGE\n")
    damaged = journal.read_bytes()
    with pytest.raises(ValueError, match=f"storage '{journal}': line 2 is not a journal record"):
        open_study(str(journal), "t")
    assert main(work(journal, "t", 1, toy_spec())) == 2
    assert f"storage '{journal}'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=f"storage '{journal}'"):
        export_study(str(journal), "s", tmp_path / "out", force=True)
    assert journal.read_bytes() == damaged


def test_a_network_size_in_the_fine_tuning_options_that_is_not_the_encoders_is_refused_before_any_trial():
    """The fine-tuning's network sizes come from each trial's encoder (fill_finetune_defaults fills only those not
    given): a size in the spec's fine-tuning options other than the pretraining's, or fixed there while the
    pretraining's is searched, or searched itself, disagreed with the trial's encoder and failed each trial when it
    loaded the weights, after its pretraining had run. Refused naming both keys; the pipeline's spec, which copies
    the encoder's sizes, stands."""
    base = {"space": {"finetune.train.lr": {"low": 1.0e-4, "high": 1.0e-2}},
            "data": {"pretrain": "pool.json", "finetune": "ds.json"},
            "pretrain": {"encoder": {"feature_size": 12, "num_heads": [1, 2, 3, 4], "window_size": 4}}}
    with pytest.raises(ValueError, match=r"finetune\.model\.feature_size is 24 but pretrain\.encoder\.feature_size is 12"):
        spec_from_dict({**base, "finetune": {"model": {"feature_size": 24}}})
    with pytest.raises(ValueError, match=r"finetune\.model\.window_size is 4 but pretrain\.encoder\.window_size is "
                                         r"searched"):
        spec_from_dict({**base, "finetune": {"model": {"window_size": 4}},
                        "space": {"pretrain.encoder.window_size": {"choices": [2, 4]}}})
    with pytest.raises(ValueError, match=r"'finetune\.model\.window_size'.*pretrain\.encoder\.window_size"):
        parse_space({"finetune.model.window_size": {"choices": [4, 7]}})
    same = {"feature_size": 12, "num_heads": [1, 2, 3, 4], "window_size": 4, "drop_path_rate": 0.1}
    spec_from_dict({**base, "finetune": {"model": same}})  # the encoder's sizes, as the pipeline writes them


def test_a_pool_of_another_modality_than_the_fine_tuning_dataset_is_refused_before_any_trial(tmp_path):
    """data.pretrain a CT pool and data.finetune an MRI dataset: every trial pretrained a CT encoder (minutes) and
    then had its fine-tuning refuse it as of another modality; the sweep stops before the first trial, naming both
    files and the pool to give. A dataset the registry does not know is taken as given."""
    from s2dc.tune.objective import make_objective

    write_listing(tmp_path / "pool.json", "synthetic_ct_pool")
    write_listing(tmp_path / "ds.json", "synthetic_brats21")
    write_listing(tmp_path / "own.json", "my_brain_scans")
    space = {"finetune.train.lr": {"low": 1.0e-4, "high": 1.0e-2}}
    spec = spec_from_dict({"space": space, "out_dir": str(tmp_path / "sw"),
                           "data": {"pretrain": str(tmp_path / "pool.json"), "finetune": str(tmp_path / "ds.json")}})
    with pytest.raises(ValueError) as err:
        make_objective(spec, str(tmp_path / "a.journal"), "s")
    message = str(err.value)
    assert all(part in message for part in (str(tmp_path / "pool.json"), "CT", str(tmp_path / "ds.json"), "MRI",
                                            "mri_pool")), message
    assert not (tmp_path / "sw").exists()  # no claim on the trial folders either
    spec = spec_from_dict({"space": space, "out_dir": str(tmp_path / "sw"),
                           "data": {"pretrain": str(tmp_path / "pool.json"), "finetune": str(tmp_path / "own.json")}})
    make_objective(spec, str(tmp_path / "a.journal"), "s")


def test_a_run_refused_for_its_data_leaves_the_study_unbound_and_the_corrected_run_starts(tmp_path, capsys):
    """A CT pool given for an MRI dataset, or a data.pretrain json that lists no cases, was refused only after the
    study had been opened and bound to those files' hashes, so the corrected command was refused in turn ("study 'm'
    was started with other data", though no trial ran), and the empty json got as far as trial 0 (a traceback, exit
    1). Both are refused at start (exit 2, naming the file), before any storage is opened: the corrected command
    finds no study bound to the wrong data."""
    for name in ("ct_pool", "mri_pool", "brats21"):
        write_listing(tmp_path / f"{name}.json", f"synthetic_{name}")
    (tmp_path / "empty.json").write_text("{}")
    journal = tmp_path / "m.journal"
    base = {"space": {"finetune.train.lr": {"low": 1.0e-4, "high": 1.0e-2}}, "out_dir": str(tmp_path / "sw")}
    for pool, expected in (("ct_pool", "mri_pool"), ("empty", "no section 'training'")):
        spec = {**base, "data": {"pretrain": str(tmp_path / f"{pool}.json"), "finetune": str(tmp_path / "brats21.json")}}
        assert main(work(journal, "m", 1, spec)) == 2
        err = capsys.readouterr().err
        assert expected in err and str(tmp_path / f"{pool}.json") in err and "Traceback" not in err, err
        assert not journal.exists() and not (tmp_path / "sw").exists()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_sqlite_storage_is_refused(tmp_path, capsys, url):
    """`--storage sqlite://` ran its trials into a database that vanished with the process and exited 0: nothing
    could be exported, no worker could join. Refused at start, naming the URL (exit 2)."""
    assert main(work(url, "a", 1, toy_spec())) == 2
    err = capsys.readouterr().err
    assert f"storage '{url}' is an in-memory SQLite database" in err, err


def test_a_users_file_where_the_journals_lock_goes_is_refused_not_removed(tmp_path, capsys):
    """Optuna's journal lock is a symbolic link ``<journal>.lock``, broken after 30 s as stale: a user's file of that
    name was deleted after a silent 30-second wait. Refused, naming it, and kept."""
    (tmp_path / "u.journal.lock").write_text("my lock notes")
    assert main(work(tmp_path / "u.journal", "a", 1, toy_spec())) == 2
    assert f"'{tmp_path / 'u.journal.lock'}' is a file" in capsys.readouterr().err
    assert (tmp_path / "u.journal.lock").read_text() == "my lock notes" and not (tmp_path / "u.journal").exists()


def test_the_reviews_sweep_findings(tmp_path):
    """A review of the fixes above found: a pool of another modality refused even with preprocess.intensity given
    (how an encoder of another modality is fine-tuned on purpose); a JSON spec's key given twice kept the last (a
    YAML one is refused); another host's trial judged by Optuna's start, a naive local time that another zone's
    host writes hours "ahead", so a dead worker's trial stayed RUNNING."""
    from s2dc.tune.liveness import is_dead
    from s2dc.tune.objective import make_objective

    write_listing(tmp_path / "pool.json", "synthetic_mri_pool")
    write_listing(tmp_path / "ds.json", "synthetic_autopet")
    spec = spec_from_dict({"space": {"finetune.train.lr": {"low": 1.0e-4, "high": 1.0e-2}}, "out_dir": str(tmp_path / "sw"),
                           "finetune": {"preprocess": {"intensity": "zscore"}},
                           "data": {"pretrain": str(tmp_path / "pool.json"), "finetune": str(tmp_path / "ds.json")}})
    make_objective(spec, str(tmp_path / "a.journal"), "s")
    with pytest.raises(ValueError, match=r"--spec: not valid JSON \(key\(s\) 'seed' given twice"):
        load_spec('{"objective": "toy", "space": {}, "seed": 1, "seed": 7}')
    ahead = optuna.trial.FrozenTrial(
        number=0, trial_id=0, state=TrialState.RUNNING, value=None, values=None, intermediate_values={},
        datetime_start=datetime.datetime.now() + datetime.timedelta(hours=9), datetime_complete=None,
        params={"x": 0.5}, distributions={"x": optuna.distributions.FloatDistribution(0.0, 1.0)},
        user_attrs={"worker": {"host": "elsewhere", "pid": 1}, "heartbeat": time.time() - 60.0}, system_attrs={})
    assert is_dead(ahead, time.time(), grace=10, host=socket.gethostname())


def test_two_workers_claiming_a_new_study_folder_at_once_are_both_let_in(tmp_path):
    """The pipeline starts its sweep workers together: the second checked the study's new trial folder while the first
    was writing its claim (the record's temporary file there, not yet renamed in), took that file for trials of an
    older s2dc and refused to start ('holds files but no .s2dc-storage.json'), so the sweep ran on one worker and
    failed (`dvc repro experiments/dvc.yaml`, 2026-12-05). A claim being written is no trial: both are let in, and a
    worker of another storage is still refused."""
    from s2dc.tune.objective import OWNER, claim_study_folder, storage_label

    folder = tmp_path / "work" / "s2dc-quick-x"
    folder.mkdir(parents=True)
    first = (tmp_path / "study.journal").as_posix()
    (folder / f".{OWNER}.{os.getpid() + 1}.tmp").write_text(json.dumps({"storage": storage_label(first)}))
    claim_study_folder(folder, first)  # the second worker, while the first's record is being written
    assert json.loads((folder / OWNER).read_text()) == {"storage": storage_label(first)}
    claim_study_folder(folder, first)  # the first, its record found written
    with pytest.raises(ValueError, match="holds the trial folders of study 's2dc-quick-x' in the storage"):
        claim_study_folder(folder, (tmp_path / "other.journal").as_posix())
    (folder / OWNER).unlink()
    (folder / "trial_0000").mkdir()  # trials and no record: an older s2dc's, still refused
    with pytest.raises(ValueError, match="holds files but no .s2dc-storage.json"):
        claim_study_folder(folder, first)


def test_a_journal_lock_released_while_the_storage_opens_is_not_taken_for_a_users_file(tmp_path, monkeypatch):
    """Another worker's lock (a symbolic link) released between the two looks at it, its existence and its kind: the
    storage was refused as if a user's file held the lock's name (a reader of a running sweep failed in CI so). One
    look now, which sees a link, a file or nothing."""
    from pathlib import Path

    journal, lock = tmp_path / "s.journal", tmp_path / "s.journal.lock"
    journal.write_text("")
    lock.symlink_to(journal)
    looks = []

    def released_after_the_first_look(real):
        def look(self, *args, **kwargs):
            found = real(self, *args, **kwargs)
            if self == lock and not looks:
                looks.append(real.__name__)
                lock.unlink()  # the other worker releases it right after the first look
            return found
        return look

    for name in ("exists", "is_symlink", "is_dir", "is_file", "lstat", "stat"):
        monkeypatch.setattr(Path, name, released_after_the_first_look(getattr(Path, name)))
    open_storage(str(journal))
    monkeypatch.undo()
    assert looks and not lock.is_symlink() and journal.is_file()
