"""A sweep's settings (the *spec*): one JSON string or a JSON/YAML file, the same for every worker of a study.

```yaml
space:                       # see s2dc.tune.space
  pretrain.loss.weight_p2p: {low: 0.0, high: 1.0}
  finetune.train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}
pretrain: {optim: {steps: 200}, ...}     # base pretraining options ({section: {field: value}})
finetune: {train: {steps: 40}, ...}      # base fine-tuning options
data: {pretrain: data/ct_pool/dataset.json, finetune: data/btcv/dataset.json}
out_dir: results/sweeps        # trials in <out_dir>/<study>/trial_0000/{pretrain,finetune}
finetune_seeds: [0, 1]       # a trial fine-tunes once per seed (finetune_seed<s>/) and is worth the mean of their
                             # last scores; the pruner reads the first seed's (default [0]: trial_0000/finetune)
workers: 3                   # workers sharing the study (SQLite is refused for more than one)
seed: 0                      # sampler seed: the same spec gives the same trials, whatever the workers' order
pruner: {n_startup_trials: 5, n_warmup_steps: 0, interval_steps: 1}   # MedianPruner; null: no pruning
heartbeat: {interval: 10, grace: 60}     # seconds
max_retry: 2                 # retries of a trial whose worker died
max_failures: 3              # diverged (NaN/Inf) trials a worker tolerates
objective: s2dc              # or 'toy' (a cheap stand-in; options under 'toy')
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import SEED_MAX, load_json, load_yaml
from .space import RESERVED, Dimension, check_space, parse_space

OBJECTIVES = ("s2dc", "toy")
PRUNER_KEYS = {"n_startup_trials": 0, "n_warmup_steps": 0, "interval_steps": 1}
DEFAULT_PRUNER = {"n_startup_trials": 5, "n_warmup_steps": 0, "interval_steps": 1}


@dataclass(frozen=True)
class SweepSpec:
    space: dict
    dims: tuple[Dimension, ...]
    objective: str = "s2dc"
    pretrain: dict = field(default_factory=dict)
    finetune: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    out_dir: str = "sweeps"
    finetune_seeds: tuple[int, ...] = (0,)
    workers: int = 1
    seed: int = 0
    pruner: dict | None = field(default_factory=lambda: dict(DEFAULT_PRUNER))
    heartbeat: dict = field(default_factory=lambda: {"interval": 10, "grace": 60})
    max_retry: int | None = 2
    max_failures: int = 3
    toy: dict = field(default_factory=dict)

    def make_pruner(self):
        """The median pruner with the spec's settings on the generations before a trial's own
        (:class:`~s2dc.tune.generations.GenerationPruner`), or ``NopPruner`` when ``pruner`` is null."""
        import optuna

        from .generations import GenerationPruner

        if self.pruner is None:
            return optuna.pruners.NopPruner()
        return GenerationPruner(self.workers, **self.pruner)

    def make_sampler(self):
        """TPE seeded per trial from ``seed`` and its number, on the generations before its own
        (:class:`~s2dc.tune.generations.GenerationSampler`): the same trials whichever worker finishes first, and a
        rerun after a stop goes on with new numbers, so new draws, instead of replaying the first run's."""
        from .generations import GenerationSampler

        return GenerationSampler(self.seed, self.workers)


def load_spec(text: str) -> SweepSpec:
    """A spec from a JSON string (starting with ``{``) or a path to a ``.json``, ``.yaml`` or ``.yml`` file."""
    if text.lstrip().startswith("{"):
        try:
            values = load_json(text)
        except ValueError as err:  # not JSON, a key given twice
            raise ValueError(f"--spec: not valid JSON ({err})") from None
        return spec_from_dict(values)
    path = Path(text)
    if not path.is_file():
        raise ValueError(f"--spec: '{text}' is neither a JSON object nor an existing .json/.yaml file")
    if path.suffix not in (".json", ".yaml", ".yml"):
        raise ValueError(f"spec file '{path}': expected a .json, .yaml or .yml file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"spec file '{path}': not UTF-8 text ({err})") from None
    if path.suffix == ".json":
        try:
            values = load_json(text)
        except ValueError as err:  # not JSON, a key given twice
            raise ValueError(f"spec file '{path}': not valid JSON ({err})") from None
    else:
        try:
            values = load_yaml(text)
        except yaml.YAMLError as err:
            raise ValueError(f"spec file '{path}': not valid YAML ({err})") from None
    return spec_from_dict(values, where=f"spec file '{path}'")


def spec_from_dict(values, where: str = "spec") -> SweepSpec:
    """Check a spec given as a plain dict; ``ValueError`` naming the key."""
    if not isinstance(values, dict):
        raise ValueError(f"{where} must be a mapping, got {type(values).__name__}")
    known = set(SweepSpec.__dataclass_fields__) - {"dims"}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; expected {sorted(known)}")
    if "space" not in values:
        raise ValueError(f"{where}: 'space' (the search space) is required")
    kwargs = dict(values)
    objective = kwargs.get("objective", "s2dc")
    if objective not in OBJECTIVES:
        raise ValueError(f"{where}: objective must be one of {list(OBJECTIVES)}, got {objective!r}")
    for stage in ("pretrain", "finetune"):
        kwargs[stage] = _options(kwargs.get(stage) or {}, stage, where)
    dims = parse_space(kwargs["space"])
    check_space(dims, {"pretrain": kwargs["pretrain"], "finetune": kwargs["finetune"]})
    data = kwargs.get("data") or {}
    if objective == "s2dc":
        if not isinstance(data, dict) or set(data) != {"pretrain", "finetune"}:
            raise ValueError(f"{where}: data must give the two dataset.json files, {{pretrain: .., finetune: ..}}, "
                             f"got {data!r}")
    seeds = kwargs.get("finetune_seeds", [0])
    if not (isinstance(seeds, (list, tuple)) and seeds and all(_is_int(x) and 0 <= x <= SEED_MAX for x in seeds)
            and len(set(seeds)) == len(seeds)):
        raise ValueError(f"{where}: finetune_seeds must be a non-empty list of distinct integers >= 0 (and <= "
                         f"{SEED_MAX}, as run.seed), got {seeds!r}")
    kwargs["finetune_seeds"] = tuple(seeds)
    for name in ("workers", "seed", "max_failures"):
        if name in kwargs and not _is_int(kwargs[name]):
            raise ValueError(f"{where}: {name} must be an integer, got {kwargs[name]!r}")
    if kwargs.get("workers", 1) < 1 or kwargs.get("max_failures", 3) < 1:
        raise ValueError(f"{where}: workers and max_failures must be >= 1")
    if not 0 <= kwargs.get("seed", 0) <= SEED_MAX:  # the sampler's (NumPy's) seeds
        raise ValueError(f"{where}: seed must be an integer in 0..{SEED_MAX}, got {kwargs['seed']!r}")
    retry = kwargs.get("max_retry", 2)
    if retry is not None and not (_is_int(retry) and retry >= 0):
        raise ValueError(f"{where}: max_retry must be an integer >= 0 or null, got {retry!r}")
    kwargs["pruner"] = _pruner(kwargs.get("pruner", DEFAULT_PRUNER), where)
    kwargs["heartbeat"] = _heartbeat(kwargs.get("heartbeat", {}), where)
    if not isinstance(kwargs.get("toy", {}), dict):
        raise ValueError(f"{where}: toy must be a mapping of toy-objective options")
    if not isinstance(kwargs.get("out_dir", "sweeps"), str) or not kwargs.get("out_dir", "sweeps"):
        raise ValueError(f"{where}: out_dir must be a folder path")
    return SweepSpec(dims=dims, **kwargs)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _options(options, stage: str, where: str) -> dict:
    """Base options of one stage: ``{section: {field: value}}``, without the options the sweep sets itself."""
    if not isinstance(options, dict) or not all(isinstance(v, (dict, type(None))) for v in options.values()):
        raise ValueError(f"{where}: {stage} must map sections to mappings of options, got {options!r}")
    options = {section: dict(fields or {}) for section, fields in options.items()}
    for key in RESERVED:
        prefix, section, name = key.split(".")
        if prefix == stage and name in options.get(section, {}):
            raise ValueError(f"{where}: {stage}.{section}.{name} is set by the sweep for every trial; remove it "
                             "(datasets go under 'data', trial folders under 'out_dir', fine-tuning seeds under 'finetune_seeds')")
    return options


def _pruner(pruner, where: str) -> dict | None:
    if pruner is None or pruner is False:
        return None
    if not isinstance(pruner, dict) or set(pruner) - set(PRUNER_KEYS):
        raise ValueError(f"{where}: pruner must be null or a mapping with keys {sorted(PRUNER_KEYS)}, got {pruner!r}")
    for key, low in PRUNER_KEYS.items():
        if key in pruner and not (_is_int(pruner[key]) and pruner[key] >= low):
            raise ValueError(f"{where}: pruner.{key} must be an integer >= {low}, got {pruner[key]!r}")
    return {**DEFAULT_PRUNER, **pruner}


def _heartbeat(heartbeat, where: str) -> dict:
    if not isinstance(heartbeat, dict) or set(heartbeat) - {"interval", "grace"}:
        raise ValueError(f"{where}: heartbeat must be a mapping with keys interval, grace, got {heartbeat!r}")
    merged = {"interval": 10, "grace": 60, **heartbeat}
    if not all(_is_int(v) for v in merged.values()) or merged["interval"] < 1 or merged["grace"] <= merged["interval"]:
        raise ValueError(f"{where}: heartbeat needs integer seconds with interval >= 1 and grace > interval, "
                         f"got {merged}")
    return merged
