# Rule pretrained_model: check that a HuggingFace model loads offline and record where it is, or build
# the demo's planted topic reader (lmbrain.stages.models.pretrained_model).
from pathlib import Path

from lmbrain.config import PretrainedJob, from_json
from lmbrain.stages.models import pretrained_model
from lmbrain.workflow import run_rule

with run_rule(snakemake):
    pretrained_model(from_json(PretrainedJob, snakemake.params.settings), Path(snakemake.output.model).parent)
