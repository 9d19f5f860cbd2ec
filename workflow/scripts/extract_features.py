# Rule extract_features: one model's features for one story at every context length.
from lmbrain.workflow import run_rule
from lmbrain.features import extract_from_config

with run_rule(snakemake):
    w = snakemake.wildcards
    extract_from_config(snakemake.config, w.model, w.story, snakemake.input.model.rsplit("/", 1)[0],
                        snakemake.output.features)
