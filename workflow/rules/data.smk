# Data: synthetic datasets are generated; the real ones are downloaded (MSD) or provided by the user.


rule synthetic_dataset:
    output:
        f"{RESOURCES}/{{dataset}}/dataset.json",
    params:
        folder=lambda w: f"{RESOURCES}/{w.dataset}",
        spec=lambda w: P["datasets"][w.dataset],
        shape=lambda w: " ".join(map(str, P["datasets"][w.dataset]["shape"])),
        code=CODE["synth"],
    wildcard_constraints:
        dataset="|".join(n for n, s in P["datasets"].items() if s["source"] == "synthetic") or "(?!)",
    conda:
        "../envs/s2dc.yaml"
    log:
        f"logs/{SCALE}/data/{{dataset}}.log",
    benchmark:
        f"benchmarks/{SCALE}/data/{{dataset}}.tsv"
    shell:
        "s2dc synth --kind {params.spec[kind]} --out {params.folder:q} --cases {params.spec[cases]}"
        " --seed {params.spec[seed]} --shape {params.shape} --val-fraction {params.spec[val_fraction]}"
        " > {log:q} 2>&1"


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
