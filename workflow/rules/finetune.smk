# Fine-tuning: every dataset × method × label ratio × seed of the experiment grid.


def finetune_dir(dataset, method, pct, seed) -> str:
    return f"{RESULTS}/finetune/{dataset}/{method}/labels{pct}pct/seed{seed}"


def finetune_targets() -> list[str]:
    return [
        f"{finetune_dir(d, m, ratio_percent(r), s)}/metrics.json"
        for d in EXP["datasets"] for m in EXP["methods"] for r in EXP["label_ratios"] for s in EXP["seeds"]
    ]


def encoder_for(w) -> list[str]:
    """The pretrained encoder a method starts from (none for training from scratch)."""
    if w.method == "scratch":
        return []
    return [f"{RESULTS}/pretrain/{modality_of(w.dataset)}/encoder.pt"]


rule finetune:
    input:
        data=lambda w: dataset_json(w.dataset),
        encoder=encoder_for,
    output:
        f"{RESULTS}/finetune/{{dataset}}/{{method}}/labels{{pct}}pct/seed{{seed}}/metrics.json",
    params:
        options=cli_options(P["finetune"]["options"]),
        init=lambda w, input: input.encoder[0] if input.encoder else "scratch",
        ratio=lambda w: int(w.pct) / 100,
        outdir=lambda w: finetune_dir(w.dataset, w.method, w.pct, w.seed),
    wildcard_constraints:
        method="scratch|s2dc",
        pct=r"\d+",
        seed=r"\d+",
    threads: workflow.cores
    resources:
        gpu=P["finetune"].get("gpus", 0),
    log:
        f"logs/{SCALE}/finetune/{{dataset}}_{{method}}_labels{{pct}}pct_seed{{seed}}.log",
    benchmark:
        f"benchmarks/{SCALE}/finetune/{{dataset}}_{{method}}_labels{{pct}}pct_seed{{seed}}.tsv"
    shell:
        "(export OMP_NUM_THREADS={threads};"
        " s2dc finetune {params.options} --data.source {input.data} --model.init {params.init}"
        " --data.label_ratio {params.ratio} --run.seed {wildcards.seed} --run.method {wildcards.method}"
        " --run.out_dir {params.outdir} --run.progress false) > {log} 2>&1"
