# Encoding models: one job per (subject, model, feature) fits every context length k, reading the
# subject's responses once; results in <out>/k<k>/ (voxels.tsv, weights.h5, test_r.nii.gz, map).


rule encoding_model:
    input:
        features=encoding_inputs,
    output:
        report(
            directory("results/{subject}/encoding/{model}/{feature}"),
            patterns=["k{k}/test_r.png"],
            caption="../report/encoding.rst",
            category="Encoding models",
            subcategory="{model}",
            labels={"subject": "{subject}", "model": "{model}", "feature": "{feature}", "k": "{k}"},
        ),
    wildcard_constraints:
        feature="(hidden|heads|entropy|distance)-(L[0-9]+|last)",
    params:
        spec=encoding_params,
        code=CODE_VERSION,
    log:
        "logs/{subject}/encoding/{model}/{feature}.log",
    benchmark:
        "results/benchmarks/{subject}/encoding/{model}/{feature}.tsv"
    threads: model_threads
    resources:
        gpu=model_gpus,
        mem_mb=encoding_mem_mb,
        runtime=240,
    conda:
        "../../environment.yml"
    script:
        "../scripts/encoding_model.py"
