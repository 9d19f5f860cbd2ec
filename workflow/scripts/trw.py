# Rule trw: temporal receptive windows of one model for one subject (lmbrain.stages.trw.trw).
from lmbrain.config import TRWJob, from_json
from lmbrain.stages.trw import trw
from lmbrain.workflow import run_rule

with run_rule(snakemake):
    trw(from_json(TRWJob, snakemake.params.settings), snakemake.wildcards.subject, snakemake.input.encoding,
        snakemake.output[0], progress=True)
