"""Word-level vocabulary of the models lmbrain trains: words seen often enough, the rest ``<unk>``."""

from __future__ import annotations

from collections import Counter

import numpy as np

UNK = "<unk>"


class Vocabulary:
    """Word-level vocabulary; index 0 is ``<unk>`` (every word not in the vocabulary)."""

    def __init__(self, words: list[str]):
        if not words or words[0] != UNK:
            words = [UNK] + [w for w in words if w != UNK]
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, corpus: list[str], min_count: int = 2, max_size: int | None = None) -> "Vocabulary":
        """Words seen at least ``min_count`` times, most frequent first (ties alphabetical)."""
        counts = Counter(corpus)
        kept = sorted((w for w, c in counts.items() if c >= min_count and w != UNK), key=lambda w: (-counts[w], w))
        if max_size is not None:
            kept = kept[: max_size - 1]
        return cls([UNK] + kept)

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, words) -> np.ndarray:
        return np.fromiter((self.index.get(w, 0) for w in words), dtype=np.int64, count=len(words))

    def decode(self, ids) -> list[str]:
        return [self.words[int(i)] for i in ids]

    def coverage(self, words) -> float:
        return float(np.mean([w in self.index for w in words])) if len(words) else 1.0
