# Temporal receptive windows: per-voxel estimates from each model's context sweep, maps and figures.


rule trw:
    input:
        encoding=trw_input,
        model="results/models/{model}/config.json",
    output:
        report(
            directory("results/{subject}/trw/{model}"),
            patterns=["{name}.png"],
            caption="../report/trw.rst",
            category="Temporal receptive windows",
            subcategory="{model}",
            labels={"subject": "{subject}", "model": "{model}", "figure": "{name}"},
        ),
    params:
        spec=trw_params,
        code=CODE_VERSION,
    log:
        "logs/{subject}/trw/{model}.log",
    benchmark:
        "results/benchmarks/{subject}/trw/{model}.tsv"
    threads: model_threads
    resources:
        mem_mb=trw_mem_mb,
        runtime=60,
    conda:
        "../../environment.yml"
    script:
        "../scripts/trw.py"
