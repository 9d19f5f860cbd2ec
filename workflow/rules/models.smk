# Language models: word-level models trained on the corpus, and pretrained HuggingFace models.


rule prepare_corpus:
    output:
        train=L.corpus_file("train.txt"),
        heldout=L.corpus_file("heldout.txt"),
        info=L.corpus_file("corpus.json"),
    params:
        settings=corpus_settings,
        code=CODE_VERSION,
    log:
        L.log("prepare_corpus"),
    benchmark:
        L.benchmark("prepare_corpus")
    threads: 1
    resources:
        mem_mb=fixed_mem(3000),
        runtime=runtime_min("prepare_corpus", 30),
    conda:
        "../../environment.yml"
    script:
        "../scripts/prepare_corpus.py"


# Training runs first (priority 2, above the encoding and decoding jobs' 1; every other rule has 0): each
# trained model heads the longest chains of a run (features, encoding, TRW, ROIs, group, decoder and
# decode). Left to Snakemake's order, the demo on 2 cores trained its last model 10 minutes in, between
# other models' feature jobs, and ended with ~45 s of that model's chain on one core.
rule train_model:
    input:
        train=L.corpus_file("train.txt"),
        heldout=L.corpus_file("heldout.txt"),
        info=L.corpus_file("corpus.json"),
    output:
        model=L.model_file("{model}", "config.json"),
        weights=L.model_file("{model}", "model.safetensors"),
        vocab=L.model_file("{model}", "vocab.json"),
        table=L.model_file("{model}", "training.tsv"),
        figure=report(
            L.model_file("{model}", "training.png"),
            caption="../report/training.rst",
            category="Language models",
            labels={"model": "{model}", "figure": "training"},
        ),
        pdf=L.model_file("{model}", "training.pdf"),
    wildcard_constraints:
        model=name_pattern(TRAINED_MODELS),
    params:
        settings=train_settings,
        code=CODE_VERSION,
    log:
        L.log("models", "{model}", "train_model"),
    benchmark:
        L.benchmark("models", "{model}", "train_model")
    priority: 2
    threads: threads_for(model_mem_mb)
    resources:
        gpu=model_gpus,
        mem_mb=model_mem_mb,
        runtime=runtime_min("train_model", 240),
    conda:
        "../../environment.yml"
    script:
        "../scripts/train_model.py"


rule pretrained_model:
    output:
        model=L.model_file("{model}", "config.json"),
    wildcard_constraints:
        model=name_pattern(PRETRAINED_MODELS),
    params:
        settings=pretrained_settings,
        code=CODE_VERSION,
    log:
        L.log("models", "{model}", "pretrained_model"),
    benchmark:
        L.benchmark("models", "{model}", "pretrained_model")
    threads: 1
    resources:
        mem_mb=fixed_mem(4000),
        runtime=runtime_min("pretrained_model", 30),
    conda:
        "../../environment.yml"
    script:
        "../scripts/pretrained_model.py"
