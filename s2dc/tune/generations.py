"""Reproducible parallel sweeps: trials in generations of ``workers``, each drawn and judged on the generations before.

Trial ``n`` belongs to generation ``n // workers``. Before it draws its parameters it waits until no trial of an
earlier generation is RUNNING (failing those of dead workers meanwhile, as a worker does between trials). Its
parameters then come from a TPE sampler seeded from ``(seed, n)`` that sees the finished trials of the earlier
generations only, and the median pruner judges it against those same trials. So what trial ``n`` draws, whether it
is pruned and its value depend on the seed, the number of workers and the earlier generations alone, not on which
worker finished first: a sweep run again with the same spec gives the same trials, given an objective that gives
the same value for the same parameters (s2dc's does, on one machine). A retry of a dead or interrupted worker's trial
runs its parameters again under a new number, after the others; the trials after it may then differ from an
uninterrupted run. With one worker a generation is one trial (TPE on every trial before it); with several, a worker
idles while the last trial of the generation before its own runs.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

SEEN = (TrialState.COMPLETE, TrialState.PRUNED)


def generation_start(number: int, workers: int) -> int:
    """The number of the first trial of trial ``number``'s generation."""
    return number - number % workers


def trial_seed(seed: int, number: int) -> int:
    """The sampler seed of trial ``number`` of a sweep seeded ``seed`` (32 bits)."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{number}".encode()).digest()[:4], "little")


def earlier_generations(study: optuna.Study, number: int, workers: int,
                        states: tuple[TrialState, ...] = SEEN) -> list[FrozenTrial]:
    """The trials of ``states`` numbered before trial ``number``'s generation."""
    start = generation_start(number, workers)
    return [t for t in study.get_trials(deepcopy=False) if t.number < start and t.state in states]


def wait_for_earlier_generations(study: optuna.Study, number: int, workers: int, fail_stale: Callable[[], object],
                                 poll: float, log: Callable[[str], None]) -> None:
    """Return once no trial numbered before trial ``number``'s generation is RUNNING; ``fail_stale()`` fails (and
    retries) the trials of dead workers each round, so a dead worker's trial does not hold the others forever."""
    said = None
    while True:
        fail_stale()
        running = [t.number for t in earlier_generations(study, number, workers, (TrialState.RUNNING,))]
        if not running:
            return
        if running != said:
            log(f"trial {number} waits for trials {running} of the generations before its own")
            said = running
        time.sleep(poll)


def _view(trials: list[FrozenTrial], study: optuna.Study) -> optuna.Study:
    """An in-memory study of ``study``'s direction holding ``trials``: what the sampler or pruner of a trial sees."""
    view = optuna.create_study(direction=study.direction, sampler=optuna.samplers.RandomSampler(0))
    view.add_trials(trials)
    return view


class GenerationSampler(optuna.samplers.BaseSampler):
    """TPE (independent sampling), seeded per trial from :func:`trial_seed`, on the earlier generations only."""

    def __init__(self, seed: int, workers: int) -> None:
        self.seed, self.workers = seed, workers
        self._current: tuple[int, optuna.samplers.TPESampler, optuna.Study] | None = None

    def infer_relative_search_space(self, study, trial) -> dict:
        return {}

    def sample_relative(self, study, trial, search_space) -> dict:
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        if self._current is None or self._current[0] != trial.number:  # one sampler and view for all of a trial's draws
            self._current = (trial.number, optuna.samplers.TPESampler(seed=trial_seed(self.seed, trial.number)),
                             _view(earlier_generations(study, trial.number, self.workers), study))
        _, sampler, view = self._current
        return sampler.sample_independent(view, trial, param_name, param_distribution)


class GenerationPruner(optuna.pruners.BasePruner):
    """Optuna's ``MedianPruner`` (``median``: its options) judging a trial against the earlier generations only."""

    def __init__(self, workers: int, **median) -> None:
        self.workers = workers
        self._median = optuna.pruners.MedianPruner(**median)
        self._current: tuple[int, optuna.Study] | None = None

    def prune(self, study, trial) -> bool:
        if self._current is None or self._current[0] != trial.number:
            self._current = (trial.number, _view(earlier_generations(study, trial.number, self.workers,
                                                                     (TrialState.COMPLETE,)), study))
        return self._median.prune(self._current[1], trial)
