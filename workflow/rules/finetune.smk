# Fine-tuning: every dataset × method × label ratio × seed of the experiment grid (and the ablation's variants);
# a method is `scratch` or a pretraining variant; the task (the dataset's, from
# the registry) is part of the path, and params.yaml's options are merged over the dataset's intensity preset.


rule finetune:
    input:
        data=lambda w: dataset_json(w.dataset),
        encoder=encoder_for,
    output:
        f"{RESULTS}/{{tree}}/{{task}}/{{dataset}}/{{method}}/labels{{pct}}pct/seed{{seed}}/metrics.json",
    params:
        options=lambda w: finetune_command_options(w.dataset),
        run_local=untracked(RUN_LOCAL_OPTIONS["finetune"]),
        init=lambda w, input: input.encoder[0] if input.encoder else "scratch",
        ratio=lambda w: int(w.pct) / 100,
        outdir=lambda w, output: os.path.dirname(output[0]),
        entry=lambda w: entry(w.dataset),
        code=CODE["finetune"],
    wildcard_constraints:
        tree="finetune|ablation/finetune",
        task="|".join(registry.TASKS),
        method="|".join(["scratch", *VARIANTS]),
        pct=r"\d+",
        seed=r"\d+",
    threads: P["finetune"]["resources"]["threads"]
    resources:
        **stage_resources("finetune"),
    conda:
        "../envs/s2dc.yaml"
    log:
        f"logs/{SCALE}/{{tree}}/{{task}}/{{dataset}}_{{method}}_labels{{pct}}pct_seed{{seed}}.log",
    benchmark:
        f"benchmarks/{SCALE}/{{tree}}/{{task}}/{{dataset}}_{{method}}_labels{{pct}}pct_seed{{seed}}.tsv"
    shell:
        "(export OMP_NUM_THREADS={threads};"
        " s2dc finetune {params.options} {params.run_local} --data.source {input.data:q} --model.init {params.init:q}"
        " --data.label_ratio {params.ratio} --run.seed {wildcards.seed} --run.method {wildcards.method}"
        " --run.out_dir {params.outdir:q} --run.resume if_unchanged --run.progress false) > {log:q} 2>&1"
