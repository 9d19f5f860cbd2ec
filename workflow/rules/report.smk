# The run's effective configuration, for the HTML report (`snakemake --report results/report.html`).


rule run_config:
    output:
        report("results/config.yaml", caption="../report/config.rst", category="Configuration"),
    params:
        config=config_params(),
    log:
        "logs/run_config.log",
    benchmark:
        "results/benchmarks/run_config.tsv"
    threads: 1
    resources:
        mem_mb=fixed_mem(500),
    conda:
        "../../environment.yml"
    script:
        "../scripts/run_config.py"
