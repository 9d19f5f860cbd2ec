# Rule prepare_corpus: tokenise the language models' training corpus once (lmbrain.training.write_corpus).
from pathlib import Path

from lmbrain.workflow import run_rule
from lmbrain.training import write_corpus

with run_rule(snakemake):
    write_corpus(snakemake.config, Path(snakemake.output.train).parent)
