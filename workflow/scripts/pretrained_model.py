# Rule pretrained_model: check that a HuggingFace model loads offline and record where it is.
from pathlib import Path

from lmbrain.workflow import run_rule
from lmbrain.models import pretrained_from_config

with run_rule(snakemake):
    pretrained_from_config(snakemake.config, snakemake.wildcards.model, Path(snakemake.output.model).parent)
