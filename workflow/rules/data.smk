# Data: synthetic twins are generated; real datasets are downloaded (open archives: MSD) or converted
# from their official release layout in RAW/<name> (registration-only ones, which the user puts there).


rule synthetic_dataset:
    output:
        f"{RESOURCES}/{{dataset}}/dataset.json",
    params:
        folder=lambda w: f"{RESOURCES}/{w.dataset}",
        spec=lambda w: P["datasets"][w.dataset],
        shape=lambda w: " ".join(map(str, P["datasets"][w.dataset]["shape"])),
        code=CODE["synth"],
    wildcard_constraints:
        dataset="|".join(datasets_of("synthetic")) or "(?!)",
    conda:
        "../envs/s2dc.yaml"
    log:
        f"logs/{SCALE}/data/{{dataset}}.log",
    benchmark:
        f"benchmarks/{SCALE}/data/{{dataset}}.tsv"
    shell:
        "s2dc synth --kind {wildcards.dataset} --out {params.folder:q} --cases {params.spec[cases]}"
        " --seed {params.spec[seed]} --shape {params.shape} --val-fraction {params.spec[val_fraction]}"
        " > {log:q} 2>&1"


rule prepared_dataset:
    # A registration-only dataset, checked in its official layout under RAW/<name> and listed in the common
    # dataset.json (nothing is copied). A missing release stops this job with where to get it and where to
    # put it. The release is not an input (it may be absent when the DAG is built): after changing it, rerun
    # with `snakemake -R prepared_dataset`.
    output:
        f"{RESOURCES}/{{dataset}}/dataset.json",
    params:
        raw=lambda w: f"{RAW}/{w.dataset}",
        folder=lambda w: f"{RESOURCES}/{w.dataset}",
        code=CODE["prepare"],
    wildcard_constraints:
        dataset="|".join(datasets_of("prepared")) or "(?!)",
    conda:
        "../envs/s2dc.yaml"
    log:
        f"logs/{SCALE}/data/{{dataset}}.log",
    shell:
        # On failure the message (where to get the data, where to put it) is shown, not only logged.
        "s2dc prepare {wildcards.dataset} --raw {params.raw:q} --out {params.folder:q} > {log:q} 2>&1"
        " || {{ cat {log:q} >&2; exit 1; }}"


rule download_msd:
    # A Medical Segmentation Decathlon task, from the URL and MD5 that MONAI records for it.
    output:
        "resources/msd/{task}/dataset.json",
    wildcard_constraints:
        task="Task0[1-9]_[A-Za-z]+|Task10_[A-Za-z]+",
    conda:
        "../envs/s2dc.yaml"
    log:
        "logs/download/msd_{task}.log",
    benchmark:
        "benchmarks/download/msd_{task}.tsv"
    shell:
        "s2dc download-msd --task {wildcards.task} --root resources/msd > {log:q} 2>&1"
