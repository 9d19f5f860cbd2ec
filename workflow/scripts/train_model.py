# Rule train_model: train one word-level language model (lmbrain.stages.models.train_model).
from pathlib import Path

from lmbrain.config import TrainJob, from_json
from lmbrain.stages.models import train_model
from lmbrain.workflow import run_rule

with run_rule(snakemake):
    train_model(from_json(TrainJob, snakemake.params.settings), Path(snakemake.input.train).parent,
                Path(snakemake.output.model).parent, progress=True)
