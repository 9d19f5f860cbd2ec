# Rule extract_features: one model's features for one story at every context length.
from pathlib import Path

from lmbrain.config import FeatureJob, from_json
from lmbrain.stages.features import extract_features
from lmbrain.workflow import run_rule

with run_rule(snakemake):
    extract_features(from_json(FeatureJob, snakemake.params.settings), snakemake.wildcards.story,
                     Path(snakemake.input.model).parent, snakemake.output.features, progress=True)
