# Rule run_config: the effective configuration of this run (lmbrain.stages.report.run_config).
from lmbrain.stages.report import run_config
from lmbrain.workflow import run_rule

with run_rule(snakemake):
    run_config(snakemake.params.config, snakemake.output[0])
