# Rule data_summary: check one subject's data and tabulate it (lmbrain.stages.data.data_summary).
from lmbrain.config import DataJob, from_json
from lmbrain.stages.data import data_summary
from lmbrain.workflow import run_rule

with run_rule(snakemake):
    data_summary(from_json(DataJob, snakemake.params.settings), snakemake.wildcards.subject, snakemake.output.summary)
