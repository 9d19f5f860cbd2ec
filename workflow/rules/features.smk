# Word-level features of every model for every story, one HDF5 file per context length k.
# One job per (model, story) computes every k: the exact fast path shares one forward pass per
# window start across all context lengths, so splitting k over jobs would only repeat work.


rule extract_features:
    input:
        model="results/models/{model}/config.json",
        data=dataset_ready(),
    output:
        features=directory("results/features/{model}/{story}"),
    params:
        spec=feature_params,
        code=CODE_VERSION,
    log:
        "logs/features/{model}/{story}.log",
    benchmark:
        "results/benchmarks/features/{model}/{story}.tsv"
    threads: model_threads
    resources:
        gpu=model_gpus,
        mem_mb=fixed_mem(6000),
        runtime=240,
    conda:
        "../../environment.yml"
    script:
        "../scripts/extract_features.py"
