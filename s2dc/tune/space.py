"""The search space of a sweep: ``{"pretrain.<section>.<field>" | "finetune.<section>.<field>": range or choices}``.

A range is ``{low, high}`` (floats; integers when both bounds are integers) with optional ``log`` and ``step``;
choices are ``{choices: [...]}``. Every key is checked against the option classes before a trial runs, and so is
every bound and choice (each one must make a valid configuration on top of the sweep's base options), and every pair
of one stage's bounds and choices (options valid one by one can be refused together, and the sampler draws pairs).
"""

from __future__ import annotations

import itertools
import math
import typing
from dataclasses import dataclass
from decimal import Decimal

from .. import config as cfgtools
from ..train import config as pretrain_config
from ..train import finetune_config, identity

#: The two stages a key can address, with their option class and the function that builds it.
STAGES = {
    "pretrain": (pretrain_config.PretrainConfig, pretrain_config.build_config),
    "finetune": (finetune_config.FinetuneConfig, finetune_config.build_config),
}

#: Per stage, the options that change how a run goes, not what it computes (where it reads and writes, how often it
#: logs or saves, its loader processes, caches and activation checkpointing): the runs' own run-local options, less
#: where a run computes and in which precision (``run.device``, ``run.amp``, ``train.amp``), which change the numbers,
#: and less a fine-tuning's row keys (label ratio, seed, method, starting encoder), which metrics.json records apart.
RUN_LOCAL = {stage: {section: names - {"device", "amp", "label_ratio", "seed", "method", "init"}
                     for section, names in run_local.items()}
             for stage, run_local in (("pretrain", identity.RUN_LOCAL), ("finetune", finetune_config.RUN_LOCAL))}

#: Options the sweep sets itself for every trial: never searched.
RESERVED = ("pretrain.data.source", "pretrain.run.out_dir", "finetune.data.source", "finetune.run.out_dir",
            "finetune.model.init", "finetune.run.seed")

#: Options no space searches: the fine-tuning's network sizes, which each trial's encoder sets.
SIZES = tuple(f"finetune.model.{name}" for name in finetune_config.ARCHITECTURE)


_RANGE_KEYS = {"low", "high", "log", "step"}

#: An integer range of at most this many values has each value checked (:meth:`Dimension.drawable`).
MAX_GRID = 1000


@dataclass(frozen=True)
class Dimension:
    """One searched option; ``key`` (e.g. ``pretrain.loss.weight_p2p``) is also its Optuna parameter name."""

    key: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple | None = None

    @property
    def stage(self) -> str:
        return self.key.split(".")[0]

    @property
    def section(self) -> str:
        return self.key.split(".")[1]

    @property
    def field(self) -> str:
        return self.key.split(".")[2]

    @property
    def is_int(self) -> bool:
        return self.choices is None and all(_is_int(v) for v in (self.low, self.high))

    def candidates(self) -> list:
        """Values that must each make a valid configuration: the bounds, or every choice."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]

    def drawable(self) -> list:
        """Every value the sampler can draw, where they are few (an integer range of at most :data:`MAX_GRID`
        values): an option may refuse a value between two valid bounds (``encoder.feature_size`` 25, between 24
        and 48); else :meth:`candidates`."""
        if self.is_int:
            step = self.step or 1
            if not self.log and (self.high - self.low) // step < MAX_GRID:
                return list(range(self.low, self.high + 1, step))
            if self.log and self.high - self.low < MAX_GRID:
                return list(range(self.low, self.high + 1))
        return self.candidates()


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_space(space: dict) -> tuple[Dimension, ...]:
    """``space`` (a plain dict, e.g. from params.yaml) -> dimensions; ``ValueError`` naming the key if malformed.

    Checks the form only; :func:`check_space` checks the keys and values against the option classes."""
    if not isinstance(space, dict) or not space:
        raise ValueError(f"the search space must be a non-empty mapping of 'pretrain.<section>.<field>' or "
                         f"'finetune.<section>.<field>' to a range or choices, got {space!r}")
    dims = [_parse_dimension(key, value) for key, value in space.items()]
    # drawn in the keys' order from one seeded generator: sorted, so that one space (a mapping: bind_study takes it
    # in any order for the same) draws the same trials whichever worker's spec lists its keys first
    return tuple(sorted(dims, key=lambda dim: dim.key))


def _parse_dimension(key, value) -> Dimension:
    if not isinstance(key, str) or len(key.split(".")) != 3 or not all(key.split(".")):
        raise ValueError(f"space key {key!r}: expected 'pretrain.<section>.<field>' or 'finetune.<section>.<field>'")
    if key.split(".")[0] not in STAGES:
        raise ValueError(f"space key {key!r}: unknown prefix {key.split('.')[0]!r}; expected 'pretrain' or 'finetune'")
    if key in RESERVED:
        raise ValueError(f"space key {key!r}: set by the sweep for every trial, it cannot be searched")
    if key in SIZES:
        raise ValueError(f"space key {key!r}: the fine-tuning's network sizes come from each trial's encoder; search "
                         f"pretrain.encoder.{key.rsplit('.', 1)[1]} instead")
    if not isinstance(value, dict):
        raise ValueError(f"space key {key!r}: expected {{low: .., high: ..}} or {{choices: [..]}}, got {value!r}")
    if "choices" in value:
        if set(value) != {"choices"}:
            raise ValueError(f"space key {key!r}: 'choices' cannot be combined with {sorted(set(value) - {'choices'})}")
        choices = value["choices"]
        if not isinstance(choices, (list, tuple)) or not choices:
            raise ValueError(f"space key {key!r}: choices must be a non-empty list, got {choices!r}")
        bad = [c for c in choices if not (c is None or isinstance(c, (bool, int, float, str)))]
        if bad:
            raise ValueError(f"space key {key!r}: choices must be numbers, strings, booleans or null, got {bad}")
        if len(set(map(repr, choices))) != len(choices):
            raise ValueError(f"space key {key!r}: choices repeat a value: {list(choices)}")
        return Dimension(key, choices=tuple(choices))
    unknown = set(value) - _RANGE_KEYS
    if unknown or not {"low", "high"} <= set(value):
        raise ValueError(f"space key {key!r}: a range takes low, high and optionally log, step; got {sorted(value)}")
    low, high, log, step = value["low"], value["high"], value.get("log", False), value.get("step")
    if not (_is_number(low) and _is_number(high)):
        raise ValueError(f"space key {key!r}: low and high must be finite numbers, got {low!r} and {high!r}")
    if not low < high:
        raise ValueError(f"space key {key!r}: low must be < high, got low={low!r}, high={high!r}")
    if not isinstance(log, bool):
        raise ValueError(f"space key {key!r}: log must be true or false, got {log!r}")
    if log and low <= 0:
        raise ValueError(f"space key {key!r}: a log range needs low > 0, got {low!r}")
    if step is not None:
        if log:
            raise ValueError(f"space key {key!r}: step cannot be combined with log")
        if not _is_number(step) or step <= 0:
            raise ValueError(f"space key {key!r}: step must be a number > 0, got {step!r}")
        if _is_int(low) and _is_int(high) and not _is_int(step):
            raise ValueError(f"space key {key!r}: an integer range needs an integer step, got {step!r}")
        if Decimal(str(step)) > Decimal(str(high)) - Decimal(str(low)):  # decimal: 0.3 - 0.1 < 0.2 in floats
            raise ValueError(f"space key {key!r}: step {step!r} is larger than high - low ({high!r} - {low!r}): the "
                             "range would hold low alone; give a smaller step, or no step")
    return Dimension(key, low=low, high=high, log=log, step=step)


def check_space(dims: tuple[Dimension, ...], base: dict[str, dict]) -> None:
    """Check each dimension against the option classes, on top of ``base`` (``{"pretrain": nested options,
    "finetune": nested options}``): the section and field exist, integer ranges go to integer options, and every
    bound or choice makes a valid configuration. ``ValueError`` names the key."""
    for stage, (cls, build) in STAGES.items():
        try:
            build(base.get(stage) or {})
        except ValueError as err:
            raise ValueError(f"the sweep's base {stage} options are not valid: {err}") from None
    for dim in dims:
        cls, build = STAGES[dim.stage]
        sections = cfgtools.section_types(cls)
        if dim.section not in sections:
            raise ValueError(f"space key {dim.key!r}: {dim.stage} options have no section {dim.section!r}; "
                             f"expected one of {sorted(sections)}")
        hints = typing.get_type_hints(sections[dim.section])
        if dim.field not in hints:
            raise ValueError(f"space key {dim.key!r}: section {dim.section!r} has no option {dim.field!r}; "
                             f"it has {sorted(hints)}")
        if dim.is_int and hints[dim.field] is float:
            raise ValueError(f"space key {dim.key!r}: {dim.section}.{dim.field} is a real number but low and high are "
                             f"integers, which would search integers only; write them as {float(dim.low)} and "
                             f"{float(dim.high)}")
        typed = []  # (choice, the option it gives)
        for value in dim.drawable():
            values = merge_options(base.get(dim.stage) or {}, {dim.section: {dim.field: value}})
            try:
                option = getattr(getattr(build(values), dim.section), dim.field)
            except ValueError as err:
                raise ValueError(f"space key {dim.key!r}: the value {value!r} is not a valid option: {err}") from None
            same = [choice for choice, given in typed if given == option]
            if dim.choices is not None and same:
                raise ValueError(f"space key {dim.key!r}: choices {same[0]!r} and {value!r} are the same option "
                                 f"({option!r}) once typed, which the sampler would weigh twice; list each value once")
            typed.append((value, option))
    _check_pairs(dims, base)
    _check_sizes(dims, base)


def _check_pairs(dims: tuple[Dimension, ...], base: dict[str, dict]) -> None:
    """Each pair of one stage's dimensions at each pair of their candidates, on top of ``base``: a warm-up as long as
    the run (``optim.steps`` at its low bound, ``optim.warmup_steps`` at its high one) is refused by the trial that draws
    it, which stops its worker; ``ValueError`` names both keys and values before any trial runs."""
    for first, second in itertools.combinations(dims, 2):
        if first.stage != second.stage:
            continue
        build = STAGES[first.stage][1]
        a_values, b_values = first.drawable(), second.drawable()
        if len(a_values) * len(b_values) > MAX_GRID:  # too many pairs to build each: the bounds and choices only
            a_values, b_values = first.candidates(), second.candidates()
        for a, b in itertools.product(a_values, b_values):
            values = merge_options(base.get(first.stage) or {}, {first.section: {first.field: a}})
            try:
                build(merge_options(values, {second.section: {second.field: b}}))
            except ValueError as err:
                raise ValueError(f"space keys {first.key!r} = {a!r} and {second.key!r} = {b!r}: valid one by one, "
                                 f"together not a valid option: {err}; narrow the two ranges so that the sampler "
                                 "cannot draw such a pair") from None


def _check_sizes(dims: tuple[Dimension, ...], base: dict[str, dict]) -> None:
    """The fine-tuning's network sizes are those of each trial's encoder (s2dc.downstream.defaults fills those not
    given): one the base fine-tuning options give must be the base pretraining's, and not searched there; else each
    trial failed loading its encoder's weights, after its pretraining. ``ValueError`` names both keys."""
    given = [name for name in finetune_config.ARCHITECTURE if name in ((base.get("finetune") or {}).get("model") or {})]
    if not given:
        return
    searched = {dim.key for dim in dims}
    encoder = STAGES["pretrain"][1](base.get("pretrain") or {}).encoder
    model = STAGES["finetune"][1](base.get("finetune") or {}).model
    for name in given:
        ours, theirs = getattr(model, name), getattr(encoder, name)
        if f"pretrain.encoder.{name}" in searched or ours != theirs:
            said = "searched" if ours == theirs else f"{list(theirs) if isinstance(theirs, tuple) else theirs!r}"
            raise ValueError(f"finetune.model.{name} is {list(ours) if isinstance(ours, tuple) else ours!r} but "
                             f"pretrain.encoder.{name} is {said}: the fine-tuning's network sizes are each trial's "
                             f"encoder's; leave finetune.model.{name} out")


def suggest(trial, dims: tuple[Dimension, ...]) -> dict:
    """Ask ``trial`` (an ``optuna.Trial``) for one value per dimension; returns ``{key: value}``. A retried or
    enqueued trial that already holds a value gets that value back."""
    params = {}
    for dim in dims:
        if dim.choices is not None:
            params[dim.key] = trial.suggest_categorical(dim.key, list(dim.choices))
        elif dim.is_int:
            params[dim.key] = trial.suggest_int(dim.key, dim.low, dim.high, step=dim.step or 1, log=dim.log)
        else:
            params[dim.key] = trial.suggest_float(dim.key, dim.low, dim.high, step=dim.step, log=dim.log)
    return params


def nest(params: dict) -> dict[str, dict]:
    """``{"pretrain.loss.weight_p2p": v, ...}`` -> ``{"pretrain": {"loss": {"weight_p2p": v}}, "finetune": {...}}``
    (the layout of params.yaml's options)."""
    nested: dict[str, dict] = {stage: {} for stage in STAGES}
    for key, value in params.items():
        stage, section, field = key.split(".")
        nested[stage].setdefault(section, {})[field] = value
    return nested


def split_run_local(stage: str, sections: dict) -> tuple[dict, dict]:
    """Options of ``stage`` (``{section: {field: value}}``) -> (those that change what its run computes, the
    run-local ones of :data:`RUN_LOCAL`); key order kept, a section left with no option dropped."""
    local = RUN_LOCAL[stage]
    parts: tuple[dict, dict] = ({}, {})
    for section, fields in sections.items():
        for name, value in (fields or {}).items():
            parts[name in local.get(section, ())].setdefault(section, {})[name] = value
    return parts


def merge_options(base: dict, override: dict) -> dict:
    """Nested options ``base`` overlaid with ``override`` (section by section; a new dict)."""
    merged = {section: dict(fields or {}) for section, fields in base.items()}
    for section, fields in override.items():
        merged.setdefault(section, {}).update(fields)
    return merged

