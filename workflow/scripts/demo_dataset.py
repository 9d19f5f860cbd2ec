# Rule demo_dataset: build the demo dataset (lmbrain.stages.data.demo_dataset).
from lmbrain.config import DemoJob, from_json
from lmbrain.stages.data import demo_dataset
from lmbrain.workflow import run_rule

with run_rule(snakemake):
    demo_dataset(from_json(DemoJob, snakemake.params.settings), progress=True)
