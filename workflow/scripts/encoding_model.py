# Rule encoding_model: ridge encoding models of one feature at every context length (lmbrain.encoding).
from pathlib import Path

from lmbrain.workflow import run_rule
from lmbrain.encoding import fit_encoding

with run_rule(snakemake):
    w = snakemake.wildcards
    features_root = Path(snakemake.input.features[0]).parent.parent  # results/features
    fit_encoding(snakemake.config, w.subject, w.model, w.feature, features_root, snakemake.output[0])
