# Rule decoder: fit one subject's decoder for one language model (lmbrain.stages.decoding.decoder).
from pathlib import Path

from lmbrain.config import DecoderJob, from_json
from lmbrain.stages.decoding import decoder
from lmbrain.workflow import run_rule

with run_rule(snakemake):
    inp = snakemake.input
    decoder(from_json(DecoderJob, snakemake.params.settings), snakemake.wildcards.subject, Path(inp.model).parent,
            snakemake.output[0],
            feature_model_dir=Path(inp.feature_model).parent if "feature_model" in inp.keys() else None)
