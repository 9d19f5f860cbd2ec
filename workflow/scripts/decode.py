# Rule decode: decode one story, generate the null, score and plot (lmbrain.stages.decoding.decode).
from pathlib import Path

from lmbrain.config import DecodeJob, from_json
from lmbrain.stages.decoding import decode
from lmbrain.workflow import run_rule

with run_rule(snakemake):
    inp, w = snakemake.input, snakemake.wildcards
    decode(from_json(DecodeJob, snakemake.params.settings), w.subject, w.story, Path(inp.model).parent, inp.decoder,
           snakemake.output[0],
           feature_model_dir=Path(inp.feature_model).parent if "feature_model" in inp.keys() else None)
