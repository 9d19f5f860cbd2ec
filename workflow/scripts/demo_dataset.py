# Rule demo_dataset: build the demo dataset (lmbrain.demo.build_demo) with the workflow's config.
from lmbrain.workflow import run_rule
from lmbrain.demo import build_demo

with run_rule(snakemake):
    build_demo(snakemake.config, progress=True)
