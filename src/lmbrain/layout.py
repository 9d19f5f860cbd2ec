"""The results layout: every path lmbrain writes, named in one place.

The workflow's rules and the stage functions both build their paths here, so a rule's declared
``input:``/``output:`` and what its stage reads and writes cannot drift apart. Arguments may be
Snakemake wildcards (``layout.encoding_dir("{subject}", "{model}", "{feature}")``).

::

    results/config.yaml                                       the run's effective configuration
    results/<subject>/data/summary.tsv                        per-story data check
    results/corpus/{train,heldout}.txt, corpus.json           the word-level models' corpus
    results/models/<model>/config.json, ...                   trained or pointed-to language models
    results/features/<model>/<story>/k<k>.h5                  word features at context length k
    results/scrambled/<model>/<story>.h5                      the story scrambled, read at every k (TRW scrambling)
    results/<subject>/encoding/<model>/<feature>/k<k>/        encoding model per context length
    results/<subject>/trw/<model>/                            temporal receptive windows
    results/<subject>/rois/<model>/                           TRW per region of interest (rois.tsv, figure)
    results/group/<model>/                                    group results over subjects (group.tsv, ordering.tsv)
    results/<subject>/decoding/<model>/decoder.npz            fitted decoder
    results/<subject>/decoding/<model>/<story>/               one decoded story
    results/benchmarks/..., logs/...                          Snakemake benchmark files and logs
"""

from __future__ import annotations

import os
from dataclasses import dataclass


def k_folder(folder: str | os.PathLike, k) -> str:
    """``<folder>/k<k>``: one context length's sub-folder of an encoding folder (or file stem of features)."""
    return os.path.join(str(folder), f"k{k}")


@dataclass(frozen=True)
class Layout:
    """Paths of one run's results (``results``) and logs (``logs``), relative to the working directory."""

    results: str = "results"
    logs: str = "logs"

    def _r(self, *parts) -> str:
        return os.path.join(self.results, *(str(p) for p in parts))

    # -- whole run -------------------------------------------------------------------------
    def config_file(self) -> str:
        return self._r("config.yaml")

    def benchmark(self, *parts) -> str:
        """``results/benchmarks/<parts>.tsv`` (Snakemake's ``benchmark:`` file of a job)."""
        return self._r("benchmarks", *parts[:-1], f"{parts[-1]}.tsv")

    def log(self, *parts) -> str:
        """``logs/<parts>.log`` (a job's log)."""
        return os.path.join(self.logs, *(str(p) for p in parts[:-1]), f"{parts[-1]}.log")

    # -- data --------------------------------------------------------------------------------
    def data_summary(self, subject) -> str:
        return self._r(subject, "data", "summary.tsv")

    # -- language models ---------------------------------------------------------------------
    def corpus_dir(self) -> str:
        return self._r("corpus")

    def corpus_file(self, name: str) -> str:
        """``train.txt``, ``heldout.txt`` or ``corpus.json`` of the corpus folder."""
        return self._r("corpus", name)

    def model_dir(self, model) -> str:
        return self._r("models", model)

    def model_file(self, model, name: str = "config.json") -> str:
        """A file of a model folder; ``config.json`` exists once the model is ready (trained or built)."""
        return self._r("models", model, name)

    # -- features ----------------------------------------------------------------------------
    def features_dir(self, model, story) -> str:
        return self._r("features", model, story)

    def feature_file(self, model, story, k) -> str:
        return self._r("features", model, story, f"k{k}.h5")

    def scrambled_file(self, model, story) -> str:
        """The story's scrambled versions as the model reads them (rule ``scrambled_features``)."""
        return self._r("scrambled", model, f"{story}.h5")

    # -- subject results ---------------------------------------------------------------------
    def encoding_dir(self, subject, model, feature) -> str:
        return self._r(subject, "encoding", model, feature)

    def encoding_k_dir(self, subject, model, feature, k) -> str:
        return k_folder(self.encoding_dir(subject, model, feature), k)

    def trw_dir(self, subject, model) -> str:
        return self._r(subject, "trw", model)

    def rois_dir(self, subject, model) -> str:
        return self._r(subject, "rois", model)

    def group_dir(self, model) -> str:
        return self._r("group", model)

    def decoder_file(self, subject, model) -> str:
        return self._r(subject, "decoding", model, "decoder.npz")

    def decode_dir(self, subject, model, story) -> str:
        return self._r(subject, "decoding", model, story)


#: The layout the workflow uses (results/ and logs/ in the working directory).
DEFAULT = Layout()
