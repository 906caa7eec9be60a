# The benchmark table: mean ± std over seeds of every fine-tuning metric, beside the paper's numbers.


rule benchmark_table:
    input:
        finetune_targets(),
    output:
        csv=f"{RESULTS}/benchmark.csv",
        md=f"{RESULTS}/benchmark.md",
        metrics=f"{RESULTS}/metrics.json",
    params:
        out=lambda w, output: os.path.dirname(output.csv),
    conda:
        "../envs/s2dc.yaml"
    log:
        f"logs/{SCALE}/benchmark_table.log",
    benchmark:
        f"benchmarks/{SCALE}/benchmark_table.tsv"
    shell:
        "s2dc report --out {params.out} {input} > {log} 2>&1"
