# Language models: word-level models trained on the corpus, and pretrained HuggingFace models.


rule prepare_corpus:
    output:
        train="results/corpus/train.txt",
        heldout="results/corpus/heldout.txt",
        info="results/corpus/corpus.json",
    params:
        spec=corpus_params(),
        code=CODE_VERSION,
    log:
        "logs/prepare_corpus.log",
    benchmark:
        "results/benchmarks/prepare_corpus.tsv"
    threads: 1
    resources:
        mem_mb=fixed_mem(3000),
        runtime=30,
    conda:
        "../../environment.yml"
    script:
        "../scripts/prepare_corpus.py"


rule train_model:
    input:
        train="results/corpus/train.txt",
        heldout="results/corpus/heldout.txt",
    output:
        model="results/models/{model}/config.json",
        weights="results/models/{model}/model.safetensors",
        table="results/models/{model}/training.tsv",
        figure=report(
            "results/models/{model}/training.png",
            caption="../report/training.rst",
            category="Language models",
            labels={"model": "{model}", "figure": "training"},
        ),
        pdf="results/models/{model}/training.pdf",
    wildcard_constraints:
        model=name_pattern(TRAINED_MODELS),
    params:
        spec=model_params,
        code=CODE_VERSION,
    log:
        "logs/models/{model}/train_model.log",
    benchmark:
        "results/benchmarks/models/{model}/train_model.tsv"
    threads: model_threads
    resources:
        gpu=model_gpus,
        mem_mb=fixed_mem(6000),
        runtime=240,
    conda:
        "../../environment.yml"
    script:
        "../scripts/train_model.py"


rule pretrained_model:
    output:
        model="results/models/{model}/config.json",
    wildcard_constraints:
        model=name_pattern(PRETRAINED_MODELS),
    params:
        spec=model_params,
        code=CODE_VERSION,
    log:
        "logs/models/{model}/pretrained_model.log",
    benchmark:
        "results/benchmarks/models/{model}/pretrained_model.tsv"
    threads: 1
    resources:
        mem_mb=fixed_mem(4000),
        runtime=30,
    conda:
        "../../environment.yml"
    script:
        "../scripts/pretrained_model.py"
