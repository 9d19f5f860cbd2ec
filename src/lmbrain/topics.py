"""The demo's semantic model: NMF topics fitted on the language-model corpus (never on the stimuli).

The demo generator (:mod:`lmbrain.demo`) plants responses that read, at each word, the topic
posterior given the last ``W`` words; the ``planted`` positive-control model reads the same posterior
at every context length. Both get the topic model from :func:`corpus_topic_model`, which fits it once
per process for a given (corpus, topics, seed) and reuses it.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger("lmbrain.topics")


@dataclass
class TopicModel:
    vocab: dict[str, int]
    evidence: np.ndarray  # (V, K) centred log topic-word probabilities

    def word_evidence(self, words) -> np.ndarray:
        """(n_words, K) topic evidence; out-of-vocabulary words carry none (zeros)."""
        out = np.zeros((len(words), self.evidence.shape[1]), dtype=np.float64)
        idx = np.array([self.vocab.get(w, -1) for w in words])
        known = idx >= 0
        out[known] = self.evidence[idx[known]]
        return out


def fit_topic_model(words: list[str], n_topics: int, seed: int, chunk: int = 200, max_vocab: int = 5000,
                    min_count: int = 5) -> TopicModel:
    """NMF topics on TF-IDF of ``chunk``-word documents of ``words`` (the LM corpus, never the stimuli)."""
    from scipy import sparse
    from sklearn.decomposition import NMF

    counts = pd.Series(words).value_counts()
    counts = counts[counts >= min_count].iloc[:max_vocab]
    vocab = {w: i for i, w in enumerate(sorted(counts.index))}
    n_docs = len(words) // chunk
    rows, cols = [], []
    for d in range(n_docs):
        for w in words[d * chunk:(d + 1) * chunk]:
            j = vocab.get(w)
            if j is not None:
                rows.append(d)
                cols.append(j)
    tf = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_docs, len(vocab)))
    df = np.asarray((tf > 0).sum(axis=0)).ravel()
    idf = np.log((1 + n_docs) / (1 + df)) + 1
    tfidf = tf.multiply(idf[None, :]).tocsr()
    nmf = NMF(n_components=n_topics, init="nndsvda", random_state=seed, max_iter=400, tol=1e-4)
    nmf.fit(tfidf)
    beta = nmf.components_ + 1e-3 * nmf.components_.mean()
    beta /= beta.sum(axis=1, keepdims=True)
    logb = np.log(beta).T  # (V, K)
    evidence = logb - logb.mean(axis=1, keepdims=True)
    return TopicModel(vocab=vocab, evidence=evidence)


def window_states(evidence: np.ndarray, window: int, temperature: float) -> np.ndarray:
    """Topic posterior at each word given exactly its last ``window`` words (fewer at story start).

    ``evidence`` (n_words, K) -> (n_words, K) rows on the simplex.
    """
    csum = np.vstack([np.zeros((1, evidence.shape[1])), np.cumsum(evidence, axis=0)])
    n = evidence.shape[0]
    hi = np.arange(1, n + 1)
    lo = np.maximum(hi - window, 0)
    mean = (csum[hi] - csum[lo]) / (hi - lo)[:, None]
    z = temperature * mean
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


@functools.lru_cache(maxsize=4)
def corpus_topic_model(cache_dir: str, plays: tuple[str, ...], n_topics: int, seed: int) -> TopicModel:
    """The demo's topic model: NMF on the LM corpus (every Shakespeare text but ``plays``), seeded.

    Fitted once per process for the same arguments (the demo build, the ``planted`` model and the
    tests share it); the returned arrays are read-only.
    """
    from . import corpus as corpus_mod

    archive = corpus_mod.fetch_shakespeare(Path(cache_dir))
    lm_words = corpus_mod.corpus_words(archive, exclude_plays=tuple(plays))
    topics = fit_topic_model(lm_words, int(n_topics), int(seed))
    topics.evidence.flags.writeable = False
    log.info("topic model: %d topics over %d words of vocabulary (%d corpus words)", n_topics, len(topics.vocab),
             len(lm_words))
    return topics


def topic_model(settings) -> TopicModel:
    """:func:`corpus_topic_model` for a :class:`lmbrain.config.TopicSettings`."""
    return corpus_topic_model(str(settings.cache_dir), tuple(settings.plays), int(settings.n_topics), int(settings.seed))


def oracle_features(settings):
    """The demo generator's own word features, for checking the encoding stage against a known answer.

    ``settings``: a :class:`lmbrain.config.TopicSettings` (``Settings.topics``). Returns
    ``features(words, window) -> (n_words, n_topics)``: the topic posterior of each word given exactly
    its last ``window`` words, as the demo computed it (same corpus, topic model and temperature). A
    voxel with planted window W is a linear function of these features at W (HRF-convolved), so an
    encoding model fitted on them should reach the voxel's noise ceiling.
    """
    topics = topic_model(settings)

    def features(words, window: int) -> np.ndarray:
        return window_states(topics.word_evidence(list(words)), int(window), settings.topic_temperature)

    return features
