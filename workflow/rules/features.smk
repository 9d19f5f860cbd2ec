# Word-level features of every model for every story, one HDF5 file per context length k.
# One job per (model, story) computes every k: the exact fast path shares one forward pass per
# window start across all context lengths, so splitting k over jobs would only repeat work.


rule extract_features:
    input:
        model=L.model_file("{model}"),
        data=story_data,
    output:
        features=directory(L.features_dir("{model}", "{story}")),
    params:
        settings=feature_settings,
        code=CODE_VERSION,
    log:
        L.log("features", "{model}", "{story}"),
    benchmark:
        L.benchmark("features", "{model}", "{story}")
    threads: threads_for(model_mem_mb)
    resources:
        gpu=model_gpus,
        mem_mb=model_mem_mb,
        runtime=runtime_min("extract_features", 240),
    conda:
        "../../environment.yml"
    script:
        "../scripts/extract_features.py"
