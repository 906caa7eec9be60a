# Data: synthetic twins are generated; real datasets are downloaded (open archives: MSD) or converted
# from their official release layout in RAW/<name> (registration-only ones, which the user puts there).


rule synthetic_dataset:
    output:
        f"{RESOURCES}/{{dataset}}/dataset.json",
    params:
        folder=lambda w: f"{RESOURCES}/{w.dataset}",
        spec=lambda w: twin_spec(w.dataset),  # as the twin is drawn: not its runs' options, nor how it is worded
        shape=lambda w: " ".join(map(str, P["datasets"][w.dataset]["shape"])),
        val_fraction=lambda w: (f"--val-fraction {fraction}"  # a pool has none
                                if (fraction := twin_spec(w.dataset).get("val_fraction")) is not None else ""),
        entry=lambda w: entry(w.dataset),
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
        " --seed {params.spec[seed]} --shape {params.shape} {params.val_fraction} > {log:q} 2>&1"


rule prepared_dataset:
    # A real dataset, checked in its official layout under RAW/<name> and listed in the common dataset.json
    # (nothing is copied, except where a converter must build volumes, e.g. CC-CCII's slices). A missing
    # release stops this job with where to get it and where to put it. A registration-only release is not an
    # input (it may be absent when the DAG is built): its files' fingerprint (release_stamp) is a param instead,
    # so that a release changed in place is converted again.
    input:
        release_of,
    output:
        f"{RESOURCES}/{{dataset}}/dataset.json",
    params:
        raw=lambda w: f"{RAW}/{w.dataset}",
        folder=lambda w: f"{RESOURCES}/{w.dataset}",
        release=release_stamp,
        entry=lambda w: entry(w.dataset),
        code=CODE["prepare"],
    wildcard_constraints:
        dataset="|".join(datasets_of("prepared")) or "(?!)",
    resources:
        mem_mb=8000,
        runtime=240,
    conda:
        "../envs/s2dc.yaml"
    log:
        f"logs/{SCALE}/data/{{dataset}}.log",
    shell:
        # On failure the message (where to get the data, where to put it) is shown, not only logged.
        "s2dc prepare {wildcards.dataset} --raw {params.raw:q} --out {params.folder:q} > {log:q} 2>&1"
        " || {{ cat {log:q} >&2; exit 1; }}"


rule download_archive:
    # An open dataset's archive (the three MSD tasks): fetched from the registry's URL (resuming a partial
    # download), checked against its MD5, extracted member by member into RAW/<name>/ (no member may leave the
    # folder; links refused). A release already extracted there (e.g. by the user) is kept as it is. The output is
    # s2dc's record of the extraction beside the release (.<folder>.extracted.json), not a file of the release, so a
    # forced rerun (-F, --forcerun) deletes only the record: `s2dc download` finds the release complete and records
    # it again.
    output:
        f"{RAW}/{{dataset}}/.{{folder}}.extracted.json",
    params:
        raw=lambda w: f"{RAW}/{w.dataset}",
    wildcard_constraints:
        dataset="|".join(n for n in datasets_of("prepared") if archive_folder(n)) or "(?!)",
        folder="Task[0-9][0-9]_[A-Za-z]+",
    conda:
        "../envs/s2dc.yaml"
    log:
        f"logs/download/{{dataset}}/{{folder}}.log",
    benchmark:
        f"benchmarks/download/{{dataset}}/{{folder}}.tsv"
    shell:
        "s2dc download {wildcards.dataset} --raw {params.raw:q} > {log:q} 2>&1 || {{ cat {log:q} >&2; exit 1; }}"
