"""One worker of a sweep: runs trials until the study holds exactly ``budget`` finished (COMPLETE or PRUNED) trials,
however many workers share it.

Each round: fail the trials of dead workers (and enqueue their retries) *first*, then count. Done when ``budget``
trials are finished. When the rest of the budget is already running in other workers, wait for them (one of them
may die, and its retry must still run) instead of starting more. Otherwise ``ask()`` a trial (a WAITING retry
first) and check it is not surplus: two workers may ask at the same moment, so a new trial runs only when fewer
than ``budget`` trials numbered below it are COMPLETE, PRUNED, RUNNING or WAITING; else it is told FAIL with the
user attribute ``surplus=True``. The highest-numbered finished trial had fewer than ``budget`` live trials below
it, so there are never more than ``budget`` finished trials.

A trial draws its parameters once no trial of the generations before its own is running (generations of the spec's
``workers`` trials, :mod:`s2dc.tune.generations`), so that the trials do not depend on the workers' order.

A trial whose objective raises is FAILED with its error recorded and stops the worker (:class:`TrialError`);
a diverged one (NaN/Inf) is FAILED and the worker goes on, up to ``max_failures`` of them; one interrupted by
Ctrl-C or SIGTERM is FAILED and retried by the next worker.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from ..train.identity import option_changes
from .generations import wait_for_earlier_generations
from .liveness import Liveness
from .space import Dimension, suggest

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
SURPLUS_ATTR, ERROR_ATTR, INTERRUPTED_ATTR = "surplus", "error", "interrupted"
#: Study user attributes fixed by the first worker; later workers must agree.
BUDGET_ATTR, SPACE_ATTR, DATA_ATTR, OPTIONS_ATTR = "budget", "space", "data", "options"

#: ``objective(trial, params) -> value``: ``params`` are the trial's ``{space key: value}``; it may report
#: intermediate values and raise ``optuna.TrialPruned``.
Objective = Callable[[optuna.Trial, dict], float]


class TrialError(RuntimeError):
    """The objective raised: the trial is FAILED (its error recorded as the user attribute ``error``)."""


@dataclass
class WorkerReport:
    """What one worker did."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    surplus: int = 0
    dead_retried: int = 0
    finished_in_study: int = 0


def finished_count(study: optuna.Study) -> int:
    """Trials that count towards the budget (COMPLETE or PRUNED)."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def bind_study(study: optuna.Study, budget: int, space: dict, data: dict | None = None,
               options: dict | None = None) -> None:
    """Record the budget, search space, (``data``, when the objective reads datasets) the data's identity and
    (``options``) what else defines a trial (objective, base options) on a new study; refuse a worker whose budget,
    space, data or options differ from what the study was started with (its trials would not be comparable, or the
    budget would be ambiguous)."""
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    bound = ((BUDGET_ATTR, budget), (SPACE_ATTR, space)) + (((DATA_ATTR, data),) if data is not None else ()) \
        + (((OPTIONS_ATTR, options),) if options is not None else ())
    for key, value in bound:
        if key not in study.user_attrs:
            study.set_user_attr(key, value)
        recorded = study.user_attrs[key]
        if recorded != value:
            way_out = (f"its trials ran on other data: delete that study (optuna delete-study --study-name "
                       f"{study.study_name} --storage <the storage>) or use a new study name" if key == DATA_ATTR
                       else f"use the same {key} for every worker, or a new study name")
            if isinstance(recorded, dict) and isinstance(value, dict):
                field, there, here = option_changes(recorded, value)[0]
                raise ValueError(f"study {study.study_name!r} was started with other {key}: they differ in {field}, "
                                 f"{there} there, {here} in this worker's; {way_out}")
            raise ValueError(f"study {study.study_name!r} was started with {key} {recorded!r}, this worker has "
                             f"{value!r}; {way_out}")


def is_surplus(study: optuna.Study, number: int, budget: int) -> bool:
    """Whether trial ``number`` is over the budget: ``budget`` trials numbered below it are already COMPLETE,
    PRUNED, RUNNING or WAITING (failed ones, surplus or dead, do not count)."""
    return sum(t.number < number and t.state in LIVE for t in study.get_trials(deepcopy=False)) >= budget


#: Set when this process got SIGTERM: an exception that a library raises while handling the signal's SystemExit
#: (it may arrive inside any call) is then an interruption, not the parameters' fault.
TERMINATED = threading.Event()


@contextlib.contextmanager
def noting_sigterm():
    """While running: SIGTERM sets :data:`TERMINATED`, then does what it did before (the command line's handler
    exits with 143; with none, SystemExit(143)). Only the main thread can install handlers; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        TERMINATED.set()
        if callable(previous):
            previous(signum, frame)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_worker(study: optuna.Study, objective: Objective, dims: tuple[Dimension, ...], budget: int,
               liveness: Liveness, *, generation: int = 1, max_failures: int = 3, poll: float | None = None,
               log: Callable[[str], None] = print) -> WorkerReport:
    """Run trials of ``study`` until it holds ``budget`` finished trials (see the module docstring); a trial draws
    its parameters once no trial of the generations (of ``generation`` trials, the spec's ``workers``) before its own
    runs (:mod:`s2dc.tune.generations`)."""
    with noting_sigterm():
        return _run_worker(study, objective, dims, budget, liveness, generation, max_failures, poll, log)


def _run_worker(study, objective, dims, budget, liveness, generation, max_failures, poll, log) -> WorkerReport:
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    poll = liveness.interval if poll is None else poll
    report, waiting_for = WorkerReport(), None

    def fail_stale() -> None:  # between trials, and while a trial waits for the generations before its own
        report.dead_retried += len(liveness.fail_stale(study))

    while True:
        fail_stale()
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state in FINISHED for t in trials)
        if finished >= budget:
            report.finished_in_study = finished
            log(f"budget met: {finished}/{budget} trials finished")
            return report
        running = [t.number for t in trials if t.state == TrialState.RUNNING]
        if not any(t.state == TrialState.WAITING for t in trials) and finished + len(running) >= budget:
            if running != waiting_for:
                log(f"{finished}/{budget} finished; waiting for trials {running} of other workers")
                waiting_for = running
            time.sleep(poll)
            continue
        waiting_for = None
        with warnings.catch_warnings():  # Optuna warns that its heartbeat is meant for optimize(); it beats here too
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
            trial = study.ask()
        if is_surplus(study, trial.number, budget):
            trial.set_user_attr(SURPLUS_ATTR, True)
            study.tell(trial, state=TrialState.FAIL)
            report.surplus += 1
            continue
        state = _run_trial(study, trial, objective, dims, liveness, budget, generation, fail_stale, poll, log)
        if state == TrialState.COMPLETE:
            report.complete += 1
        elif state == TrialState.PRUNED:
            report.pruned += 1
        else:
            report.failed += 1
            if report.failed >= max_failures:
                raise TrialError(f"{report.failed} trials of this worker diverged (max_failures={max_failures}); "
                                 "see the 'error' column of the study's trials")


def _run_trial(study, trial, objective, dims, liveness, budget, generation, fail_stale, poll, log) -> TrialState:
    """Run one trial under a heartbeat and tell the study how it ended; returns its state."""
    started = time.perf_counter()
    value, state, error, interrupted = None, TrialState.FAIL, None, None
    with liveness.heartbeat(study, trial):  # stopped before the trial is told, so no beat lands on a finished trial
        liveness.claim(trial)
        try:
            wait_for_earlier_generations(study, trial.number, generation, fail_stale, poll, log)
            params = suggest(trial, dims)
            value = float(objective(trial, params))
            if not math.isfinite(value):
                raise FloatingPointError(f"the objective returned {value}")
            state = TrialState.COMPLETE
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except FloatingPointError as err:  # a diverged run: a bad region of the space, not a bug
            trial.set_user_attr(ERROR_ATTR, f"diverged: {err}")
        except Exception as err:
            if TERMINATED.is_set():  # SIGTERM's SystemExit turned into another exception by a library
                trial.set_user_attr(INTERRUPTED_ATTR, True)
                interrupted = SystemExit(128 + signal.SIGTERM)
            else:
                trial.set_user_attr(ERROR_ATTR, "".join(traceback.format_exception_only(err)).strip())
                error = err
        except BaseException as err:  # Ctrl-C, SIGTERM: not the parameters' fault, so they run again
            trial.set_user_attr(INTERRUPTED_ATTR, True)
            interrupted = err
    told = _tell(study, trial, state, value, log)
    if interrupted is not None:
        if told:
            liveness.retry(study, study.get_trials(deepcopy=False)[trial.number], f"interrupted ({interrupted!r})")
        raise interrupted
    if error is not None:
        raise TrialError(f"trial {trial.number} failed: {type(error).__name__}: {error}") from error
    shown = f" value {value:.6g}" if state == TrialState.COMPLETE else ""
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    log(f"trial {trial.number} {state.name}{shown} in {time.perf_counter() - started:.1f} s "
        f"({finished_count(study)}/{budget} finished): {params}")
    return state


def _tell(study, trial, state, value, log) -> bool:
    """``study.tell``; ``False`` (with a warning) when another worker already failed the trial as dead."""
    try:
        study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        return True
    except (ValueError, optuna.exceptions.UpdateFinishedTrialError) as err:
        log(f"warning: trial {trial.number} could not be told {state.name} ({err}); another worker declared it "
            "dead and retries it")
        return False
