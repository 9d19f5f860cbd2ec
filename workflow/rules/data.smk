# Reading the dataset: per-subject check of stories, TR counts, word timings and bad voxels.


rule data_summary:
    input:
        subject_data,
    output:
        summary=L.data_summary("{subject}"),
    params:
        settings=data_settings,
        code=CODE_VERSION,
    log:
        L.log("{subject}", "data_summary"),
    benchmark:
        L.benchmark("{subject}", "data_summary")
    threads: 1
    resources:
        mem_mb=summary_mem_mb,
    conda:
        "../../environment.yml"
    script:
        "../scripts/data_summary.py"
