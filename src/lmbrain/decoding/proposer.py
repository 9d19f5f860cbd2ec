"""The language model's side of the decoder: proposals, features and the LM-only null.

- :class:`WordLMProposer`: proposals (the nucleus of the next-word distribution) and features (the
  hidden state of one layer with a fixed short context) from a word-level lmbrain model or a
  HuggingFace causal LM.
- :func:`generate_null`: word sequences sampled from the language model alone (no brain data).
- :func:`decoder_layer`: the feature layer a ``layer`` setting means for a model.
- :func:`_repeats`: Tang et al.'s filter of the proposals (no repeated bigram in a hypothesis).
"""

from __future__ import annotations

import numpy as np

from .errors import DecodingError


class WordLMProposer:
    """Proposals and features from lmbrain's language models (word-level, or HuggingFace) for the beam search.

    ``nucleus(contexts)``: per context (a list of words) the words of the nucleus (probability at least
    ``min_ratio`` of the top word, until ``top_p`` of the mass), most likely first, at most
    ``extensions``, never ``<unk>``, with their renormalised probabilities; ``propose`` keeps the words.
    ``features(windows)``: the hidden state of ``layer`` at the last word of each window, given its last
    ``context`` words (the encoding model's feature with a fixed short context). The features come from
    ``feature_lm`` when given (e.g. the demo's planted topic reader as a positive control), else from
    ``lm``.
    """

    def __init__(self, lm, layer: int, context: int = 5, extensions: int = 5, top_p: float = 0.9,
                 min_ratio: float = 0.1, feature_lm=None):
        self.lm, self.layer, self.context = lm, int(layer), int(context)
        self.feature_lm = lm if feature_lm is None else feature_lm
        self.extensions, self.top_p, self.min_ratio = int(extensions), float(top_p), float(min_ratio)
        if self.context < 1:
            raise DecodingError(f"the decoder's context must be at least one word, got {context}")

    @staticmethod
    def _ids(lm, words) -> list[int]:
        """Token ids of a window of words: one per word for lmbrain's word-level models; for a HuggingFace
        model the tokens of each ``" " + word`` after its beginning-of-sequence prefix."""
        if hasattr(lm, "vocab"):
            return [int(i) for i in lm.vocab.encode(list(words))]
        return list(lm.prefix) + [t for ids in lm.encode(list(words)) for t in ids]

    @classmethod
    def _last(cls, lm, windows, layer: int | None):
        """``lm``'s outputs at the last token of each window, in the given order: hidden states of ``layer``
        ``(n, d)``, or with ``layer=None`` next-token log-probabilities ``(n, vocab)``."""
        import torch

        ids = [cls._ids(lm, w) for w in windows]
        out_rows = [None] * len(windows)
        for length in sorted({len(t) for t in ids}):  # one batch per token count (no padding)
            idx = [i for i, t in enumerate(ids) if len(t) == length]
            for s in range(0, len(idx), 512):
                part = idx[s: s + 512]
                batch = torch.as_tensor(np.asarray([ids[i] for i in part], dtype=np.int64))
                with torch.inference_mode():
                    if layer is None:
                        out = lm.run(batch, layers=[], logits=True)
                        rows = out.logits[:, -1].float().log_softmax(-1).cpu().numpy()
                    else:
                        out = lm.run(batch, layers=[layer], logits=False)
                        rows = out.hidden[layer][:, -1].float().cpu().numpy().astype(np.float64)
                for i, r in zip(part, rows):
                    out_rows[i] = r
        return np.stack(out_rows) if out_rows else np.zeros((0, 0))

    def _candidates(self):
        """Token ids the proposer may propose and their words: the vocabulary without ``<unk>`` (word-level
        models), or the tokens that are a whole lower-case word with its leading space (HuggingFace:
        words made of several tokens are never proposed)."""
        if getattr(self, "_cand", None) is None:
            import re

            if hasattr(self.lm, "vocab"):
                ids = np.arange(1, len(self.lm.vocab.words))
                words = [self.lm.vocab.words[i] for i in ids]
            else:
                tok = self.lm.tokenizer
                pattern = re.compile(r"^ [a-z]+(?:'[a-z]+)?$")
                pairs = [(i, tok.decode([i])) for i in range(len(tok))]
                pairs = [(i, w[1:]) for i, w in pairs if pattern.match(w)]
                if not pairs:
                    raise DecodingError(f"{self.lm.name}: no whole-word tokens in the tokenizer to propose")
                ids = np.asarray([i for i, _ in pairs])
                words = [w for _, w in pairs]
            self._cand = (ids, words)
        return self._cand

    def nucleus(self, contexts) -> list[tuple[list[str], np.ndarray]]:
        ids, words = self._candidates()
        logp = self._last(self.lm, [list(c[-self.context:]) or ["<unk>"] if hasattr(self.lm, "vocab")
                                    else list(c[-self.context:]) for c in contexts], None)
        out = []
        for row in logp:
            row = row[ids]
            order = np.argsort(-row, kind="stable")
            p = np.exp(row[order] - row[order[0]])  # relative to the most likely word
            n = int(np.searchsorted(np.cumsum(p / p.sum()), self.top_p) + 1)
            keep = np.flatnonzero(p[:n] >= self.min_ratio)[: self.extensions]
            probs = p[keep] / p[keep].sum()
            out.append(([words[k] for k in order[keep]], probs))
        return out

    def propose(self, contexts) -> list[list[str]]:
        return [words for words, _ in self.nucleus(contexts)]

    def features(self, windows) -> np.ndarray:
        return self._last(self.feature_lm, [list(w[-self.context:]) for w in windows], self.layer)


def generate_null(proposer: WordLMProposer, n_words: int, n_samples: int = 10, seed: int = 0,
                  progress: bool = False) -> list[list[str]]:
    """Word sequences from the language model alone (no brain data): at each step a word is sampled from
    the proposer's nucleus (same ``top_p``, ``min_ratio``, ``extensions``) avoiding repeated bigrams, as
    the beam search's candidates are. ``n_samples`` sequences of ``n_words``, deterministic in ``seed``."""
    from ..io import progress_bar as tqdm

    rng = np.random.default_rng(seed)
    seqs: list[list[str]] = [[] for _ in range(n_samples)]
    for _ in tqdm(range(n_words), desc="null sequences", unit="word", disable=not progress):
        for seq, (words, probs) in zip(seqs, proposer.nucleus(seqs)):
            ok = [i for i, w in enumerate(words) if not _repeats(seq, w)] or list(range(len(words)))
            p = probs[ok] / probs[ok].sum()
            seq.append(words[ok[int(rng.choice(len(ok), p=p))]])
    return seqs


def _repeats(words: list[str], new: str) -> bool:
    """Tang et al.'s filter: no repeated bigram within a hypothesis."""
    if not words:
        return False
    bigram = (words[-1], new)
    return any((a, b) == bigram for a, b in zip(words[:-1], words[1:]))


def decoder_layer(spec_layer, lm) -> int:
    """The decoder's feature layer: configured (negatives count from the end), or None = three quarters
    of the way up the model (Tang et al. used GPT's layer 9 of 12)."""
    n = int(lm.n_layers)
    if spec_layer is None:
        return max(1, int(round(0.75 * n)))
    layer = int(spec_layer) + (n + 1 if spec_layer < 0 else 0)
    if not 0 <= layer <= n:
        raise DecodingError(f"decoding.layer {spec_layer} is out of range: the model has layers 0..{n}")
    return layer
