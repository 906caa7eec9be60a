# Pretraining: one S²DC encoder per modality and pretraining variant (params.yaml `variants`: loss.* overrides), on
# that modality's unlabelled pool. The benchmark's variants live under pretrain/, the ablation's others under
# ablation/pretrain/ (common.smk: tree); changing one variant's overrides reruns only its own jobs. Beside the
# encoder: the run's summary and its DVCLive curves (loss terms, learning rate), which `dvc plots` draws. The command
# writes all three (--export-*), each into a work file beside it, then renamed in (s2dc.train.publish): a run killed
# meanwhile leaves each whole or absent, never half written (which the start check would refuse as a user's file),
# and the rerun removes the work files first.


rule pretrain:
    input:
        lambda w: pool_json(w.modality),
    output:
        encoder=f"{RESULTS}/{{tree}}/{{modality}}/{{variant}}/encoder.pt",
        summary=f"{RESULTS}/{{tree}}/{{modality}}/{{variant}}/summary.json",
        live=directory(f"{RESULTS}/{{tree}}/{{modality}}/{{variant}}/dvclive"),
    params:
        # The launcher as written runs the job; its words (common.smk: LAUNCHER_WORDS) are what Snakemake compares.
        launcher=untracked(P["pretrain"]["launcher"]),
        launcher_words=LAUNCHER_WORDS,
        options=lambda w: pretrain_command_options(w.modality, w.variant),
        run_local=untracked(RUN_LOCAL_OPTIONS["pretrain"]),
        workdir=lambda w: pretrain_workdir(w.modality, w.variant),
        entry=lambda w: entry(registry.pool_for(w.modality)),
        code=CODE["pretrain"],
    wildcard_constraints:
        tree="pretrain|ablation/pretrain",
        modality="CT|MRI|PET",
        variant="|".join(VARIANTS),
    threads: P["pretrain"]["resources"]["threads"]
    resources:
        **stage_resources("pretrain"),
    conda:
        "../envs/s2dc.yaml"
    log:
        f"logs/{SCALE}/{{tree}}/{{modality}}_{{variant}}.log",
    benchmark:
        f"benchmarks/{SCALE}/{{tree}}/{{modality}}_{{variant}}.tsv"
    shell:
        "(export OMP_NUM_THREADS={threads};"
        " {params.launcher} pretrain {params.options} {params.run_local} --data.source {input:q} --run.out_dir {params.workdir:q}"
        " --run.resume if_unchanged --run.progress false --export-encoder {output.encoder:q}"
        " --export-curves {output.live:q} --export-summary {output.summary:q}) > {log:q} 2>&1"
