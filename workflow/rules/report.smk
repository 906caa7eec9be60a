# The benchmark table: mean ± std over seeds of every fine-tuning metric, beside the paper's numbers,
# then the structure probe.


rule benchmark_table:
    input:
        runs=finetune_targets(),
        probes=probe_targets(),
    output:
        csv=f"{RESULTS}/benchmark.csv",
        md=f"{RESULTS}/benchmark.md",
        html=report(f"{RESULTS}/benchmark.html", caption="../report/benchmark.rst", category="Benchmark"),
        metrics=f"{RESULTS}/metrics.json",
        probe=f"{RESULTS}/probe.csv",
        record=f"{RESULTS}/.s2dc-tables.json",  # the tables' SHA-256 (s2dc.report.tables.RECORD)
    params:
        out=lambda w, output: os.path.dirname(output.csv),
        registry=lambda w: report_entries(),
        code=CODE["report"],
    conda:
        "../envs/s2dc.yaml"
    log:
        f"logs/{SCALE}/benchmark_table.log",
    benchmark:
        f"benchmarks/{SCALE}/benchmark_table.tsv"
    shell:
        "s2dc report --out {params.out:q} {input.runs:q} --probe {input.probes:q} > {log:q} 2>&1"


# Figures of the fine-tuning runs (per-class bars per dataset, score vs label ratio, S²DC against its baselines in
# both protocols with the probes) and their curves gathered per dataset for `dvc plots show` (dvc.yaml `plots:`).
rule benchmark_plots:
    input:
        runs=finetune_targets(),
        probes=probe_targets(),
    output:
        figures=report(directory(f"{RESULTS}/figures/benchmark"), patterns=["{name}.png"],
                       caption="../report/benchmark_figures.rst", category="Benchmark"),
        curves=directory(f"{RESULTS}/curves"),
    params:
        registry=lambda w: report_entries(),
        code=CODE["plots"],
    conda:
        "../envs/s2dc.yaml"
    log:
        f"logs/{SCALE}/benchmark_plots.log",
    benchmark:
        f"benchmarks/{SCALE}/benchmark_plots.tsv"
    shell:
        "s2dc plots {input.runs:q} --probe {input.probes:q} --figures {output.figures:q} --curves {output.curves:q}"
        " > {log:q} 2>&1"
