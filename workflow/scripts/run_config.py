# Rule run_config: the effective configuration of this run (lmbrain.config.write_config).
from lmbrain.workflow import run_rule
from lmbrain.config import write_config

with run_rule(snakemake):
    write_config(snakemake.config, snakemake.output[0])
