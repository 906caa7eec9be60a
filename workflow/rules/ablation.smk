# The loss ablation (poster Table 2), a second target: `snakemake --cores N ablation`. Each variant of
# `ablation.variants` is pretrained (the benchmark's own s2dc encoders are reused) and fine-tuned on each of
# `ablation.datasets` at `ablation.label_ratio` with every seed of the experiments; the table sets the variants
# side by side with the poster's numbers and compares the orderings.


rule ablation_table:
    input:
        ablation_targets(),
    output:
        csv=report(f"{RESULTS}/ablation/ablation.csv", caption="../report/ablation.rst", category="Loss ablation"),
        md=f"{RESULTS}/ablation/ablation.md",
        metrics=f"{RESULTS}/ablation/ablation.json",
    params:
        terms=" ".join(f"{v}={variant_terms(v)}" for v in ABLATION["variants"]),
        out=lambda w, output: os.path.dirname(output.csv),
        code=CODE["report"],
    conda:
        "../envs/s2dc.yaml"
    log:
        f"logs/{SCALE}/ablation_table.log",
    benchmark:
        f"benchmarks/{SCALE}/ablation_table.tsv"
    shell:
        "s2dc ablation-table {input:q} --terms {params.terms} --out {params.out:q} > {log:q} 2>&1"

rule ablation:
    # The second target: the loss-ablation table of the active scale.
    input:
        rules.ablation_table.output,
