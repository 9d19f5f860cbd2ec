# Rule encoding_model: ridge encoding models of one feature at every context length (lmbrain.stages.encoding).
from lmbrain.config import EncodingJob, from_json
from lmbrain.stages.encoding import encoding_model
from lmbrain.workflow import run_rule

with run_rule(snakemake):
    w = snakemake.wildcards
    encoding_model(from_json(EncodingJob, snakemake.params.settings), w.subject, w.feature, snakemake.output[0])
