"""A cheap stand-in for the real objective: a smooth function of the parameters, reported over a few steps with a
short sleep each, so the sweep machinery (budget, dead workers, pruning, export) is tested and rehearsed in seconds.

Options (the spec's ``toy`` section): ``steps`` (intermediate reports, default 3), ``sleep`` (seconds per step,
default 0.05), ``error`` (a message: every trial raises ``RuntimeError`` with it; for testing failures).
"""

from __future__ import annotations

import math
import time

import optuna

from .. import config as cfgtools
from .space import Dimension

OPTIONS = {"steps": 3, "sleep": 0.05, "error": None}


def toy_score(params: dict, dims: tuple[Dimension, ...]) -> float:
    """In [0, 1]: 1 when every range parameter sits at 70 % of its range (log ranges on the log scale) and every
    categorical one is its first choice."""
    terms = []
    for dim in dims:
        value = params[dim.key]
        if dim.choices is not None:
            terms.append(1.0 if value == dim.choices[0] else 0.5)
            continue
        scale = math.log if dim.log else float
        position = (scale(value) - scale(dim.low)) / (scale(dim.high) - scale(dim.low))
        terms.append(1.0 - (position - 0.7) ** 2)
    return sum(terms) / len(terms)


def make_toy_objective(options: dict, dims: tuple[Dimension, ...]):
    """The toy objective: reports ``score * step / steps`` at steps 1..steps (pruned when the pruner says so) and
    returns ``score``."""
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise ValueError(f"spec 'toy': unknown option(s) {sorted(unknown)}; expected {sorted(OPTIONS)}")
    opts = {**OPTIONS, **options}
    steps, sleep = opts["steps"], opts["sleep"]
    cfgtools.check(isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1, "toy.steps",
                   "an integer >= 1", steps)
    cfgtools.check(isinstance(sleep, (int, float)) and not isinstance(sleep, bool) and 0 <= sleep < math.inf,
                   "toy.sleep", "a finite number of seconds >= 0", sleep)

    def objective(trial: optuna.Trial, params: dict) -> float:
        score = toy_score(params, dims)
        for step in range(1, steps + 1):
            time.sleep(sleep)
            if opts["error"]:
                raise RuntimeError(opts["error"])
            trial.report(score * step / steps, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}")
        return score

    return objective
