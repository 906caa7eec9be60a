# The frozen-encoder protocol (`s2dc probe`): a linear model on the frozen encoder's features, per dataset (token
# classes for segmentation, pooled features for classification, token-to-block regression for reconstruction and
# translation), against a random encoder and the raw voxels.


rule probe:
    input:
        data=lambda w: dataset_json(w.dataset),
        encoder=lambda w: f"{RESULTS}/pretrain/{modality_of(w.dataset)}/encoder.pt",
    output:
        json=f"{RESULTS}/probe/{{dataset}}.json",
        md=f"{RESULTS}/probe/{{dataset}}.md",
    params:
        stage=lambda w: P["probe"].get("stage_of", {}).get(w.dataset, P["probe"]["stage"]),
        cache=f"{RESULTS}/cache/probe",
        code=CODE["probe"],
    threads: P["probe"]["resources"]["threads"]
    resources:
        **stage_resources("probe"),
    conda:
        "../envs/s2dc.yaml"
    log:
        f"logs/{SCALE}/probe/{{dataset}}.log",
    benchmark:
        f"benchmarks/{SCALE}/probe/{{dataset}}.tsv"
    shell:
        "(export OMP_NUM_THREADS={threads};"
        " s2dc probe voxels random s2dc={input.encoder:q} --source {input.data:q} --stage {params.stage}"
        " --cache-dir {params.cache:q} --out {output.json:q}) > {log:q} 2>&1"
