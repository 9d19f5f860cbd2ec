# Rule group: one model's ROI results over every subject (lmbrain.stages.rois.group).
from lmbrain.config import GroupJob, from_json
from lmbrain.stages.rois import group
from lmbrain.workflow import run_rule

with run_rule(snakemake):
    group(from_json(GroupJob, snakemake.params.settings), snakemake.wildcards.model,
          dict(zip(snakemake.params.subjects, snakemake.input)), snakemake.output[0])
