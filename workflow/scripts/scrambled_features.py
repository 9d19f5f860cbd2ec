# Rule scrambled_features: one story scrambled and read by one model (lmbrain.stages.trw.scrambled_features).
from pathlib import Path

from lmbrain.config import ScrambleJob, from_json
from lmbrain.stages.trw import scrambled_features
from lmbrain.workflow import run_rule

with run_rule(snakemake):
    scrambled_features(from_json(ScrambleJob, snakemake.params.settings), snakemake.wildcards.story,
                       Path(snakemake.input.model).parent, snakemake.output[0], progress=True)
