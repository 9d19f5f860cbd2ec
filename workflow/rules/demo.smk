# The embedded demo dataset (a lebel2023-layout dataset with planted receptive windows).


# A checkpoint: the story names are known only once the dataset exists.
checkpoint demo_dataset:
    output:
        manifest=f"{S.dataset.root}/demo.json",
    params:
        settings=demo_settings,
        code=CODE_VERSION,
    log:
        L.log("demo_dataset"),
    benchmark:
        L.benchmark("demo_dataset")
    threads: threads_for(fixed_mem(4000))
    resources:
        mem_mb=fixed_mem(4000),
    conda:
        "../../environment.yml"
    script:
        "../scripts/demo_dataset.py"
