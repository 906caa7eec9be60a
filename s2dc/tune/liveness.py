"""Dead workers: a trial whose worker died (SIGKILL, lost node) is failed and retried with the same parameters.

While a trial runs, a thread beats every ``interval`` seconds. Before a worker counts the budget it fails the
RUNNING trials whose worker is dead and enqueues one retry of each (a WAITING trial with the same parameters, at
most ``max_retry`` times per original trial, so a trial that kills its worker, e.g. out of memory, stops coming back).

Both storages (journal file and database) record liveness in trial user attributes: ``worker`` = ``{host, pid,
start}`` and ``heartbeat`` = the time of the last beat. A trial whose worker ran on this host is dead when that
process no longer exists (seen at once; ``start`` tells a reused pid), never while it lives; one of another host when
its last beat (epoch seconds; with none yet, its start) is older than ``grace`` seconds. (Optuna's own heartbeat,
``RDBStorage``'s only, fails any trial whose beats are late, a paused worker's on this host too, and
``JournalStorage`` has none in Optuna 4.9: neither is used.)
"""

from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from ..files import pid_alive

WORKER_ATTR, BEAT_ATTR, RETRY_ATTR = "worker", "heartbeat", "retry_of"


def this_worker() -> dict:
    """Identity of this process as recorded on its trials (``start``: :func:`process_start`)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": process_start(os.getpid())}


def enqueue_retry(study: optuna.Study, failed: optuna.trial.FrozenTrial, max_retry: int | None) -> int | None:
    """Add a WAITING copy of ``failed`` (same parameters and distributions) that the next ``ask()`` picks up;
    returns its number, or ``None`` when the original trial was already retried ``max_retry`` times."""
    history = [*failed.system_attrs.get("retry_history", []), failed.number]
    if max_retry is not None and len(history) > max_retry:
        print(f"trial {failed.number}: not retried again (its parameters were tried {len(history)} times)", flush=True)
        return None
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=failed.params, distributions=failed.distributions,
        user_attrs={RETRY_ATTR: failed.number},
        system_attrs={"failed_trial": history[0], "retry_history": history},
    ))
    return max(t.number for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


@dataclass
class Liveness:
    """Heartbeats and dead-trial recovery of a study (see the module docstring)."""

    interval: int
    grace: int
    max_retry: int | None

    def claim(self, trial: optuna.Trial) -> None:
        """Record this process as ``trial``'s worker (right after its first beat)."""
        trial.set_user_attr(WORKER_ATTR, this_worker())

    def record(self, study: optuna.Study, trial: optuna.Trial) -> None:
        """One beat for ``trial``."""
        trial.set_user_attr(BEAT_ATTR, time.time())

    def fail_stale(self, study: optuna.Study) -> list[int]:
        """Fail the RUNNING trials of dead workers (:func:`is_dead`) and enqueue their retries; returns their
        numbers."""
        failed = []
        now, host = time.time(), socket.gethostname()
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if not is_dead(trial, now, self.grace, host):
                continue
            try:
                study.tell(trial.number, state=TrialState.FAIL)
            except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
                continue  # finished meanwhile, or another worker failed it first (and retries it)
            failed.append(trial.number)
            self.retry(study, study.get_trials(deepcopy=False)[trial.number], "its worker died")
        return failed

    def retry(self, study: optuna.Study, failed: optuna.trial.FrozenTrial, why: str) -> None:
        """Enqueue a retry of ``failed`` (see :func:`enqueue_retry`) and say so."""
        number = enqueue_retry(study, failed, self.max_retry)
        if number is not None:
            print(f"trial {failed.number}: {why}; retried as trial {number} with the same parameters", flush=True)

    @contextmanager
    def heartbeat(self, study: optuna.Study, trial: optuna.Trial):
        """Beat for ``trial`` once now, then from a daemon thread every ``interval`` seconds while the block runs.
        (A trial that has no worker recorded yet is judged by its start, so a worker killed at any point is
        found.)"""
        stop = threading.Event()
        self.record(study, trial)

        def beat() -> None:
            while not stop.wait(self.interval):
                try:
                    self.record(study, trial)
                except Exception as err:  # a missed beat is not fatal; the next one may get through
                    print(f"warning: heartbeat of trial {trial.number} failed: {err}", flush=True)

        thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=self.interval + 5)


def is_dead(trial: optuna.trial.FrozenTrial, now: float, grace: float, host: str) -> bool:
    """Whether the worker of a RUNNING ``trial`` is gone. Its worker ran on this host: when that process no longer
    exists (or its pid is another process's now: its recorded start differs), never while it lives, however old its
    last beat. Otherwise: when its last beat (``heartbeat``, epoch seconds), or with none its start, is more than
    ``grace`` seconds old."""
    worker = trial.user_attrs.get(WORKER_ATTR)
    if isinstance(worker, dict):
        if worker.get("host") == host:
            pid, start = int(worker.get("pid", -1)), worker.get("start")
            return not pid_alive(pid) or (start is not None and process_start(pid) not in (None, start))
    beat = trial.user_attrs.get(BEAT_ATTR)
    if isinstance(beat, (int, float)):  # epoch seconds (Optuna's start is a naive local time: another zone's host
        return now - float(beat) > grace  # started "hours from now"); the first beat precedes the worker's record
    start = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
    return now - start > grace


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks after boot, field 22 of ``/proc/<pid>/stat``): with the pid, it
    names one process; ``None`` where unknown (no such process, no ``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None
