# The benchmark table: mean ± std over seeds of every fine-tuning metric, beside the paper's numbers,
# then the structure probe.


rule benchmark_table:
    input:
        runs=finetune_targets(),
        probes=probe_targets(),
    output:
        csv=f"{RESULTS}/benchmark.csv",
        md=f"{RESULTS}/benchmark.md",
        metrics=f"{RESULTS}/metrics.json",
    params:
        out=lambda w, output: os.path.dirname(output.csv),
        code=CODE["report"],
    conda:
        "../envs/s2dc.yaml"
    log:
        f"logs/{SCALE}/benchmark_table.log",
    benchmark:
        f"benchmarks/{SCALE}/benchmark_table.tsv"
    shell:
        "s2dc report --out {params.out:q} {input.runs:q} --probe {input.probes:q} > {log:q} 2>&1"
