"""The parse-time checks of params.yaml that the Snakemake workflow runs (workflow/rules/common.smk), and the
option blocks they check, as plain functions of the workflow's config (params.yaml, already validated against
workflow/schemas/params.schema.yaml): the workflow turns a :class:`ParamsError` into its WorkflowError, and the
tests run the checks in-process.

Only the workflow imports this module, so it enters no job's code hash (common.smk: CODE)."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import NamedTuple

from s2dc import messages
from s2dc.data import registry
from s2dc.files import atomic_write_text
from s2dc.fingerprint import _cache_dir
from s2dc.train.finetune_config import ARCHITECTURE


class ParamsError(ValueError):
    """A params.yaml entry (or a `--config` value) the workflow refuses; the message names the key."""


class ForeignOutputError(ValueError):
    """A file that is not s2dc's own where a table or plot job of the workflow writes; the message names it."""


class ChangedDataError(ValueError):
    """A file of a dataset s2dc made whose bytes changed after its dataset.json was written; the message names it."""


def _scale(config: dict) -> tuple[str, dict]:
    return config["scale"], config["scales"][config["scale"]]


def ratio_percent(ratio: float) -> int:
    return int(round(100 * ratio))


def dataset_json(config: dict, name: str) -> str:
    """dataset.json (common layout) of a dataset of the active scale."""
    return f"resources/{config['scale']}/{name}/dataset.json"


def made_by(config: dict, name: str) -> str:
    """How a dataset of the active scale is made: 'synthetic' (its twin) or 'prepared' (converted from its
    official release in RAW/<name>, which the user puts there or, for an open archive, the download rule)."""
    return "synthetic" if _scale(config)[1]["datasets"][name]["source"] == "synthetic" else "prepared"


def twin_spec(config: dict, name: str) -> dict:
    """A synthetic dataset's entry as its twin is drawn: ``source``, ``cases``, ``seed``, ``shape`` and, for a
    downstream twin, the ``val_fraction`` it is drawn with (the default written out), in that order, without the
    entry's ``finetune`` options: the twin job's param, so that rewording the entry without changing the twin (keys
    reordered, the default written out or left out) reruns nothing."""
    from s2dc.data.synthetic.writer import check_twin_params

    entry = _scale(config)[1]["datasets"][name]
    drawn = {key: entry[key] for key in ("source", "cases", "seed", "shape")}
    fraction = check_twin_params(name, entry["cases"], entry["seed"], entry["shape"], (1.0, 1.0, 1.0),
                                 entry.get("val_fraction"))
    return drawn if fraction is None else {**drawn, "val_fraction": fraction}


def variant_options(config: dict, variant: str) -> dict:
    """scales.<scale>.pretrain.options with the variant's loss.* overrides on top."""
    options = _scale(config)[1]["pretrain"]["options"]
    return {**options, "loss": {**options.get("loss", {}), **config["variants"][variant]}}


#: Fine-tuning options that `s2dc finetune` fills from elsewhere when they are absent (s2dc.downstream.defaults): the
#: network's sizes from the encoder file, the intensity normalisation from the dataset's preset. Absent is not their
#: default, so :func:`typed_options` never leaves them off.
FILLED_WHEN_ABSENT = {"finetune": {"model": set(ARCHITECTURE), "preprocess": {"intensity", "a_min", "a_max"}}}


def typed_options(stage: str, sections: dict, base: dict | None = None) -> dict:
    """``sections`` (``{section: {field: value}}``, options params.yaml gives `s2dc pretrain` or `s2dc finetune`, as
    ``stage`` says, merged over the ``base`` options: a dataset's intensity preset) with each value as
    that command resolves it, of its declared type (``0`` for a float option is ``0.0``), less each option the command
    resolves alike without it (a default written out, a value ``base`` already gives; never one of
    :data:`FILLED_WHEN_ABSENT`; kept, though equal, an option whose default is derived from others, such as
    ``views.token_stride``): equivalent spellings give one command line, so Snakemake sees no changed parameter."""
    typed = _typed_options(stage, json.dumps(sections), json.dumps(base or {}))  # key order kept: the command's order
    return json.loads(typed)


@functools.cache
def _typed_options(stage: str, sections_json: str, base_json: str) -> str:
    """:func:`typed_options` as JSON, cached: every parse of the workflow asks for the same few (each build of a
    config costs a few milliseconds, and the workflow's parse is timed, README)."""
    from s2dc.tune.space import STAGES, merge_options

    build, sections, base = STAGES[stage][1], json.loads(sections_json), json.loads(base_json)
    resolved = build(merge_options(base, sections)).to_dict()
    kept = {section: {name: resolved[section][name] for name in fields} for section, fields in sections.items()}
    try:
        unwritten = build(base).to_dict()  # each option's value when absent, but for those derived from others
    except ValueError:
        unwritten = None
    keep = FILLED_WHEN_ABSENT.get(stage, {})
    for section, fields in sections.items():
        for name in fields:
            if name in keep.get(section, ()) or (unwritten and unwritten[section][name] != resolved[section][name]):
                continue
            without = {s: {n: v for n, v in f.items() if (s, n) != (section, name)} for s, f in kept.items()}
            try:
                alike = build(merge_options(base, without)).to_dict() == resolved
            except ValueError:  # the other options need it (e.g. views.grid with views.roi_size)
                alike = False
            if alike:
                kept = without
    return json.dumps({section: fields for section, fields in kept.items() if fields})


def launcher_words(launcher: str) -> list[str]:
    """The words a shell makes of ``launcher`` (pretrain.launcher), each option by one name: what the workflow names a
    pretraining's run folder after, so that a launcher spelled another way finds the same run, and one of another
    process count names another. torchrun's options (of ``torchrun`` or ``python -m torch.distributed.run``, up to
    its script) as its own parser reads them, each by its first name with ``_`` for ``-`` (``--nproc_per_node 4`` for
    ``--nproc-per-node 4``, ``--nproc_per=4``; ``-m`` for ``--mod``; ``-r 3`` for ``--redirects 3``, ``-r3``), each once
    and in its parser's order; one it refuses (unknown, or a prefix of several of its option strings: ``--nproc``) is
    a ValueError. The other words as written, but ``--name=value`` as ``--name value`` and ``_`` for ``-`` in
    ``name``: the usual spelling keeps its words."""
    words = shlex.split(launcher)
    if not words or words[0].startswith("#"):  # the shell would run `pretrain ...`, or nothing
        raise ValueError("no command in it")
    command = _torchrun_command(words)
    if not command:
        return _spelled_alike(words)
    options, script = _torchrun_options(words[command:])
    return words[:command] + options + _spelled_alike(script)


def launcher_problem(words: list[str]) -> str | None:
    """Why a launcher's words (:func:`launcher_words`) would not run the s2dc command line, to which the pretrain rule
    appends ``pretrain`` and the options; None when they would: the ``s2dc`` program (or a path to it; ``srun
    s2dc``), its module (``python -m s2dc.cli``), or torchrun (after a prefix such as ``srun`` or ``env``) running
    either, the program with ``--no-python`` (else it runs ``python -u s2dc``), the module with ``-m``, in any order
    of torchrun's options."""
    last, module = words[-1], ("-m", "--module")
    at = next((i for i in range(len(words)) if _torchrun_command(words[i:])), None)
    if at is not None:
        options = words[at + _torchrun_command(words[at:]):-1]
        as_module, no_python = any(w in module for w in options), "--no_python" in options
    else:
        as_module, no_python = len(words) > 1 and words[-2] in module, False
    if as_module and last == "s2dc.cli":
        return None
    if as_module and last == "s2dc":
        return "it runs the module 's2dc', which is no command: write s2dc.cli"
    if as_module or os.path.basename(last) != "s2dc":
        return ("it does not end in the s2dc command, before which the rule writes `pretrain` and the options (as "
                "`... s2dc pretrain ...`)")
    if at is not None and not no_python and not os.path.isfile(last):
        return (f"torchrun runs {last!r} with Python (`python -u {last}`) unless given --no-python, and it is no "
                "Python file here")
    return None


def _torchrun_command(words: list[str]) -> int:
    """How many of ``words`` (a launcher's) name torchrun: 1 for ``torchrun`` (or a path to it), 3 for ``python -m
    torch.distributed.run`` (its entry point), 0 for another command."""
    if os.path.basename(words[0]) == "torchrun":
        return 1
    python = re.fullmatch(r"python[0-9.]*", os.path.basename(words[0]))
    return 3 if python and words[1:3] == ["-m", "torch.distributed.run"] else 0


def _spelled_alike(words: list[str]) -> list[str]:
    """``words`` with each ``--name=value`` as ``--name value`` and ``-`` in ``name`` as ``_``."""
    alike = []
    for word in words:
        if word.startswith("--"):
            option, equals, value = word.partition("=")
            alike.extend(["--" + option[2:].replace("-", "_"), *([value] if equals else [])])
        else:
            alike.append(word)
    return alike


class TorchrunOption(NamedTuple):
    """One option of torchrun's parser: its option strings (the first is the name s2dc writes) and its ``nargs``
    (None: one value; 0: a flag)."""
    option_strings: tuple[str, ...]
    nargs: int | str | None


#: Bump when the cached torchrun table's format changes.
TORCHRUN_CACHE_FORMAT = "1"


@functools.cache
def _torchrun_table() -> tuple[tuple[TorchrunOption, ...], bool]:
    """torchrun's options in its parser's order, and whether it takes abbreviations, from its own parser
    (``torch.distributed.run.get_args_parser``, the one source of its option names). Importing the parser imports
    torch (~2 s on a 2-core AMD EPYC, most of a dry run of the paper DAG, which names torchrun), so the table is kept
    in ``$XDG_CACHE_HOME/s2dc/torchrun`` (default ``~/.cache/s2dc/torchrun``, beside :mod:`s2dc.fingerprint`'s
    cache) under a hash of the parser's two source files and the Python version: read from there, without torch,
    while they are unchanged; made again from the parser when either file or Python changes. Once a process."""
    cached = _torchrun_cache_file()
    if cached is not None and (kept := _read_torchrun_table(cached)) is not None:
        return kept
    from torch.distributed.run import get_args_parser

    parser = get_args_parser()
    table = tuple(TorchrunOption(tuple(a.option_strings), a.nargs) for a in parser._actions if a.option_strings)
    if cached is not None:
        try:  # a cache that cannot be written only costs time
            atomic_write_text(cached, json.dumps([[[list(o.option_strings), o.nargs] for o in table],
                                                  parser.allow_abbrev]))
        except OSError:
            pass
    return table, parser.allow_abbrev


def _read_torchrun_table(path: Path) -> tuple[tuple[TorchrunOption, ...], bool] | None:
    """The table kept at ``path`` by :func:`_torchrun_table`, or None if it is not there or not one it wrote."""
    try:
        options, abbrev = json.loads(path.read_text())
        table = tuple(TorchrunOption(tuple(strings), nargs) for strings, nargs in options)
    except (OSError, ValueError, TypeError):
        return None
    well_formed = isinstance(abbrev, bool) and table and all(
        option.option_strings and all(isinstance(s, str) and s.startswith("-") for s in option.option_strings)
        and (option.nargs is None or isinstance(option.nargs, (int, str))) for option in table)
    return (table, abbrev) if well_formed else None


def _torchrun_cache_file() -> Path | None:
    """Where :func:`_torchrun_table` keeps the table of the installed torch (found without importing it), or None
    when its parser's source files cannot be read."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "distributed"
    try:
        sources = b"".join((folder / name).read_bytes() for name in ("run.py", "argparse_util.py"))
    except OSError:
        return None
    key = hashlib.sha256(f"{TORCHRUN_CACHE_FORMAT}\n{sys.version}\n".encode() + sources).hexdigest()
    return _cache_dir().parent / "torchrun" / f"{key}.json"


def _torchrun_options(words: list[str]) -> tuple[list[str], list[str]]:
    """``words`` (a launcher's after torchrun's command) as torchrun's options, each by its first name (``_`` for
    ``-``) and followed by its value, in the order of torchrun's parser and each once (given twice, the last, as
    argparse keeps it: torchrun's options each store one value or flag, so their order changes nothing), and the words
    from its script on (as written)."""
    given: dict[TorchrunOption, list[str]] = {}
    at = 0
    while at < len(words) and words[at].startswith("-") and words[at] not in ("-", "--"):  # `--`: options end
        word, rest, at = words[at], words[at], at + 1
        while rest:  # a short flag may have more short options after it (`-mr3`: `-m -r 3`)
            action, value, rest = _torchrun_option(word, rest)
            first = action.option_strings[0]
            named = _spelled_alike([first])
            if action.nargs == 0:
                if value is not None:
                    raise ValueError(f"{word!r}: torchrun's {first} takes no value")
            elif action.nargs is not None:  # torchrun's options take one value or none
                raise ValueError(f"{word!r}: torchrun's {first} takes nargs={action.nargs!r}, which s2dc does not read")
            elif value is not None:
                named.append(value)
            elif at < len(words):
                named.append(words[at])
                at += 1
            else:
                raise ValueError(f"{word!r}: torchrun's {first} expects a value after it")
            given.pop(action, None)
            given[action] = named
    order = {action: i for i, action in enumerate(_torchrun_table()[0])}
    return [w for action in sorted(given, key=order.__getitem__) for w in given[action]], words[at:]


def _torchrun_option(word: str, rest: str) -> tuple[TorchrunOption, str | None, str]:
    """The option of torchrun that ``rest`` (``word``, or what follows a short flag in it) names, as argparse finds
    it, its value in ``rest`` (after ``=``, or a short option's attached one) or None, and what follows a short
    flag."""
    options, allow_abbrev = _torchrun_table()
    named = {name: action for action in options for name in action.option_strings}
    name, equals, value = rest.partition("=")
    if rest in named:
        return named[rest], None, ""
    if equals and name in named:
        return named[name], value, ""
    if not rest.startswith("--"):  # `-r3`: -r, 3; `-mr3`: -m, then -r3
        short = named.get(rest[:2])
        if short is None:
            raise ValueError(f"{word!r} is not an option of torchrun")
        return (short, None, "-" + rest[2:]) if short.nargs == 0 else (short, rest[2:], "")
    matches = [known for known in named if known.startswith(name)] if allow_abbrev else []
    if len(matches) > 1:
        raise ValueError(f"{word!r} is ambiguous to torchrun: it could match {', '.join(matches)}")
    if not matches:
        raise ValueError(f"{word!r} is not an option of torchrun")
    return named[matches[0]], value if equals else None, ""


def pretrain_run_options(config: dict, variant: str, modality: str) -> dict:
    """``{"section.field": value}``: what a pretraining variant computes on the pool of ``modality``, resolved as
    `s2dc pretrain` resolves its command line (the pool's intensity preset with the scale's options and the variant's
    overrides over it; defaults filled in, each value of its declared type) and without the run-local options (how often it
    logs or saves, its folders), but for where it runs and in which precision (``run.device``, ``run.amp``) when they
    are not ``auto``: they change the numbers, though a run's identity leaves them to the machine. Equivalent
    spellings in params.yaml (``0`` for ``0.0``, a default written out) give equal options: the workflow names a
    pretraining's run folder after them."""
    from s2dc.train.config import build_config
    from s2dc.train.identity import result_options
    from s2dc.tune.space import merge_options

    sections = merge_options(preset_sections(registry.pool_for(modality)), variant_options(config, variant))
    resolved = build_config(sections).to_dict()
    placed = {f"run.{name}": resolved["run"][name] for name in ("device", "amp") if resolved["run"][name] != "auto"}
    return {**result_options(resolved), **placed}


def finetune_options(config: dict, dataset: str | None = None) -> dict:
    """scales.<scale>.finetune.options with model.{feature_size, depths, num_heads, window_size, patch_size} taken
    from pretrain.options.encoder, so that the scratch baseline and the S²DC run share one architecture; with
    ``dataset``, its own options (scales.<scale>.datasets.<dataset>.finetune) on top."""
    from s2dc.tune.space import merge_options

    scale, p = _scale(config)
    options = p["finetune"]["options"]
    model = options.get("model", {})
    _refuse_sizes(scale, "finetune.options", model)
    encoder = p["pretrain"]["options"].get("encoder", {})
    merged = {"model": {**{k: v for k, v in encoder.items() if k in ARCHITECTURE}, **model},
              **{k: v for k, v in options.items() if k != "model"}}
    return merged if dataset is None else merge_options(merged, p["datasets"][dataset].get("finetune", {}))


def _refuse_sizes(scale: str, where: str, model: dict) -> None:
    """ParamsError naming the key if fine-tuning options ``scales.<scale>.<where>.model`` set a network size: the
    architecture is set once, by the encoder, so that the scratch baseline and the S²DC run share it."""
    repeated = sorted(k for k in model if k in ARCHITECTURE)
    if repeated:
        raise ParamsError(f"params.yaml: scales.{scale}.{where}.model.{repeated[0]}: the architecture is set once, "
                          f"in scales.{scale}.pretrain.options.encoder ({', '.join(ARCHITECTURE)})")


def _check_dataset_finetune_options(config: dict) -> None:
    """A dataset's own fine-tuning options (scales.<scale>.datasets.<name>.finetune): for a downstream dataset, no
    option its rule sets, no network size (the encoder's), no run-local option (the scale's, for every job), and
    valid for the command; ParamsError naming the key."""
    from s2dc.train.finetune_config import build_config as finetune_config
    from s2dc.tune.space import split_run_local

    scale, p = _scale(config)
    for name, entry in p["datasets"].items():
        own = entry.get("finetune")
        if own is None:
            continue
        where = f"scales.{scale}.datasets.{name}.finetune"
        if not registry.get(name).downstream:
            raise ParamsError(f"params.yaml: {where}: {name} is a pretraining pool, it is not fine-tuned")
        _refuse_options_of_the_rules(scale, f"datasets.{name}.finetune", own, "finetune")
        _refuse_sizes(scale, f"datasets.{name}.finetune", own.get("model", {}))
        local = [f"{section}.{field}" for section, fields in split_run_local("finetune", own)[1].items()
                 for field in fields]
        if local:
            raise ParamsError(f"params.yaml: {where}.{local[0]}: how a job runs, not what it computes: set it for "
                              f"every dataset, in scales.{scale}.finetune.options")
        _check_options(config, f"datasets.{name}.finetune", finetune_config, finetune_options(config, name))


def _check_task_options(config: dict) -> None:
    """An option of one task's own section (``segment.*``, ``classify.*``, ``translate.*``) or ``data.input_channel``
    that a fine-tuning of a dataset of another task would get (from the scale's options, the dataset's own, or the
    sweep's base options and space): its job refused it, after the twins were drawn and the encoders pretrained.
    ParamsError naming the key and both tasks."""
    from s2dc.tune.space import merge_options

    scale, p = _scale(config)
    sweep = json.loads(sweep_spec(config))
    searched: dict = {}
    for key in sweep["space"]:
        stage, section, name = key.split(".")
        if stage == "finetune":
            searched.setdefault(section, {})[name] = "searched"
    runs = [(name, typed_options("finetune", finetune_options(config, name)),
             f"finetune.options or datasets.{name}.finetune")
            for name in dict.fromkeys([*p["experiments"]["datasets"], *p["ablation"]["datasets"]])]
    dataset = p["sweep"]["dataset"]
    runs.append((dataset, merge_options(sweep["finetune"], searched),
                 f"finetune.options, datasets.{dataset}.finetune, sweep.trial or sweep.space"))
    for name, options, given in runs:
        task = registry.get(name).task
        for owner, section in registry.TASK_OPTION_SECTIONS.items():
            if owner != task and options.get(section):
                raise ParamsError(f"params.yaml: scales.{scale}: {section}.{next(iter(options[section]))} (from "
                                  f"{given}) is an option of {owner}, but {name} is {task}: its fine-tuning would "
                                  "refuse it")
        if options.get("data", {}).get("input_channel") and task not in registry.INPUT_CHANNEL_TASKS:
            readers = " or ".join(registry.INPUT_CHANNEL_TASKS)
            raise ParamsError(f"params.yaml: scales.{scale}: data.input_channel (from {given}) is for {readers}, but "
                              f"{name} is {task}: its fine-tuning would refuse it")


def preset_sections(dataset: str) -> dict:
    """The intensity options of a dataset's registry preset (CT window, 8-bit scale or z-score) as an option block,
    ``{"preprocess": {...}}``; the scale's options merged over them override them."""
    from s2dc.data.preprocess_config import PreprocessConfig

    return {"preprocess": PreprocessConfig.from_preset(registry.get(dataset).preset).intensity_fields()}


def cli_arguments(sections: dict) -> list[str]:
    """{section: {field: value}} -> ['--section.field', 'value', ...], a list value giving several values (the
    command line of an s2dc command; the workflow quotes it for its shell)."""
    return [part for section, fields in sections.items() for name, value in fields.items()
            for part in (f"--{section}.{name}", *map(str, value if isinstance(value, list) else [value]))]


def sweep_spec(config: dict, run_local: bool = True) -> str:
    """The spec of the sweep's study (s2dc sweep work --spec), as JSON: the scale's pretraining and fine-tuning options
    with each dataset's intensity preset, the trial's overrides (sweep.trial) on top, each of its declared type, the
    search space and pruner; with ``run_local`` false, without the options that change how a trial runs, not what it
    computes (:data:`s2dc.tune.space.RUN_LOCAL`): the spec whose hash names the study."""
    from s2dc.tune.space import merge_options as merge
    from s2dc.tune.space import split_run_local

    scale, p = _scale(config)
    sweep = p["sweep"]
    dataset = sweep["dataset"]
    pool = registry.pool_for(registry.get(dataset).modality)
    spec = {
        "space": sweep["space"],
        "pretrain": _sweep_base("pretrain", merge(merge(preset_sections(pool), p["pretrain"]["options"]),
                                                  sweep["trial"].get("pretrain", {}))),
        "finetune": _sweep_base("finetune", merge(merge(preset_sections(dataset), finetune_options(config, dataset)),
                                                  sweep["trial"].get("finetune", {}))),
        "data": {"pretrain": dataset_json(config, pool), "finetune": dataset_json(config, dataset)},
        "out_dir": f"results/{scale}/sweep/work",
        "finetune_seeds": sweep.get("finetune_seeds", [0]),
        "workers": sweep["workers"],
        "seed": sweep.get("seed", 0),
        "pruner": sweep.get("pruner"),
    }
    if not run_local:
        for stage in ("pretrain", "finetune"):
            spec[stage] = split_run_local(stage, spec[stage])[0]
    return json.dumps(spec, sort_keys=True)


def _sweep_base(stage: str, sections: dict) -> dict:
    """:func:`typed_options` of the sweep's base options of ``stage``; ``ValueError`` says whose options are wrong."""
    try:
        return typed_options(stage, sections)
    except ValueError as err:
        raise ValueError(f"the sweep's base {stage} options are not valid: {err}") from None


def figure_anchor(config: dict, dataset: str) -> tuple[str, str]:
    """(structure, per-voxel map) of the structure figures of ``dataset``: `probe.figures.<dataset>` is a class name
    of its labels, or {structure, labels} naming another map of its cases (a twin's `anatomy`)."""
    entry = _scale(config)[1]["probe"]["figures"][dataset]
    return (entry, "label") if isinstance(entry, str) else (entry["structure"], entry["labels"])


def stage_code(stages: dict[str, list[str]], shallow: tuple[str, ...] = ()) -> dict[str, str]:
    """{stage: :func:`s2dc.fingerprint.code_fingerprint` of its modules, ``shallow`` counted shallow}: the code hash
    of each kind of job (workflow/rules/common.smk). Computed once per content of the s2dc package's sources in a
    process: a process that parses the workflow again and again (the tests' in-process Snakemake runs) reads the
    sources (~5 ms) instead of fingerprinting every stage anew (~80 ms)."""
    frozen = tuple((stage, tuple(modules)) for stage, modules in stages.items())
    return dict(_stage_code(_sources_digest(), frozen, tuple(shallow)))


def _sources_digest() -> str:
    """SHA-256 of the s2dc package's sources: every .py file under it, by relative path and content."""
    from s2dc import fingerprint

    digest = hashlib.sha256()
    for path in sorted(fingerprint.PACKAGE_ROOT.rglob("*.py")):
        digest.update(f"{path.relative_to(fingerprint.PACKAGE_ROOT)}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


@functools.lru_cache(maxsize=8)
def _stage_code(sources: str, stages: tuple, shallow: tuple[str, ...]) -> tuple:
    """((stage, code hash), ...) of ``stages`` ((stage, modules), ...); ``sources`` (:func:`_sources_digest`) keys the
    cache."""
    from s2dc.fingerprint import code_fingerprint

    return tuple((stage, code_fingerprint(*modules, shallow=shallow)) for stage, modules in stages)


def validate_params(config: dict, schema: str | Path) -> None:
    """Snakemake's validation of ``config`` against the ``schema`` file (which also fills its defaults). A refusal
    says what is wrong and at which key (``scales.smoke.datasets.btcv.cases``), without the schema and the config
    that Snakemake's message prints after it (~960 lines); a number written in exponent notation without a decimal
    point (``5e-1``), which Snakemake's YAML 1.1 reader takes as text (DVC's reads 0.5), with how to write it."""
    import yaml
    from jsonschema.exceptions import best_match
    from jsonschema.validators import validator_for
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    try:
        validate(config, str(schema))
    except WorkflowError:
        # Snakemake's message holds the error as text only: found again here (on the refusal's path alone)
        document = yaml.safe_load(Path(schema).read_text())
        cause = best_match(validator_for(document)(document).iter_errors(config))
        if cause is None:
            raise
        where = ".".join(map(str, cause.absolute_path)) or "the top level"
        said = f"params.yaml (with --config) does not fit its schema ({Path(schema).name}) at {where}: {cause.message}"
        found = re.search(r"'([-+]?[0-9]+)([eE][-+]?[0-9]+)' is not of type '(?:number|integer)'", cause.message)
        if found is not None:
            said += (f"\n{found.group(1) + found.group(2)!r} is text to the YAML reader Snakemake uses (YAML 1.1 reads "
                     f"an exponent as a number only after a decimal point): write it {found.group(1)}.0{found.group(2)}")
        raise WorkflowError(said) from None


def check_config_files(paths) -> None:
    """ParamsError naming the file and key when a config file (params.yaml, a ``--configfile`` overlay) gives a key
    twice in one mapping: Snakemake's YAML reader keeps the last without a word (a second ``scale:`` ran that scale),
    where DVC refuses the file."""
    import yaml

    for path in paths:
        try:
            keys = _top_level_keys(Path(path).read_text())
        except yaml.YAMLError as err:
            raise ParamsError(f"{path}: {' '.join(str(err).split())}") from None
        for key in COMMAND_LINE_ONLY:
            if key in keys:
                raise ParamsError(f"{path}: {key}: a choice of the command line (`--config {key}=NAME,NAME`), not of a "
                                  "config file: written there it would narrow every run of the file, and dvc.yaml, "
                                  "which does not track it, would record the narrowed tables as the benchmark's; "
                                  "remove it")


@functools.lru_cache(maxsize=8)
def _top_level_keys(text: str) -> frozenset:
    """The top-level keys of the YAML ``text`` of a config file (none if it is not a mapping), read by
    :func:`s2dc.config.load_yaml` (a key given twice is a ``yaml.YAMLError``, not cached); once per text in a process
    that parses the workflow again and again (the tests' in-process Snakemake runs)."""
    from s2dc.config import load_yaml

    doc = load_yaml(text)
    return frozenset(doc) if isinstance(doc, dict) else frozenset()


#: Keys that narrow one run (`--config only=...`, `--config methods=...`), refused in a config file.
COMMAND_LINE_ONLY = ("only", "methods")


def check_params(config: dict, schema: str | Path | None = None) -> dict:
    """Every check of the active scale's entries that the workflow makes when it is parsed (after the schema's, and
    with ``schema`` its integers taken strictly); returns its `experiments` narrowed by `--config only=...` and
    `--config methods=...`."""
    from s2dc.train.config import build_config as pretrain_config
    from s2dc.train.finetune_config import build_config as finetune_config

    _check_keys_are_text(config)
    if schema is not None:
        _check_integers(config, schema)
    scale, p = _scale(config)
    try:
        if problem := launcher_problem(launcher_words(p["pretrain"]["launcher"])):
            raise ValueError(problem)
    except ValueError as err:  # it names the run folders
        raise ParamsError(f"params.yaml: scales.{scale}.pretrain.launcher {p['pretrain']['launcher']!r}: {err}; "
                          "expected a command line, e.g. 'torchrun --nproc_per_node 4 -m s2dc.cli'") from None
    for stage in ("pretrain", "finetune"):
        _refuse_options_of_the_rules(scale, f"{stage}.options", p[stage]["options"], stage)
    for variant in config["variants"]:
        _check_options(config, f"pretrain.options with variants.{variant}", pretrain_config,
                       variant_options(config, variant))
    _check_options(config, "finetune.options", finetune_config, finetune_options(config))
    _check_datasets(config)  # first: the other checks look the datasets up in the registry
    _check_raw(config)
    _check_dataset_finetune_options(config)
    _check_methods(config)
    _check_label_ratios(config)
    _check_sweep(config)
    _check_task_options(config)
    experiments = _scale(config)[1]["experiments"]
    if "only" in config:
        experiments = {**experiments, "datasets": _restrict(config, "only", experiments["datasets"])}
    if "methods" in config:
        experiments = {**experiments, "methods": _restrict(config, "methods", experiments["methods"])}
    return experiments


def _check_keys_are_text(value, where: str = "") -> None:
    """YAML 1.1 reads a key such as ``1``, ``on`` or ``no`` as a number or a boolean, which the schema's key checks
    never see and the workflow then fails on with a traceback: refused here, naming where."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ParamsError(f"params.yaml: {where or 'the top level'}: the key {key!r} is not text (YAML "
                                  f"reads it as {type(key).__name__}, as it reads numbers and on/off/yes/no); "
                                  "expected a name: quote it, e.g. '1': or 'on':")
            _check_keys_are_text(item, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        for item in value:
            _check_keys_are_text(item, where)


def _check_integers(config: dict, schema: str | Path) -> None:
    """JSON Schema's ``integer`` takes 1.0; the jobs' command lines do not (``--seed 1.0``): a whole number written
    as a decimal where the schema says integer is refused here, naming the key, before any job."""
    for error in _strict_validator(Path(schema).read_text()).iter_errors(config):
        if error.validator == "type":
            key = ".".join(str(part) for part in error.absolute_path)
            raise ParamsError(f"params.yaml: {key}: {error.instance!r} is not an integer (write it without a "
                              "decimal point)")


@functools.lru_cache(maxsize=4)
def _strict_validator(schema_text: str):
    """The JSON Schema validator of the schema ``schema_text`` (YAML) whose ``integer`` is an int only (not 1.0); built
    once per schema text in a process (the tests parse the workflow again and again)."""
    import jsonschema
    import yaml

    doc = yaml.load(schema_text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml's parser if built
    base = jsonschema.validators.validator_for(doc)
    checker = base.TYPE_CHECKER.redefine("integer", lambda _, v: isinstance(v, int) and not isinstance(v, bool))
    return jsonschema.validators.extend(base, type_checker=checker)(doc)


#: The options each rule gives itself, after those of params.yaml (which the command line's last value would
#: silently override), with where params.yaml sets them instead.
RULE_OPTIONS = {
    "pretrain": {"data.source": "to the pool of its modality (datasets)", "run.out_dir": "to its folder",
                 "run.resume": "to if_unchanged", "run.progress": "to false"},
    "finetune": {"data.source": "to its dataset (datasets)", "model.init": "to its method's encoder",
                 "data.label_ratio": "to each of experiments.label_ratios", "run.seed": "to each of experiments.seeds",
                 "run.method": "to each of experiments.methods", "run.out_dir": "to its folder",
                 "run.resume": "to if_unchanged", "run.progress": "to false"},
}


def _refuse_options_of_the_rules(scale: str, where: str, options: dict, stage: str) -> None:
    """Raise ParamsError naming the key if ``scales.<scale>.<where>`` (``<stage>.options``, or a dataset's
    ``datasets.<name>.finetune``) sets an option the ``stage``'s rule sets itself."""
    for key, set_where in RULE_OPTIONS[stage].items():
        section, name = key.split(".")
        if name in (options.get(section) or {}):
            raise ParamsError(f"params.yaml: scales.{scale}.{where}.{key}: the workflow's {stage} rule sets it "
                              f"{set_where} for every job, after these options; remove it")


def _check_options(config: dict, where: str, build, options: dict) -> None:
    """Validate an s2dc option block with the command line's own validators (names the key on error)."""
    try:
        build({**options, "data": {**options.get("data", {}), "source": "params.yaml"}})
    except ValueError as err:
        raise ParamsError(f"params.yaml: scales.{config['scale']}.{where}: {err}") from None


def _restrict(config: dict, key: str, allowed: list[str]) -> list[str]:
    """The comma-separated names of `--config <key>=...`, each one of ``allowed`` (the scale's experiments)."""
    names = [n.strip() for n in str(config[key]).split(",") if n.strip()]
    wrong = [n for n in names if n not in allowed]
    if not names or wrong:
        raise ParamsError(f"--config {key}={config[key]}: expected a comma-separated choice of {allowed} "
                          f"(scales.{config['scale']}.experiments), got {wrong or 'nothing'}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ParamsError(f"--config {key}={config[key]}: names {twice[0]!r} twice: expected each name once (a run "
                          "counts once in the tables)")
    return names


def _check_methods(config: dict) -> None:
    scale, p = _scale(config)
    variants, exp, ablation, sweep = config["variants"], p["experiments"], p["ablation"], p["sweep"]
    methods = {"experiments.methods": exp["methods"], "ablation.variants": ablation["variants"]}
    for key, names in methods.items():
        wrong = [m for m in names if m != "scratch" and m not in variants]
        if wrong or (key == "ablation.variants" and "scratch" in names):
            raise ParamsError(f"params.yaml: scales.{scale}.{key}: {wrong or ['scratch']} is not a pretraining variant "
                              f"(expected names of `variants`: {sorted(variants)}{'' if 'ablation' in key else ', or scratch'})")
    stray = sorted(set(ablation["datasets"]) - set(exp["datasets"]))
    if stray:
        raise ParamsError(f"params.yaml: scales.{scale}.ablation.datasets names {stray}: expected datasets of "
                          f"scales.{scale}.experiments.datasets {exp['datasets']}")
    pretrained = {"experiments": [m for m in exp["methods"] if m != "scratch"],
                  "ablation": ablation["variants"]}  # the ablation's variants are all pretrained
    for key, names in pretrained.items():
        orphans = [d for d in p[key]["datasets"] if registry.get(d).modality not in p["pretrain"]["modalities"]]
        if names and orphans:
            raise ParamsError(f"params.yaml: scales.{scale}.{key}.datasets {orphans} are fine-tuned from "
                              f"pretrained encoders ({names}) but their "
                              f"modality {sorted({registry.get(d).modality for d in orphans})} is not in "
                              f"scales.{scale}.pretrain.modalities {p['pretrain']['modalities']}: add it (and its "
                              "pool to datasets), or leave those datasets out")
    if sweep["dataset"] not in exp["datasets"] or registry.get(sweep["dataset"]).modality not in p["pretrain"]["modalities"]:
        raise ParamsError(f"params.yaml: scales.{scale}.sweep.dataset: {sweep['dataset']!r} must be one of "
                          f"scales.{scale}.experiments.datasets {exp['datasets']} whose modality has an encoder")


def _check_raw(config: dict) -> None:
    """A real dataset's release folder, RAW/<name>, must not be, hold or lie in the folder its conversion writes,
    resources/<scale>/<name> at any scale: the conversion's files would change the release's fingerprint (every run
    converting it again) and land among the user's files."""
    scale, p = _scale(config)
    real = [name for name, entry in p["datasets"].items() if entry.get("source") == "real"]
    clashes = []
    for name in real:
        release = Path(p["raw"]) / name
        for out in (Path("resources") / other / name for other in config["scales"]):  # another scale's too
            a, b = Path(os.path.realpath(release)), Path(os.path.realpath(out))
            if a == b or a in b.parents or b in a.parents:
                clashes.append((name, release, out))
                break
    if clashes:
        name, release, out = clashes[0]
        more = f" (and so for {len(clashes) - 1} more datasets)" if len(clashes) > 1 else ""
        raise ParamsError(f"params.yaml: scales.{scale}.raw {p['raw']!r}: the release of {name} would be read from "
                          f"'{release}', where its conversion is written ('{out}'){more}: give raw a folder of its own, "
                          "outside resources/ (e.g. data/raw)")


def _check_label_ratios(config: dict) -> None:
    """Each label ratio names its folder and row in whole percents (labels20pct): one that is not a whole percent
    would be rounded there (0.125 -> 12 %) and two that round alike would share a folder; both stop the parse."""
    scale, p = _scale(config)
    for key, ratios in (("experiments.label_ratios", p["experiments"]["label_ratios"]),
                        ("ablation.label_ratio", [p["ablation"]["label_ratio"]])):
        wrong = [r for r in ratios if abs(100 * r - ratio_percent(r)) > 1e-9 or ratio_percent(r) < 1]
        if wrong or len({ratio_percent(r) for r in ratios}) != len(ratios):
            raise ParamsError(f"params.yaml: scales.{scale}.{key}: {wrong or ratios}: expected distinct whole "
                              "percents (0.01, 0.1, 0.25, ..., 1.0): each names its folder, e.g. labels20pct")


#: What draws a synthetic twin (s2dc synth); a real dataset takes none of them.
TWIN_KEYS = ("cases", "seed", "shape", "val_fraction")


def _check_datasets(config: dict) -> None:
    from s2dc.data.sources import converter_names
    from s2dc.data.synthetic import KINDS
    from s2dc.data.synthetic.twins import TWINS
    from s2dc.data.synthetic.writer import check_twin_params

    scale, p = _scale(config)
    datasets = p["experiments"]["datasets"]
    try:
        registry.check_selection(f"scales.{scale}", p["datasets"], datasets, p["pretrain"]["modalities"], KINDS,
                                 tuple(converter_names()))
    except ValueError as err:
        raise ParamsError(f"params.yaml: {err}") from None
    for name, entry in p["datasets"].items():  # a twin its generator would refuse, in its job
        drawn = [key for key in TWIN_KEYS if key in entry]
        if entry.get("source") == "real" and drawn:
            raise ParamsError(f"params.yaml: scales.{scale}.datasets.{name}: {', '.join(drawn)} given to a dataset of "
                              "source real: only a synthetic twin is drawn with them (a real dataset's cases and split "
                              "are its release's and its converter's); remove them, or set source: synthetic")
        if entry.get("source") == "synthetic":
            try:
                check_twin_params(name, entry["cases"], entry["seed"], entry["shape"], (1.0, 1.0, 1.0),
                                  entry.get("val_fraction"))
            except ValueError as err:
                raise ParamsError(f"params.yaml: scales.{scale}.datasets.{name}: {err}") from None
    for key in ("stage_of", "figures"):
        stray = sorted(set(p["probe"].get(key, {})) - set(datasets))
        if stray:
            raise ParamsError(f"params.yaml: scales.{scale}.probe.{key} names {stray}: expected datasets of "
                              f"scales.{scale}.experiments.datasets {datasets}")
    for dataset in p["probe"].get("figures", {}):
        structure, labels = figure_anchor(config, dataset)
        spec, key = registry.get(dataset), f"scales.{scale}.probe.figures.{dataset}"
        if labels == "label":
            names = spec.labels.values()  # the per-voxel labels' names; none for a task without such labels
        elif labels == "anatomy" and made_by(config, dataset) == "synthetic" and TWINS[dataset].anatomy:
            names = TWINS[dataset].anatomy.values()
        else:
            raise ParamsError(f"params.yaml: {key}.labels: {labels!r} is not a map of {dataset}'s cases: expected "
                              "'label', or 'anatomy' for a synthetic twin that draws one")
        if structure not in names:
            raise ParamsError(f"params.yaml: {key}: {structure!r} is not a class of {dataset}'s {labels!r} map "
                              f"({spec.task}; classes: {sorted(names)})")


def _check_sweep(config: dict) -> None:
    from s2dc.train.finetune_config import ARCHITECTURE
    from s2dc.tune.space import RESERVED
    from s2dc.tune.spec import spec_from_dict

    scale = config["scale"]
    sweep = _scale(config)[1]["sweep"]
    for name in ARCHITECTURE:  # each trial's fine-tuning takes the scale's encoder sizes (finetune_options)
        if f"pretrain.encoder.{name}" in (sweep.get("space") or {}):
            raise ParamsError(f"params.yaml: scales.{scale}.sweep.space: 'pretrain.encoder.{name}' cannot be searched "
                              "by the pipeline's sweep: its trials fine-tune with the network sizes of "
                              f"scales.{scale}.pretrain.options.encoder, one for all; search it with `s2dc sweep work` "
                              "and a spec of your own (docs/sweeps.md)")
        if name in (((sweep.get("trial") or {}).get("pretrain") or {}).get("encoder") or {}):
            raise ParamsError(f"params.yaml: scales.{scale}.sweep.trial.pretrain.encoder.{name}: the pipeline's sweep "
                              f"fine-tunes with the network sizes of scales.{scale}.pretrain.options.encoder; set it "
                              "there (for the whole scale), or leave it out")
    storage = sweep.get("storage", "journal")
    if storage != "journal" and not re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", storage):
        raise ParamsError(f"params.yaml: scales.{scale}.sweep.storage: {storage!r} is neither 'journal' (a journal "
                          f"file in results/{scale}/sweep) nor a database URL (scheme://..., e.g. "
                          "postgresql://user@host/db)")
    trial = sweep.get("trial") or {}
    for key in RESERVED:
        stage, section, name = key.split(".")
        if name in ((trial.get(stage) or {}).get(section) or {}):
            raise ParamsError(f"params.yaml: scales.{scale}.sweep.trial.{key}: set by the sweep for every trial "
                              "(whatever its value); remove it")
    for key in sweep.get("space") or {}:
        stage, section, name = (key.split(".", 2) + ["", ""])[:3]
        if name in ((trial.get(stage) or {}).get(section) or {}):
            raise ParamsError(f"params.yaml: scales.{scale}.sweep.trial.{key}: also searched by sweep.space, whose "
                              "value each trial takes instead; remove one of them")
    if sweep["workers"] > sweep["budget"]:  # each worker job runs trials until the study holds `budget` of them
        raise ParamsError(f"params.yaml: scales.{scale}.sweep.workers is {sweep['workers']}, more than its budget of "
                          f"{sweep['budget']} trials: the workers beyond it would have no trial to run; set workers "
                          "to at most budget")
    where = f"scales.{scale}.sweep (with the scale's options)"
    try:
        spec = json.loads(sweep_spec(config))
    except ValueError as err:
        raise ParamsError(f"params.yaml: {where}: {err}") from None
    try:
        spec_from_dict(spec, where=where)
    except ValueError as err:
        raise ParamsError(f"params.yaml: {err}") from None


#: The outputs of the table and plot jobs under results/<scale>/ (workflow/rules/report.smk and ablation.smk): each
#: file's name (as `s2dc.report.tables.table_refusal` checks it) by the rule that writes it, and the folders that a
#: rule writes as a whole (Snakemake's directory() outputs).
REPORT_FILES = {"benchmark_table": ("benchmark.csv", "benchmark.md", "benchmark.html", "metrics.json", "probe.csv"),
                "ablation_table": ("ablation/ablation.csv", "ablation/ablation.md", "ablation/ablation.html",
                                   "ablation/ablation.json")}
REPORT_FOLDERS = {"benchmark_plots": ("figures/benchmark", "curves")}
#: The file Snakemake leaves in a directory() output it made.
SNAKEMAKE_TIMESTAMP = ".snakemake_timestamp"


def _refuse_an_encoder_from_elsewhere(path: Path) -> None:
    """Raise :class:`ForeignOutputError` if the export ``path`` records a checkpoint outside the runs/ of its own
    folder (another modality's or variant's encoder copied there, an export of one's own): Snakemake never looks inside
    an output, and every fine-tuning and probe after it would start from it."""
    from s2dc.train.outputs import exported_from

    source = exported_from(path) if path.is_file() else None
    if source is None:
        return
    runs = (path.parent / "runs").resolve()
    if not Path(source).resolve().is_relative_to(runs):
        raise ForeignOutputError(
            f"'{path}' was exported from '{source}', not by the pretraining of its folder (its runs/): copied there "
            "by hand? Snakemake never looks inside its outputs, so every fine-tuning and probe after it would start "
            "from it as this folder's encoder; move it out of there (the pretraining exports its own again; nothing "
            "was run)")


def processes_marked(mark: str) -> list[str]:
    """'pid N (command)' of each process of this machine but this one whose environment holds ``mark``
    ('NAME=value'; workflow/rules/recovery.smk: the jobs of a Snakemake run); none where /proc cannot tell."""
    mark_bytes, found = mark.encode(), []
    for entry in sorted(Path("/proc").glob("[0-9]*"), key=lambda p: int(p.name)):
        try:
            if mark_bytes not in (entry / "environ").read_bytes().split(b"\0") or int(entry.name) == os.getpid():
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError):
            continue  # ended meanwhile, or another user's
        found.append(f"pid {entry.name} ({command[:120]})")
    return found


def check_job_outputs(config: dict) -> None:
    """Raise :class:`ForeignOutputError`, naming the file, if a job's output under results/<scale>/ holds a file that
    s2dc did not write there (or, for a recorded table, changed since): notes named benchmark.md or probe/btcv.md, a
    curve table or a figure of one's own in curves/ or figures/, a best.yaml edited by hand. Snakemake deletes a job's
    outputs before it runs it (a directory() output with all it holds), so the refusal of the s2dc command the job
    runs (`s2dc report`, `ablation-table`, `plots`, `probe`, `figures`, `sweep export`) would never see such a file,
    and it would be lost without a word. So are the outputs of the pretraining and fine-tuning jobs (an encoder.pt,
    summary.json or dvclive/ file, a run's metrics.json of one's own or edited after its run), recognised without
    torch (:mod:`s2dc.train.outputs`)."""
    from pathlib import Path

    from s2dc.data.provenance import writer_of
    from s2dc.eval.outputs import check_probe_out
    from s2dc.files import is_abandoned
    from s2dc.pyplot import check_png_out, is_s2dc_png
    from s2dc.recorded import LOCK_FILE
    from s2dc.report.curves import RECORD, is_own_table
    from s2dc.report.tables import RECORD as TABLES_RECORD, record_refusal, table_refusal
    from s2dc.train.outputs import edit_found
    from s2dc.train import outputs as runs
    from s2dc.tune.export import check_export_out

    root = Path(f"results/{config['scale']}")

    def refuse(path: Path, what: str, rule: str, output: str) -> None:
        raise ForeignOutputError(
            f"'{path}' is not {what}: Snakemake deletes the outputs of rule {rule} ('{root / output}') before it runs "
            "it, so this file would be lost; move it out of there (nothing was run)")

    def refuse_unless(rule: str, output: Path, check) -> None:
        """Run a command's own check of where it writes (it raises ValueError naming the file) on a job's output."""
        try:
            check()
        except ValueError as err:
            raise ForeignOutputError(f"{err}: Snakemake deletes the outputs of rule {rule} ('{output}') before it runs "
                                     "it, so this file would be lost; move it out of there (nothing was run)") from None

    if (blocking := _file_where_a_folder_goes(config, root)) is not None:
        raise ForeignOutputError(f"'{blocking}' is a file (or a link to nothing) where the workflow writes a folder: "
                                 "its jobs would fail there after the jobs before them had run; move it away (nothing "
                                 "was run)")
    for tree, names, figures in _probe_outputs(config):
        rule = "probe" if tree == "" else "ablation_probe"
        for dataset in sorted(names):
            out = root / tree / "probe" / f"{dataset}.json"
            refuse_unless(rule, out, lambda: check_probe_out(out, dataset_json(config, dataset)))
            if out.is_file() and (edit := edit_found(json.loads(out.read_text()))) is not None:  # as the tables read it
                refuse(out, f"the probe result its probe wrote (edited since: {edit})", rule,
                       out.relative_to(root).as_posix())
        rule = "structure_figures" if tree == "" else "ablation_figures"
        for dataset in sorted(figures):
            for name in FIGURE_FILES:
                out = root / tree / "figures" / dataset / name
                refuse_unless(rule, out, lambda: check_png_out(out))
    refuse_unless("sweep_export", root / "sweep", lambda: check_export_out(root / "sweep"))
    for name in sorted(_scale(config)[1]["datasets"]):
        path = Path(dataset_json(config, name))
        if path.is_symlink() or (path.exists() and writer_of(path) is None):
            rule = "synthetic_dataset" if made_by(config, name) == "synthetic" else "prepared_dataset"
            raise ForeignOutputError(
                f"'{path}' is not a dataset.json s2dc wrote (`s2dc synth` or `s2dc prepare`): Snakemake deletes the "
                f"output of rule {rule} ('{path}') before it runs it, so this file would be lost; move it out of "
                "there (nothing was run)")
    for tree in ("pretrain", "ablation/pretrain"):
        for folder in sorted(p for p in root.glob(f"{tree}/*/*") if p.is_dir()):
            here = folder.relative_to(root).as_posix()
            for name, own, what in (("encoder.pt", runs.is_exported_encoder, "an encoder s2dc exported"),
                                    ("summary.json", runs.is_pretrain_summary, "a pretraining run's summary")):
                path = folder / name
                if path.is_symlink() or (path.exists() and not own(path)):
                    refuse(path, what, "pretrain", f"{here}/{name}")
            _refuse_an_encoder_from_elsewhere(folder / "encoder.pt")
            live = folder / "dvclive"
            if live.is_symlink() or (live.exists() and not live.is_dir()):
                refuse(live, "the curves folder a pretraining run writes", "pretrain", f"{here}/dvclive")
            for path in runs.foreign_curve_files(live) if live.is_dir() else []:
                refuse(path, "a curve file s2dc writes", "pretrain", f"{here}/dvclive")
    for tree in ("finetune", "ablation/finetune"):
        for path in sorted(root.glob(f"{tree}/*/*/*/labels*pct/seed*/metrics.json")):
            if path.is_symlink() or not runs.is_finetune_metrics(path):
                refuse(path, "a fine-tuning run's metrics.json", "finetune", path.relative_to(root).as_posix())
            if (edit := edit_found(json.loads(path.read_text()))) is not None:  # as a probe result (check_probe_out)
                refuse(path, f"the metrics.json its run wrote (edited since: {edit})", "finetune",
                       path.relative_to(root).as_posix())
    for rule, names in REPORT_FILES.items():
        for folder in sorted({(root / name).parent for name in names}):
            if (why := record_refusal(folder)) is not None:
                raise ForeignOutputError(
                    f"{why}: Snakemake deletes the outputs of rule {rule} ('{folder / TABLES_RECORD}' among them) "
                    "before it runs it, so this file would be lost (nothing was run)")
        for name in names:
            if (why := table_refusal(root / name)) is not None:
                raise ForeignOutputError(
                    f"'{root / name}' {why}{'' if why.endswith('?') else ':'} Snakemake deletes the outputs of rule "
                    f"{rule} ('{root / name}') before it runs it, so this file would be lost; move it out of there "
                    "(nothing was run)")
    for rule, folders in REPORT_FOLDERS.items():
        for folder in folders:
            top = root / folder
            if top.is_symlink() or (top.exists() and not top.is_dir()):
                refuse(top, "the folder s2dc plots writes", rule, folder)
            for path in sorted(top.rglob("*")) if top.is_dir() else []:
                name = path.relative_to(top).as_posix()
                if path.is_dir() and not path.is_symlink():
                    continue
                if name == SNAKEMAKE_TIMESTAMP or (folder == "curves" and name == RECORD):
                    continue
                if name == LOCK_FILE and path.is_file() and not path.is_symlink() and path.stat().st_size == 0:
                    continue  # what s2dc plots locks where the folder's own flock is refused (NFSv4)
                # what a killed job was renaming in (a figure; a curve table, the record): the job, unfinished, runs
                # again
                if is_abandoned(path, *(("*.tsv", RECORD) if folder == "curves" else ("*.png",))):
                    continue
                if folder == "curves":
                    own = is_own_table(top, name)
                    what = f"a curve table s2dc plots wrote (one recorded in {RECORD}, unchanged since)"
                else:
                    own = path.is_file() and not path.is_symlink() and path.suffix == ".png" and is_s2dc_png(path)
                    what = "a figure s2dc plots drew"
                if not own:
                    refuse(path, what, rule, folder)


#: Where :func:`check_made_data` keeps the stamps of the files it verified: <folder>/<scale>/<dataset>.json.
DATA_STAMPS = ".snakemake/s2dc/data-stamps"
#: A dataset whose files hold more bytes than this is announced before :func:`check_made_data` hashes them (at the
#: paper scale, minutes of reading: the start says what it waits for).
ANNOUNCED_BYTES = 1 << 30


def check_made_data(config: dict, stamps: str | Path = DATA_STAMPS) -> list[str]:
    """Raise :class:`ChangedDataError`, naming the files, if a dataset of the active scale that s2dc made in its own
    folder (a twin; a conversion that built its volumes there, e.g. CC-CCII's) lists a file whose bytes changed after
    its dataset.json was written: the jobs read the dataset.json, whose ``content_sha256`` records the bytes, and
    Snakemake compares only that file, so it would reuse every result made from the old bytes without a word. A
    conversion's files in the user's release are its fingerprint's (workflow/rules/data.smk: a changed release is
    converted again); a dataset.json that s2dc did not write records nothing to compare.

    The bytes are hashed once (and again when a file's :func:`s2dc.files.file_stamp` changed: edited, touched,
    copied, made again), the stamps of the files found right kept in ``stamps/<scale>/<dataset>.json`` (the run that
    makes a dataset keeps them too: common.smk's ``onsuccess``); a check with nothing changed only reads their status.
    A changed file is named by its size or time against those stamps (without stamps: by a time after the json's).
    A dataset.json whose bytes changed since it was last found right (a list edited by hand) passes: Snakemake sees
    that change and reruns what reads it. Returns the datasets whose bytes it hashed."""
    from s2dc.data.datalist import content_sha256, listed_files
    from s2dc.data.provenance import writer_of
    from s2dc.files import file_sha256, file_stamp

    scale = config["scale"]
    hashed = []
    for name in sorted(_scale(config)[1]["datasets"]):
        path = Path(dataset_json(config, name))
        if writer_of(path) is None:
            continue
        doc = json.loads(path.read_text())
        entries = [e for key in ("training", "validation") for e in doc.get(key, []) if isinstance(e, dict)]
        listed = [rel for _, rel in listed_files(entries)]
        # A listed path that leaves the folder is a release's file (its fingerprint's); one inside it that is a
        # link to elsewhere (a folder moved to another disk) is still the dataset's, and checked.
        if not listed or not isinstance(doc.get("content_sha256"), str) or any(
                os.path.isabs(rel) or os.path.normpath(rel).split(os.sep)[0] == os.pardir for rel in listed):
            continue
        try:
            now = {"dataset_json": file_stamp(path), "dataset_json_sha256": file_sha256(path),
                   "files": {rel: file_stamp(path.parent / rel) for rel in listed}}
        except OSError as err:
            raise ChangedDataError(f"'{err.filename}', listed in '{path}', is missing") from None
        record = Path(stamps) / scale / f"{name}.json"
        try:
            known = json.loads(record.read_text())
        except (OSError, ValueError):
            known = {}
        known = known if isinstance(known, dict) else {}
        if known == now:
            continue
        hashed.append(name)
        size = sum(stamp["size"] for stamp in now["files"].values())
        if size > ANNOUNCED_BYTES:
            print(f"Checking the {len(now['files']):,} files of '{path.parent}' ({size / (1 << 30):.1f} GiB) against the "
                  "content_sha256 of its dataset.json (again only when a file's size, time or inode changes) ...",
                  file=sys.stderr, flush=True)
        if content_sha256(path.parent, entries) != doc["content_sha256"] and (
                known.get("dataset_json_sha256") in (None, now["dataset_json_sha256"])):  # (else: the json was edited
            # since it was last found right, which Snakemake sees: everything that reads it reruns)
            if known.get("files"):  # the files whose size or time changed since they were last found right (a copy
                # that keeps times, or a move, keeps both; the inode and ctime it changes do not name the file)
                changed = [rel for rel in listed if rel in known["files"] and any(
                    known["files"][rel][key] != now["files"][rel][key] for key in ("size", "mtime_ns"))]
            else:  # never verified: the files written after the dataset.json
                changed = [rel for rel in listed if now["files"][rel]["mtime_ns"] > now["dataset_json"]["mtime_ns"]]
            if changed:
                shown = messages.listed([f"'{path.parent / rel}'" for rel in changed])
                raise ChangedDataError(
                    f"{shown} changed after '{path}' was written: its files no longer hold the bytes its "
                    f"content_sha256 records, and Snakemake, which compares only the dataset.json, would reuse every "
                    f"result made from the old bytes. Nothing was run. Put the original bytes back, or move the folder "
                    f"'{path.parent}' away (it keeps your change): the next run makes the dataset again and reruns "
                    f"what reads it")
            raise ChangedDataError(
                f"the {len(listed)} files listed in '{path}' no longer hold the bytes its content_sha256 records, "
                "and no file's size or time tells which: either a file was replaced keeping its time (cp -p, touch "
                "-r), which Snakemake cannot see (then put the original bytes back, or move the folder "
                f"'{path.parent}' away: the next run makes the dataset again), or its list was edited by hand, which "
                "Snakemake sees (then delete its \"content_sha256\" entry). Nothing was run")
        try:
            atomic_write_text(record, json.dumps(now))
        except OSError as err:  # the stamps only save hashing: carry on without them
            print(f"Note: could not keep the stamps of '{path.parent}' in '{record}' ({err.strerror}); its files are "
                  "hashed again at the next start.", file=sys.stderr)
    return hashed


def left_over_outputs(config: dict) -> list[str]:
    """The probe results and structure figures under results/<scale>/ that no job of the current params.yaml makes
    (left by an earlier run of other experiments, figures or ablation datasets): the tables leave them out, but they
    lie beside the current ones and would go into a committed baseline. `--config only=/methods=` do not count: the
    scale's full experiments do."""
    from pathlib import Path

    root = Path(f"results/{config['scale']}")
    left = []
    for tree, probed, figures in _probe_outputs(config):
        keep_figures = figures | ({"benchmark"} if tree == "" else set())
        left += [str(f) for f in sorted((root / tree / "probe").glob("*"))
                 if f.suffix in (".json", ".md") and f.stem not in probed]
        left += [str(f) for f in sorted((root / tree / "figures").glob("*")) if f.is_dir() and f.name not in keep_figures]
    return left


#: The files of a structure-figures job (workflow/rules/probe.smk and ablation.smk) in figures/<dataset>/.
FIGURE_FILES = ("similarity.png", "tsne.png")


def _file_where_a_folder_goes(config: dict, root: Path) -> Path | None:
    """The first file (or link to nothing) at a folder the jobs of this scale write into, or above one up to
    results/: results/<scale>/ and its pretrain/<modality>/<variant>/, finetune/<task>/<dataset>/<method>/, probe/,
    figures/<dataset>/, curves/ and sweep/, and their ablation/ twins; None when there is none."""
    _, p = _scale(config)
    exp, ablation, modalities = p["experiments"], p["ablation"], p["pretrain"]["modalities"]
    runs = [("", d, m) for d in exp["datasets"] for m in exp["methods"]]
    runs += [("ablation", d, v) for d in ablation["datasets"] for v in ablation["variants"]]
    folders = [root / name for name in ("probe", "curves", "sweep", "figures/benchmark", "ablation/probe")]
    folders += [root / tree / "finetune" / registry.get(d).task / d / m for tree, d, m in runs]
    folders += [root / "pretrain" / modality / m for modality in modalities for m in exp["methods"] if m != "scratch"]
    folders += [root / "ablation/pretrain" / modality / v for modality in modalities for v in ablation["variants"]]
    folders += [root / tree / "figures" / d for tree, _, figures in _probe_outputs(config) for d in sorted(figures)]
    for folder in folders:
        for path in [folder, *folder.parents]:
            if os.path.lexists(path) and not path.is_dir():
                return path
            if path == root.parent:
                break
    return None


def _probe_outputs(config: dict) -> list[tuple[str, set[str], set[str]]]:
    """(folder under results/<scale>/, datasets probed, datasets with structure figures) of the benchmark ('') and
    of the ablation ('ablation'), as the workflow plans them whatever `--config only=/methods=` say (common.smk:
    probe_targets, figure_targets and their ablation twins)."""
    _, p = _scale(config)
    anchored = set(p["probe"].get("figures", {}))
    probed = {d for d in p["experiments"]["datasets"] if registry.get(d).modality in p["pretrain"]["modalities"]}
    if "s2dc" not in p["experiments"]["methods"]:
        probed = set()  # the benchmark's probe and figures read its S²DC encoder (common.smk: probe_targets)
    ablation = set(p["ablation"]["datasets"])
    return [("", probed, probed & anchored), ("ablation", ablation, ablation & anchored)]
