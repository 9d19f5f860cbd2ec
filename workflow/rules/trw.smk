# Temporal receptive windows: per-voxel estimates from each model's context sweep, maps and figures.
# In-silico scrambling reads each test story's scrambled versions, made once per (model, story) by
# scrambled_features and shared by every subject who heard the story.


rule scrambled_features:
    input:
        model=L.model_file("{model}"),
        data=story_data,
    output:
        L.scrambled_file("{model}", "{story}"),
    params:
        settings=scramble_settings,
        code=CODE_VERSION,
    log:
        L.log("scrambled", "{model}", "{story}"),
    benchmark:
        L.benchmark("scrambled", "{model}", "{story}")
    threads: threads_for(model_mem_mb)
    resources:
        gpu=model_gpus,
        mem_mb=model_mem_mb,
        runtime=runtime_min("scrambled_features", 120),
    conda:
        "../../environment.yml"
    script:
        "../scripts/scrambled_features.py"


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
    threads: threads_for(trw_mem_mb)
    resources:
        mem_mb=trw_mem_mb,
        runtime=runtime_min("trw", 60),
    conda:
        "../../environment.yml"
    script:
        "../scripts/trw.py"
