"""The language model's side of the decoder: proposals, features and the LM-only null.

- :class:`WordLMProposer`: proposals (the nucleus of the next-word distribution) and features (the
  hidden state of one layer with a fixed short context) from a word-level lmbrain model or a
  HuggingFace causal LM.
- :func:`generate_null`: word sequences sampled from the language model alone (no brain data).
- :func:`decoder_layer`: the feature layer a ``layer`` setting means for a model.
- :class:`RepetitionFilter`: Tang et al.'s filters of the proposals: no bigram twice in a hypothesis
  (always), and optionally no content word whose stem is among the last few words' stems.
"""

from __future__ import annotations

import functools

import numpy as np

from .errors import DecodingError


class WordLMProposer:
    """Proposals and features from lmbrain's language models (word-level, or HuggingFace) for the beam search.

    ``nucleus(contexts)``: per context (a list of words) the words of the nucleus (probability at least
    ``min_ratio`` of the top word, until ``top_p`` of the mass), most likely first, at most
    ``extensions``, never ``<unk>``, with their renormalised probabilities; ``propose`` keeps the words.
    ``features(windows)``: the hidden state of ``layer`` at the last word of each window, given its last
    ``context`` words (the encoding model's feature with a fixed short context): ``(n_windows, d)``
    float64.

    Parameters
    ----------
    lm : lmbrain.models.LanguageModel
        Proposes the words (the nucleus is read from its last ``context`` words).
    layer : int
        Hidden-state layer of the features (:func:`decoder_layer`).
    context : int, default 5
        Words each feature and proposal sees.
    extensions : int, default 5
    top_p : float, default 0.9
    min_ratio : float, default 0.1
    feature_lm : lmbrain.models.LanguageModel or None
        Gives the features instead of ``lm`` (e.g. the demo's planted topic reader, a positive control).
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
            top, probs = nucleus_top(row[ids], self.extensions, self.top_p, self.min_ratio)
            out.append(([words[k] for k in top], probs))
        return out

    def propose(self, contexts) -> list[list[str]]:
        return [words for words, _ in self.nucleus(contexts)]

    def features(self, windows) -> np.ndarray:
        return self._last(self.feature_lm, [list(w[-self.context:]) for w in windows], self.layer)


def nucleus_top(logp, extensions: int, top_p: float, min_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """The proposals of one next-word distribution: at most ``extensions`` of the most likely entries of
    ``logp`` (log-probabilities, any scale), most likely first (ties: the lower index first), within the
    nucleus (the smallest prefix whose mass reaches ``top_p``) and with at least ``min_ratio`` of the top
    probability; returns their indices and their probabilities renormalised over them.

    Only the ``extensions`` most likely entries are ordered (ordering all 6,000 words of the demo's
    vocabulary made this 2.6x slower): the sorted values fix the mass (summed in descending order, as a
    full sort would) and the ties are broken by index, so the result is exactly that of a stable full sort.
    """
    logp = np.asarray(logp, dtype=np.float64)
    vals = np.sort(logp)[::-1]  # descending: the values of a stable descending sort, ties included
    p = np.exp(vals - vals[0])  # relative to the most likely word
    e = min(int(extensions), logp.size)
    if e == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    if e < logp.size:
        v = vals[e - 1]  # the e-th largest value; entries above it all belong, ties with it by index
        above = np.flatnonzero(logp > v)
        above = above[np.argsort(-logp[above], kind="stable")]
        top = np.concatenate([above, np.flatnonzero(logp == v)[: e - above.size]])
    else:
        top = np.argsort(-logp, kind="stable")
    # the nucleus (cumulative mass up to top_p; the prefix of a cumulative sum is that of the prefix) and
    # the ratio (p descends, so the words above min_ratio are a prefix too)
    n = int(np.searchsorted(np.cumsum(p[:e] / p.sum()), top_p) + 1)
    keep = np.flatnonzero(p[:min(n, e)] >= min_ratio)
    probs = p[keep] / p[keep].sum()
    return top[keep], probs


def generate_null(proposer: WordLMProposer, n_words: int, n_samples: int = 10, seed: int = 0,
                  progress: bool = False, content_window: int | None = None,
                  bigram_window: int | None = None) -> list[list[str]]:
    """Word sequences from the language model alone (no brain data).

    At each step a word is sampled from the proposer's nucleus (same ``top_p``, ``min_ratio``,
    ``extensions``) among the proposals the :class:`RepetitionFilter` allows (no repeated bigram, within
    ``bigram_window`` words if given; with ``content_window``, no repeated content-word stem), as the
    beam search's candidates are; when it allows none, among all of them.

    Parameters
    ----------
    proposer : WordLMProposer (or anything with ``nucleus(contexts)``)
    n_words, n_samples : int
        ``n_samples`` sequences of ``n_words``.
    seed : int
        The sequences are deterministic in it.
    content_window, bigram_window : int or None
        As :class:`RepetitionFilter`.

    Returns
    -------
    list of n_samples lists of n_words str
    """
    from ..io import progress_bar as tqdm

    rng = np.random.default_rng(seed)
    filt = RepetitionFilter(content_window=content_window, bigram_window=bigram_window)
    seqs: list[list[str]] = [[] for _ in range(n_samples)]
    for _ in tqdm(range(n_words), desc="null sequences", unit="word", disable=not progress):
        for seq, (words, probs) in zip(seqs, proposer.nucleus(seqs)):
            ok = [i for i, allowed in enumerate(filt.allowed(seq, words)) if allowed] or list(range(len(words)))
            p = probs[ok] / probs[ok].sum()
            seq.append(words[ok[int(rng.choice(len(ok), p=p))]])
    return seqs


def _repeats(words: list[str], new: str) -> bool:
    """Whether ``new`` after ``words`` repeats a bigram of ``words`` (the definition; the filter below is
    the fast equivalent)."""
    if not words:
        return False
    bigram = (words[-1], new)
    return any((a, b) == bigram for a, b in zip(words[:-1], words[1:]))


#: Function words the content-word filter never removes: pronouns (with Shakespeare's thou/thee/thy),
#: determiners, auxiliaries and modals, prepositions, conjunctions, common adverbs and the pieces of
#: contractions. Written for lmbrain (a plain list, lower case).
STOP_WORDS = frozenset("""
i me my mine myself we us our ours ourselves you your yours yourself yourselves he him his himself she her hers
herself it its itself they them their theirs themselves thou thee thy thine thyself ye
a an the this that these those what which who whom whose when where why how whether
am is are was were be been being have has had having do does did doing done will would shall should can could may
might must ought art hath doth dost hast shalt wilt wouldst couldst
and but or nor so yet if then than because as while until though although unless else
of at by for with about against between into through during before after above below to from up down in out on
off over under again further once upon within without among around along across toward towards onto
all any both each few more most other some such no not only own same very too just now here there also
s t d ll m re ve o y n't 's 'd 'll 'm 're 've
don't doesn't didn't isn't aren't wasn't weren't won't wouldn't can't cannot couldn't shouldn't hasn't haven't
hadn't mustn't i'm you're he's she's it's we're they're i've you've we've they've i'd you'd he'd she'd we'd
they'd i'll you'll he'll she'll we'll they'll that's there's what's let's
""".split())


@functools.lru_cache(maxsize=1)
def _snowball():
    from nltk.stem.snowball import SnowballStemmer

    return SnowballStemmer("english")


@functools.lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """The Snowball (Porter 2) English stem of a lower-cased word (nltk's implementation)."""
    return _snowball().stem(word.lower())


class RepetitionFilter:
    """Which proposals may extend a hypothesis (Tang et al. 2023's repetition filters).

    Parameters
    ----------
    content_window : int or None, default None
        None: only the bigram filter. An int ``n`` adds the content-word filter: a proposal that is not a
        stop word is refused when its stem (:func:`stem`) equals the stem of one of the hypothesis's last
        ``n`` words.
    bigram_window : int or None, default None
        The bigram filter refuses a proposal ``w`` after a hypothesis ending in ``a`` when ``a w`` already
        occurs in the hypothesis (None, lmbrain's default) or in its last ``bigram_window`` words (the
        reference code checks the language model's context only; over a long story the whole-hypothesis
        filter refuses more, and when it refuses every proposal the search keeps them all).
    stop_words : collection of str or None
        Words the content-word filter never refuses; None = :data:`STOP_WORDS`.
    """

    def __init__(self, content_window: int | None = None, bigram_window: int | None = None, stop_words=None):
        self.content_window = content_window
        self.bigram_window = bigram_window
        self.stop_words = stop_words

    def allowed(self, words, proposals) -> list[bool]:
        """For each proposal, whether it may follow ``words`` (a list of str).

        The bigrams are checked once per hypothesis (the words that followed its last word anywhere
        earlier), not once per proposal.
        """
        words = list(words)
        for name in ("content_window", "bigram_window"):
            n = getattr(self, name)
            if n is not None and int(n) < 1:
                raise DecodingError(f"{name} must be a positive number of words or None, got {n}")
        recent = words if self.bigram_window is None else words[-int(self.bigram_window):]
        refused = set()
        if len(recent) >= 2:
            last = recent[-1]
            refused.update(recent[i + 1] for i in range(len(recent) - 1) if recent[i] == last)
        out = [p not in refused for p in proposals]
        n = self.content_window
        if n is not None and words:
            stops = STOP_WORDS if self.stop_words is None else self.stop_words
            recent = {stem(w) for w in words[-int(n):]}
            out = [ok and (p in stops or stem(p) not in recent) for ok, p in zip(out, proposals)]
        return out


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
