# Rule trw: temporal receptive windows of one model for one subject (lmbrain.trw.estimate_trw).
from pathlib import Path

from lmbrain.workflow import run_rule
from lmbrain.trw import estimate_trw

with run_rule(snakemake):
    w = snakemake.wildcards
    estimate_trw(snakemake.config, w.subject, w.model, snakemake.input.encoding, snakemake.output[0],
                 features_root=Path("results/features"), models_dir=Path(snakemake.input.model).parent.parent)
