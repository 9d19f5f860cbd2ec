# Encoding models: one job per (subject, model, feature) fits every context length k, reading the
# subject's responses once; results in <out>/k<k>/ (voxels.tsv, weights.h5, test_r.nii.gz, map).


rule encoding_model:
    input:
        features=encoding_inputs,
        data=subject_data,
    output:
        report(
            directory(L.encoding_dir("{subject}", "{model}", "{feature}")),
            patterns=["{name}_by_k.jpg"],
            caption="../report/encoding.rst",
            category="Encoding models",
            subcategory="{model}",
            labels={"subject": "{subject}", "model": "{model}", "feature": "{feature}", "figure": "{name}"},
        ),
    wildcard_constraints:
        feature="(" + "|".join(FEATURE_KINDS) + ")-(L[0-9]+|last)",
    params:
        settings=encoding_settings,
        code=CODE_VERSION,
    log:
        L.log("{subject}", "encoding", "{model}", "{feature}"),
    benchmark:
        L.benchmark("{subject}", "encoding", "{model}", "{feature}")
    threads: threads_for(encoding_mem_mb)
    resources:
        gpu=model_gpus,
        mem_mb=encoding_mem_mb,
        runtime=runtime_min("encoding_model", 240),
    conda:
        "../../environment.yml"
    script:
        "../scripts/encoding_model.py"
