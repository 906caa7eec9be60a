# The loss ablation (poster Table 2), a second target: `snakemake --cores N ablation`. Each variant of
# `ablation.variants` is pretrained (the benchmark's own s2dc encoders are reused) and fine-tuned on each of
# `ablation.datasets` at `ablation.label_ratio` with every seed of the experiments; the table sets the variants
# side by side with the poster's numbers and compares the orderings, and probes and draws every variant's frozen
# encoder (the structure figures for the ablation datasets of `probe.figures`).


rule ablation_probe:
    # The frozen-encoder protocol of every variant's encoder (and a random encoder and the raw voxels).
    input:
        data=lambda w: dataset_json(w.dataset),
        encoders=lambda w: [encoder_path(modality_of(w.dataset), v) for v in ABLATION["variants"]],
    output:
        json=f"{RESULTS}/ablation/probe/{{dataset}}.json",
        md=f"{RESULTS}/ablation/probe/{{dataset}}.md",
    params:
        encoders=lambda w, input: " ".join(f"{v}={shlex.quote(e)}" for v, e in zip(ABLATION["variants"], input.encoders)),
        stage=lambda w: probe_stage(w.dataset),
        seed=P["probe"]["seed"],
        cache=f"{RESULTS}/cache/probe",
        entry=lambda w: entry(w.dataset),
        code=CODE["probe"],
    threads: P["probe"]["resources"]["threads"]
    resources:
        **stage_resources("probe"),
    conda:
        "../envs/s2dc.yaml"
    log:
        f"logs/{SCALE}/ablation/probe/{{dataset}}.log",
    benchmark:
        f"benchmarks/{SCALE}/ablation/probe/{{dataset}}.tsv"
    shell:
        "(export OMP_NUM_THREADS={threads};"
        " s2dc probe voxels random {params.encoders} --source {input.data:q} --stage {params.stage}"
        " --seed {params.seed} --cache-dir {params.cache:q} --out {output.json:q}) > {log:q} 2>&1"


rule ablation_figures:
    # The structure figures (similarity to an anchor token, t-SNE) of every variant's encoder side by side.
    input:
        data=lambda w: dataset_json(w.dataset),
        encoders=lambda w: [encoder_path(modality_of(w.dataset), v) for v in ABLATION["variants"]],
    output:
        similarity=report(f"{RESULTS}/ablation/figures/{{dataset}}/similarity.png", caption="../report/similarity.rst",
                          category="Loss ablation", subcategory="{dataset}"),
        tsne=report(f"{RESULTS}/ablation/figures/{{dataset}}/tsne.png", caption="../report/tsne.rst",
                    category="Loss ablation", subcategory="{dataset}"),
    params:
        encoders=lambda w, input: " ".join(f"{v}={shlex.quote(e)}" for v, e in zip(ABLATION["variants"], input.encoders)),
        stage=lambda w: probe_stage(w.dataset),
        seed=P["probe"]["seed"],
        structure=lambda w: figure_anchor(w.dataset)[0],
        labels=lambda w: figure_anchor(w.dataset)[1],
        out=lambda w, output: os.path.dirname(output.similarity),
        tsne=TSNE_OPTION,
        cache=f"{RESULTS}/cache/probe",
        entry=lambda w: entry(w.dataset),
        code=CODE["figures"],
    threads: P["probe"]["resources"]["threads"]
    resources:
        **stage_resources("probe"),
    conda:
        "../envs/s2dc.yaml"
    log:
        f"logs/{SCALE}/ablation/figures/{{dataset}}.log",
    benchmark:
        f"benchmarks/{SCALE}/ablation/figures/{{dataset}}.tsv"
    shell:
        STRUCTURE_FIGURES


rule ablation_table:
    input:
        runs=ablation_targets(),
        probes=[f"{RESULTS}/ablation/probe/{d}.json" for d in ABLATION["datasets"]],
    output:
        csv=f"{RESULTS}/ablation/ablation.csv",
        md=f"{RESULTS}/ablation/ablation.md",
        html=report(f"{RESULTS}/ablation/ablation.html", caption="../report/ablation.rst", category="Loss ablation"),
        metrics=f"{RESULTS}/ablation/ablation.json",
        record=f"{RESULTS}/ablation/.s2dc-tables.json",  # the tables' SHA-256 (s2dc.report.tables.RECORD)
    params:
        terms=" ".join(f"{v}={variant_terms(v)}" for v in ABLATION["variants"]),
        out=lambda w, output: os.path.dirname(output.csv),
        registry=lambda w: report_entries(ABLATION["datasets"]),
        code=CODE["report"],
    conda:
        "../envs/s2dc.yaml"
    log:
        f"logs/{SCALE}/ablation_table.log",
    benchmark:
        f"benchmarks/{SCALE}/ablation_table.tsv"
    shell:
        "s2dc ablation-table {input.runs:q} --terms {params.terms} --probe {input.probes:q} --out {params.out:q}"
        " > {log:q} 2>&1"

rule ablation:
    # The second target: the loss-ablation table of the active scale and the variants' structure figures, and (as for
    # `all`) every run and probe result they are made of, so that one gone missing is made again.
    input:
        ablation_targets(),
        [f"{RESULTS}/ablation/probe/{d}.json" for d in ABLATION["datasets"]],
        rules.ablation_table.output,
        ablation_figure_targets(),
