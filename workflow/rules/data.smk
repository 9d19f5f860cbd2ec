# Reading the dataset: per-subject check of stories, TR counts, word timings and bad voxels.


rule data_summary:
    input:
        dataset_ready(),
    output:
        summary="results/{subject}/data/summary.tsv",
    params:
        code=CODE_VERSION,
    log:
        "logs/{subject}/data_summary.log",
    benchmark:
        "results/benchmarks/{subject}/data_summary.tsv"
    threads: 1
    resources:
        mem_mb=summary_mem_mb,
    conda:
        "../../environment.yml"
    script:
        "../scripts/data_summary.py"
