"""The unigram baseline: the bits per character of a model that knows only how often each
character (token) occurs, and nothing of their order.

It is the entropy of the text's own frequencies, H = -sum p_i log2 p_i, counted over the text
that is scored (a run's validation text; each file ``eval`` reads), times its tokens per
character for byte and BPE vocabularies. No unigram model scores that text better: one
fitted on other text (the training split) lands a little above it. A recurrent model that
ends near it has learned the letters' proportions and no more."""

from __future__ import annotations

import numpy as np


# Ids read at a time: a memory-mapped corpus of any size is counted in 32 MB of int64.
_COUNT_BLOCK = 1 << 22


def token_counts(ids, vocab_size: int = 0) -> np.ndarray:
    """How often each id occurs in ``ids`` (an array, or a memory-mapped corpus read in
    blocks), as int64 counts of length at least ``vocab_size``."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for start in range(0, len(ids), _COUNT_BLOCK):
        block = np.bincount(np.asarray(ids[start : start + _COUNT_BLOCK], dtype=np.int64).reshape(-1), minlength=len(counts))
        block[: len(counts)] += counts
        counts = block
    return counts


def unigram_bpc(ids, tokens_per_char: float = 1.0) -> float | None:
    """Bits per character of the best frequencies-only model of ``ids``; None for no text."""
    counts = token_counts(ids)
    total = counts.sum()
    if total == 0:
        return None
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum()) * tokens_per_char
