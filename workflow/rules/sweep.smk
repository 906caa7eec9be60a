# Optuna sweep, a second target: `snakemake --cores N sweep`. `sweep.workers` worker jobs share one study (a journal
# file by default; a database URL on a cluster), each running trials (a short pretraining on the pool of the
# dataset's modality, then a short fine-tuning on `sweep.dataset`, pruned on its validation scores) until the study
# holds exactly `sweep.budget` finished trials; then the study is exported (trials table, best parameters, figures).
# A worker killed mid-trial loses nothing: rerunning the target fails its trial and retries its parameters.


rule sweep_worker:
    input:
        pool=lambda w: pool_json(modality_of(SWEEP["dataset"])),
        data=dataset_json(SWEEP["dataset"]),
    output:
        touch(f"{RESULTS}/sweep/workers/{{worker}}.done"),
    params:
        storage=sweep_storage(),
        study=sweep_study(),
        budget=SWEEP["budget"],
        spec=untracked(sweep_spec()),
    wildcard_constraints:
        worker=r"\d+",
    threads: SWEEP["resources"]["threads"]
    resources:
        **stage_resources("sweep"),
    conda:
        "../envs/s2dc.yaml"
    log:
        f"logs/{SCALE}/sweep/worker{{worker}}.log",
    benchmark:
        f"benchmarks/{SCALE}/sweep/worker{{worker}}.tsv"
    shell:
        "(export OMP_NUM_THREADS={threads};"
        " s2dc sweep work --storage {params.storage:q} --study {params.study:q} --budget {params.budget}"
        " --spec {params.spec:q}) > {log:q} 2>&1"


rule sweep_export:
    input:
        [f"{RESULTS}/sweep/workers/{w}.done" for w in range(SWEEP["workers"])],
    output:
        trials=f"{RESULTS}/sweep/trials.csv",
        table=report(f"{RESULTS}/sweep/trials.html", caption="../report/sweep.rst", category="Sweep"),
        best=f"{RESULTS}/sweep/best.yaml",
        history=report(f"{RESULTS}/sweep/history.png", caption="../report/sweep_figures.rst", category="Sweep"),
        parallel=report(f"{RESULTS}/sweep/parallel_coordinate.png", caption="../report/sweep_figures.rst",
                        category="Sweep"),
        importances=report(f"{RESULTS}/sweep/param_importances.png", caption="../report/sweep_figures.rst",
                           category="Sweep"),
    params:
        storage=sweep_storage(),
        study=sweep_study(),
        out=lambda w, output: os.path.dirname(output.trials),
        code=CODE["sweep"],
    conda:
        "../envs/s2dc.yaml"
    log:
        f"logs/{SCALE}/sweep/export.log",
    shell:
        "s2dc sweep export --storage {params.storage:q} --study {params.study:q} --out {params.out:q} > {log:q} 2>&1"


rule sweep:
    # The second target: the sweep of the active scale, exported.
    input:
        rules.sweep_export.output,
