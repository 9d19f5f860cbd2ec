# Rule data_summary: check one subject's data and tabulate it (lmbrain.datasets.summarize).
from lmbrain.workflow import run_rule
from lmbrain.datasets import open_dataset, summarize

with run_rule(snakemake):
    cfg = snakemake.config
    ds = open_dataset(cfg["dataset"]["layout"], cfg["dataset"]["root"], tr=cfg["tr"])
    summarize(ds, snakemake.wildcards.subject, cfg["stories"]["train"], cfg["stories"]["test"], snakemake.output.summary)
