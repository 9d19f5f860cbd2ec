# Rule train_model: train one word-level language model (lmbrain.training.train_from_config).
from pathlib import Path

from lmbrain.workflow import run_rule
from lmbrain.training import train_from_config

with run_rule(snakemake):
    train_from_config(snakemake.config, snakemake.wildcards.model, Path(snakemake.output.model).parent,
                      corpus_dir=Path(snakemake.input.train).parent)
