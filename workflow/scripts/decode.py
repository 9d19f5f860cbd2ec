# Rule decode: decode one story, generate the null, score and plot (lmbrain.decoding.decode_from_config).
from pathlib import Path

from lmbrain.decoding import decode_from_config
from lmbrain.workflow import run_rule

with run_rule(snakemake):
    inp, w = snakemake.input, snakemake.wildcards
    decode_from_config(snakemake.config, w.subject, w.story, Path(inp.model).parent, inp.decoder, snakemake.output[0],
                       feature_model_dir=Path(inp.feature_model).parent if "feature_model" in inp.keys() else None)
