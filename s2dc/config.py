"""Typed, sectioned configurations: YAML files, ``--section.field`` command-line options, validation.

A configuration is a frozen dataclass whose fields are *sections* (frozen dataclasses of plain
fields). Every option is addressed as ``section.field`` — the same name on the command line
(``--loss.assignment sinkhorn``) and in YAML (``loss: {assignment: sinkhorn}``); values are checked
against the declared types and unknown keys are errors that name the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import types
import typing
from pathlib import Path

import yaml


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the last without a word; DVC
    refuses such a params.yaml)."""

    def construct_mapping(self, node, deep=False):
        written = [key_node for key_node, _ in node.value if key_node.tag != "tag:yaml.org,2002:merge"]  # `<<:`
        keys = [self.construct_object(key_node, deep=True) for key_node in written]  # merges in keys it may override
        for i, key in enumerate(keys):
            if isinstance(key, typing.Hashable) and key in keys[:i]:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice in one mapping",
                                                        written[i].start_mark)
        return super().construct_mapping(node, deep)


def load_yaml(text: str):
    """YAML ``text`` as :func:`yaml.safe_load` reads it, but a key given twice in one mapping is a
    ``yaml.YAMLError`` naming it and its line."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def load_json(text: str):
    """JSON ``text`` as :func:`json.loads` reads it, but a key given twice in one object (json keeps the last: a
    section or a name dropped without a word) is a ``ValueError`` naming it (as is text that is not JSON)."""
    def unique(pairs: list) -> dict:
        keys = [key for key, _ in pairs]
        if twice := sorted({key for key in keys if keys.count(key) > 1}):
            raise ValueError(f"key(s) {', '.join(map(repr, twice))} given twice in one object; expected each once")
        return dict(pairs)

    return json.loads(text, object_pairs_hook=unique)


def section_types(config_cls) -> dict[str, type]:
    """{section name: section dataclass} of a configuration class."""
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}


def to_dict(config) -> dict:
    """Nested plain dict (tuples as lists) of a configuration."""
    return {
        f.name: {g.name: _plain(getattr(getattr(config, f.name), g.name)) for g in dataclasses.fields(getattr(config, f.name))}
        for f in dataclasses.fields(config)
    }


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def build_config(config_cls, values: dict, derived: dict | None = None):
    """Nested ``{section: {field: value}}`` -> validated ``config_cls``; unknown keys are errors.

    ``derived`` maps a section name to a function of the sections built so far that returns
    defaults for it (e.g. the views' token stride from the encoder).
    """
    sections = section_types(config_cls)
    unknown = set(values) - set(sections)
    if unknown:
        raise ValueError(f"unknown config section(s) {sorted(unknown, key=str)}; expected {sorted(sections)}")
    built: dict = {}
    for name, cls in sections.items():
        given = dict(values.get(name) or {})
        fields = {f.name for f in dataclasses.fields(cls)}
        bad = set(given) - fields
        if bad:
            raise ValueError(f"unknown option(s) {[f'{name}.{k}' for k in sorted(bad, key=str)]}; '{name}' has "
                             f"{sorted(fields)}")
        if derived and name in derived:
            for key, value in derived[name](built).items():
                given.setdefault(key, value)
        hints = typing.get_type_hints(cls)
        try:
            built[name] = cls(**{k: coerce(f"{name}.{k}", v, hints[k]) for k, v in given.items()})
        except TypeError as err:
            raise ValueError(f"bad value in section '{name}': {err}") from err
    return config_cls(**built)


def coerce(key: str, value, annotation):
    """Check and convert one option value to its declared type, naming ``key`` on error."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            return None
        annotation = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is tuple:
        if args[-1] is Ellipsis and (value is None or (isinstance(value, str) and value.lower() == "none")):
            return ()  # `--train.flip_axes none`: an empty list, which the command line cannot write otherwise
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key} must be a list, got {value!r}")
        if args[-1] is not Ellipsis and len(args) != len(value):
            raise ValueError(f"{key} must have {len(args)} values, got {list(value)}")
        return tuple(coerce(key, v, args[0]) for v in value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ValueError(f"{key} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)) or (
                isinstance(value, str) and not re.fullmatch(r"-?[0-9]+", value)):  # ASCII digits: isdigit() took '４'
            # and passed '²' to int(), whose error named no option
            raise ValueError(f"{key} must be an integer, got {value!r}")
        return int(value)
    if annotation is float:
        if isinstance(value, bool):
            raise ValueError(f"{key} must be a number, got {value!r}")
        try:
            if isinstance(value, str) and (not value.isascii() or "_" in value):  # float() reads '１.5' and '1_0'
                raise ValueError
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"{key} must be a finite number, got {value!r}")
        return number
    if annotation is str:
        if not isinstance(value, (str, Path)):
            raise ValueError(f"{key} must be a string, got {value!r}")
        return str(value)
    return value


#: The largest ``run.seed``: NumPy's legacy seeding (``np.random.seed``) takes 0..2**32 - 1.
SEED_MAX = 2**32 - 1

#: The most ``data.workers`` (loader processes, each a copy of the training process): more only started processes
#: until the machine ran out (10**12 hung the run, starting one after another).
WORKERS_MAX = 256


#: The largest grid axis (voxels) a twin is drawn with, and of a training ROI: twice a CT slice's 512; a larger grid
#: only ran out of memory with a traceback (each volume and its maps are float arrays of the whole grid), a larger ROI
#: ground for minutes padding each volume to it (a 100000-voxel axis: 0.8 GB a case) before running out.
MAX_AXIS = 1024

#: The most crops one training step takes (fine-tuning: train.batch_size x train.samples_per_volume; pretraining:
#: optim.batch_size x views.grid**2): 1024 crops of 96^3 voxels are 3.6 GB of input alone, far more than SwinUNETR's
#: activations for them fit in an 80-GB GPU; 10**12 ground in a Python loop building the crops (or their centres).
MAX_CROPS = 1024


def check(ok: bool, key: str, expected: str, value) -> None:
    """Raise ``ValueError("<key> must be <expected>, got <value>")`` unless ``ok`` (write ``ok`` so that NaN fails it)."""
    if not ok:
        raise ValueError(f"{key} must be {expected}, got {value!r}")


def non_blank(kind: str):
    """argparse ``type`` of a ``kind`` option ("path", "name", "YAML file"): an empty or blank string (an unset shell
    variable) is refused, naming the option, instead of read as '.', where a command wrote its outputs into, or read
    its inputs from, the working folder (or named a study '')."""
    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"expected a {kind}, got {text!r}")
        return text
    return parse


def add_arguments(parser: argparse.ArgumentParser, config_cls, help_texts: dict[str, str], defaults: dict) -> None:
    """``--config`` plus one ``--section.field`` option per field, grouped by section, with help and default."""
    parser.add_argument("--config", type=non_blank("YAML file"), help="YAML file with {section: {field: value}}; command-line options override it")
    for section, cls in section_types(config_cls).items():
        group = parser.add_argument_group(section)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key = f"{section}.{f.name}"
            annotation = hints[f.name]
            is_seq = typing.get_origin(annotation) is tuple or any(
                typing.get_origin(a) is tuple for a in typing.get_args(annotation)
            )
            group.add_argument(
                f"--{key}", dest=key, nargs="+" if is_seq else None, default=argparse.SUPPRESS,
                metavar=f.name.upper(), help=f"{help_texts[key]} (default: {defaults[section][f.name]})",
            )


def values_from_args(args: argparse.Namespace) -> dict:
    """Nested values: the ``--config`` YAML file (if any) overlaid with the ``--section.field`` options."""
    values: dict = {}
    if getattr(args, "config", None):
        path = Path(args.config)
        if path.is_dir():
            raise ValueError(f"config file '{path}' is a folder; expected a YAML file of {{section: {{field: value}}}}")
        if not path.is_file():
            raise ValueError(f"config file '{path}' does not exist")
        try:
            loaded = load_yaml(path.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ValueError(f"config file '{path}' is not YAML text ({' '.join(str(err).split())}); expected a YAML "
                             "file of {section: {field: value}}") from None
        if not isinstance(loaded, dict) or not all(isinstance(v, (dict, type(None))) for v in loaded.values()) or \
                not all(isinstance(k, str) for v in loaded.values() for k in [*(v or {})]) or \
                not all(isinstance(k, str) for k in loaded):
            raise ValueError(f"config file '{path}' must hold a mapping of sections to mappings of options (names "
                             "as keys)")
        values = {k: dict(v or {}) for k, v in loaded.items()}
    for key, value in vars(args).items():
        if "." in key:
            section, name = key.split(".", 1)
            if isinstance(value, list) and len(value) == 1 and value[0].lower() == "none":
                value = None
            values.setdefault(section, {})[name] = value
    return values


def check_warmup(section: str, warmup_steps: int, steps: int) -> None:
    """Refuse a warm-up as long as the run or longer: the learning rate would never reach its peak (nor decay)."""
    if warmup_steps >= steps:
        raise ValueError(f"{section}.warmup_steps ({warmup_steps}) must be less than {section}.steps ({steps}): "
                         f"a warm-up as long as the run never reaches the peak learning rate; lower "
                         f"{section}.warmup_steps or raise {section}.steps")
