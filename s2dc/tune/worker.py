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
import hashlib
import json
import math
import signal
import threading
import time
import traceback
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
#: The study user attribute that records what the first worker bound the study to (:func:`bind_study`), and its
#: fields; an older s2dc recorded each field as an attribute of its own, which is still read.
BOUND_ATTR = "bound"
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


class TwoBindings(ValueError):
    """A study bound at once by workers of other settings (:func:`bound_record`); ``keys``: its binding attributes."""

    def __init__(self, message: str, keys: list[str]):
        super().__init__(message)
        self.keys = keys


def bound_record(study: optuna.Study) -> dict | None:
    """What ``study`` is bound to (:func:`bind_study`): its ``bound:<digest>`` attribute (or the ``bound`` attribute,
    or the separate attributes, an older s2dc recorded); ``None`` for a study not bound yet. ValueError naming the
    study when two workers bound it at the same moment to other values: neither may go on with it."""
    attrs = study.user_attrs
    found = {key: value for key, value in attrs.items() if key.startswith(BOUND_ATTR + ":")}
    if BOUND_ATTR in attrs:
        found[BOUND_ATTR] = attrs[BOUND_ATTR]
    distinct = {json.dumps(value, sort_keys=True) for value in found.values()}
    if len(distinct) > 1:
        raise TwoBindings(f"study {study.study_name!r} was bound at once by workers of other settings "
                          f"({sorted(found)}): its trials may mix them; use a new study name", sorted(found))
    if found:
        return next(iter(found.values()))
    legacy = {key: attrs[key] for key in (BUDGET_ATTR, SPACE_ATTR, DATA_ATTR, OPTIONS_ATTR) if key in attrs}
    return legacy or None


def bind_study(study: optuna.Study, budget: int, space: dict, data: dict | None = None,
               options: dict | None = None) -> dict:
    """Record the budget, search space, (``data``, when the objective reads datasets) the data's identity and
    (``options``) what else defines a trial (objective, base options, workers) on a new study, as one attribute read
    back after writing; refuse a worker whose values differ from what the study was started with (its trials would
    not be comparable, or the budget would be ambiguous). Returns this worker's values, for :func:`run_worker` to
    check again each round (two workers of other values that bind a new study at once each write their own binding,
    under a key of its own: both are then refused at their next check, and a trial one had begun never counts for the
    other)."""
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    mine = {key: value for key, value in ((BUDGET_ATTR, budget), (SPACE_ATTR, space), (DATA_ATTR, data),
                                          (OPTIONS_ATTR, options)) if value is not None}
    if bound_record(study) is None:  # each binding under a key of its own: one written over another is seen
        digest = hashlib.sha256(json.dumps(mine, sort_keys=True).encode()).hexdigest()[:16]
        study.set_user_attr(f"{BOUND_ATTR}:{digest}", mine)
    check_bound(study, mine)  # read back: another worker's binding written meanwhile is seen
    return mine


def check_bound(study: optuna.Study, mine: dict) -> None:
    """ValueError naming the study, the first field and both values unless what ``study`` is bound to agrees with
    ``mine`` in each field both hold."""
    recorded = bound_record(study) or {}
    for key, value in mine.items():
        if key not in recorded or recorded[key] == value:
            continue
        there = recorded[key]
        way_out = (f"its trials ran on other data: delete that study (optuna delete-study --study-name "
                   f"{study.study_name} --storage <the storage>) or use a new study name" if key == DATA_ATTR
                   else f"use the same {key} for every worker, or a new study name")
        if isinstance(there, dict) and isinstance(value, dict):
            field, was, here = option_changes(there, value)[0]
            raise ValueError(f"study {study.study_name!r} was started with other {key}: they differ in {field}, "
                             f"{was} there, {here} in this worker's; {way_out}")
        raise ValueError(f"study {study.study_name!r} was started with {key} {there!r}, this worker has "
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
               log: Callable[[str], None] = print, bound: dict | None = None) -> WorkerReport:
    """Run trials of ``study`` until it holds ``budget`` finished trials (see the module docstring); a trial draws
    its parameters once no trial of the generations (of ``generation`` trials, the spec's ``workers``) before its own
    runs (:mod:`s2dc.tune.generations`). Each round first checks that the study is still bound to ``bound`` (what
    :func:`bind_study` returned; by default, ``budget``): ValueError if another worker's binding replaced it."""
    with noting_sigterm():
        return _run_worker(study, objective, dims, budget, liveness, generation, max_failures, poll, log,
                           {BUDGET_ATTR: budget} if bound is None else bound)


def _run_worker(study, objective, dims, budget, liveness, generation, max_failures, poll, log, bound) -> WorkerReport:
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    poll = liveness.interval if poll is None else poll
    report, waiting_for = WorkerReport(), None

    def fail_stale() -> None:  # between trials, and while a trial waits for the generations before its own
        report.dead_retried += len(liveness.fail_stale(study))

    while True:
        check_bound(study, bound)
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
        trial = study.ask()
        if is_surplus(study, trial.number, budget):
            trial.set_user_attr(SURPLUS_ATTR, True)
            study.tell(trial, state=TrialState.FAIL)
            report.surplus += 1
            continue
        state = _run_trial(study, trial, objective, dims, liveness, budget, generation, fail_stale, poll, log)
        if state is None:  # another worker failed it as dead, and retries it
            continue
        if state == TrialState.COMPLETE:
            report.complete += 1
        elif state == TrialState.PRUNED:
            report.pruned += 1
        else:
            report.failed += 1
            if report.failed >= max_failures:
                raise TrialError(f"{report.failed} trials of this worker diverged (max_failures={max_failures}); "
                                 "see the 'error' column of the study's trials")


def _run_trial(study, trial, objective, dims, liveness, budget, generation, fail_stale,
               poll, log) -> TrialState | None:
    """Run one trial under a heartbeat and tell the study how it ended; returns its state, or ``None`` when another
    worker failed the trial meanwhile (judged dead: it retries it), with a warning."""
    started = time.perf_counter()
    value, state, error, interrupted, lost = None, TrialState.FAIL, None, None, None
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
        except optuna.exceptions.UpdateFinishedTrialError as err:  # a report or attribute on a trial failed elsewhere
            lost = err
        except FloatingPointError as err:  # a diverged run: a bad region of the space, not a bug
            _note(trial, ERROR_ATTR, f"diverged: {err}")
        except Exception as err:
            if TERMINATED.is_set():  # SIGTERM's SystemExit turned into another exception by a library
                _note(trial, INTERRUPTED_ATTR, True)
                interrupted = SystemExit(128 + signal.SIGTERM)
            else:
                _note(trial, ERROR_ATTR, "".join(traceback.format_exception_only(err)).strip())
                error = err
        except BaseException as err:  # Ctrl-C, SIGTERM: not the parameters' fault, so they run again
            _note(trial, INTERRUPTED_ATTR, True)
            interrupted = err
    if lost is not None:
        log(f"warning: trial {trial.number} was failed by another worker while it ran ({lost}); another worker "
            "declared it dead and retries it: this worker does not count it and goes on")
        return None
    told = _tell(study, trial, state, value, log)
    if interrupted is not None:
        if told:
            liveness.retry(study, study.get_trials(deepcopy=False)[trial.number], f"interrupted ({interrupted!r})")
        raise interrupted
    if error is not None:
        raise TrialError(f"trial {trial.number} failed: {type(error).__name__}: {error}") from error
    if not told:
        return None
    shown = f" value {value:.6g}" if state == TrialState.COMPLETE else ""
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    log(f"trial {trial.number} {state.name}{shown} in {time.perf_counter() - started:.1f} s "
        f"({finished_count(study)}/{budget} finished): {params}")
    return state


def _note(trial, key: str, value) -> None:
    """``trial.set_user_attr``, but for a trial another worker finished meanwhile (:func:`_tell` then warns)."""
    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
        trial.set_user_attr(key, value)


def _tell(study, trial, state, value, log) -> bool:
    """``study.tell``; ``False`` (with a warning) when another worker already failed the trial as dead."""
    try:
        study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        return True
    except (ValueError, optuna.exceptions.UpdateFinishedTrialError) as err:
        log(f"warning: trial {trial.number} could not be told {state.name} ({err}); another worker declared it "
            "dead and retries it")
        return False
