# Encoding models: one job per (subject, model, feature) fits every context length k, reading the
# subject's responses once; results in <out>/k<k>/ (voxels.tsv, weights.h5, test_r.nii.gz, map).
# Priority 1, as the decoding jobs (every stage after it has 0): an encoding job is long and heads the
# TRW, ROI and group jobs, so a ready one runs before those short ones. Left to Snakemake's order, the
# demo on 2 cores ran an encoding job last, alone for 40 s, while the short jobs had run earlier.


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
    priority: 1
    threads: threads_for(encoding_mem_mb)
    resources:
        gpu=model_gpus,
        mem_mb=encoding_mem_mb,
        runtime=runtime_min("encoding_model", 240),
    conda:
        "../../environment.yml"
    script:
        "../scripts/encoding_model.py"
