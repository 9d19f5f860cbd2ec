# Rule decoder: fit one subject's decoder for one language model (lmbrain.decoding.fit_decoder_from_config).
from pathlib import Path

from lmbrain.decoding import fit_decoder_from_config
from lmbrain.workflow import run_rule

with run_rule(snakemake):
    inp = snakemake.input
    fit_decoder_from_config(snakemake.config, snakemake.wildcards.subject, Path(inp.model).parent, snakemake.output[0],
                            feature_model_dir=Path(inp.feature_model).parent if "feature_model" in inp.keys() else None)
