# Rule rois: one subject's TRW per region of interest for one model (lmbrain.stages.rois.rois).
from lmbrain.config import RoisJob, from_json
from lmbrain.stages.rois import rois
from lmbrain.workflow import run_rule

with run_rule(snakemake):
    rois(from_json(RoisJob, snakemake.params.settings), snakemake.wildcards.subject, snakemake.wildcards.model,
         snakemake.input.trw, snakemake.output[0])
