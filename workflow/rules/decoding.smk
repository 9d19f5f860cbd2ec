# Decoding stimulus text (Tang et al. 2023): one decoder per (subject, model) fitted on the training
# stories, then one decode per test story with its null, scores, identification and figures.
# Both run as soon as their inputs exist (priority 1 as the encoding jobs, after the model training's 2;
# every other rule has 0): a decode is the longest job of a run with nothing downstream but the report,
# and left for last it runs alone at the end while the other cores idle (the demo on 2 cores ended with
# ~100 s of one decode job).


rule decoder:
    input:
        unpack(decoder_inputs),
    output:
        L.decoder_file("{subject}", "{model}"),
    wildcard_constraints:
        model=name_pattern(DECODING_MODELS),
    params:
        settings=decoder_settings,
        code=CODE_VERSION,
    log:
        L.log("{subject}", "decoding", "{model}", "decoder"),
    benchmark:
        L.benchmark("{subject}", "decoding", "{model}", "decoder")
    priority: 1
    threads: threads_for(decoder_mem_mb)
    resources:
        gpu=model_gpus,
        mem_mb=decoder_mem_mb,
        runtime=runtime_min("decoder", 120),
    conda:
        "../../environment.yml"
    script:
        "../scripts/decoder.py"


rule decode:
    input:
        unpack(decoder_inputs),
        decoder=L.decoder_file("{subject}", "{model}"),
    output:
        report(
            directory(L.decode_dir("{subject}", "{model}", "{story}")),
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
        settings=decode_settings,
        code=CODE_VERSION,
    log:
        L.log("{subject}", "decoding", "{model}", "{story}"),
    benchmark:
        L.benchmark("{subject}", "decoding", "{model}", "{story}")
    priority: 1
    threads: threads_for(decode_mem_mb)
    resources:
        gpu=model_gpus,
        mem_mb=decode_mem_mb,
        runtime=runtime_min("decode", 720),
    conda:
        "../../environment.yml"
    script:
        "../scripts/decode.py"
