# s2dc benchmark: data -> pretrain (one encoder per modality) -> fine-tune and probe -> benchmark table.
# Parameters: params.yaml (validated by workflow/schemas/params.schema.yaml); switch scale with
# `snakemake --config scale=smoke|quick|paper`. Every rule calls the `s2dc` command line.

import os

from s2dc import workflow_checks as checks

# params.yaml read first, so that a YAML error in it is named with its line and column: Snakemake's reader (the
# directive below) says only that the file is not valid YAML. (A --configfile is read by Snakemake before this file.)
if os.path.exists("params.yaml"):
    try:
        checks.check_config_files([os.path.abspath("params.yaml")])
    except checks.ParamsError as err:
        raise WorkflowError(str(err)) from None

configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/recovery.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/probe.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/ablation.smk"
include: "workflow/rules/sweep.smk"


# Jobs that are quick or need the internet (a cluster's login node has it): never sent to a cluster. Converting a
# real release is neither (prepared_dataset: CC-CCII stacks the slices of ~4,000 scans): a cluster job.
localrules:
    all,
    data,
    pretrained,
    synthetic_dataset,
    download_archive,
    benchmark_table,
    benchmark_plots,
    ablation_table,
    ablation,
    sweep_export,
    sweep,


rule all:
    # Every run, encoder and probe result itself, not only the tables made of them: a run whose output went after
    # the tables were made (a killed forced rerun) would otherwise be left missing under tables still up to date.
    # And every dataset they read: one moved away (e.g. a twin edited by hand, see check_made_data) is made again, and
    # what reads it redone, where Snakemake would otherwise keep the results and leave the dataset missing.
    input:
        sorted({dataset_json(d) for d in EXP["datasets"]}
               | {dataset_json(registry.pool_for(modality_of(d))) for d in EXP["datasets"]
                  if any(v != "scratch" for v in EXP["methods"])}),
        finetune_targets(),
        sorted({encoder_path(modality_of(d), v) for d in EXP["datasets"] for v in EXP["methods"] if v != "scratch"}),
        probe_targets(),
        f"{RESULTS}/benchmark.csv",
        f"{RESULTS}/benchmark.md",
        f"{RESULTS}/metrics.json",
        rules.benchmark_table.output,
        rules.benchmark_plots.output,
        figure_targets(),
    default_target: True


rule data:
    # Every dataset of the active scale (generated, downloaded or checked).
    input:
        [dataset_json(d) for d in sorted(P["datasets"])],


rule pretrained:
    # The benchmark's pretrained encoders: one per modality of the active scale and variant of its methods.
    input:
        [encoder_path(m, v) for m in MODALITIES for v in BENCHMARK_METHODS if v != "scratch"],
