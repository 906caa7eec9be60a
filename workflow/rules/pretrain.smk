# Pretraining: one S²DC encoder per modality, on that modality's unlabelled pool.


rule pretrain:
    input:
        lambda w: pool_json(w.modality),
    output:
        encoder=f"{RESULTS}/pretrain/{{modality}}/encoder.pt",
        summary=f"{RESULTS}/pretrain/{{modality}}/summary.json",
    params:
        launcher=P["pretrain"]["launcher"],
        options=lambda w: f"{preset_options(registry.pool_for(w.modality))} {cli_options(P['pretrain']['options'])}",
        workdir=lambda w: pretrain_workdir(w.modality),
        code=CODE["pretrain"],
    threads: P["pretrain"]["resources"]["threads"]
    resources:
        **stage_resources("pretrain"),
    conda:
        "../envs/s2dc.yaml"
    log:
        f"logs/{SCALE}/pretrain/{{modality}}.log",
    benchmark:
        f"benchmarks/{SCALE}/pretrain/{{modality}}.tsv"
    shell:
        "(export OMP_NUM_THREADS={threads};"
        " {params.launcher} pretrain {params.options} --data.source {input:q} --run.out_dir {params.workdir:q}"
        " --run.resume if_unchanged --run.progress false"
        " && s2dc export-encoder {params.workdir:q} {output.encoder:q}"
        " && cp {params.workdir:q}/summary.json {output.summary:q}) > {log:q} 2>&1"
