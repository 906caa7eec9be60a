# The frozen-encoder protocol (`s2dc probe`): a linear model on the frozen encoder's features, per dataset (token
# classes for segmentation, pooled features for classification, token-to-block regression for reconstruction and
# translation), against a random encoder and the raw voxels.


rule probe:
    input:
        data=lambda w: dataset_json(w.dataset),
        encoder=s2dc_encoder,
    output:
        json=f"{RESULTS}/probe/{{dataset}}.json",
        md=f"{RESULTS}/probe/{{dataset}}.md",
    params:
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
        f"logs/{SCALE}/probe/{{dataset}}.log",
    benchmark:
        f"benchmarks/{SCALE}/probe/{{dataset}}.tsv"
    shell:
        "(export OMP_NUM_THREADS={threads};"
        " s2dc probe voxels random s2dc={input.encoder:q} --source {input.data:q} --stage {params.stage}"
        " --seed {params.seed} --cache-dir {params.cache:q} --out {output.json:q}) > {log:q} 2>&1"


# The method's claim drawn (the poster's Figures 1 and 6): for the datasets of `probe.figures` ({dataset:
# structure}), the cosine similarity of a slice's tokens to an anchor token in that structure and a t-SNE of the
# validation tokens, for the raw voxels, a random encoder and the S²DC encoder.
# The command of the structure figures (here and in the loss ablation): params.encoders names the panels after the
# raw voxels and a random encoder; probe.tsne_tokens caps the t-SNE's tokens.
TSNE_OPTION = f" --tsne-tokens {P['probe']['tsne_tokens']}"
STRUCTURE_FIGURES = (
    "(export OMP_NUM_THREADS={threads};"
    " s2dc figures voxels random {params.encoders} --source {input.data:q} --structure {params.structure:q}"
    " --labels {params.labels:q}{params.tsne}"
    " --stage {params.stage} --seed {params.seed} --cache-dir {params.cache:q} --out-dir {params.out:q}) > {log:q} 2>&1"
)


rule structure_figures:
    input:
        data=lambda w: dataset_json(w.dataset),
        encoder=s2dc_encoder,
    output:
        similarity=report(f"{RESULTS}/figures/{{dataset}}/similarity.png", caption="../report/similarity.rst",
                          category="Structure awareness", subcategory="{dataset}"),
        tsne=report(f"{RESULTS}/figures/{{dataset}}/tsne.png", caption="../report/tsne.rst",
                    category="Structure awareness", subcategory="{dataset}"),
    params:
        encoders=lambda w, input: f"s2dc={shlex.quote(input.encoder)}",
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
        f"logs/{SCALE}/figures/{{dataset}}.log",
    benchmark:
        f"benchmarks/{SCALE}/figures/{{dataset}}.tsv"
    shell:
        STRUCTURE_FIGURES
