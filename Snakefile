# s2dc benchmark: data -> pretrain (one encoder per modality) -> fine-tune -> benchmark table.
# Parameters: params.yaml (validated by workflow/schemas/params.schema.yaml); switch scale with
# `snakemake --config scale=smoke|quick|paper`. Every rule calls the `s2dc` command line.

configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        f"{RESULTS}/benchmark.csv",
        f"{RESULTS}/benchmark.md",
        f"{RESULTS}/metrics.json",
    default_target: True
