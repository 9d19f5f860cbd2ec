# The run's effective configuration, for the HTML report (`snakemake --report results/report.html`).


rule run_config:
    output:
        report(L.config_file(), caption="../report/config.rst", category="Configuration"),
    params:
        config=run_settings,
    log:
        L.log("run_config"),
    benchmark:
        L.benchmark("run_config")
    threads: 1
    resources:
        mem_mb=fixed_mem(500),
    conda:
        "../../environment.yml"
    script:
        "../scripts/run_config.py"
