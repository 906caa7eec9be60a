# Helpers shared by the rules: the active scale, paths, and turning parameter sections into CLI options.
import hashlib
import json
import os
import shlex
import sys
from pathlib import Path

from s2dc.data import registry
from s2dc.data.download import EXTRACTED, release_fingerprint
from s2dc.tune.space import merge_options, split_run_local
import s2dc.workflow_checks as checks

checks.validate_params(config, os.path.join(workflow.basedir, "workflow/schemas/params.schema.yaml"))

SCALE = config["scale"]
P = config["scales"][SCALE]
RESOURCES = f"resources/{SCALE}"
RESULTS = f"results/{SCALE}"
RAW = P["raw"]
MODALITIES = P["pretrain"]["modalities"]
VARIANTS = config["variants"]  # {name: loss.* overrides}; a method is 'scratch' or a variant's name
ABLATION = P["ablation"]
BENCHMARK_METHODS = P["experiments"]["methods"]  # before --config methods=... narrows EXP
BENCHMARK_GRID = dict(P["experiments"])  # likewise: which fine-tuning runs are the benchmark's (`tree`)
SWEEP = P["sweep"]

# The checks of params.yaml beyond its schema (each names the key it refuses), and --config only=/methods=: first,
# before anything below builds options from it.
try:
    checks.check_config_files(workflow.configfiles)
    EXP = checks.check_params(config, schema=os.path.join(workflow.basedir, "workflow/schemas/params.schema.yaml"))
except checks.ParamsError as err:
    raise WorkflowError(str(err)) from None
if "s2dc" not in EXP["methods"]:  # said, not silent: the frozen-encoder protocol has nothing to read
    print(f"s2dc: no probe and no structure figure planned: they read the s2dc encoder, and the methods run here "
          f"({', '.join(EXP['methods'])}) do not include s2dc", file=sys.stderr)



def cli_options(sections: dict) -> str:
    """{section: {field: value}} -> '--section.field value ...' (lists become several values), quoted for the shell."""
    return shlex.join(checks.cli_arguments(sections))


def short_hash(obj) -> str:
    """Stable 10-hex-digit hash of a JSON-able object (names work folders after their parameters)."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


def finetune_options(dataset: str | None = None) -> dict:
    """scales.<scale>.finetune.options with the architecture of pretrain.options.encoder, and with ``dataset`` its own
    options (datasets.<dataset>.finetune) on top (s2dc.workflow_checks)."""
    return checks.finetune_options(config, dataset)


def stage_resources(stage: str) -> dict:
    """Snakemake resources of one job of a stage (params.yaml `<stage>.resources`, threads aside)."""
    return {k: v for k, v in P[stage]["resources"].items() if k != "threads"}


def sweep_spec() -> str:
    """The spec of the sweep's study (s2dc sweep work --spec), as JSON (s2dc.workflow_checks), run-local options
    included; the rest names the study (sweep_study)."""
    return checks.sweep_spec(config)


def sweep_storage() -> str:
    """Where the study lives: a journal file in the scale's sweep folder, or sweep.storage (a database URL)."""
    where = SWEEP.get("storage", "journal")
    return f"{RESULTS}/sweep/study.journal" if where == "journal" else where


def sweep_study() -> str:
    """The study's name: the scale and a hash of what defines its trials (spec but for its run-local options, and
    budget; how the pool and the dataset are made: their params.yaml entries, registry entries and the code of their
    twin or converter;
    the pretraining, fine-tuning and sweep code), so that a changed sweep or changed data starts a new study in the
    same storage instead of mixing, or silently reusing, trials that are not comparable; the study's name is the
    sweep jobs' param, so that such a change reruns them."""
    dataset = SWEEP["dataset"]
    made = {name: [made_as(name), CODE["synth" if made_by(name) == "synthetic" else "prepare"], entry(name)]
            for name in (registry.pool_for(modality_of(dataset)), dataset)}
    code = [CODE['pretrain'], CODE['finetune'], CODE['sweep']]
    computes = checks.sweep_spec(config, run_local=False)
    return f"s2dc-{SCALE}-{short_hash([computes, SWEEP['budget'], made, *code])}"


def made_as(name: str) -> dict:
    """What makes a dataset of the active scale, as its params.yaml entry says: a twin's spec (twin_spec), or a real
    dataset's entry without its own fine-tuning options (which the sweep's spec holds as they resolve)."""
    if made_by(name) == "synthetic":
        return twin_spec(name)
    return {k: v for k, v in P["datasets"][name].items() if k != "finetune"}


def twin_spec(name: str) -> dict:
    """A synthetic dataset's entry as its twin is drawn, keys in one order, the default val_fraction written out
    (s2dc.workflow_checks.twin_spec): the twin job's param."""
    return checks.twin_spec(config, name)


def made_by(name: str) -> str:
    """How a dataset of the active scale is made: 'synthetic' (its twin) or 'prepared' (converted from its
    official release in RAW/<name>, which the user puts there or, for an open archive, the download rule)."""
    return checks.made_by(config, name)


def dataset_json(name: str) -> str:
    """dataset.json (common layout) of a dataset of the active scale."""
    return checks.dataset_json(config, name)


def datasets_of(kind: str) -> list[str]:
    """Datasets of the active scale made by one kind of rule (see made_by)."""
    return sorted(n for n in P["datasets"] if made_by(n) == kind)


def archive_folder(name: str) -> str | None:
    """The folder an open archive of dataset ``name`` extracts to (e.g. 'Task09_Spleen'); None without one."""
    archives = registry.get(name).archives
    return Path(archives[0].url).name.split(".")[0] if archives else None


def extraction_record(dataset: str, folder: str) -> str:
    """The record `s2dc download` leaves beside an open release it extracted or found complete
    (`s2dc.data.download.EXTRACTED`): the download job's output, a file of s2dc's, not of the release."""
    return f"{RAW}/{dataset}/.{folder}{EXTRACTED}"


def release_of(w) -> list[str]:
    """Input of a prepared dataset: the downloaded archive's extraction record for an open download, nothing for a
    registration-only release (absent until the user puts it there; its converter says so)."""
    folder = archive_folder(w.dataset)
    return [extraction_record(w.dataset, folder)] if folder else []


def release_stamp(w) -> str:
    """A release's fingerprint (`s2dc.data.download.release_fingerprint`: sizes and modification times, no file read):
    a param of its conversion, so that a release changed in place (a label corrected, a case added) is converted
    again, and everything after it rerun, instead of being reused without a word. An open archive's counts only the
    files changed since s2dc extracted it ('' before its download, whose marker is the job's input)."""
    folder = archive_folder(w.dataset)
    pending = bool(folder) and not Path(extraction_record(w.dataset, folder)).is_file()
    stamp = release_fingerprint(Path(RAW) / w.dataset, pending=pending)
    # The dataset.json lists the release's files relative to its resolved folder, through the release's resolved
    # location (s2dc.data.sources.common.relative): where a link (RAW/<name> to another disk, resources/ moved and
    # linked back) makes that path other than the plain one, it is part of the stamp, so that a release moved and
    # linked again (its fingerprint unchanged) is converted again instead of read where it no longer is.
    release, out = Path(RAW) / w.dataset, Path(RESOURCES) / w.dataset
    through = os.path.relpath(os.path.realpath(release), os.path.realpath(out))
    plain = os.path.relpath(os.path.abspath(release), os.path.abspath(out))
    # a release outside the project (raw: an absolute path, no link) is reached by another relative path once the
    # project moves: that path is part of the stamp too
    inside = not os.path.relpath(os.path.realpath(release), os.path.realpath(".")).startswith(os.pardir)
    return stamp if through == plain and inside else f"{through}\n{stamp}"


def modality_of(dataset: str) -> str:
    return registry.get(dataset).modality


def task_of(dataset: str) -> str:
    return registry.get(dataset).task


def pool_json(modality: str) -> str:
    """dataset.json of the pretraining pool of a modality."""
    return dataset_json(registry.pool_for(modality))


ratio_percent = checks.ratio_percent


def variant_options(variant: str) -> dict:
    """scales.<scale>.pretrain.options with the variant's loss.* overrides on top."""
    return checks.variant_options(config, variant)


def tree(kind: str, method: str, run: tuple | None = None) -> str:
    """Where a run lives: '<kind>' (pretrain or finetune) for the benchmark's own, 'ablation/<kind>' for the others (so
    `dvc repro`'s outputs are never touched by the ablation target): a pretraining of a benchmark method, a fine-tuning
    ``run`` = (dataset, label percent, seed) of a benchmark method on the benchmark's grid."""
    if method not in BENCHMARK_METHODS:
        return f"ablation/{kind}"
    if run is not None:
        dataset, pct, seed = run
        ours = (dataset in BENCHMARK_GRID["datasets"] and int(seed) in BENCHMARK_GRID["seeds"]
                and int(pct) in {ratio_percent(r) for r in BENCHMARK_GRID["label_ratios"]})
        return kind if ours else f"ablation/{kind}"
    return kind


def encoder_path(modality: str, variant: str) -> str:
    """The exported encoder of a pretraining variant: results/<scale>/[ablation/]pretrain/<modality>/<variant>/encoder.pt."""
    return f"{RESULTS}/{tree('pretrain', variant)}/{modality}/{variant}/encoder.pt"


def command_options(stage: str, options: dict, preset: dict) -> str:
    """The options of a ``stage`` job's command that change what it computes: ``options`` merged over the intensity
    ``preset`` (each option once), each value of its declared type (`0` written for a float is passed as 0.0), those
    the command resolves alike without them left off (a default written out), the run-local ones left to
    RUN_LOCAL_OPTIONS."""
    typed = checks.typed_options(stage, options, base=preset)
    return cli_options(merge_options(preset, split_run_local(stage, typed)[0]))


def pretrain_command_options(modality: str, variant: str) -> str:
    """:func:`command_options` of a pretraining variant on the pool of ``modality``."""
    return command_options("pretrain", variant_options(variant), checks.preset_sections(registry.pool_for(modality)))


def finetune_command_options(dataset: str) -> str:
    """:func:`command_options` of a fine-tuning on ``dataset``."""
    return command_options("finetune", finetune_options(dataset), checks.preset_sections(dataset))


# The options of params.yaml that change how a job runs, not what it computes (how often it logs or saves, its loader
# processes, cache and activation checkpointing; s2dc.tune.space.RUN_LOCAL), per stage.
RUN_LOCAL_OPTIONS = {
    stage: cli_options(split_run_local(stage, checks.typed_options(stage, options))[1])
    for stage, options in (("pretrain", P["pretrain"]["options"]), ("finetune", finetune_options()))
}


def untracked(value):
    """A param whose change reruns no job. Snakemake leaves a param computed from the job's threads (like one from its
    input, output or resources) out of its params trigger, as derived (snakemake.rules.Rule._is_deriving_function;
    tests/test_workflow.py checks that it still does). For how a job runs, not what it computes: the run-local
    options, which the runs' own identity leaves out too, and the sweep's spec, whose other part names the study."""
    return lambda wildcards, threads: value


# The pretraining launcher as the shell splits it (s2dc.workflow_checks.launcher_words, `--opt=value` as `--opt value`,
# `--an-opt` as `--an_opt`, torchrun's options by their first names as its own parser reads them, each once and in its
# parser's order: `--nproc_per 4` as `--nproc_per_node 4`), joined again: what names a pretraining's run folder and what Snakemake compares, so that a
# launcher spelled another way (spaces, quotes, `=`, `-` for `_`, an abbreviation torchrun takes) finds the same run
# and reruns no job; the usual spelling gives the launcher's own text. Reading torchrun's parser imports torch.
LAUNCHER_WORDS = shlex.join(checks.launcher_words(P["pretrain"]["launcher"]))


def pretrain_workdir(modality: str, variant: str) -> str:
    # One folder per pretraining, named after what it computes (the options as `s2dc pretrain` resolves them, not as
    # params.yaml spells them; the launcher's words): switching options back, or writing them another way, finds the
    # finished run again.
    # Inside it `s2dc pretrain --run.resume if_unchanged` continues an interrupted run only if options,
    # data and code are unchanged; otherwise it moves the old run to previous/ and starts afresh.
    folder = os.path.dirname(encoder_path(modality, variant))
    options = checks.pretrain_run_options(config, variant, modality)
    return f"{folder}/runs/{short_hash([LAUNCHER_WORDS, options])}"


# The s2dc code each kind of job runs, as a hash (docstrings and comments do not count): a rule param,
# so that Snakemake reruns a job whose code changed (`--rerun-triggers params`, on by default).
CODE = checks.stage_code(
    {
        "synth": ["s2dc.data.synthetic"],
        "prepare": ["s2dc.data.sources"],
        "pretrain": ["s2dc.train.pretrain", "s2dc.export", "s2dc.train.publish"],
        "finetune": ["s2dc.downstream.engine", "s2dc.downstream.defaults"],
        "probe": ["s2dc.eval.probe"],
        "figures": ["s2dc.eval.figures"],
        "report": ["s2dc.report.tables"],
        "plots": ["s2dc.report.figures", "s2dc.report.curves"],
        "sweep": ["s2dc.tune.command"],
    },
    shallow=("s2dc.cli",),  # the command line runs every job
)


# The registry's entries are data, which CODE leaves out (s2dc.train.identity.DATA_MODULES): each job that reads a
# dataset's entry (its twin or converter, its pool's pretraining, its fine-tunings, probe and figures) carries that
# entry's digest as a param, so that editing one dataset's entry reruns its jobs and only them, and adding a dataset
# reruns none; the tables and plots carry the digest of what they read of it (registry.report_digest: the entries of
# their datasets, every entry's poster numbers).
ENTRY = {name: registry.spec_digest(name) for name in registry.REGISTRY}


def report_entries(datasets=None) -> str:
    """The registry's digest for the tables and plots of ``datasets`` (default: the experiments', as --config only=
    narrows them)."""
    return registry.report_digest(EXP["datasets"] if datasets is None else datasets)


def entry(dataset: str) -> str:
    """The digest of a dataset's registry entry (s2dc.data.registry.spec_digest): a param of the jobs that read it."""
    return ENTRY[dataset]


def finetune_dir(dataset, method, pct, seed) -> str:
    where = tree("finetune", method, (dataset, pct, seed))
    return f"{RESULTS}/{where}/{task_of(dataset)}/{dataset}/{method}/labels{pct}pct/seed{seed}"


def finetune_targets() -> list[str]:
    return [
        f"{finetune_dir(d, m, ratio_percent(r), s)}/metrics.json"
        for d in EXP["datasets"] for m in EXP["methods"] for r in EXP["label_ratios"] for s in EXP["seeds"]
    ]


def ablation_targets() -> list[str]:
    """Fine-tuning runs of the loss ablation: each variant of `ablation.variants` on each of `ablation.datasets`, at
    `ablation.label_ratio` and every seed of the experiments (the benchmark's own s2dc runs are reused)."""
    pct = ratio_percent(ABLATION["label_ratio"])
    return [f"{finetune_dir(d, v, pct, s)}/metrics.json"
            for d in ABLATION["datasets"] for v in ABLATION["variants"] for s in EXP["seeds"]]


def variant_terms(variant: str) -> str:
    """The loss terms a variant trains with and its assignment, e.g. 'global+p2p:dual_softmax' (the ablation table
    matches a variant to the poster's Table 2 row by them)."""
    from s2dc.train.config import build_config

    loss = build_config(variant_options(variant)).loss  # typed as `s2dc pretrain` reads it ('1e-1' is 0.1)
    terms = [t for t in ("global", "p2p", "p2s") if getattr(loss, f"weight_{t}")]
    return f"{'+'.join(terms)}:{loss.assignment}"


def probe_stage(dataset: str) -> int:
    """The Swin stage whose tokens the probe and the figures read for ``dataset`` (probe.stage_of, else probe.stage)."""
    return P["probe"].get("stage_of", {}).get(dataset, P["probe"]["stage"])


def figure_targets() -> list[str]:
    """The structure figures of `probe.figures` ({dataset: structure}) among the experiment datasets."""
    if "s2dc" not in EXP["methods"]:
        return []
    return [f"{RESULTS}/figures/{d}/{name}.png" for d in P["probe"].get("figures", {})
            if d in EXP["datasets"] and modality_of(d) in MODALITIES for name in ("similarity", "tsne")]


def figure_anchor(dataset: str) -> tuple[str, str]:
    """(structure, per-voxel map) of the structure figures of ``dataset`` (`probe.figures.<dataset>`)."""
    return checks.figure_anchor(config, dataset)


def ablation_figure_targets() -> list[str]:
    """The structure figures of every ablation variant's encoder, for the ablation datasets of `probe.figures`."""
    return [f"{RESULTS}/ablation/figures/{d}/{name}.png" for d in ABLATION["datasets"]
            if d in P["probe"].get("figures", {}) for name in ("similarity", "tsne")]


def probe_targets() -> list[str]:
    """Frozen-encoder results of every experiment dataset whose modality has an encoder."""
    if "s2dc" not in EXP["methods"]:
        return []  # the probe reads the S²DC encoder
    return [f"{RESULTS}/probe/{d}.json" for d in EXP["datasets"] if modality_of(d) in MODALITIES]


def encoder_for(w) -> list[str]:
    """The pretrained encoder a method starts from (none for training from scratch; else the variant's)."""
    if w.method == "scratch":
        return []
    return [encoder_path(modality_of(w.dataset), w.method)]


def s2dc_encoder(w) -> str:
    """The benchmark's S²DC encoder of a dataset's modality (read by the probe and the figures)."""
    return encoder_path(modality_of(w.dataset), "s2dc")


# A user's file where a table, plot, probe, figure or sweep-export job writes stops the run before Snakemake deletes
# it with the job's outputs (the main process only: a cluster job's own Snakemake runs one job, while the outputs may
# be half-written).
# And a file of a twin (or of a conversion's own volumes) changed in place after its dataset.json was written, which
# Snakemake cannot see: the results made from the old bytes would be reused.
if workflow.is_main_process:
    try:
        checks.check_job_outputs(config)
        checks.check_made_data(config)
    except (checks.ForeignOutputError, checks.ChangedDataError) as err:
        raise WorkflowError(str(err)) from None
    LEFT_OVER = checks.left_over_outputs(config)
    if LEFT_OVER:
        print(f"Note: {', '.join(LEFT_OVER)} are not outputs of the current params.yaml (left by an earlier run of other "
              "experiments, figures or ablation datasets): the tables leave them out; move them away before committing "
              f"{RESULTS} as a baseline.", file=sys.stderr)


onsuccess:
    # The stamps of the datasets this run made, taken while they are as written: an edit before the next start is
    # then named by file, even one that keeps an older time (cp -p, touch -r). (Not after a dry run.)
    try:
        checks.check_made_data(config)
    except checks.ChangedDataError as err:
        print(f"Note: {err}", file=sys.stderr)
