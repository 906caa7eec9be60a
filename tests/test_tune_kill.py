"""A worker SIGKILLed mid-trial loses nothing: its completed trials stay, its running trial ends FAILED, and the next
worker retries that trial's parameters and finishes exactly the budget."""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import time

import optuna
from optuna.trial import TrialState

from s2dc.tune.storage import open_study, open_sweep

SPACE = {
    "pretrain.loss.weight_p2p": {"low": 0.0, "high": 1.0},
    "finetune.train.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
}


def _trials(storage):
    return open_study(str(storage), "kill", create=False).get_trials(deepcopy=False)


def _trials_so_far(storage):
    """The study's trials while a worker starts: none before its journal holds the study (the file comes first)."""
    try:
        return _trials(storage) if storage.exists() else []
    except ValueError as error:
        if "has no study named" in str(error):
            return []
        raise


def test_a_killed_worker_loses_no_trial_and_its_trial_is_retried(tmp_path):
    storage, budget = tmp_path / "study.journal", 3
    # long beats: the killed worker is found dead by its missing process, not by an old heartbeat
    spec = json.dumps({"objective": "toy", "space": SPACE, "toy": {"steps": 3, "sleep": 0.4}, "pruner": None,
                       "heartbeat": {"interval": 30, "grace": 300}})
    cmd = [sys.executable, "-m", "s2dc.cli", "sweep", "work", "--storage", str(storage), "--study", "kill",
           "--budget", str(budget), "--spec", spec]
    worker = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill it once trial 0 is complete and trial 1 is under way
        trials = _trials_so_far(storage)
        if len(trials) == 2 and trials[0].state == TrialState.COMPLETE and trials[1].intermediate_values:
            # Between two journal writes: frozen first, killed only if it does not hold the journal's lock (a lock
            # left by a writer killed mid-write is Optuna's to break, after 30 s: s2dc/tune/storage.py).
            os.kill(worker.pid, signal.SIGSTOP)
            if not os.path.lexists(f"{storage}.lock"):
                break
            os.kill(worker.pid, signal.SIGCONT)
        assert worker.poll() is None, worker.communicate()[1][-3000:]
        time.sleep(0.05)
    else:
        raise AssertionError("the worker never reached its second trial")
    os.kill(worker.pid, signal.SIGKILL)
    worker.communicate(timeout=30)
    assert worker.returncode == -signal.SIGKILL
    before = _trials(storage)
    assert [t.state for t in before] == [TrialState.COMPLETE, TrialState.RUNNING]
    completed, killed = before

    rerun = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60)  # the next run
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    out = rerun.stdout
    assert "trial 1: its worker died; retried as trial 2 with the same parameters" in out
    after = _trials(storage)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in after) == budget
    assert after[0].state == TrialState.COMPLETE and after[0].value == completed.value  # nothing lost
    assert after[1].state == TrialState.FAIL  # the killed trial no longer looks RUNNING
    retry = after[2]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["retry_of"] == 1
    assert retry.params == killed.params and retry.system_attrs["retry_history"] == [1]
    assert len(after) == 4 and after[3].state == TrialState.COMPLETE
    # the rerun's sampler goes on with the search: one worker's restarted sampler replayed its first draws (trial 3
    # repeated trial 0's parameters, a budget spent twice on one point; a crashing draw came back on every rerun)
    assert after[3].params != after[0].params


def test_a_silent_worker_on_another_host_is_found_by_its_old_heartbeat(tmp_path):
    """Journal storage: a RUNNING trial whose worker is alive as far as this host can tell (another host) is failed
    once its last beat is older than the grace period, and retried."""
    study, liveness = open_sweep(str(tmp_path / "study.journal"), "beats", heartbeat_interval=1, grace_period=5)
    for number, beat_age in ((0, 6.0), (1, 2.0)):  # both started a minute ago on another host
        study.add_trial(optuna.trial.FrozenTrial(
            number=number, trial_id=number, state=TrialState.RUNNING, value=None, values=None, intermediate_values={},
            datetime_start=datetime.datetime.now() - datetime.timedelta(minutes=1), datetime_complete=None,
            params={"x": 0.25 * (number + 1)}, distributions={"x": optuna.distributions.FloatDistribution(0.0, 1.0)},
            user_attrs={"worker": {"host": "elsewhere", "pid": 1}, "heartbeat": time.time() - beat_age},
            system_attrs={}))
    assert liveness.fail_stale(study) == [0]  # its last beat is older than the grace period; trial 1 beat 2 s ago
    failed, alive, retry = study.get_trials(deepcopy=False)
    assert alive.state == TrialState.RUNNING
    assert failed.state == TrialState.FAIL and retry.state == TrialState.WAITING
    assert retry.params == failed.params and retry.user_attrs == {"retry_of": 0}


def test_the_database_storage_finds_dead_workers_as_the_journal_does(tmp_path):
    """RDB storage: Optuna's heartbeat failed the trial of a live worker on this host once its beats were older than
    the grace period (a paused or swapping worker), which then lost its trial (docs/sweeps.md: dead on the same host
    means the process is gone, never while it lives); a silent worker of another host was never found. Both storages
    now judge alike, by the trial's recorded worker and beats."""
    study, liveness = open_sweep(f"sqlite:///{tmp_path / 'study.db'}", "rdb", heartbeat_interval=1, grace_period=2)
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
    liveness.record(study, trial)
    liveness.claim(trial)  # this process: alive
    time.sleep(2.5)  # its last beat is now older than the grace period
    assert liveness.fail_stale(study) == []
    study.add_trial(optuna.trial.FrozenTrial(
        number=1, trial_id=1, state=TrialState.RUNNING, value=None, values=None, intermediate_values={},
        datetime_start=datetime.datetime.now() - datetime.timedelta(minutes=1), datetime_complete=None,
        params={"x": 0.5}, distributions={"x": optuna.distributions.FloatDistribution(0.0, 1.0)},
        user_attrs={"worker": {"host": "elsewhere", "pid": 1}, "heartbeat": time.time() - 3.0}, system_attrs={}))
    assert liveness.fail_stale(study) == [1]
    alive, failed, retry = study.get_trials(deepcopy=False)
    assert alive.state == TrialState.RUNNING and failed.state == TrialState.FAIL
    assert retry.state == TrialState.WAITING and retry.params == failed.params and retry.user_attrs == {"retry_of": 1}


def test_sigterm_fails_the_running_trial_and_enqueues_its_retry(tmp_path):
    """Snakemake or SLURM cancelling a worker (SIGTERM): its trial is FAILED as interrupted and queued again."""
    storage = tmp_path / "study.journal"
    spec = json.dumps({"objective": "toy", "space": SPACE, "toy": {"steps": 3, "sleep": 0.5}, "pruner": None})
    cmd = [sys.executable, "-m", "s2dc.cli", "sweep", "work", "--storage", str(storage), "--study", "kill",
           "--budget", "2", "--spec", spec]
    worker = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not ((trials := _trials_so_far(storage)) and trials[0].intermediate_values):
        assert time.monotonic() < deadline and worker.poll() is None, worker.communicate()[1][-3000:]
        time.sleep(0.05)
    worker.terminate()
    out, err = worker.communicate(timeout=30)
    assert worker.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "trial 0: interrupted" in out
    interrupted, retry = _trials(storage)
    assert interrupted.state == TrialState.FAIL and interrupted.user_attrs["interrupted"] is True
    assert retry.state == TrialState.WAITING and retry.params == interrupted.params
