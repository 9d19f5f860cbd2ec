# Decoding stimulus text (Tang et al. 2023): one decoder per (subject, model) fitted on the training
# stories, then one decode per test story with its null, scores, identification and figures.


rule decoder:
    input:
        unpack(decoder_inputs),
    output:
        "results/{subject}/decoding/{model}/decoder.npz",
    wildcard_constraints:
        model=name_pattern(DECODING_MODELS),
    params:
        spec=decoding_params,
        code=CODE_VERSION,
    log:
        "logs/{subject}/decoding/{model}/decoder.log",
    benchmark:
        "results/benchmarks/{subject}/decoding/{model}/decoder.tsv"
    threads: model_threads
    resources:
        gpu=model_gpus,
        mem_mb=decoder_mem_mb,
        runtime=120,
    conda:
        "../../environment.yml"
    script:
        "../scripts/decoder.py"


rule decode:
    input:
        unpack(decoder_inputs),
        decoder="results/{subject}/decoding/{model}/decoder.npz",
    output:
        report(
            directory("results/{subject}/decoding/{model}/{story}"),
            patterns=["{name}.png"],
            caption="../report/decoding.rst",
            category="Decoding",
            subcategory="{model}",
            labels={"subject": "{subject}", "model": "{model}", "story": "{story}", "figure": "{name}"},
        ),
    wildcard_constraints:
        model=name_pattern(DECODING_MODELS),
        story="[^/.]+",
    params:
        spec=decoding_params,
        code=CODE_VERSION,
    log:
        "logs/{subject}/decoding/{model}/{story}.log",
    benchmark:
        "results/benchmarks/{subject}/decoding/{model}/{story}.tsv"
    threads: model_threads
    resources:
        gpu=model_gpus,
        mem_mb=decode_mem_mb,
        runtime=720,
    conda:
        "../../environment.yml"
    script:
        "../scripts/decode.py"
