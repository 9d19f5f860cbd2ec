# Temporal receptive windows: per-voxel estimates from each model's context sweep, maps and figures.


rule trw:
    input:
        unpack(trw_inputs),
    output:
        report(
            directory(L.trw_dir("{subject}", "{model}")),
            patterns=["{name}.png"],
            caption="../report/trw.rst",
            category="Temporal receptive windows",
            subcategory="{model}",
            labels={"subject": "{subject}", "model": "{model}", "figure": "{name}"},
        ),
    params:
        settings=trw_settings,
        code=CODE_VERSION,
    log:
        L.log("{subject}", "trw", "{model}"),
    benchmark:
        L.benchmark("{subject}", "trw", "{model}")
    threads: model_threads
    resources:
        mem_mb=trw_mem_mb,
        runtime=60,
    conda:
        "../../environment.yml"
    script:
        "../scripts/trw.py"
