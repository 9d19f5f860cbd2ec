# The embedded demo dataset (a lebel2023-layout dataset with planted receptive windows).


# A checkpoint: the story names are known only once the dataset exists.
checkpoint demo_dataset:
    output:
        manifest=str(DATA_ROOT / "demo.json"),
    params:
        spec=demo_params(),
        code=CODE_VERSION,
    log:
        "logs/demo_dataset.log",
    benchmark:
        "results/benchmarks/demo_dataset.tsv"
    threads: 2
    resources:
        mem_mb=fixed_mem(4000),
    conda:
        "../../environment.yml"
    script:
        "../scripts/demo_dataset.py"
