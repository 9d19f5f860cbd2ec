# Rule prepare_corpus: tokenise the language models' training corpus once (lmbrain.stages.models).
from pathlib import Path

from lmbrain.config import CorpusJob, from_json
from lmbrain.stages.models import prepare_corpus
from lmbrain.workflow import run_rule

with run_rule(snakemake):
    prepare_corpus(from_json(CorpusJob, snakemake.params.settings), Path(snakemake.output.train).parent)
